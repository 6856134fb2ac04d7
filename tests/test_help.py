"""Each binary's --help lists its own flags and the shared ones, with defaults."""

import importlib
import re

import pytest
from absl import flags

import cifar10_pack
from harness.procs import run_binary

SHARED = ["--batch_size", "--data_dir", "--use_fp16", "--data_url", "--mixed_precision"]
BINARIES = [
    (
        "cifar10_train",
        ["--train_dir", "--fresh_start", "--ps_hosts", "--sync_replicas"],
    ),
    (
        "cifar10_multi_gpu_train",
        ["--num_gpus", "--train_dir", "--max_steps", "--job_name", "--task_index"],
    ),
    ("cifar10_eval", ["--eval_dir", "--checkpoint_dir", "--run_once", "--per_class"]),
    (
        "cifar10_classify",
        ["--checkpoint_dir", "--checkpoint", "--top_k", "--output", "--export_dir"],
    ),
]
# The packer trains nothing and downloads nothing: of the shared flags it
# takes --data_dir alone.
PACKER = ["--image_dir", "--test_fraction", "--name", "--data_dir"]


def assert_lists(text, own):
    for flag in own + SHARED:
        assert flag.lstrip("-") + ":" in text, flag  # booleans read --[no]name
    assert "(default: '128')" in text  # --batch_size
    assert "(default: '/tmp/cifar10_data')" in text


@pytest.mark.parametrize("module, own", BINARIES)
def test_each_binary_lists_its_own_and_the_shared_flags(module, own):
    # What --help prints for a binary is the help of its module's key flags.
    assert_lists(flags.FLAGS.module_help(importlib.import_module(module)), own)


@pytest.mark.slow
def test_the_packer_lists_its_own_flags_and_what_data_dir_means_to_it():
    result = run_binary("cifar10_pack.py", "--help")
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^  --(?:\[no\])?(\w+):", result.stdout, re.M)
    assert sorted(listed) == sorted(f.lstrip("-") for f in PACKER)
    assert " ".join(result.stdout.split()).count(cifar10_pack.DATA_DIR_HELP) == 1


@pytest.mark.slow
def test_help_prints_them_and_exits_building_nothing(tmp_path):
    # Beside flags that would fail a run (no data, a batch no memory holds),
    # --help answers and touches nothing.
    result = run_binary(
        "cifar10_train.py",
        "--help",
        "--train_dir=%s" % (tmp_path / "train"),
        "--data_dir=%s" % (tmp_path / "data"),
        "--data_url=file:///nowhere/cifar-10-binary.tar.gz",
        "--batch_size=100000000",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert_lists(result.stdout, BINARIES[0][1])
    assert list(tmp_path.iterdir()) == []
