"""Each binary's --help lists the flags it uses, and no other, with what each
does there; a flag it does not use, or a misspelt one, ends it with one
line naming its nearest flag."""

import importlib
import re

import pytest

import cifar10_pack
from harness.procs import run_binary, run_here, run_started_here
from support import startup

# The model's and the data's flags, and which binaries use them.
DATA = ["--batch_size", "--data_dir", "--use_fp16"]
DOWNLOAD = ["--data_url", "--data_md5"]
TRAINING = [
    *DATA, *DOWNLOAD, "--mixed_precision", "--min_queue_examples",
    "--num_preprocess_threads", "--train_dir", "--max_steps", "--log_frequency",
    "--log_device_placement", "--fresh_start", "--save_summaries_steps",
    "--save_checkpoint_steps", "--save_checkpoint_secs", "--keep_checkpoints",
    "--ps_hosts", "--worker_hosts", "--job_name", "--task_index",
    "--sync_replicas", "--replicas_to_aggregate", "--cluster_timeout_secs",
]  # fmt: skip
BINARIES = {
    "cifar10_train": TRAINING,
    "cifar10_multi_gpu_train": [*TRAINING, "--num_gpus"],
    "cifar10_eval": [
        *DATA,
        *DOWNLOAD,
        "--mixed_precision",
        "--checkpoint_dir",
        "--eval_dir",
        "--eval_data",
        "--eval_interval_secs",
        "--num_examples",
        "--run_once",
        "--per_class",
    ],  # fmt: skip
    "cifar10_classify": [
        *DATA,
        "--mixed_precision",
        "--checkpoint_dir",
        "--checkpoint",
        "--top_k",
        "--output",
        "--export_dir",
    ],  # fmt: skip
    # The packer trains nothing and downloads nothing: of the model's flags
    # it takes --data_dir alone.
    "cifar10_pack": ["--data_dir", "--image_dir", "--test_fraction", "--name"],
}


def listed(text):
    """The flags a --help text lists (booleans read --[no]name)."""
    return sorted(
        "--" + name for name in re.findall(r"^  --(?:\[no\])?(\w+):", text, re.M)
    )


@pytest.mark.parametrize("module, own", BINARIES.items())
def test_each_binary_lists_the_flags_it_uses_and_no_other(module, own):
    text = startup.help_text(importlib.import_module(module))
    assert listed(text) == sorted(own)
    assert "--help, --helpfull" in text
    # The folders are named after the model module.
    for default in re.findall(r"\(default: '(/tmp/[^']*)'\)", text):
        assert re.fullmatch(r"/tmp/cifar10_(data|train|eval)", default), default


def test_each_says_what_a_shared_flag_does_there():
    def help_of(module, flag):
        text = " ".join(startup.help_text(importlib.import_module(module)).split())
        return re.search(r"--(?:\[no\])?%s: (.*?)(?= --|$)" % flag, text)[1]

    assert help_of("cifar10_train", "batch_size").startswith("Images in a training")
    assert help_of("cifar10_eval", "batch_size").startswith("Images scored")
    assert help_of("cifar10_classify", "batch_size").startswith("Image files")
    assert help_of("cifar10_train", "max_steps").startswith("The global step to stop")
    assert cifar10_pack.DATA_DIR_HELP in help_of("cifar10_pack", "data_dir")
    # An enum keeps its values before the binary's text.
    assert help_of("cifar10_eval", "mixed_precision").startswith("<off|bf16>: bf16")


@pytest.mark.parametrize(
    "script, flag, nearest",
    [
        # A training flag, given to evaluation, whatever its value.
        ("cifar10_eval.py", "--min_queue_examples=10", "--num_examples"),
        ("cifar10_eval.py", "--min_queue_examples=0", "--num_examples"),
        ("cifar10_classify.py", "--nofresh_start", None),
        # Where the trainer keeps its checkpoints is --train_dir.
        ("cifar10_train.py", "--checkpoint_dir=/tmp/x", "--train_dir"),
        # Where evaluation finds them is --checkpoint_dir.
        ("cifar10_eval.py", "--train_dir=/tmp/x", "--checkpoint_dir"),
        # Typos.
        ("cifar10_train.py", "--max_step=3", "--max_steps"),
        ("cifar10_classify.py", "--top-k=3", "--top_k"),
        ("cifar10_pack.py", "--image_dirs=x", "--image_dir"),
        # absl's own flags are no binary's.
        ("cifar10_train.py", "--logtostderr", None),
    ],
)
def test_a_flag_the_binary_does_not_use_is_refused_in_one_line(
    script, flag, nearest, tmp_path
):
    result = run_here(script, flag, "--data_dir=%s" % (tmp_path / "data"))
    assert result.returncode == 1
    name = re.match(r"--([\w-]+)", flag)[1]
    hint = " (did you mean %s?)" % nearest if nearest else ""
    assert (
        result.stderr
        == "Error: %s has no flag --%s%s; --help lists its flags.\n"
        % (script, name, hint)
    )
    assert list(tmp_path.iterdir()) == []  # nothing made


def test_a_bad_value_is_one_line():
    result = run_here("cifar10_train.py", "--max_steps=0")
    assert result.returncode == 1
    assert result.stderr == "Error: --max_steps=0: 0 is not a positive integer\n"


def test_help_prints_them_and_exits_building_nothing(tmp_path):
    # Beside flags that would fail a run (no data, a batch no memory holds),
    # --help answers and touches nothing; --helpfull says the same. Through
    # the binary's start-up, in this process (its process starts it so:
    # test_a_misspelt_flag_is_one_line_from_the_binary_too).
    args = [
        "--train_dir=%s" % (tmp_path / "train"),
        "--data_dir=%s" % (tmp_path / "data"),
        "--data_url=file:///nowhere/cifar-10-binary.tar.gz",
        "--batch_size=100000000",
    ]
    shown = run_started_here("cifar10_train.py", "--help", *args)
    full = run_started_here("cifar10_train.py", "--helpfull", *args)
    assert shown.returncode == full.returncode == 0, shown.stderr + full.stderr
    assert "Traceback" not in shown.stderr
    assert listed(shown.stdout) == sorted(TRAINING)
    assert full.stdout == shown.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_misspelt_flag_is_one_line_from_the_binary_too(tmp_path):
    result = run_binary("cifar10_eval.py", "--train_dir=%s" % tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "Error: cifar10_eval.py has no flag --train_dir (did you mean "
        "--checkpoint_dir?); --help lists its flags."
    )
    assert "FATAL" not in result.stderr and "Pass --help" not in result.stderr
