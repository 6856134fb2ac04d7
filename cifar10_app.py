"""What every binary does before and around its main().

Each binary imports this module before anything else (ruff.toml keeps the
import first) and ends with

    if __name__ == "__main__":
        cifar10_app.run(main)

Importing it sets TensorFlow's environment defaults, which TensorFlow reads
while it loads, and makes Ctrl+C or SIGTERM during the start-up end quietly.
run() then parses the flags with absl (which rejects unknown or malformed
ones), turns on graph mode, and calls main(). Ctrl+C or SIGTERM in main()
ends the process with "Interrupted." and the status of that signal;
whatever the binary was writing cleans up on its way out (a download removes
its partial file). A program that imports this module without calling run()
(the tests) sets its own signal handlers back.

main() turns the errors a user can cause, Error below and
cifar10_input.DataError, into one line: "Error: <message>", exit status 1.
"""

import os
import signal
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keep TF's C++ chatter quiet.
# oneDNN's CPU kernels, which TensorFlow turns on by itself only on some CPUs,
# make the training step about 1.4x faster on plain AVX2 machines.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _quit_while_loading(signum, frame):
    # Nothing has been written yet: leave at once, without a traceback from
    # deep inside TensorFlow's import.
    sys.stderr.write("Interrupted.\n")
    os._exit(128 + signum)


for _signum in STOP_SIGNALS:
    signal.signal(_signum, _quit_while_loading)

# TensorFlow imports Keras's optimizers as it loads, and with them most of
# Keras (and matplotlib's pyplot, when installed): a second of every start.
# Nothing here uses Keras; a model that does must drop this line.
sys.modules.setdefault("keras.src.optimizers", None)

import tensorflow as tf  # noqa: E402  (after the environment is set)
from absl import app  # noqa: E402

_received = []


class Error(Exception):
    """Something the user can put right (a flag, a folder, a file); main()
    prints its message, which says what to do, as one line."""


def writable_folder(path, flag_name):
    """Creates the folder a flag names, if need be, and checks that this
    process can write there.

    Raises:
      Error: it cannot be created or written to.
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise Error(
            "Cannot write to --%s=%s (%s). Choose a folder you can write to."
            % (flag_name, path, e.strerror or e)
        ) from None


# What a process of the model takes besides its batches: TensorFlow, the
# graph and the weights (measured: about 0.6 GB at --batch_size=1).
BASE_BYTES = 0.6e9


def memory_needed(inference, batch_size, queue_images):
    """About how many bytes training or evaluating a model takes.

    Every image in a batch holds the outputs of each layer of inference();
    measured with the tutorial's network, a training or an evaluation step
    takes about that much again as these add up to in one forward pass.
    Queued images are IMAGE_SIZE x IMAGE_SIZE x DEPTH floats each.

    Args:
      inference: the model's inference(images) function.
      batch_size: images a step works on.
      queue_images: images held in the input queues.
    """
    import cifar10_input  # noqa: PLC0415  (this module loads before the model)

    shape = [1, cifar10_input.IMAGE_SIZE, cifar10_input.IMAGE_SIZE]
    dtype = tf.float16 if tf.compat.v1.flags.FLAGS.use_fp16 else tf.float32
    with tf.Graph().as_default() as graph:
        inference(tf.compat.v1.placeholder(dtype, shape + [cifar10_input.DEPTH]))
    per_image = sum(
        t.shape.num_elements() * t.dtype.size
        for op in graph.get_operations()
        for t in op.outputs
        if t.dtype.is_floating and t.shape.rank and t.shape.is_fully_defined()
        and t.shape[0] == 1
    )  # fmt: skip
    queued = queue_images * shape[1] * shape[2] * cifar10_input.DEPTH * 4
    return BASE_BYTES + batch_size * per_image + queued


def machine_memory():
    """The bytes of memory this process may use: the machine's, or its
    control group's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
    except OSError:
        limit = "max"
    return min(total, int(limit)) if limit.isdigit() else total


def check_memory(needed, doing):
    """Refuses a --batch_size whose needs exceed the machine's memory, which
    would otherwise grow until the system kills the process, without a word.

    Args:
      needed: bytes, from memory_needed().
      doing: "train", "evaluate", "classify".

    Raises:
      Error: it needs more.
    """
    have = machine_memory()
    if needed > have:
        raise Error(
            "--batch_size=%d needs about %.1f GB of memory to %s, more than the "
            "%.1f GB of this machine. Lower --batch_size."
            % (tf.compat.v1.flags.FLAGS.batch_size, needed / 1e9, doing, have / 1e9)
        )


def _interrupt(signum, frame):
    """Raises KeyboardInterrupt for SIGTERM as for SIGINT, so that both run
    the same clean-up (`finally` blocks) on the way out."""
    _received.append(signum)
    raise KeyboardInterrupt


def run(main):
    """Runs main(argv) as the binary's entry point; see the module docstring."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)
    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    try:
        app.run(main)
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(128 + (_received[-1] if _received else signal.SIGINT))
    finally:
        # The process is ending. Python sets the signals back to their
        # default action as it shuts down, and a signal during TensorFlow's
        # teardown would then kill it with no message; ignored, they let it
        # end as it was going to.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
