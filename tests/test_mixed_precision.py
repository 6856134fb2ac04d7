"""--mixed_precision=bf16: TensorFlow's oneDNN bfloat16 rewrite in every
binary's session, float32 checkpoints that move freely between precisions,
and the same accuracy."""

import json

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver
from tensorflow.core.protobuf import rewriter_config_pb2

import cifar10
import cifar10_multi_gpu_train
import support.cluster
from harness import fake_cifar
from helpers import checkpoint_step, independent_logits, train
from support import bfloat16, checkpoints, cluster_task

ON = rewriter_config_pb2.RewriterConfig.ON


def rewrite(config):
    return config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16


def test_bf16_turns_the_rewrite_on_in_every_binarys_session(monkeypatch):
    cluster = {"ps": ["h:1"], "worker": ["h:2"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker"}})
    )
    configs = {
        "model": cifar10.session_config,  # train, eval and classify
        "towers": lambda: cifar10_multi_gpu_train.session_config(["/cpu:0"]),
        # The training loop hands a worker's session whether it is bf16.
        "worker": lambda: cluster_task.session_config(
            support.cluster.this_task(),
            cifar10.session_config(),
            bf16=cifar10.FLAGS.mixed_precision == "bf16",
        ),
    }
    for name, config in configs.items():
        assert rewrite(config()) != ON, name  # off by default
        with flagsaver.flagsaver(mixed_precision="bf16"):
            assert rewrite(config()) == ON, name
    # A cluster's workers cannot run the fused bfloat16 ops that the remapper
    # makes on processors with native bfloat16.
    remapping = configs["worker"]().graph_options.rewrite_options.remapping
    assert remapping != rewriter_config_pb2.RewriterConfig.OFF
    with flagsaver.flagsaver(mixed_precision="bf16"):
        remapping = configs["worker"]().graph_options.rewrite_options.remapping
    assert remapping == rewriter_config_pb2.RewriterConfig.OFF


def test_native_bfloat16_is_read_from_the_processors_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 amx_bf16 avx2\n")
    assert bfloat16.native(str(cpuinfo)) is True
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert bfloat16.native(str(cpuinfo)) is False
    cpuinfo.write_text("processor\t: 0\n")  # no flags to read
    assert bfloat16.native(str(cpuinfo)) is None
    assert bfloat16.native(str(tmp_path / "missing")) is None


def scores(checkpoint, labels, images, mixed_precision):
    """(logits, precision) of a checkpoint's moving averages, the graph run
    with the session config of --mixed_precision."""
    with flagsaver.flagsaver(mixed_precision=mixed_precision), tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 24, 24, 3])
        logits = cifar10.inference(x)
        restore, _ = checkpoints.restorer()
        with tf.compat.v1.Session(config=cifar10.session_config()) as sess:
            restore(sess, checkpoint)
            out = sess.run(logits, {x: fake_cifar.eval_images(images)})
    return out, np.mean(np.argmax(out, axis=1) == labels)


def test_bf16_computes_otherwise_and_scores_the_same(trained, dataset):
    labels, images = (a[:1000] for a in dataset["test"])
    checkpoint = tf.train.latest_checkpoint(trained)
    float32, precision32 = scores(checkpoint, labels, images, "off")
    bfloat16, precision16 = scores(checkpoint, labels, images, "bf16")
    # The rewrite is at work: bfloat16 keeps 8 bits of mantissa.
    change = np.abs(bfloat16 - float32).max() / np.abs(float32).max()
    assert 1e-4 < change < 0.05, change
    assert abs(precision16 - precision32) <= 0.01, (precision16, precision32)


