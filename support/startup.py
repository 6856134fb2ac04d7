"""What every binary does first, and around its main(): its flags, --help,
one line for an error, Ctrl+C.

A binary begins

    from support import startup

    if __name__ == "__main__":
        startup.before_tensorflow()

    import tensorflow as tf

names the flags it uses that another module defines (the model's), with
what each does in this binary where that differs from the flag's own help,

    startup.use_flags(__name__, "data_dir", batch_size="Images scored at a time.")

and ends

    @startup.user_errors(cifar10_input.DataError)
    def main(argv):
        ...

    if __name__ == "__main__":
        startup.run(main)

before_tensorflow() sets TensorFlow's environment defaults, which TensorFlow
reads once, as it loads, and makes Ctrl+C while it loads end quietly. run()
answers --help (status 0) with the binary's docstring and its flags alone:
those it defines, those use_flags() names and those of the support/ modules
whose flags it adopts (absl's key flags of its module). It parses the flags,
and a flag the binary does not use, a misspelt one or a bad value ends it
with one line naming the nearest flag of that binary. Then it turns on graph
mode and calls main(argv). The errors a user can cause, Error and those
user_errors() names (the data's DataError), end the process with one line,
"Error: <message>", and status 1; Ctrl+C or SIGTERM with "Interrupted." and
the status of that signal; a closed output (`binary | head -1`) without a
word, with the status of SIGPIPE.

Importing this module changes nothing and loads nothing heavy.
"""

import difflib
import functools
import os
import re
import select
import signal
import sys
import warnings

from absl import flags

from support import loading
from support.errors import Error  # the binaries' startup.Error

# TensorFlow's environment defaults; a value the user set wins.
TENSORFLOW_DEFAULTS = {
    # Keep TensorFlow's C++ chatter quiet.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # oneDNN's CPU kernels, which TensorFlow turns on by itself only on some
    # CPUs, make the training step faster on plain AVX2 machines too.
    "TF_ENABLE_ONEDNN_OPTS": "1",
    # TensorFlow loads Keras 3 as it starts, and with it matplotlib's pyplot:
    # a second of every start, for nothing here. Told to use Keras 2
    # (tf_keras), which is not installed, it goes on without. A model that
    # uses tf.keras must drop this line.
    "TF_USE_LEGACY_KERAS": "1",
}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What asks for help: about this binary's own flags, or all of them (the
# same: a binary lists only the flags it uses).
HELP = {"h", "?", "help", "helpshort"}
HELP_FULL = "helpfull"
FLAGS = flags.FLAGS

_received = []
# {binary's module name: {flag name: what the flag does in that binary}}
_helps = {}


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


def run(main):
    """Runs main(argv) as the binary's entry point; see the module docstring.

    Args:
      main: the binary's main(argv); user_errors() names the errors besides
        Error that end it in one line.
    """
    # The binary has loaded TensorFlow by now, after before_tensorflow().
    import tensorflow as tf  # noqa: PLC0415
    from absl import app  # noqa: PLC0415

    # The first list of devices is the last of TensorFlow's loading lines.
    tf.config.list_physical_devices()
    loading.release()

    binary = sys.modules["__main__"]
    if help_asked(sys.argv) is not None:
        try:
            sys.stdout.write(help_text(binary))
            sys.stdout.flush()
        except BrokenPipeError:
            end_if_output_closed()
            raise
        sys.exit(0)
    try:
        argv = parse_flags(sys.argv, binary)
    except Error as e:
        sys.exit("Error: %s" % e)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)
    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    # Pillow's warning of an image above its limit, as it opens one: the
    # binaries refuse such images themselves, in their own words
    # (support/images.py, MAX_PIXELS).
    warnings.filterwarnings("ignore", r"Image size \(", RuntimeWarning, r"PIL\.")
    try:
        app.run(one_line_errors(main), flags_parser=lambda _: argv)
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted.\n")
        sys.exit(128 + (_received[-1] if _received else signal.SIGINT))
    except BrokenPipeError:
        end_if_output_closed()
        raise  # not the output: a pipe of the binary's own
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
            status = main(argv)
        except (Error, *user_errors) as e:
            if isinstance(e.__context__, BrokenPipeError):
                end_if_output_closed()  # the output's, such as a progress line's
            sys.exit("Error: %s" % e)
        # What the output still holds goes now, where a closed output is
        # caught (run()), rather than as Python ends.
        sys.stdout.flush()
        return status

    return main_with_one_line_errors


