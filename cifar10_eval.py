"""Evaluates CIFAR-10 checkpoints: precision @ 1 on the test set.

    python cifar10_eval.py --checkpoint_dir=/tmp/cifar10_train

Started beside cifar10_train.py, it scores each new checkpoint once, every
--eval_interval_secs, with the weights' moving averages (which score better
than the raw weights), and prints

    <date time>: precision @ 1 = 0.NNN (step S, N images)

Each of the first --num_examples images is counted exactly once. The score
also goes to --eval_dir as a 'Precision @ 1' summary at the checkpoint's
global step, for TensorBoard. --run_once scores the newest checkpoint and
exits.
"""

import cifar10_app

import datetime
import sys
import time

import numpy as np
import tensorflow as tf

import cifar10
import cifar10_checkpoint
import cifar10_input

FLAGS = tf.compat.v1.flags.FLAGS
# --help lists the shared flags beside this binary's own.
tf.compat.v1.flags.adopt_module_key_flags(cifar10)
tf.compat.v1.flags.adopt_module_key_flags(cifar10_checkpoint)

tf.compat.v1.flags.DEFINE_string(
    "eval_dir", "/tmp/cifar10_eval", "Folder to write event logs to."
)
tf.compat.v1.flags.DEFINE_enum(
    "eval_data",
    "test",
    ["test", "train_eval"],
    "'test' scores the test set, 'train_eval' the training set.",
)
tf.compat.v1.flags.DEFINE_integer(
    "eval_interval_secs",
    60 * 5,
    "How often to look for a new checkpoint.",
    lower_bound=0,
)
tf.compat.v1.flags.DEFINE_integer(
    "num_examples", 10000, "Number of examples to run.", lower_bound=1
)
tf.compat.v1.flags.DEFINE_boolean(
    "run_once", False, "Score the newest checkpoint once and exit."
)

# How often a long evaluation says how far it has come.
PROGRESS_SECS = 30


class EvalError(cifar10_app.Error):
    """Evaluation cannot go on; the message says why and what to do."""


def eval_once(restore, summary_writer, top_k_op, summary_op, checkpoint):
    """Scores one checkpoint on the first --num_examples images.

    Args:
      restore: restore(session, checkpoint) loads the weights to score.
      summary_writer: writes the summaries to --eval_dir.
      top_k_op: bool Tensor [<=batch], whether each prediction is right.
      summary_op: the evaluation graph's summaries.
      checkpoint: path prefix of the checkpoint to score.

    Returns:
      The precision, or None when the checkpoint vanished while being read
      (training keeps only the newest few).
    """
    with tf.compat.v1.Session() as sess:
        try:
            global_step = cifar10_checkpoint.step(checkpoint)
            restore(sess, checkpoint)
        except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as e:
            print(
                "Warning: could not read %s (%s); it was probably replaced by a "
                "newer one." % (checkpoint, type(e).__name__),
                flush=True,
            )
            return None
        true_count, counted, rate, summary_str = _count_correct(
            sess, top_k_op, summary_op
        )

    precision = true_count / counted
    print(
        "%s: precision @ 1 = %.3f (step %d, %d images, %.1f images/sec)"
        % (datetime.datetime.now(), precision, global_step, counted, rate),
        flush=True,
    )
    summary = tf.compat.v1.Summary()
    summary.ParseFromString(summary_str)
    summary.value.add(tag="Precision @ 1", simple_value=precision)
    summary_writer.add_summary(summary, global_step)
    summary_writer.flush()
    return precision


def _count_correct(sess, top_k_op, summary_op):
    """Runs the input over the first --num_examples images.

    Returns:
      (right predictions, images counted, images/sec, serialized summaries).
    """
    # The epoch counter of the input is a local variable.
    sess.run(tf.compat.v1.local_variables_initializer())
    coord = tf.train.Coordinator()
    threads = tf.compat.v1.train.start_queue_runners(sess=sess, coord=coord)
    num_examples = FLAGS.num_examples
    true_count = counted = 0
    begin = time.time()
    try:
        # The summaries ride along with the first batch: a run of their own
        # would take a batch away from the count.
        correct, summary_str = sess.run([top_k_op, summary_op])
        # The rate leaves out the first batch, which also pays for start-up:
        # threads, kernel set-up and the summaries.
        first_batch = min(len(correct), num_examples)
        start = last_report = time.time()
        while True:
            correct = correct[: num_examples - counted]
            true_count += int(np.sum(correct))
            counted += len(correct)
            if counted >= num_examples:
                break
            if time.time() - last_report > PROGRESS_SECS:
                last_report = time.time()
                print(
                    "  scored %d of %d images..." % (counted, num_examples),
                    flush=True,
                )
            correct = sess.run(top_k_op)
    except tf.errors.OutOfRangeError:
        pass  # Fewer images than --num_examples; checked beforehand.
    finally:
        coord.request_stop()
        coord.join(threads, stop_grace_period_secs=10)
    if counted > first_batch:
        rate = (counted - first_batch) / (time.time() - start)
    else:
        rate = counted / (time.time() - begin)
    return true_count, counted, rate, summary_str


