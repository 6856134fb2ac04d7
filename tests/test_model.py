"""The network, the loss and the training op."""

import json
import os
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver

import cifar10
import cifar10_input

LAYERS = ["conv1", "conv2", "local3", "local4", "softmax_linear"]


def test_parameters_and_logits_shape():
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 24, 24, 3])
        logits = cifar10.inference(images)
        variables = tf.compat.v1.trainable_variables()
        shapes = {v.op.name: v.shape.as_list() for v in variables}
        assert sum(np.prod(s) for s in shapes.values()) == 1068298
        assert shapes["local3/weights"] == [2304, 384]
        assert sorted({name.split("/")[0] for name in shapes}) == sorted(LAYERS)
        assert all(v.device.endswith("CPU:0") for v in variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            # Any batch size, e.g. a smaller last evaluation batch.
            for n in (7, 1):
                out = sess.run(logits, {images: np.zeros((n, 24, 24, 3))})
                assert out.shape == (n, 10)


def test_initial_loss_is_chance_plus_weight_decay():
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        images = tf.constant(rng.normal(size=(64, 24, 24, 3)), tf.float32)
        labels = tf.constant(rng.integers(0, 10, 64), tf.int32)
        total = cifar10.loss(cifar10.inference(images), labels)
        weights = {
            v.op.name.split("/")[0]: v
            for v in tf.compat.v1.trainable_variables()
            if v.op.name.endswith("weights")
        }
        ce = tf.compat.v1.get_default_graph().get_tensor_by_name("cross_entropy:0")
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            total_v, ce_v, w = sess.run([total, ce, weights])
    # The output layer starts tiny, so every class is about as likely.
    assert abs(ce_v - np.log(10)) < 0.05
    decay = sum(
        0.004 * (w[n].astype(np.float64) ** 2).sum() / 2 for n in ("local3", "local4")
    )
    assert decay > 0.5  # the decay terms really are in the total
    np.testing.assert_allclose(total_v, ce_v + decay, rtol=1e-4)


def test_fp16_model_builds_half_variables_and_float_loss():
    with flagsaver.flagsaver(use_fp16=True), tf.Graph().as_default():
        images = tf.zeros([4, 24, 24, 3], tf.float16)
        logits = cifar10.inference(images)
        total = cifar10.loss(logits, tf.zeros([4], tf.int32))
        assert logits.dtype == tf.float16
        variables = tf.compat.v1.trainable_variables()
        assert all(v.dtype.base_dtype == tf.float16 for v in variables)
        assert total.dtype == tf.float32


def test_learning_rate_schedule_drops_tenfold_at_step_136718():
    with tf.Graph().as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        images = tf.zeros([2, 24, 24, 3])
        total = cifar10.loss(cifar10.inference(images), tf.zeros([2], tf.int32))
        cifar10.train(total, global_step)
        lr = tf.compat.v1.get_default_graph().get_tensor_by_name("ExponentialDecay:0")
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            rates = {}
            for s in (0, 136717, 136718, 2 * 136718):
                sess.run(global_step.assign(s))
                rates[s] = sess.run(lr)
    np.testing.assert_allclose(
        [rates[0], rates[136717], rates[136718], rates[2 * 136718]],
        [0.1, 0.1, 0.01, 0.001],
        rtol=1e-5,
    )


def test_train_op_lowers_the_loss_on_learnable_data(trained):
    """The shared checkpoint is cifar10.train()'s, fed from memory with fixed
    seeds (helpers.train_until_learned()): the loss fell as it trained, and
    the moving averages trail the raw weights."""
    with open(os.path.join(trained, "losses.json")) as f:
        losses = json.load(f)
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(trained))
    assert reader.get_tensor("global_step") == len(losses)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5, losses
    # The moving average lies between the raw weights and where they began.
    initial = np.load(os.path.join(trained, "local3_initial.npy"))
    raw = reader.get_tensor("local3/weights")
    average = reader.get_tensor("local3/weights/ExponentialMovingAverage")
    moved = np.abs(raw - initial).sum()
    assert 0 < np.abs(average - raw).sum() < moved


def tensorflows_lrn(x, depth_radius, bias, alpha, beta, name):
    """tf.nn.lrn as it is, with TensorFlow's own gradient."""
    return tf.nn.lrn(x, depth_radius, bias=bias, alpha=alpha, beta=beta, name=name)