def end_if_output_closed():
    """Ends the process as a shell expects a program whose output was closed
    (`binary | head -1`) to end: without a word, with the status of SIGPIPE
    (141). Returns if stdout and stderr are open."""
    closed = [stream for stream in (sys.stdout, sys.stderr) if _closed(stream)]
    if not closed:
        return
    # What Python still holds for them goes nowhere as it ends, rather than
    # failing again there ("Exception ignored ...").
    nowhere = os.open(os.devnull, os.O_WRONLY)
    for stream in closed:
        os.dup2(nowhere, stream.fileno())
    sys.exit(128 + signal.SIGPIPE)


def _closed(stream):
    """Whether stream is a pipe or socket whose reader has gone."""
    try:
        poll = select.poll()
        poll.register(stream.fileno(), 0)  # errors are always reported
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, ValueError, OSError):
        return False  # not a file of the process's own


def user_errors(*classes):
    """A decorator: the binary's main(), with the errors a user can cause
    (Error and classes) ending the process as one line; see
    one_line_errors()."""
    return lambda main: functools.wraps(main)(one_line_errors(main, *classes))


def use_flags(binary, *names, **helps):
    """Makes flags that another module defines (the model's) flags of a
    binary: its --help lists them and it accepts them.

    Args:
      binary: the binary's module name, its __name__.
      *names: flags it uses, whose own help says what they do in it.
      **helps: {flag name: what it does in this binary}, for flags whose own
        help says something else.
    """
    module = _module_name(binary)
    for name in (*names, *helps):
        FLAGS.register_key_flag_for_module(module, FLAGS[name])
    _helps.setdefault(module, {}).update(helps)


def help_text(binary):
    """What --help prints for a binary (its module): its docstring, then each
    of its flags, with what it does in this binary."""
    module = _module_name(binary.__name__)
    own = FLAGS.get_key_flags_for_module(module)
    saved = {flag: flag.help for flag in own}
    try:
        for flag in own:
            if flag.name in _helps.get(module, {}):
                # An enum's help begins with its values, "<off|bf16>: ".
                values = re.match(r"<[^>]*>: ", flag.help)
                flag.help = (values[0] if values else "") + _helps[module][flag.name]
        listed = FLAGS.module_help(module)
    finally:
        for flag, text in saved.items():
            flag.help = text
    return "%s\nflags:\n\n%s\n  --help, --helpfull: print this help and exit.\n" % (
        binary.__doc__ or "",
        listed.strip("\n"),
    )


def parse_flags(argv, binary):
    """Parses the flags of a command line for a binary (its module).

    Returns:
      The command line without its flags, for main(argv).

    Raises:
      Error: a flag the binary does not use, or a bad value; the message
        names the nearest flag of the binary.
    """
    module = _module_name(binary.__name__)
    own = {flag.name for flag in FLAGS.get_key_flags_for_module(module)}
    program = os.path.basename(argv[0])
    for name in _names_given(argv):
        # Refused before parsing, which would check its value first.
        if name not in own and not (name.startswith("no") and name[2:] in own):
            raise Error(_not_a_flag(program, name, module, own))
    try:
        rest = FLAGS(argv)
    except flags.UnrecognizedFlagError as e:
        raise Error(_not_a_flag(program, e.flagname, module, own)) from None
    except flags.Error as e:
        raise Error(re.sub(r"^flag (--)", r"\1", str(e))) from None
    for name in FLAGS:
        if FLAGS[name].present and FLAGS[name].name not in own:
            raise Error(_not_a_flag(program, FLAGS[name].name, module, own))
    return rest


def _names_given(argv):
    """The names of the flags on a command line (--name or --name=value),
    up to a '--'; absl reads a --flagfile's flags itself."""
    for arg in argv[1:]:
        if arg == "--":
            break
        name = arg.lstrip("-").split("=", 1)[0]
        # A value such as -1 is no flag's name.
        if arg.startswith("-") and re.match(r"[^\W\d]", name) and name != "flagfile":
            yield name


def _not_a_flag(program, name, module, own):
    """Says that a binary has no flag --name, and which of its flags (own)
    is nearest: one whose help names --name (the trainer's --train_dir for
    --checkpoint_dir), else the one spelt most alike."""

    def help_of(flag):
        return _helps.get(module, {}).get(flag, FLAGS[flag].help or "")

    named = {name, name[2:]} if name.startswith("no") else {name}
    mentioned = r"--(%s)\b(?!-)" % "|".join(map(re.escape, named))
    nearest = [f for f in sorted(own) if re.search(mentioned, help_of(f))]
    nearest = nearest or difflib.get_close_matches(name, sorted(own), n=1)
    return "%s has no flag --%s%s; --help lists its flags." % (
        program,
        name,
        " (did you mean --%s?)" % nearest[0] if nearest else "",
    )


def _module_name(name):
    """The name absl keeps a module's key flags under: the script's path
    for the __main__ module."""
    return sys.argv[0] if name == "__main__" else name


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
