"""cifar10_multi_gpu_train.py: gradient averaging, towers on CPU devices,
checkpoints shared with the other binaries, resume and signals."""

import inspect
import re
import signal

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver

import cifar10
import cifar10_multi_gpu_train
import cifar10_train
from helpers import (
    LOG_LINE,
    PRECISION,
    checkpoint_step,
    evaluate,
    signal_at_step,
    train,
)
from support import cluster, startup

# Where training with two towers ends: far enough from chance to show it learns.
MAX_STEPS = 30


def test_average_gradients_by_hand():
    with tf.Graph().as_default():
        v = [tf.Variable(0.0, name="v%d" % i) for i in range(3)]
        c = tf.constant
        tower_grads = [
            [(c([1.0, 2.0]), v[0]), (None, v[1]), (c(3.0), v[2])],
            [(c([3.0, 6.0]), v[0]), (None, v[1]), (None, v[2])],
        ]
        averaged = cifar10_multi_gpu_train.average_gradients(tower_grads)
        assert [var for _, var in averaged] == v
        assert averaged[1][0] is None  # no tower has a gradient: skipped
        with tf.compat.v1.Session() as sess:
            g0, g2 = sess.run([averaged[0][0], averaged[2][0]])
    np.testing.assert_allclose(g0, [2.0, 4.0])
    # The second tower's loss does not depend on v2: its gradient is zero.
    np.testing.assert_allclose(g2, 1.5)


def test_more_towers_than_gpus_is_an_error(monkeypatch):
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: ["g0", "g1"])
    with flagsaver.flagsaver(num_gpus=4):
        with pytest.raises(startup.Error) as e:
            cifar10_multi_gpu_train.tower_devices()
    assert "--num_gpus=4" in str(e.value) and "2 GPU(s)" in str(e.value)


def test_the_towers_train_in_the_loop_of_cifar10_train(dataset, monkeypatch):
    def train(*args, **kwargs):
        ran.update(signature.bind(*args, **kwargs).arguments)

    ran, signature = {}, inspect.signature(cifar10_train.train)
    monkeypatch.setattr(cifar10_train, "train", train)
    with flagsaver.flagsaver(data_dir=dataset["root"], num_gpus=2, batch_size=16):
        cifar10_multi_gpu_train.main(["cifar10_multi_gpu_train.py"])
        assert ran["towers"] == 2
        assert ran["config"].device_count["CPU"] == 2
        # The graph it trains: two towers, and the last one's summaries.
        with tf.Graph().as_default():
            loss, train_op, summary_op = ran["graph"](cluster.LOCAL, cifar10.data_set())
    assert loss.name.startswith("%s_1/" % cifar10.TOWER_NAME)
    assert summary_op is not None and train_op is not None


def multi_gpu_train(dataset, train_dir, *flags):
    return train(dataset, train_dir, *flags, script="cifar10_multi_gpu_train.py")


@pytest.mark.slow
def test_one_tower_stopped_by_sigint_resumes_as_two_that_learn(
    dataset, trained, tmp_path
):
    train_dir = tmp_path / "train"
    code, out = signal_at_step(
        dataset,
        train_dir,
        signal.SIGINT,
        at_step=5,
        script="cifar10_multi_gpu_train.py",
    )
    assert code == 0, out
    assert "Running 1 tower(s) on /cpu:0" in out
    stopped = int(re.search(r"Stopped by SIGINT at step (\d+)", out).group(1))
    assert checkpoint_step(train_dir) == stopped

    # The checkpoint of one tower resumes as two, which learn.
    result = multi_gpu_train(
        dataset, train_dir, "--num_gpus=2", "--max_steps=%d" % MAX_STEPS,
        "--log_frequency=10", "--batch_size=32",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Running 2 tower(s) on /cpu:0, /cpu:1 (no GPU found)." in result.stdout
    assert "at step %d." % stopped in result.stdout
    matches = [m for m in map(LOG_LINE.match, result.stdout.splitlines()) if m]
    # Every 10th step but the first, which waits for the queue to fill.
    first_logged = ((stopped + 1) // 10 + 1) * 10
    assert [int(m[1]) for m in matches] == list(range(first_logged, MAX_STEPS + 1, 10))
    # The line says the step it stops at, and the time left.
    assert {m[6] for m in matches} == {str(MAX_STEPS)}
    for m in matches:
        # Two batches of 32 a step; sec/batch is the step time per tower.
        assert float(m[3]) == pytest.approx(64 / (2 * float(m[4])), rel=0.05)
    # That they learn shows in the precision below, not in the logged loss:
    # at the tutorial's learning rate a step now and then throws the raw
    # weights off (the loss spiked to 8.3 in one run), and they take a few
    # dozen steps to recover, while the moving averages that the evaluation
    # uses ride it out.
    assert checkpoint_step(train_dir) == MAX_STEPS

    scored = evaluate(
        dataset["root"],
        train_dir,
        tmp_path / "eval",
        "--run_once",
        "--num_examples=300",
    )
    assert scored.returncode == 0, scored.stderr
    (match,) = PRECISION.findall(scored.stdout)
    # Chance is 0.1; runs of 30 steps of two batches of 32 scored 0.88 and 1.0.
    assert match[1] == str(MAX_STEPS) and float(match[0]) > 0.3

    # The same variables, moving averages included, as the single-device
    # graph saves: cifar10.train() of the model, which the shared checkpoint
    # was saved from (inputs hold no variables).
    towers = dict(tf.train.list_variables(tf.train.latest_checkpoint(str(train_dir))))
    one = dict(tf.train.list_variables(tf.train.latest_checkpoint(trained)))
    assert towers == one