def relative_difference(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


# Under the bf16 rewrite, cifar10.lrn() computes in bfloat16, while
# TensorFlow's LRN and LRNGrad stay float32: the two agree to bfloat16's
# rounding, within two of its steps at the largest value (8 significant
# bits: a step is 2**-7 of the value). Measured: 1.5 steps for the values,
# 1.0 for the gradient.
BFLOAT16_ROUNDING = 2 * 2.0**-7


@pytest.mark.parametrize(
    "mixed_precision, tolerance", [("off", 1e-5), ("bf16", BFLOAT16_ROUNDING)]
)
def test_the_lrn_values_and_gradient_are_tensorflows(mixed_precision, tolerance):
    rng = np.random.default_rng(1)
    with (
        flagsaver.flagsaver(mixed_precision=mixed_precision),
        tf.Graph().as_default(),
        tf.compat.v1.Session(config=cifar10.session_config()) as sess,
    ):
        # Values as large as the trained network's: the normalization bites.
        # Fed, not constants, which TensorFlow would fold in float32.
        x = tf.compat.v1.placeholder(tf.float32, [8, 6, 6, 64])
        dy = tf.compat.v1.placeholder(tf.float32, [8, 6, 6, 64])
        feed = {x: rng.normal(0, 30, (8, 6, 6, 64)), dy: rng.normal(size=(8, 6, 6, 64))}
        for radius, beta in ((4, 0.75), (2, 0.5)):
            settings = dict(depth_radius=radius, bias=1.0, alpha=0.001 / 9, beta=beta)
            ours = cifar10.lrn(x, name="ours", **settings)
            theirs = tensorflows_lrn(x, name="theirs", **settings)
            (mine,), (reference,), y, y_reference = sess.run(
                [tf.gradients(ours, x, dy), tf.gradients(theirs, x, dy), ours, theirs],
                feed,
            )
            assert relative_difference(y, y_reference) < tolerance
            # The second term, which the normalization adds, is not small here.
            assert relative_difference(feed[dy], reference) > 0.05
            assert relative_difference(mine, reference) < tolerance, (radius, beta)


def loss_and_gradients(normalize, mixed_precision, checkpoint, labels, images):
    """The trained model's loss on a batch and the gradient of each variable,
    with normalize as its LRN."""
    with (
        mock.patch.object(cifar10, "lrn", normalize),
        flagsaver.flagsaver(mixed_precision=mixed_precision),
        tf.Graph().as_default(),
        tf.compat.v1.Session(config=cifar10.session_config()) as sess,
    ):
        logits = cifar10.inference(cifar10_input.eval_images(tf.constant(images)))
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.constant(labels, tf.int32), logits=logits
            )
        )
        variables = tf.compat.v1.trainable_variables()
        tf.compat.v1.train.Saver().restore(sess, checkpoint)
        return sess.run([loss, *tf.gradients(loss, variables)])


def test_the_models_loss_and_gradients_are_those_of_tensorflows_lrn(trained, dataset):
    batch = (tf.train.latest_checkpoint(trained), *(a[:64] for a in dataset["test"]))
    ours = loss_and_gradients(cifar10.lrn, "off", *batch)
    theirs = loss_and_gradients(tensorflows_lrn, "off", *batch)
    for mine, reference in zip(ours, theirs, strict=True):
        assert relative_difference(mine, reference) < 1e-5


def test_the_models_loss_and_gradients_under_the_bf16_rewrite(trained, dataset):
    # cifar10.lrn() then computes in bfloat16 forward and back, TensorFlow's
    # LRN and LRNGrad in float32: one rounding more, so the model's loss and
    # gradients lie farther from float32's than with TensorFlow's LRN under
    # the rewrite (here at most 1.7 times as far), but not twice as far.
    batch = (tf.train.latest_checkpoint(trained), *(a[:64] for a in dataset["test"]))
    ours = loss_and_gradients(cifar10.lrn, "bf16", *batch)
    theirs = loss_and_gradients(tensorflows_lrn, "bf16", *batch)
    exact = loss_and_gradients(tensorflows_lrn, "off", *batch)
    for mine, reference, float32 in zip(ours, theirs, exact, strict=True):
        rewrite = relative_difference(reference, float32)
        assert 0 < rewrite < 0.2  # the rewrite computes otherwise, not wildly
        assert relative_difference(mine, float32) < 2 * rewrite