def evaluate():
    """Scores checkpoints from --checkpoint_dir: the newest, or each new one.

    Damaged checkpoints are skipped with a warning, and so (unless
    --run_once) are checkpoints that do not fit the model.

    Raises:
      EvalError: --run_once found no checkpoint it could score.
    """
    with tf.Graph().as_default() as g:
        eval_data = FLAGS.eval_data == "test"
        images, labels = cifar10.inputs(eval_data=eval_data)
        logits = cifar10.inference(images)
        top_k_op = tf.nn.in_top_k(
            targets=labels, predictions=tf.cast(logits, tf.float32), k=1
        )
        restore, variables = cifar10_checkpoint.restorer()
        summary_op = tf.compat.v1.summary.merge_all()
        summary_writer = tf.compat.v1.summary.FileWriter(FLAGS.eval_dir, g)

        def score(checkpoint):
            problem = cifar10_checkpoint.mismatch(checkpoint, variables(checkpoint))
            if problem:
                _warn_or_raise(
                    "%s does not match this model: %s. Evaluate it with the model "
                    "and flags it was trained with (--use_fp16 or not)."
                    % (checkpoint, problem)
                )
            elif (
                eval_once(restore, summary_writer, top_k_op, summary_op, checkpoint)
                is None
                and FLAGS.run_once
            ):
                raise EvalError("%s vanished while being read." % checkpoint)

        _each_new_checkpoint(score)


def _each_new_checkpoint(score):
    """Calls score(checkpoint) for the newest readable checkpoint once, or
    (unless --run_once) for each new one, looking every --eval_interval_secs.

    Raises:
      EvalError: --run_once and no checkpoint can be read.
    """
    last, reported, waiting = None, set(), False
    while True:
        checkpoint, damaged = cifar10_checkpoint.newest(
            FLAGS.checkpoint_dir, trusted={last}
        )
        for path, reason in damaged:
            if path not in reported:
                reported.add(path)
                print(
                    "Warning: skipping %s, which cannot be read (%s)." % (path, reason)
                )
        if checkpoint is None and FLAGS.run_once:
            raise EvalError(
                "No checkpoint in %s can be read: %s."
                % (FLAGS.checkpoint_dir, "; ".join("%s: %s" % d for d in damaged))
                if damaged
                else "No checkpoint file found at %s. Train first, or point "
                "--checkpoint_dir at the training binary's --train_dir."
                % FLAGS.checkpoint_dir
            )
        if checkpoint is None and not waiting:
            print(
                "No checkpoint file found at %s; looking again every %d s."
                % (FLAGS.checkpoint_dir, FLAGS.eval_interval_secs),
                flush=True,
            )
            waiting = True
        elif checkpoint is not None and checkpoint != last:
            last = checkpoint
            score(checkpoint)
        if FLAGS.run_once:
            return
        time.sleep(FLAGS.eval_interval_secs)


def _warn_or_raise(message):
    """With --run_once, the error; else a warning, and evaluation goes on."""
    if FLAGS.run_once:
        raise EvalError(message)
    print("Warning: %s Skipping it." % message, flush=True)


def _check_num_examples():
    """--num_examples may not exceed the images of the chosen split.

    Raises:
      EvalError: it does.
    """
    if FLAGS.eval_data == "test":
        available = cifar10.NUM_EXAMPLES_PER_EPOCH_FOR_EVAL
    else:
        available = cifar10.NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN
    if FLAGS.num_examples > available:
        raise EvalError(
            "--num_examples=%d is more than the %d images of the %s data."
            % (FLAGS.num_examples, available, FLAGS.eval_data)
        )


def main(argv):
    del argv
    try:
        _check_num_examples()
        cifar10_app.writable_folder(FLAGS.eval_dir, "eval_dir")
        cifar10.maybe_download_and_extract()
        evaluate()
    except (cifar10_input.DataError, cifar10_app.Error) as e:
        sys.exit("Error: %s" % e)


if __name__ == "__main__":
    cifar10_app.run(main)
