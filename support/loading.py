"""TensorFlow's lines while it loads, held to what TF_CPP_MIN_LOG_LEVEL asks.

TensorFlow 2.21 logs before its logging is set up, and then every line goes
to stderr whatever TF_CPP_MIN_LOG_LEVEL says: a warning that it does so,
"oneDNN custom operations are on", "Could not find cuda drivers" (each
twice), and, as the first device list is made, "failed call to cuInit" on a
machine without a GPU. startup.before_tensorflow() starts

    loading.hold()      # before TensorFlow loads
    ...                 # TensorFlow loads, and lists its devices
    loading.release()   # startup.run(), before the binary's own work

and in between, stderr passes through a process of its own that drops the
lines TensorFlow logged below TF_CPP_MIN_LOG_LEVEL (2 by default: its
information and warnings), the warning about them, and the cuInit error
that only says there is no GPU driver. Anything else (an error, Python's
traceback of a missing library) passes unchanged, at once; and since that
process reads to the end of what was written, a process that dies while
TensorFlow loads still has its last words shown.

Importing this module changes nothing.
"""

import atexit
import os
import re
import signal
import sys

# A line of TensorFlow's C++ logging: its severity, then the time, the
# thread, and the file and line that logged it.
LOGGED = re.compile(rb"^([IWEF])\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ")
SEVERITIES = b"IWEF"
# What absl says before lines it was not yet told to hold back.
UNINITIALIZED = b"WARNING: All log messages before absl::InitializeLog() is called"
# Without a GPU driver, the cuInit error that follows says nothing more.
NO_DRIVER = b"Could not find cuda drivers on your machine"
CUINIT = b"failed call to cuInit"
# What release() writes last through the pipe: the end of the loading.
END = b"\0end of loading\0\n"

_held = {}


def hold():
    """Sends stderr through a process that drops TensorFlow's loading lines
    below TF_CPP_MIN_LOG_LEVEL, until release(). Does nothing when that
    level is 0 (everything asked for), or stderr is closed."""
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        level = 0
    if level <= 0 or _held:
        return
    try:
        stderr = os.dup(2)
    except OSError:
        return
    read, write = os.pipe()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the process that passes the lines on
        try:
            os.close(write)
            # Ctrl+C reaches every process of the terminal's group: this one
            # stays to pass on what the binary says as it ends.
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_IGN)
            _pass_on(read, stderr, level)
        finally:
            os._exit(0)
    os.close(read)
    os.dup2(write, 2)
    os.close(write)
    _held.update(stderr=stderr, pid=pid)
    # A binary that ends while TensorFlow loads (a traceback) has its last
    # lines passed on before it is gone.
    atexit.register(release)


def release():
    """Gives stderr back, once every line written until now is passed on."""
    if not _held:
        return
    sys.stderr.flush()
    os.write(2, END)
    os.dup2(_held["stderr"], 2)
    os.close(_held["stderr"])
    os.waitpid(_held["pid"], 0)
    _held.clear()


def _pass_on(read, stderr, level):
    """Copies the lines of read to stderr, but those _kept() drops, until
    END or the end of the pipe (the binary has ended)."""
    pending, state = b"", {"no_driver": False, "dropped": False}
    while True:
        chunk = os.read(read, 65536)
        if not chunk:
            if pending and _kept(pending, level, state):
                os.write(stderr, pending)
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            if line + b"\n" == END:
                return
            if _kept(line, level, state):
                os.write(stderr, line + b"\n")


def _kept(line, level, state):
    """Whether a line is passed on: all but a line TensorFlow logged below
    level, the warning about such lines, the cuInit error of a machine
    without a GPU driver, and the second line of a message dropped."""
    if line.startswith(UNINITIALIZED):
        return False
    state["no_driver"] = state["no_driver"] or NO_DRIVER in line
    logged = LOGGED.match(line)
    if logged and (
        SEVERITIES.index(logged[1]) < level or (state["no_driver"] and CUINIT in line)
    ):
        state["dropped"] = True
        return False
    if state["dropped"] and not logged and line.startswith(b"To enable the following"):
        return False
    state["dropped"] = False
    return True
