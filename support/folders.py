"""The folders and files the binaries use: made and checked, locked,
cleaned.

    with folders.removed_on_failure(path):   # a failed start leaves no folder
        folders.writable(path, "train_dir")  # or one line naming the flag
    with folders.locked(path_of_lock_file):  # one process at a time
        names = folders.remove_leftovers(folder, PATTERN)
"""

import contextlib
import errno
import fcntl
import os
import shutil
import socket
import sys
import tempfile
import time

from support.errors import Error


class Taken(Exception):
    """Another process holds the lock; the message is what it wrote there."""


def writable(path, flag_name):
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
        if e.errno == errno.ENOSPC:
            raise Error(no_space(path, flag_name)) from None
        raise Error(
            "Cannot write to --%s=%s (%s). Choose a folder you can write to."
            % (flag_name, path, e.strerror or e)
        ) from None


def no_space(path, flag_name):
    """What to say when the device of the folder a flag names is full (no
    room, or no inode for another file)."""
    return (
        "No space left on the device of --%s=%s. Free some space, or choose "
        "another --%s." % (flag_name, path, flag_name)
    )


@contextlib.contextmanager
def removed_on_failure(path):
    """Removes, when the block raises, the folders of path (itself and its
    parents) that were not there before it: what a start that failed made.
    Each goes only if it is empty."""
    made = []
    path = os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        made.append(path)  # the deepest first
        path = os.path.dirname(path)
    try:
        yield
    except BaseException:
        for folder in made:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise


@contextlib.contextmanager
def locked(path, wait_message=None):
    """Holds an OS lock on the file at path, which it makes and, at the end,
    removes. The kernel lets go of the lock when the process ends, however
    it ends, so a killed process leaves nothing stuck.

    Args:
      path: the lock file. It says which process holds it.
      wait_message: when another process holds the lock, this is printed
        and the lock waited for; without it, Taken is raised.

    Raises:
      Taken: another process holds it; the message says which.
      OSError: the file cannot be made.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1000, 0).decode(errors="replace").strip()
            if wait_message is None:
                os.close(fd)
                raise Taken(holder or "it has not said which") from None
            print(wait_message, flush=True)
            wait_message = ""
            fcntl.flock(fd, fcntl.LOCK_EX)
        # The process that held it removes the file as it lets go, and a
        # third may have made a new one meanwhile: lock that one instead.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        # The command line as its bytes were given, UTF-8 or not.
        os.pwrite(fd, os.fsencode(_holder()), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
        os.close(fd)


def holder(path):
    """Who holds the lock at path (what it wrote there), or None when no
    process does. Nothing is made or removed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        said = os.pread(fd, 1000, 0).decode(errors="replace").strip()
        return said or "it has not said which"
    finally:
        os.close(fd)
    return None


def _holder():
    return "pid %d on %s since %s: %s\n" % (
        os.getpid(),
        socket.gethostname(),
        time.strftime("%Y-%m-%d %H:%M:%S"),
        " ".join(sys.argv),
    )


def remove_leftovers(folder, pattern):
    """Removes the files and folders in folder whose names pattern (a
    compiled regular expression) matches: what a process cut short left.
    Hold the folder's lock, so that they are not another's work under way.

    Returns:
      Their names, sorted.
    """
    names = sorted(name for name in os.listdir(folder) if pattern.search(name))
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    return names


def umask():
    """This process's umask: the mode bits a new file or folder leaves out."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
