"""The folders and files the binaries use: made and checked, locked, cleaned,
read.

    folders.writable(path, "train_dir")      # or one line naming the flag
    with folders.locked(path_of_lock_file):  # one process at a time
        names = folders.remove_leftovers(folder, PATTERN)
    contents, problem = folders.read_regular_file(path)  # never a pipe
    kept, results, problems = folders.run_on_image_files(run, paths)
"""

import contextlib
import fcntl
import os
import shutil
import socket
import stat
import sys
import tempfile
import time

import tensorflow as tf

from support.startup import Error


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
        raise Error(
            "Cannot write to --%s=%s (%s). Choose a folder you can write to."
            % (flag_name, path, e.strerror or e)
        ) from None


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
        os.pwrite(fd, _holder().encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)
        os.close(fd)


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


def read_regular_file(path):
    """The contents of a regular file.

    Returns:
      (contents, None), or (None, why it cannot be read). A pipe or a device
      is not read: it could block, or never end.
    """
    try:
        # O_NONBLOCK: opening a pipe that no one writes to returns at once.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return None, "Cannot read %s (%s)." % (path, e.strerror or e)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, "%s is not a regular file; skipped." % path
        try:
            return f.read(), None
        except OSError as e:
            return None, "Cannot read %s (%s)." % (path, e.strerror or e)


def run_on_image_files(run, paths):
    """Runs run(contents) on the files at paths that can be read: on all of
    them at once, or, when one is not an image (run raises
    tf.errors.InvalidArgumentError), on each alone, so that the others still
    count.

    Returns:
      (kept, results, problems): the indexes in paths of the files run on,
      run's result for each, and a line for each file skipped that names it
      and says why.
    """
    kept, contents, problems = [], [], []
    for i, path in enumerate(paths):
        data, problem = read_regular_file(path)
        if problem:
            problems.append(problem)
        else:
            kept.append(i)
            contents.append(data)
    if not contents:
        return [], [], problems
    try:
        return kept, list(run(contents)), problems
    except tf.errors.InvalidArgumentError:
        pass
    alone, results = [], []
    for i, data in zip(kept, contents, strict=True):
        try:
            results.append(run([data])[0])
            alone.append(i)
        except tf.errors.InvalidArgumentError:
            problems.append(
                "%s is not an image this can read (JPEG, PNG, BMP or GIF)." % paths[i]
            )
    return alone, results, problems


def umask():
    """This process's umask: the mode bits a new file or folder leaves out."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
