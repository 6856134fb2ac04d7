"""Every binary with its output into a pipe that is closed, as `| head -1`
closes it: it ends quietly, with the status of SIGPIPE as a shell shows it,
and no traceback."""

import os
import signal
import subprocess

import pytest

from harness import fake_cifar
from harness.procs import PATIENCE_SECS, ROOT, command
from helpers import eval_flags, train_flags


def run_into_closed_pipe(script, *args):
    """Runs a binary with its output into a pipe whose reader has gone
    before the binary writes its first line.

    Returns:
      (exit status, what it wrote to stderr).
    """
    reader, writer = os.pipe()
    os.close(reader)
    try:
        result = subprocess.run(
            command(script, *args), cwd=ROOT, stdout=writer, stderr=subprocess.PIPE,
            text=True, timeout=PATIENCE_SECS,
        )  # fmt: skip
    finally:
        os.close(writer)
    return result.returncode, result.stderr


def assert_quiet(status, stderr):
    assert status == 128 + signal.SIGPIPE, stderr
    for word in ("Traceback", "Exception ignored", "Error"):
        assert word not in stderr, stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "script,flags",
    [("cifar10_train.py", []), ("cifar10_multi_gpu_train.py", ["--num_gpus=2"])],
)
def test_training(dataset, tmp_path, script, flags):
    status, stderr = run_into_closed_pipe(
        script, *train_flags(dataset, tmp_path / "train", "--max_steps=100000", *flags)
    )
    assert_quiet(status, stderr)


@pytest.mark.slow
def test_evaluation(dataset, tmp_path):
    # Waiting for a first checkpoint, it says so.
    (tmp_path / "train").mkdir()
    status, stderr = run_into_closed_pipe(
        "cifar10_eval.py",
        *eval_flags(dataset["root"], tmp_path / "train", tmp_path / "eval"),
    )
    assert_quiet(status, stderr)


@pytest.mark.slow
def test_classifying(trained, dataset, tmp_path):
    fake_cifar.write_image_folders(str(tmp_path / "images"), ["a"], 3)
    status, stderr = run_into_closed_pipe(
        "cifar10_classify.py",
        "--checkpoint_dir=%s" % trained,
        "--data_dir=%s" % dataset["root"],
        str(tmp_path / "images" / "a"),
    )
    assert_quiet(status, stderr)


@pytest.mark.slow
def test_packing_leaves_nothing(tmp_path):
    fake_cifar.write_image_folders(str(tmp_path / "images"), ["a", "b"], 20)
    status, stderr = run_into_closed_pipe(
        "cifar10_pack.py",
        "--image_dir=%s" % (tmp_path / "images"),
        "--data_dir=%s" % (tmp_path / "data"),
    )
    assert_quiet(status, stderr)
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_downloading(tmp_path):
    archive, md5 = fake_cifar.write_archive(
        str(tmp_path / "src"),
        str(tmp_path / "cifar-10-binary.tar.gz"),
        records_per_file=100,
        test_records=100,
    )
    status, stderr = run_into_closed_pipe(
        "cifar10_train.py",
        "--data_dir=%s" % (tmp_path / "data"),
        "--data_url=file://" + archive,
        "--data_md5=" + md5,
        "--train_dir=%s" % (tmp_path / "train"),
        "--max_steps=100000",
    )
    assert_quiet(status, stderr)
    assert not (tmp_path / "data").exists() or os.listdir(tmp_path / "data") == []


@pytest.mark.parametrize("script", ["cifar10_train.py", "cifar10_pack.py"])
def test_help(script):
    assert_quiet(*run_into_closed_pipe(script, "--help"))
