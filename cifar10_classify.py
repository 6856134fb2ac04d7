"""Classifies image files with a trained model, and exports it for serving.

    python cifar10_classify.py --checkpoint_dir=TRAIN_DIR cat.jpg photos/
    python cifar10_classify.py --checkpoint_dir=TRAIN_DIR --export_dir=EXPORT_DIR

It scores with the moving averages of the weights, as evaluation does, from
the newest checkpoint in --checkpoint_dir or the one --checkpoint names. For
each JPEG, PNG, BMP, GIF or WebP file (folders are searched for the files
that packing would take: support/image_folders.py) it prints the --top_k
most likely classes:

    photos/cat.jpg: cat 0.912, dog 0.051, frog 0.020

Every image, of any size and mode, is prepared as cifar10_pack.py stores
images and evaluation reads them (support/images.py: decode(), then
cifar10_input.eval_images()): turned as its EXIF orientation says, scaled
until its shorter side fits the data set's stored size, cut to that around
its centre, then cropped to what the network sees and standardized. The
class names are those training wrote beside the checkpoint.

--export_dir writes the model as a SavedModel under <export_dir>/<step>/,
the numbered versions TensorFlow Serving reads, with two signatures:
'serving_default' takes encoded image files (string [N], 'image_bytes'),
'predict_pixels' uint8 images [N, height, width, 3] ('images'); both give
'probabilities', 'classes' and 'class_names'. The classification above runs
the very graph that is exported. Its work is bounded whatever it is sent:
a file whose header gives more than 40 million pixels (support/images.py:
MAX_PIXELS) is refused before it is decoded, an animation decoded to its
first frame alone, and a strip of an image cut before it is scaled.
"""

from support import startup

if __name__ == "__main__":
    startup.before_tensorflow()

import contextlib
import csv
import os
import re
import shutil
import sys
import tempfile

import numpy as np
import tensorflow as tf

import cifar10
import cifar10_eval  # noqa: F401  (it defines --checkpoint_dir)
import cifar10_input
from support import bfloat16, checkpoints, folders, image_folders, images, memory

FLAGS = tf.compat.v1.flags.FLAGS

tf.compat.v1.flags.DEFINE_string(
    "checkpoint",
    None,
    "A checkpoint to use instead of the newest in --checkpoint_dir, e.g. "
    "%s/model.ckpt-5000." % FLAGS["checkpoint_dir"].default,
)
checkpoints.refuse_brackets("checkpoint")
tf.compat.v1.flags.DEFINE_integer(
    "top_k", 3, "How many of the likeliest classes to print.", lower_bound=1
)
tf.compat.v1.flags.DEFINE_string(
    "output", None, "Also write the predictions to this CSV file (a new one)."
)
tf.compat.v1.flags.DEFINE_string(
    "export_dir",
    None,
    "Export the model as a SavedModel to <export_dir>/<global step>/.",
)

# --help lists these flags of the model, the data and evaluation (whose
# --checkpoint_dir this binary shares) beside its own, with what they do here.
startup.use_flags(
    __name__,
    "checkpoint_dir",
    batch_size="Image files classified at a time.",
    data_dir="Folder of the data trained on, whose class names are used when "
    "the checkpoint has none beside it.",
    **cifar10.SCORING_HELPS,
)

# The files of a checkpoint, after its path prefix.
CHECKPOINT_FILE = re.compile(r"\.(index|meta|data-\d+-of-\d+)$")


class ClassifyError(startup.Error):
    """Classification or export cannot start; the message says why."""


def build_classifier(class_names):
    """The classifier's graph, in the default graph: two ways in, one out.

    Args:
      class_names: the names of the classes, in label order.

    Returns:
      {signature name: (inputs, outputs)}, each a {name: Tensor}.
    """
    image_bytes = tf.compat.v1.placeholder(tf.string, [None], name="image_bytes")
    pixels = tf.compat.v1.placeholder(
        tf.uint8, [None, None, None, cifar10_input.DEPTH], name="images"
    )

    stored = [cifar10_input.HEIGHT, cifar10_input.WIDTH, cifar10_input.DEPTH]
    decoded = cifar10_input.eval_images(
        images.decode(image_bytes, cifar10_input.fit_images, stored)
    )
    signatures = {}
    with tf.compat.v1.variable_scope("", reuse=tf.compat.v1.AUTO_REUSE):
        for name, inputs, prepared in (
            ("serving_default", {"image_bytes": image_bytes}, decoded),
            (
                "predict_pixels",
                {"images": pixels},
                cifar10_input.prepare_images(pixels),
            ),
        ):
            signatures[name] = (inputs, _predictions(prepared, class_names))
    return signatures


def _predictions(prepared, class_names):
    """The model's outputs for prepared images."""
    if FLAGS.use_fp16:
        prepared = tf.cast(prepared, tf.float16)
    logits = tf.cast(cifar10.inference(prepared, len(class_names)), tf.float32)
    probabilities = tf.nn.softmax(logits)
    classes = tf.argmax(probabilities, axis=1)
    return {
        "probabilities": probabilities,
        "classes": classes,
        "class_names": tf.gather(tf.constant(class_names), classes),
    }


