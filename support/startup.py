"""What every binary does first, and around its main().

A binary begins

    from support import startup

    if __name__ == "__main__":
        startup.before_tensorflow()

    import tensorflow as tf

and ends

    if __name__ == "__main__":
        startup.run(main, cifar10_input.DataError)

before_tensorflow() sets TensorFlow's environment defaults, which TensorFlow
reads once, as it loads, and makes Ctrl+C while it loads end quietly. run()
answers --help (status 0), parses the flags with absl (which rejects unknown
or malformed ones in one line), turns on graph mode and calls main(argv).
The errors a user can cause, Error below and those the binary names (the
data's DataError), end the process with one line, "Error: <message>", and
status 1; Ctrl+C or
SIGTERM with "Interrupted." and the status of that signal.

Importing this module changes nothing and loads nothing heavy.
"""

import os
import signal
import sys

from support import loading
from support.errors import Error  # the binaries' startup.Error

# TensorFlow's environment defaults; a value the user set wins.
TENSORFLOW_DEFAULTS = {
    # Keep TensorFlow's C++ chatter quiet.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # oneDNN's CPU kernels, which TensorFlow turns on by itself only on some
    # CPUs, make the training step about 1.4x faster on plain AVX2 machines.
    "TF_ENABLE_ONEDNN_OPTS": "1",
    # TensorFlow loads Keras 3 as it starts, and with it matplotlib's pyplot:
    # a second of every start, for nothing here. Told to use Keras 2
    # (tf_keras), which is not installed, it goes on without. A model that
    # uses tf.keras must drop this line.
    "TF_USE_LEGACY_KERAS": "1",
}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What asks for help: about this binary's own flags, or all of them.
HELP = {"h", "?", "help", "helpshort"}
HELP_FULL = "helpfull"

_received = []


def set_tensorflow_defaults():
    """Sets TensorFlow's environment defaults; call it before TensorFlow
    loads, which is when TensorFlow reads them."""
    for name, value in TENSORFLOW_DEFAULTS.items():
        os.environ.setdefault(name, value)


def before_tensorflow():
    """A binary's first call: TensorFlow's environment defaults, the lines
    it logs while it loads held to what TF_CPP_MIN_LOG_LEVEL asks (until
    run(); see support/loading.py), and a Ctrl+C or SIGTERM while it loads
    ends the process with "Interrupted." rather than a traceback from deep
    inside its import."""
    set_tensorflow_defaults()
    loading.hold()
    for signum in STOP_SIGNALS:
        signal.signal(signum, _quit_while_loading)


def _quit_while_loading(signum, frame):
    loading.release()  # what TensorFlow wrote first, then this line
    sys.stderr.write("Interrupted.\n")
    os._exit(128 + signum)  # nothing has been written yet


def run(main, *user_errors):
    """Runs main(argv) as the binary's entry point; see the module docstring.

    Args:
      main: the binary's main(argv).
      *user_errors: exception classes besides Error whose message is what a
        user needs to put things right.
    """
    # The binary has loaded TensorFlow by now, after before_tensorflow().
    import tensorflow as tf  # noqa: PLC0415
    from absl import app  # noqa: PLC0415

    # The first list of devices is the last of TensorFlow's loading lines.
    tf.config.list_physical_devices()
    loading.release()

    asked = help_asked(sys.argv)
    if asked is not None:
        app.usage(shorthelp=asked, writeto_stdout=True)
        sys.exit(0)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)
    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    try:
        app.run(one_line_errors(main, *user_errors))
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


def one_line_errors(main, *user_errors):
    """main, with the errors a user can cause (Error and user_errors) ending
    the process as one line, "Error: <message>", and exit status 1."""

    def main_with_one_line_errors(argv):
        try:
            return main(argv)
        except (Error, *user_errors) as e:
            sys.exit("Error: %s" % e)

    return main_with_one_line_errors


def help_asked(argv):
    """True for --help, False for --helpfull, None when neither comes before
    a '--'."""
    for arg in argv[1:]:
        if arg == "--":
            break
        if arg.startswith("-") and arg.lstrip("-") in HELP | {HELP_FULL}:
            return arg.lstrip("-") in HELP
    return None


def _interrupt(signum, frame):
    """Raises KeyboardInterrupt for SIGTERM as for SIGINT, so that both run
    the same clean-up (`finally` blocks) on the way out."""
    _received.append(signum)
    raise KeyboardInterrupt
