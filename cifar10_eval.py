"""Evaluates the model's checkpoints: precision @ 1 on the test set of the
data set that cifar10_input.py describes.

    python cifar10_eval.py --checkpoint_dir=TRAIN_DIR

Started beside cifar10_train.py, it scores each new checkpoint once, every
--eval_interval_secs, with the weights' moving averages (which score better
than the raw weights), and prints

    <date time>: precision @ 1 = 0.NNN (step S, N images, R images/sec)
    Next look for a new checkpoint at HH:MM:SS.

A look that finds nothing new says "No new checkpoint; next look at
HH:MM:SS." The first checkpoint of a new training is step 0, the untrained
model, which scores about chance.

Each of the first --num_examples images is counted exactly once. With
--run_once (which scores the newest checkpoint and exits) or --per_class, a
table follows: each class's images and recall (the share of them classified
right), and the three likeliest mistakes. For TensorBoard, at the
checkpoint's global step in --eval_dir: 'Precision @ 1', 'Recall/<class>'
for each class, and the confusion matrix (rows the true class, columns the
predicted one) as an image and as a table of counts. All come from the one
pass over the images.
"""

from support import startup

if __name__ == "__main__":
    startup.before_tensorflow()

import datetime
import functools
import io
import os
import textwrap
import time
import unicodedata

import numpy as np
import tensorflow as tf

import cifar10
import cifar10_input
from support import bfloat16, checkpoints, download, folders, memory

FLAGS = tf.compat.v1.flags.FLAGS

tf.compat.v1.flags.DEFINE_string(
    "checkpoint_dir",
    "/tmp/%s_train" % cifar10.__name__,
    "Folder the training binary writes its checkpoints to (its --train_dir).",
)
checkpoints.refuse_brackets("checkpoint_dir")
tf.compat.v1.flags.DEFINE_string(
    "eval_dir",
    "/tmp/%s_eval" % cifar10.__name__,
    "Folder to write the scores' event logs to, for TensorBoard.",
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
    "How often (in seconds) to look for a new checkpoint.",
    lower_bound=0,
)
tf.compat.v1.flags.DEFINE_integer(
    "num_examples",
    None,
    "How many images of the split to score (default: every one, the %d "
    "test images of %s)."
    % (cifar10_input.NUM_EXAMPLES_PER_EPOCH_FOR_EVAL, cifar10_input.DATA_SET),
    lower_bound=1,
)
tf.compat.v1.flags.DEFINE_boolean(
    "run_once", False, "Score the newest checkpoint once and exit."
)
tf.compat.v1.flags.DEFINE_boolean(
    "per_class",
    False,
    "Print each class's recall and the likeliest mistakes below every "
    "precision line (--run_once always does).",
)

# --help lists these of the model's and the data's flags beside this
# binary's own, with what they do here.
startup.use_flags(
    __name__,
    "data_dir",
    "data_url",
    "data_md5",
    batch_size="Images scored at a time.",
    **cifar10.SCORING_HELPS,
)

# How often a long evaluation says how far it has come.
PROGRESS_SECS = 30


class EvalError(startup.Error):
    """Evaluation cannot go on; the message says why and what to do."""


def eval_once(restore, summary_writer, outcome, summary_op, checkpoint, scope):
    """Scores one checkpoint on the first --num_examples images.

    Args:
      restore: restore(session, checkpoint) loads the weights to score.
      summary_writer: writes the summaries to --eval_dir.
      outcome: (labels, predictions) Tensors [<=batch], from outcome().
      summary_op: the evaluation graph's summaries.
      checkpoint: path prefix of the checkpoint to score.
      scope: (the class names, the number of images to score).

    Returns:
      The precision.
    """
    class_names, num_examples = scope
    with tf.compat.v1.Session(config=cifar10.session_config()) as sess:
        global_step = checkpoints.step(checkpoint)
        restore(sess, checkpoint)
        matrix, rate, summary_str = _confusion_matrix(
            sess, outcome, summary_op, len(class_names), num_examples
        )

    counted = int(matrix.sum())
    precision = np.trace(matrix) / counted
    print(
        "%s: precision @ 1 = %.3f (step %d, %d images, %.1f images/sec)"
        % (datetime.datetime.now(), precision, global_step, counted, rate),
        flush=True,
    )
    if global_step == 0:  # the first checkpoint of a new training
        print(
            "Step 0 is the untrained model: chance alone gets about 1 in %d right."
            % len(class_names),
            flush=True,
        )
    if FLAGS.run_once or FLAGS.per_class:
        print(per_class_table(matrix, class_names), flush=True)
    summary = tf.compat.v1.Summary()
    summary.ParseFromString(summary_str)
    summary.value.add(tag="Precision @ 1", simple_value=precision)
    _add_per_class_summaries(summary, matrix, class_names, global_step)
    summary_writer.add_summary(summary, global_step)
    summary_writer.flush()
    return precision