def _checkpoint():
    """The checkpoint to classify with: --checkpoint (a checkpoint, one of its
    files, or a folder of them), else the newest in --checkpoint_dir.

    Raises:
      ClassifyError: there is none that can be read.
    """
    given = FLAGS.checkpoint
    if not given:
        return _newest(FLAGS.checkpoint_dir, "--checkpoint_dir")
    if os.path.isdir(given):
        return _newest(given, "--checkpoint")
    # A checkpoint is the files <prefix>.index, <prefix>.data-... and
    # <prefix>.meta; any of them stands for it.
    checkpoint = CHECKPOINT_FILE.sub("", given)
    problem = checkpoints.damage(checkpoint)
    if problem:
        raise ClassifyError(
            "Cannot read --checkpoint=%s (%s). Pass a checkpoint, such as "
            "%s/model.ckpt-<step>, or the folder that holds it."
            % (given, problem, os.path.dirname(given) or ".")
        )
    return checkpoint


def _class_names(checkpoint):
    """The names of the classes the checkpoint was trained on: those written
    beside it, or for a checkpoint made without them, the data's in
    --data_dir (CIFAR-10's when there is none)."""
    names = checkpoints.class_names(os.path.dirname(checkpoint))
    return names if names is not None else cifar10.data_set().class_names


def _restore(sess, checkpoint):
    """Restores the moving averages of the checkpoint's weights into the model
    of the default graph.

    When that checkpoint vanishes while it is read (training keeps only its
    newest few), the newest one then takes its place, unless --checkpoint
    named it.

    Returns:
      The checkpoint restored.

    Raises:
      ClassifyError: it does not fit the model, or cannot be read.
    """
    restore, variables = checkpoints.restorer()
    while True:
        try:
            problem = checkpoints.mismatch(checkpoint, variables(checkpoint))
            if problem:
                raise ClassifyError(
                    "%s does not match this model: %s. Use the flags it was trained "
                    "with (--use_fp16 or not)." % (checkpoint, problem)
                )
            restore(sess, checkpoint)
            return checkpoint
        except checkpoints.READ_ERRORS:
            if not checkpoints.vanished(checkpoint):
                raise
            if FLAGS.checkpoint:
                raise ClassifyError(
                    "Cannot read --checkpoint=%s: it vanished while being read. "
                    "Pass a checkpoint, such as %s/model.ckpt-<step>, or the "
                    "folder that holds it."
                    % (FLAGS.checkpoint, os.path.dirname(checkpoint))
                ) from None
            print(
                "Warning: %s vanished while being read; using the newest "
                "checkpoint instead." % checkpoint,
                flush=True,
            )
            checkpoint = _checkpoint()


def _newest(folder, flag):
    """The newest readable checkpoint in folder, which flag names."""
    checkpoint, damaged = checkpoints.newest(folder)
    for path, reason in damaged:
        print("Warning: skipping %s, which cannot be read (%s)." % (path, reason))
    if checkpoint is None and flag == "--checkpoint":
        raise ClassifyError(
            "Cannot read --checkpoint=%s (it holds no checkpoint). Pass a "
            "checkpoint, such as %s/model.ckpt-<step>, or the folder that holds "
            "it." % (folder, folder)
        )
    if checkpoint is None:
        raise ClassifyError(
            "No checkpoint found in --checkpoint_dir=%s. Train first, or point it "
            "at the training binary's --train_dir (or name one with --checkpoint)."
            % folder
        )
    return checkpoint


def classify(sess, inputs, outputs, files):
    """Classifies the files in batches of --batch_size.

    A batch with a file that is not an image goes again a file at a time, so
    that the others are still classified.

    Returns:
      (results, problems): (file, probabilities) for each file classified,
      and a line for each that could not be read or is not an image.
    """
    results, problems = [], []
    for start in range(0, len(files), FLAGS.batch_size):
        batch = files[start : start + FLAGS.batch_size]
        kept, probabilities, skipped = images.run_on_files(
            lambda contents: sess.run(
                outputs["probabilities"], {inputs["image_bytes"]: contents}
            ),
            batch,
            (cifar10_input.HEIGHT, cifar10_input.WIDTH),
        )
        results.extend((batch[i], p) for i, p in zip(kept, probabilities, strict=True))
        problems += [skip.line for skip in skipped]
    return results, problems


def report(results, class_names, output):
    """Prints a line per file, and writes them to output, a CSV writer or
    None."""
    k = min(FLAGS.top_k, len(class_names))
    if output:
        output.writerow(
            ["path"]
            + [
                "%s_%d" % (column, i)
                for i in range(1, k + 1)
                for column in ("class", "probability")
            ]
        )
    for path, probabilities in results:
        top = [(class_names[i], float(probabilities[i])) for i in
               np.argsort(-probabilities, kind="stable")[:k]]  # fmt: skip
        path = images.shown(path)  # a name that is not UTF-8 as \xNN
        print(
            "%s: %s" % (path, ", ".join("%s %.3f" % pair for pair in top)), flush=True
        )
        if output:
            output.writerow([path] + [v for name, p in top for v in (name, "%.6f" % p)])


