"""Shared fixtures: graph mode, parsed flags, fake data, running the binaries."""

import contextlib
import os
import re
import subprocess
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the binaries do

import tensorflow as tf  # noqa: E402

import cifar10  # noqa: E402
import fake_cifar  # noqa: E402

tf.compat.v1.disable_eager_execution()
tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
# In-process tests read FLAGS with their defaults; they change them through
# absl.testing.flagsaver.
cifar10.FLAGS(["pytest"])

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: step (\d+), loss = (\d+\.\d\d) "
    r"\((\d+\.\d) examples/sec; (\d+\.\d{3}) sec/batch\)$"
)


def logged_steps(stdout):
    """The steps of the training log lines in stdout."""
    return [int(m.group(1)) for m in map(LOG_LINE.match, stdout.splitlines()) if m]


def checkpoint_step(train_dir):
    """The step of the newest checkpoint in train_dir, or None."""
    latest = tf.train.latest_checkpoint(str(train_dir))
    return None if latest is None else int(latest.rsplit("-", 1)[1])


PRECISION = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: precision @ 1 = (\d\.\d{3}) "
    r"\(step (\d+), (\d+) images, [\d.]+ images/sec\)$",
    re.MULTILINE,
)


# Small and quick settings for the binaries' end-to-end runs.
FAST_FLAGS = ["--batch_size=32", "--min_queue_examples=300"]


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """A learnable fake data set: 1000 training and 300 test images.

    A dict: 'root' is the folder to pass as --data_dir; 'dir', 'train' and
    'test' are fake_cifar.write_dataset()'s.
    """
    root = str(tmp_path_factory.mktemp("cifar10_data"))
    data = fake_cifar.write_dataset(root, records_per_file=200, test_records=300)
    data["root"] = root
    return data


def run_binary(script, *args, timeout=300):
    """Runs one of the binaries to completion; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train(dataset, train_dir, *flags, script="cifar10_train.py"):
    """Runs a training binary on the fake data set with FAST_FLAGS."""
    return run_binary(
        script,
        "--data_dir=%s" % dataset["root"],
        "--train_dir=%s" % train_dir,
        *FAST_FLAGS,
        *flags,
    )


def evaluate(data_root, checkpoint_dir, eval_dir, *flags):
    """Runs cifar10_eval.py with batches of 32."""
    return run_binary(
        "cifar10_eval.py",
        "--data_dir=%s" % data_root,
        "--checkpoint_dir=%s" % checkpoint_dir,
        "--eval_dir=%s" % eval_dir,
        "--batch_size=32",
        *flags,
    )


def start_binary(script, *args, output=None):
    """Starts one of the binaries.

    Its stdout is a pipe to read line by line, or with output (an open file)
    both stdout and stderr go there, for a process nobody reads meanwhile.
    """
    return subprocess.Popen(
        [sys.executable, "-u", os.path.join(ROOT, script), *args],
        cwd=ROOT,
        stdout=output or subprocess.PIPE,
        stderr=output or subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def queue_session():
    """A session on the default graph with variables initialized and the
    queue runners started; stops and joins them on exit."""
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(tf.compat.v1.local_variables_initializer())
        coord = tf.train.Coordinator()
        threads = tf.compat.v1.train.start_queue_runners(sess=sess, coord=coord)
        try:
            yield sess
        finally:
            coord.request_stop()
            coord.join(threads, stop_grace_period_secs=10)


def run_until_step_then_signal(
    dataset, train_dir, signum, at_step, script="cifar10_train.py"
):
    """Trains until a log line reaches at_step, then sends signum.

    Returns:
      (exit status, stdout, stderr).
    """
    proc = start_binary(
        script,
        "--data_dir=%s" % dataset["root"],
        "--train_dir=%s" % train_dir,
        "--max_steps=100000",
        "--log_frequency=5",
        *FAST_FLAGS,
    )
    watchdog = threading.Timer(240, proc.kill)
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            steps = logged_steps(line)
            if steps and steps[0] >= at_step:
                proc.send_signal(signum)
                break
        lines.extend(proc.stdout)
        proc.wait()
    finally:
        watchdog.cancel()
    return proc.returncode, "".join(lines), proc.stderr.read()