def outcome(labels, logits):
    """Each image's label, and the class the model gives it.

    A prediction that tf.nn.in_top_k(k=1) counts as right (the label's logit
    is the largest, ties included) is the label itself, so the confusion
    matrix's diagonal holds exactly the images that precision @ 1 counts.

    Returns:
      (labels, predictions): int32 Tensors [<=batch].
    """
    logits = tf.cast(logits, tf.float32)
    right = tf.nn.in_top_k(targets=labels, predictions=logits, k=1)
    predictions = tf.cast(tf.argmax(logits, axis=1), tf.int32)
    return labels, tf.where(right, labels, predictions)


def _confusion_matrix(sess, outcome, summary_op, num_classes, num_examples):
    """Runs the input over the first num_examples images.

    Returns:
      (confusion matrix [num_classes, num_classes] of counts, rows the true
      class and columns the predicted one; images/sec; serialized
      summaries).
    """
    # The epoch counter of the input is a local variable.
    sess.run(tf.compat.v1.local_variables_initializer())
    coord = tf.train.Coordinator()
    threads = tf.compat.v1.train.start_queue_runners(sess=sess, coord=coord)
    matrix = np.zeros([num_classes, num_classes], np.int64)
    counted = 0
    begin = time.time()
    try:
        # The summaries ride along with the first batch: a run of their own
        # would take a batch away from the count.
        (labels, predictions), summary_str = sess.run([outcome, summary_op])
        # The rate leaves out the first batch, which also pays for start-up:
        # threads, kernel set-up and the summaries.
        first_batch = min(len(labels), num_examples)
        start = last_report = time.time()
        while True:
            keep = num_examples - counted
            np.add.at(matrix, (labels[:keep], predictions[:keep]), 1)
            counted += len(labels[:keep])
            if counted >= num_examples:
                break
            if time.time() - last_report > PROGRESS_SECS:
                last_report = time.time()
                print(
                    "  scored %d of %d images..." % (counted, num_examples),
                    flush=True,
                )
            labels, predictions = sess.run(outcome)
    except tf.errors.OutOfRangeError:
        pass  # Fewer images than --num_examples; checked beforehand.
    finally:
        coord.request_stop()
        coord.join(threads, stop_grace_period_secs=10)
    if counted > first_batch:
        rate = (counted - first_batch) / (time.time() - start)
    else:
        rate = counted / (time.time() - begin)
    return matrix, rate, summary_str


def per_class_table(matrix, class_names):
    """Each class's image count and recall (the share of them classified
    right), and the likeliest mistakes.

    Returns:
      The lines to print below the precision line.
    """
    # Padded by the columns a terminal gives them, two for a character of
    # Chinese, none for a combining accent, so that the columns line up.
    width = max(_display_width(name) for name in [*class_names, "class"])
    lines = ["  %s  images  recall" % _padded("class", width)]
    for i, name in enumerate(class_names):
        count = matrix[i].sum()
        recall = "%6.3f" % (matrix[i, i] / count) if count else "     -"
        lines.append("  %s  %6d  %s" % (_padded(name, width), count, recall))
    mistakes = [
        (-matrix[i, j], class_names[i], class_names[j])
        for i in range(len(class_names))
        for j in range(len(class_names))
        if i != j and matrix[i, j]
    ]
    top = ", ".join(
        "%s taken for %s (%d)" % (true, predicted, -count)
        for count, true, predicted in sorted(mistakes)[:3]
    )
    lines.append("  Most confused: %s" % (top or "none"))
    return "\n".join(lines)


def _display_width(text):
    """The columns text takes on a terminal."""
    return sum(
        0
        if unicodedata.combining(c)
        else 2
        if unicodedata.east_asian_width(c) in ("W", "F")
        else 1
        for c in text
    )


def _padded(text, width):
    return text + " " * (width - _display_width(text))


def _add_per_class_summaries(summary, matrix, class_names, step):
    """Adds each class's recall, and the confusion matrix as an image (a
    heat map) and as a table of counts (TensorBoard's Text tab)."""
    for i, name in enumerate(class_names):
        if matrix[i].sum():
            summary.value.add(
                tag="Recall/%s" % name,
                simple_value=matrix[i, i] / matrix[i].sum(),
            )
    png, height, width = confusion_image(matrix, class_names, step)
    summary.value.add(
        tag="Confusion matrix",
        image=tf.compat.v1.Summary.Image(
            height=height, width=width, colorspace=4, encoded_image_string=png
        ),
    )
    names = class_names
    if class_labels(class_names)[2]:  # the picture numbers the classes
        names = ["%d %s" % (i, name) for i, name in enumerate(class_names)]
    table = ["| true \\ predicted | %s |" % " | ".join(names)]
    table.append("|---" * (len(names) + 1) + "|")
    for name, row in zip(names, matrix, strict=True):
        table.append("| **%s** | %s |" % (name, " | ".join(str(n) for n in row)))
    text = summary.value.add(tag="Confusion matrix (counts)")
    text.metadata.plugin_data.plugin_name = "text"
    text.tensor.CopyFrom(tf.make_tensor_proto("\n".join(table)))