@contextlib.contextmanager
def _output():
    """A CSV writer on a new --output file, or None without --output.

    The file is made before any work, so that a name that cannot be written
    fails at once; it is removed again if the run fails.

    Raises:
      ClassifyError: the file exists, or cannot be made.
    """
    if not FLAGS.output:
        yield None
        return
    try:
        fd = os.open(FLAGS.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise ClassifyError(
            "--output=%s exists already; remove it or name a new file." % FLAGS.output
        ) from None
    except OSError as e:
        raise ClassifyError(
            "Cannot write --output=%s (%s). Name a new file in a folder you can "
            "write to." % (FLAGS.output, e.strerror or e)
        ) from None
    try:
        with os.fdopen(fd, "w", newline="") as f:
            yield csv.writer(f)
    except BaseException:
        os.remove(FLAGS.output)
        raise


def export_version(checkpoint):
    """The folder the model of checkpoint is exported to: <export_dir>/<global
    step>, the numbered versions TensorFlow Serving loads.

    Raises:
      ClassifyError: it exists already, or --export_dir cannot be written.
    """
    step = checkpoints.step(checkpoint)
    version = os.path.join(FLAGS.export_dir, str(step))
    if os.path.exists(version):
        raise ClassifyError(
            "%s exists already: the model of step %d is exported. Nothing was "
            "written." % (version, step)
        )
    folders.writable(FLAGS.export_dir, "export_dir")
    return version


def export(sess, signatures, checkpoint, version):
    """Writes the SavedModel to version, through a temporary folder renamed
    into place.

    It holds what the two signatures need and nothing else: the model's
    graph also has its summaries, weight decay and initializers, which
    serving never runs, so the weights are frozen into constants of the ops
    that the signatures reach.
    """
    outputs = [t.op.name for _, outs in signatures.values() for t in outs.values()]
    frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
        sess, sess.graph.as_graph_def(), outputs
    )
    staging = tempfile.mkdtemp(
        dir=FLAGS.export_dir, prefix=".%s-" % os.path.basename(version)
    )
    try:
        saved = os.path.join(staging, "model")
        with tf.Graph().as_default() as graph, tf.compat.v1.Session() as frozen_sess:
            tf.graph_util.import_graph_def(frozen, name="")

            def tensors(named):
                return {k: graph.get_tensor_by_name(t.name) for k, t in named.items()}

            builder = tf.compat.v1.saved_model.Builder(saved)
            builder.add_meta_graph_and_variables(
                frozen_sess,
                [tf.saved_model.SERVING],
                signature_def_map={
                    name: tf.compat.v1.saved_model.predict_signature_def(
                        tensors(inputs), tensors(outputs)
                    )
                    for name, (inputs, outputs) in signatures.items()
                },
                clear_devices=True,
                strip_default_attrs=True,
            )
            builder.save()
        os.rename(saved, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print("Exported the model of %s to %s." % (checkpoint, version), flush=True)


def run(paths):
    """Classifies the files paths name, and exports the model if asked.

    Returns:
      The exit status: 1 if a path could not be classified, else 0.

    Raises:
      ClassifyError: nothing to do, no checkpoint, or --output cannot be
        written.
    """
    if not paths and not FLAGS.export_dir:
        raise ClassifyError(
            "Nothing to do: name image files or folders to classify, or pass "
            "--export_dir to export the model."
        )
    memory.check(
        cifar10.inference, cifar10.IMAGE_SHAPE, FLAGS.batch_size, "classify",
        dtype=cifar10.float_type(),
    )  # fmt: skip
    with _output() as output:
        checkpoint = _checkpoint()
        class_names = _class_names(checkpoint)
        files, problems = image_folders.image_files(paths)
        with tf.Graph().as_default():
            signatures = build_classifier(class_names)
            with tf.compat.v1.Session(config=cifar10.session_config()) as sess:
                checkpoint = _restore(sess, checkpoint)
                version = export_version(checkpoint) if FLAGS.export_dir else None
                inputs, outputs = signatures["serving_default"]
                results, bad_files = classify(sess, inputs, outputs, files)
                report(results, class_names, output)
                problems += bad_files
                for line in problems:
                    print("Error: " + line, file=sys.stderr)
                if problems:
                    print(
                        "Error: classified %d file(s); skipped the %d above."
                        % (len(results), len(problems)),
                        file=sys.stderr,
                    )
                if FLAGS.export_dir:
                    export(sess, signatures, checkpoint, version)
    return 1 if problems else 0


@startup.user_errors(cifar10_input.DataError)
def main(argv):
    if FLAGS.mixed_precision == "bf16":
        bfloat16.say_if_emulated("--mixed_precision=bf16")
    return run(argv[1:])


if __name__ == "__main__":
    startup.run(main)
