"""Shared fixtures: graph mode, parsed flags, fake data, running the binaries."""

import contextlib
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import cifar10  # noqa: E402
import fake_cifar  # noqa: E402

tf.compat.v1.disable_eager_execution()
tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
# In-process tests read FLAGS with their defaults; they change them through
# absl.testing.flagsaver.
cifar10.FLAGS(["pytest"])

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