def confusion_image(matrix, class_names, step):
    """The confusion matrix as a heat map, with the class names on both axes
    and the count in each cell.

    Returns:
      (PNG bytes, height, width).
    """
    # matplotlib's object interface with its Agg canvas draws to memory,
    # without a display and without pyplot's global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    size = len(class_names)
    figure = Figure(figsize=(1.6 + 0.55 * size, 1.2 + 0.5 * size), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
    labels, font, legend = class_labels(class_names)
    # Names as they are: "$" starts no formula.
    text = {"fontproperties": font, "parse_math": False}
    axes.set_xticks(range(size), labels, rotation=45, ha="right", **text)
    axes.set_yticks(range(size), labels, **text)
    axes.set_xlabel("predicted class")
    if legend:
        # Below the matrix, across the figure: about 15 characters of this
        # size to an inch.
        inches = figure.get_figwidth()
        figure.supxlabel("\n".join(textwrap.wrap(legend, int(15 * inches))), fontsize=8)
    axes.set_ylabel("true class")
    axes.set_title("Confusion matrix, step %d" % step)
    threshold = matrix.max() / 2
    for i in range(size):
        for j in range(size):
            axes.text(
                j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                color="white" if matrix[i, j] > threshold else "black",
            )  # fmt: skip
    figure.tight_layout()
    canvas.draw()
    buffer = io.BytesIO()
    canvas.print_png(buffer)
    width, height = canvas.get_width_height()
    return buffer.getvalue(), height, width


def class_labels(class_names):
    """How the confusion-matrix image names the classes: by name, in the
    default font or else in an installed font that has each of their
    characters; or, where no font has them all, by number, with a legend.

    Returns:
      (the labels, the FontProperties to write them with or None for the
      default, the legend or None).
    """
    return _class_labels(tuple(class_names))


@functools.cache  # the fonts are looked through once a process
def _class_labels(class_names):
    from matplotlib import font_manager  # noqa: PLC0415

    default = font_manager.findfont(font_manager.FontProperties())
    if _draws(default, "".join(class_names)):
        return list(class_names), None, None
    for entry in sorted(font_manager.fontManager.ttflist, key=lambda e: e.fname):
        # matplotlib's last resort draws a box for any character.
        if "LastResort" not in entry.fname and _draws(
            entry.fname, "".join(class_names)
        ):
            return (
                list(class_names),
                font_manager.FontProperties(fname=entry.fname),
                None,
            )
    drawn = [i for i, name in enumerate(class_names) if _draws(default, name)]
    missing = [str(i) for i in range(len(class_names)) if i not in drawn]
    return (
        [str(i) for i in range(len(class_names))],
        None,
        "%s%s%s: no installed font has %s (see the text summary 'Confusion matrix "
        "(counts)')"
        % (
            ", ".join("%d %s" % (i, class_names[i]) for i in drawn),
            "; " if drawn else "",
            ", ".join(missing),
            "its name" if len(missing) == 1 else "their names",
        ),
    )


def _draws(font_file, text):
    """Whether the font in font_file has every character of text."""
    from matplotlib.ft2font import FT2Font  # noqa: PLC0415

    font = FT2Font(font_file)
    return all(font.get_char_index(ord(c)) for c in set(text))


def evaluate(data, num_examples):
    """Scores checkpoints from --checkpoint_dir: the newest, or each new one.

    Damaged checkpoints are skipped with a warning, and so (unless
    --run_once) are checkpoints that do not fit the model or the data.

    Args:
      data: what --data_dir holds, from cifar10.data_set().
      num_examples: images to score.

    Raises:
      EvalError: --run_once found no checkpoint it could score.
    """
    with tf.Graph().as_default() as g:
        eval_data = FLAGS.eval_data == "test"
        images, labels = cifar10.inputs(eval_data=eval_data)
        logits = cifar10.inference(images, data.num_classes)
        outcomes = outcome(labels, logits)
        restore, variables = checkpoints.restorer()
        summary_op = tf.compat.v1.summary.merge_all()
        summary_writer = tf.compat.v1.summary.FileWriter(FLAGS.eval_dir, g)

        def score(checkpoint):
            """Scores it; False if it vanished while being read."""
            try:
                problem = _mismatch(checkpoint, variables(checkpoint), data)
                if problem:
                    _warn_or_raise(problem)
                else:
                    eval_once(
                        restore, summary_writer, outcomes, summary_op, checkpoint,
                        (data.class_names, num_examples),
                    )  # fmt: skip
            except checkpoints.READ_ERRORS:
                if not checkpoints.vanished(checkpoint):
                    raise
                print(
                    "Warning: %s vanished while being read (training keeps only "
                    "its newest checkpoints); skipping it." % checkpoint,
                    flush=True,
                )
                return False
            return True

        _each_new_checkpoint(score)


def _mismatch(checkpoint, variables, data):
    """Why the checkpoint cannot be scored on this data, or None."""
    trained_on = checkpoints.class_names(os.path.dirname(checkpoint))
    if trained_on is not None and trained_on != data.class_names:
        return (
            "%s was trained on the classes %s; --data_dir holds %s. Evaluate it on "
            "the data it was trained on."
            % (
                checkpoint,
                checkpoints.describe_classes(trained_on),
                checkpoints.describe_classes(data.class_names),
            )
        )
    problem = checkpoints.mismatch(checkpoint, variables)
    if problem:
        return (
            "%s does not match this model: %s. Evaluate it with the model and flags "
            "it was trained with (--use_fp16 or not)." % (checkpoint, problem)
        )
    return None


def _each_new_checkpoint(score):
    """Calls score(checkpoint) for the newest readable checkpoint once, or
    (unless --run_once) for each new one, looking every --eval_interval_secs.
    When score() says the checkpoint vanished, it looks again at once.

    Raises:
      EvalError: --run_once and no checkpoint can be read.
    """
    last, reported, waiting = None, set(), False
    while True:
        checkpoint, damaged = checkpoints.newest(FLAGS.checkpoint_dir, trusted={last})
        for path, reason in damaged:
            if path not in reported:
                reported.add(path)
                print(
                    "Warning: skipping %s, which cannot be read (%s)." % (path, reason),
                    flush=True,
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
        found, again = None, False  # None: a new checkpoint, scored
        if checkpoint is None:
            found = "No checkpoint file found at %s" % FLAGS.checkpoint_dir
            if waiting:
                found, again = "No checkpoint yet", True
            waiting = True
        elif checkpoint == last:
            found, again = "No new checkpoint", True
        else:
            last = checkpoint
            if not score(checkpoint):
                continue
        if FLAGS.run_once:
            return
        # Looks without a pause between them would say "nothing new" without
        # end.
        if FLAGS.eval_interval_secs or not again:
            _say_when_it_looks_next(found)
        time.sleep(FLAGS.eval_interval_secs)


def _say_when_it_looks_next(found):
    """The line that ends a look: what it found (None after a score) and the
    time of the next look."""
    at = time.strftime(
        "%H:%M:%S", time.localtime(time.time() + FLAGS.eval_interval_secs)
    )
    if found:
        print("%s; next look at %s." % (found, at), flush=True)
    else:
        print("Next look for a new checkpoint at %s." % at, flush=True)


def _warn_or_raise(message):
    """With --run_once, the error; else a warning, and evaluation goes on."""
    if FLAGS.run_once:
        raise EvalError(message)
    print("Warning: %s Skipping it." % message, flush=True)


def _num_examples(data):
    """--num_examples, or every image of the split.

    Raises:
      EvalError: --num_examples is more than the split's images.
    """
    available = data.num_test if FLAGS.eval_data == "test" else data.num_train
    if FLAGS.num_examples and FLAGS.num_examples > available:
        raise EvalError(
            "--num_examples=%d is more than the %d images of the %s data."
            % (FLAGS.num_examples, available, FLAGS.eval_data)
        )
    return FLAGS.num_examples or available


@startup.user_errors(cifar10_input.DataError)
def main(argv):
    del argv
    if FLAGS.mixed_precision == "bf16":
        bfloat16.say_if_emulated("--mixed_precision=bf16")
    download.fetch(
        FLAGS.data_url, FLAGS.data_md5, FLAGS.data_dir, cifar10_input.DATA_FOLDER,
        sizes={cifar10_input.DATA_MD5: cifar10_input.ARCHIVE_BYTES},
    )  # fmt: skip
    data = cifar10.data_set()
    num_examples = _num_examples(data)
    memory.check(
        cifar10.inference, cifar10.IMAGE_SHAPE, FLAGS.batch_size, "evaluate",
        queue_images=cifar10.queued_images(data, training=False),
        dtype=cifar10.float_type(),
    )  # fmt: skip
    # Made last, so that a start that fails leaves no --eval_dir.
    folders.writable(FLAGS.eval_dir, "eval_dir")
    evaluate(data, num_examples)


if __name__ == "__main__":
    startup.run(main)
