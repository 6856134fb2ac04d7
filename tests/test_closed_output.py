"""Every binary with its output into a pipe that is closed, as `| head -1`
closes it: it ends quietly, with the status of SIGPIPE as a shell shows it,
and no traceback.

What ends it so is the start-up's (support/startup.py: run(), around the
binary's --help and its main(), and one_line_errors(), around an error whose
cause was the closed output), the same for every binary: it ends the process
with sys.exit(). A process of its own, which the shell's status and the
interpreter's last words are of, runs where the most goes on when the output
closes: packing (a pool of threads, a session, a folder half made). The
other binaries run that same start-up in this process
(run_here_into_closed_pipe()), their sys.stdout a pipe whose reader has
gone: what they do before the closed output stops them, and the status they
end with, are theirs.
"""

import gc
import io
import os
import signal
import subprocess
import sys
from unittest import mock

import pytest

from harness import fake_cifar
from harness.procs import PATIENCE_SECS, ROOT, command, run_started_here
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


def run_here_into_closed_pipe(script, *args):
    """Runs a binary in this process as its process starts it
    (harness.procs.run_started_here()), its sys.stdout a pipe whose reader
    has gone, unbuffered as `python -u` makes it (as the processes above
    run).

    Returns:
      (the status it ends with, what it wrote to stderr, and the exceptions
      that Python ignored meanwhile, as a process would show them on its
      stderr: "Exception ignored ...").
    """
    ignored = []
    reader, writer = os.pipe()
    os.close(reader)
    with mock.patch.object(
        sys, "unraisablehook", lambda u: ignored.append(u.exc_value)
    ):
        with io.TextIOWrapper(io.FileIO(writer, "w"), write_through=True) as stdout:
            result = run_started_here(script, *args, stdout=stdout)
        gc.collect()  # what the binary left for the collector, finalized here
    shown = ["Exception ignored: %r\n" % e for e in ignored]
    return result.returncode, result.stderr + "".join(shown)


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
    status, stderr = run_here_into_closed_pipe(
        script, *train_flags(dataset, tmp_path / "train", "--max_steps=100000", *flags)
    )
    assert_quiet(status, stderr)


@pytest.mark.slow
def test_evaluation(dataset, tmp_path):
    # Waiting for a first checkpoint, it says so.
    (tmp_path / "train").mkdir()
    status, stderr = run_here_into_closed_pipe(
        "cifar10_eval.py",
        *eval_flags(dataset["root"], tmp_path / "train", tmp_path / "eval"),
    )
    assert_quiet(status, stderr)


@pytest.mark.slow
def test_classifying(trained, dataset, tmp_path):
    fake_cifar.write_image_folders(str(tmp_path / "images"), ["a"], 3)
    status, stderr = run_here_into_closed_pipe(
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
    # Its progress line fails the download: an error that the closed output
    # caused (startup.one_line_errors()).
    status, stderr = run_here_into_closed_pipe(
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
    assert_quiet(*run_here_into_closed_pipe(script, "--help"))
