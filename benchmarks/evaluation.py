"""Evaluation: the forward pass fed by cifar10_eval.py's input pipeline
against the same pass fed from a batch in memory (interleaved windows in one
session), the pipeline with and without its confusion matrix, and the rate
that cifar10_eval.py --run_once itself reports."""

import statistics

import numpy as np
import tensorflow as tf

import cifar10
import cifar10_eval
import cifar10_input
from benchmarks import common
from harness.sessions import queue_session

ROWS = common.rows("""
forward ceiling, batch in memory      | forward_ceiling     | %.0f images/sec
same graph fed by the eval pipeline   | eval_pipeline       | %.0f images/sec
    eval/forward                      | eval_ratio          | %.3f
the same, counting right answers only | eval_without_matrix | %.0f images/sec
    with/without the confusion matrix | matrix_ratio        | %.3f
cifar10_eval.py, the test images      | eval_end_to_end     | %.0f images/sec
""")


def measure(run):
    print("the eval pipeline beside the forward ceiling ...", flush=True)
    figures = pipeline_and_ceiling(run, 2 * run.size.windows)
    print("cifar10_eval.py ...", flush=True)
    figures["eval_end_to_end"] = common.evaluation(run, run.trained())
    return figures


def pipeline_and_ceiling(run, turns):
    """The eval graph fed by cifar10_eval.py's pipeline (counting a
    confusion matrix, as cifar10_eval.py does, and counting right answers
    only), and the same forward pass fed from a batch in memory, in one
    session with their windows interleaved, so that the machine's drift
    cancels out.

    Returns:
      {figure: value}: the three rates and the medians of the turns' ratios.
    """
    rng = np.random.default_rng(0)
    batch = run.size.batch_size
    with tf.Graph().as_default():
        # The training files: enough images for every window.
        images, labels = cifar10_input.inputs(False, run.data_folder(), batch)
        fixed_images = tf.constant(rng.normal(size=(batch, 24, 24, 3)), tf.float32)
        fixed_labels = tf.constant(rng.integers(0, 10, batch), tf.int32)
        with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope()) as scope:
            logits = cifar10.inference(images)
            outcome = cifar10_eval.outcome(labels, logits)
            right_only = tf.nn.in_top_k(targets=labels, predictions=logits, k=1)
            scope.reuse_variables()
            fixed = tf.nn.in_top_k(
                targets=fixed_labels, predictions=cifar10.inference(fixed_images), k=1
            )
        matrix = np.zeros([cifar10.NUM_CLASSES] * 2, np.int64)
        runs = {
            "eval_pipeline": lambda: np.add.at(matrix, sess.run(outcome), 1),
            "eval_without_matrix": lambda: np.sum(sess.run(right_only)),
            "forward_ceiling": lambda: sess.run(fixed),
        }
        with queue_session() as sess:
            rates = common.steps_in_turns(
                runs,
                turns,
                lambda step: common.median_rate(step, batch, 1, run.size.steps, 1),
            )
    figures = {key: statistics.median(values) for key, values in rates.items()}
    for key, over in (
        ("eval_ratio", "forward_ceiling"),
        ("matrix_ratio", "eval_without_matrix"),
    ):
        figures[key] = common.median_of_ratios(
            "eval pipeline / " + over, rates["eval_pipeline"], rates[over]
        )
    return figures
