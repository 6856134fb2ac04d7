"""Fixtures: graph mode and parsed flags for in-process tests, and the fake
data set. What the tests share besides fixtures is in helpers.py."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# TensorFlow's environment, as the binaries set it.
import cifar10_app  # noqa: E402, F401, I001
import tensorflow as tf  # noqa: E402

import cifar10  # noqa: E402
from harness import fake_cifar  # noqa: E402

tf.compat.v1.disable_eager_execution()
tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
# In-process tests read FLAGS with their defaults; they change them through
# absl.testing.flagsaver.
cifar10.FLAGS(["pytest"])


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
