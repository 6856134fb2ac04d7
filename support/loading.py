"""TensorFlow's lines while it loads, held to what TF_CPP_MIN_LOG_LEVEL asks.

TensorFlow 2.21 logs before its logging is set up, and then every line goes
to stderr whatever TF_CPP_MIN_LOG_LEVEL says: a warning that it does so,
"oneDNN custom operations are on", "Could not find cuda drivers" (each
twice), and, as the first device list is made, "failed call to cuInit" on a
machine without a GPU. startup.before_tensorflow() starts

    loading.hold()      # before TensorFlow loads
    ...                 # TensorFlow loads, and lists its devices
    loading.release()   # startup.run(), before the binary's own work

and in between, stderr (file descriptor 2) is a file in memory. release()
gives stderr back and shows what the file holds, but for the lines
TensorFlow logged below TF_CPP_MIN_LOG_LEVEL (2 by default: its information
and warnings), the warning about them, and the cuInit error that only says
there is no GPU driver. Anything else (an error, Python's traceback of a
missing library) is shown unchanged, in its place. Nothing stands between
the binary and its stderr after release(); a process started while
TensorFlow loads goes on writing to the file, and what it writes there
after release() is shown as the binary ends.

A process that ends while TensorFlow loads has its lines shown all the
same: on the way out through Python (an exception, sys.exit) by release()
itself, at exit; killed (a crash in TensorFlow's C++, SIGKILL), by a small
process that hold() leaves beside it, which waits for release() and shows
the lines only if the binary is gone without it.

Importing this module changes nothing.
"""

import atexit
import contextlib
import fcntl
import os
import re
import signal
import sys
import tempfile

# A line of TensorFlow's C++ logging: its severity, then the time, the
# thread, and the file and line that logged it.
LOGGED = re.compile(rb"^([IWEF])\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ")
SEVERITIES = b"IWEF"
# What absl says before lines it was not yet told to hold back.
UNINITIALIZED = b"WARNING: All log messages before absl::InitializeLog() is called"
# Without a GPU driver, the cuInit error that follows says nothing more.
NO_DRIVER = b"Could not find cuda drivers on your machine"
CUINIT = b"failed call to cuInit"
# The signals release() holds back until the lines are shown: their
# handlers (startup's) show the lines themselves.
DEFERRED = (signal.SIGINT, signal.SIGTERM)

# While held: pid, level, stderr (the real one), file, and watcher (the
# pipe whose end tells the watching process that release() came). After
# release(): file and shown (how much of it is shown), for the lines of
# processes that go on writing there.
_held = {}
_after = {}


def hold():
    """Makes stderr a file in memory until release(). Does nothing when
    TF_CPP_MIN_LOG_LEVEL is 0 (everything asked for), when stderr is
    closed, or when no such file can be made."""
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
    try:
        file = _memory_file()
    except OSError:
        os.close(stderr)
        return
    # Every writer's lines go to its end, whatever the others' offsets.
    fcntl.fcntl(file, fcntl.F_SETFL, fcntl.fcntl(file, fcntl.F_GETFL) | os.O_APPEND)
    sys.stderr.flush()
    watcher = _watch(file, stderr, level)
    os.dup2(file, 2)
    _held.update(
        pid=os.getpid(), level=level, stderr=stderr, file=file, watcher=watcher
    )
    atexit.register(_at_exit)


def release():
    """Gives stderr back and shows the lines written to it until now, but
    those TF_CPP_MIN_LOG_LEVEL drops. A SIGINT or SIGTERM meanwhile waits
    until they are shown, and then takes its course."""
    if not _held or _held["pid"] != os.getpid():
        return  # not held, or a copy of the process forked while it was
    received = []
    handlers = {s: signal.signal(s, lambda n, _: received.append(n)) for s in DEFERRED}
    try:
        held = dict(_held)
        _held.clear()
        sys.stderr.flush()
        os.dup2(held["stderr"], 2)
        os.close(held["stderr"])
        with contextlib.suppress(OSError):  # the watcher is gone: all the same
            os.write(held["watcher"], b"released")
        os.close(held["watcher"])
        _after.update(file=held["file"], level=held["level"], shown=0)
        _after["shown"] = _show(held["file"], 0, 2, held["level"])
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    for signum in received[:1]:
        signal.raise_signal(signum)


def _at_exit():
    """Shows what is still to be shown as the binary ends: all the lines if
    it ends while TensorFlow loads, else those written after release()."""
    if _held:
        release()
    elif _after:
        with contextlib.suppress(OSError):
            _show(_after["file"], _after["shown"], 2, _after["level"])


def _memory_file():
    """A file in memory, where a full disk cannot refuse a line; elsewhere
    than on Linux, a temporary file."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("loading", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile(prefix="loading-") as f:
        return os.dup(f.fileno())


def _watch(file, stderr, level):
    """Leaves a process that shows the lines of file on stderr if this one
    ends before release(); it ends at release() without a word.

    Returns:
      The end of the pipe that release() writes to (not inherited by the
      programs this process runs).
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(write)
            # Ctrl+C reaches every process of the terminal's group: this one
            # stays, to show the lines if the binary does not.
            for signum in DEFERRED:
                signal.signal(signum, signal.SIG_IGN)
            # Its own process, which nobody waits for: the system reaps it.
            if os.fork() == 0 and not os.read(read, 1):
                _show(file, 0, stderr, level)
        finally:
            os._exit(0)
    os.close(read)
    os.waitpid(pid, 0)  # at once: the process in between ends at once
    return write


def _show(file, start, stderr, level):
    """Writes the lines of file from offset start to stderr, but those
    _kept() drops; a last line without its end is written as it is.

    Returns:
      The offset up to which file is shown.
    """
    end = os.fstat(file).st_size
    text = os.pread(file, end - start, start)
    state = {"no_driver": False, "dropped": False}
    shown = b"".join(
        line for line in text.splitlines(keepends=True) if _kept(line, level, state)
    )
    while shown:
        shown = shown[os.write(stderr, shown) :]
    return end


def _kept(line, level, state):
    """Whether a line is shown: all but a line TensorFlow logged below
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
