"""Local response normalization: the model's two LRN layers, forward and
gradient, on inputs of their shapes at the training batch size, with
TensorFlow's own kernels (tf.nn.lrn, as the tutorial had it) and with
cifar10.lrn(), in short windows in turns, in float32 and under the bfloat16
rewrite of --mixed_precision=bf16 (which computes cifar10.lrn()'s matrix
products in bfloat16 and leaves TensorFlow's LRN in float32). Each ratio is
the median of the turns' ratios, so that a slow spell of a shared machine
falls on both."""

import contextlib
import statistics

import numpy as np
import tensorflow as tf

import cifar10
from benchmarks import common

ROWS = common.rows("""
LRN layers, TensorFlow's                   | lrn_float32_tensorflow | %.0f examples/sec
the same, cifar10.lrn()                    | lrn_float32_ours       | %.0f examples/sec
    ours/TensorFlow's, median of the turns | lrn_float32_ratio      | %.3f
LRN layers, bf16 rewrite, TensorFlow's     | lrn_bf16_tensorflow    | %.0f examples/sec
the same, cifar10.lrn()                    | lrn_bf16_ours          | %.0f examples/sec
    ours/TensorFlow's, median of the turns | lrn_bf16_ratio         | %.3f
""")

# The model's two LRN layers: the shape of their inputs (after the first
# pooling, and after the second convolution) and their settings.
SHAPE = [12, 12, 64]
SETTINGS = dict(depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75)


def measure(run):
    figures = {}
    size = run.size
    for mixed_precision in ("off", "bf16"):
        print("LRN, --mixed_precision=%s ..." % mixed_precision, flush=True)
        with (
            lrn_layers(run.size.batch_size, tensorflows_lrn, mixed_precision) as theirs,
            lrn_layers(run.size.batch_size, cifar10.lrn, mixed_precision) as ours,
        ):
            rates = common.steps_in_turns(
                {"theirs": theirs, "ours": ours},
                8 * size.windows,
                lambda step: common.median_rate(
                    step, run.size.batch_size, 1, max(size.steps // 2, 2), warmup=0
                ),
            )
        key = "lrn_" + ("float32" if mixed_precision == "off" else "bf16")
        figures[key + "_tensorflow"] = statistics.median(rates["theirs"])
        figures[key + "_ours"] = statistics.median(rates["ours"])
        figures[key + "_ratio"] = common.median_of_ratios(
            "ours/TensorFlow's", rates["ours"], rates["theirs"]
        )
    return figures


def tensorflows_lrn(x, depth_radius, bias, alpha, beta, name):
    """tf.nn.lrn, with TensorFlow's own forward and gradient kernels."""
    return tf.nn.lrn(x, depth_radius, bias=bias, alpha=alpha, beta=beta, name=name)


@contextlib.contextmanager
def lrn_layers(batch_size, lrn, mixed_precision):
    """A function that runs the model's two LRN layers made by lrn, forward
    and gradient, on inputs held in variables (which no optimization folds
    away), in a graph and session of their own."""
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        outputs = []
        for i in (1, 2):
            x = tf.Variable(rng.normal(size=[batch_size, *SHAPE]), dtype=tf.float32)
            y = lrn(x, name="norm%d" % i, **SETTINGS)
            dy = tf.constant(rng.normal(size=[batch_size, *SHAPE]), tf.float32)
            outputs += [y, *tf.gradients(y, x, grad_ys=dy)]
        config = common.session_config(mixed_precision)
        with tf.compat.v1.Session(config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            yield lambda: sess.run(outputs)