@pytest.mark.slow
def test_bf16_training_learns_as_float32_does(dataset, tmp_path, monkeypatch):
    """The same steps from the same start, in each precision; the moving
    averages then score alike. The learning rate is low enough for both to
    take a smooth path (at 0.1 a step now and then throws the weights off,
    and runs that differ by rounding alone part ways), and the steps few
    enough that neither has learned everything."""
    monkeypatch.setattr(cifar10, "INITIAL_LEARNING_RATE", 0.02)
    labels, images = (a[:4000] for a in dataset["train"])
    test_labels, test_images = (a[:500] for a in dataset["test"])
    inputs = fake_cifar.eval_images(images).astype(np.float32)
    precision = {}
    # helpers.training_from_memory()'s steps, in one graph run by a session
    # of each precision's config (which is all that --mixed_precision sets).
    with flagsaver.flagsaver(batch_size=32), tf.Graph().as_default():
        tf.compat.v1.set_random_seed(1)
        global_step = tf.compat.v1.train.get_or_create_global_step()
        x = tf.compat.v1.placeholder(tf.float32, [None, 24, 24, 3])
        y = tf.compat.v1.placeholder(tf.int32, [None])
        loss = cifar10.loss(cifar10.inference(x), y)
        train_op = cifar10.train(loss, global_step)
        start = tf.compat.v1.global_variables_initializer()
        saver = tf.compat.v1.train.Saver()
        checkpoints = {}
        for mixed_precision in ("off", "bf16"):
            rng = np.random.default_rng(1)
            with (
                flagsaver.flagsaver(mixed_precision=mixed_precision),
                tf.compat.v1.Session(config=cifar10.session_config()) as sess,
            ):
                sess.run(start)
                for _ in range(20):
                    batch = rng.choice(len(labels), 32, replace=False)
                    sess.run(train_op, {x: inputs[batch], y: labels[batch]})
                checkpoints[mixed_precision] = saver.save(
                    sess, str(tmp_path / mixed_precision / "model.ckpt")
                )
    for mixed_precision, checkpoint in checkpoints.items():
        # The checkpoint holds float32 weights and averages either way.
        dtypes = tf.train.load_checkpoint(checkpoint).get_variable_to_dtype_map()
        assert set(dtypes.values()) <= {tf.float32, tf.int64}
        logits = independent_logits(checkpoint, test_images)
        precision[mixed_precision] = np.mean(np.argmax(logits, axis=1) == test_labels)
    # About 0.5 each after 20 steps here; chance is 0.1.
    assert min(precision.values()) > 0.25, precision
    assert abs(precision["bf16"] - precision["off"]) < 0.15, precision


# Small steps: what the checkpoints hold is what this asserts.
SMALL = ["--batch_size=8", "--min_queue_examples=16"]


@pytest.mark.slow
def test_checkpoints_move_freely_between_precisions(dataset, tmp_path):
    train_dir = tmp_path / "train"
    bf16 = "--mixed_precision=bf16"
    # The note comes once a process: a test before this one, in this process,
    # may have had it.
    bfloat16.say_if_emulated.cache_clear()
    first = train(dataset, train_dir, "--max_steps=3", bf16, *SMALL)
    assert first.returncode == 0, first.stderr
    emulated = bfloat16.native() is False
    assert first.stdout.count("no native bfloat16") == (1 if emulated else 0)
    dtypes = set(
        tf.train.load_checkpoint(tf.train.latest_checkpoint(str(train_dir)))
        .get_variable_to_dtype_map()
        .values()
    )
    assert dtypes <= {tf.float32, tf.int64}
    # float32 goes on from it, then two bf16 towers from that.
    for max_steps, flags in ((5, []), (7, [bf16, "--num_gpus=2"])):
        script = "cifar10_multi_gpu_train.py" if flags else "cifar10_train.py"
        result = train(
            dataset,
            train_dir,
            "--max_steps=%d" % max_steps,
            *flags,
            *SMALL,
            script=script,
        )
        assert result.returncode == 0, result.stderr
        assert "at step %d." % (max_steps - 2) in result.stdout
    assert checkpoint_step(train_dir) == 7
