"""What every binary does before and around its main().

Each binary imports this module before anything else (ruff.toml keeps the
import first) and ends with

    if __name__ == "__main__":
        cifar10_app.run(main)

Importing it sets TensorFlow's environment defaults, which TensorFlow reads
while it loads, and makes Ctrl+C during that load end quietly. run() then
parses the flags with absl (which rejects unknown or malformed ones), turns
on graph mode, and calls main(). Ctrl+C or SIGTERM in main() ends the
process with "Interrupted." and the status of that signal; whatever the
binary was writing cleans up on its way out (a download removes its partial
file).
"""

import os
import signal
import sys

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


_previous = {s: signal.signal(s, _quit_while_loading) for s in STOP_SIGNALS}
import tensorflow as tf  # noqa: E402  (after the environment is set)
from absl import app  # noqa: E402

for _signum, _handler in _previous.items():
    signal.signal(_signum, _handler)

_received = []


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
