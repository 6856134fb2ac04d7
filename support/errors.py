"""The errors a user can put right, which every binary prints as one line.

    from support.errors import Error

    raise Error("--train_dir=%s is a file; give a folder." % path)

startup.run() prints such an error as "Error: <message>" and ends the
process with status 1; the binaries' own errors (a data set's DataError,
the packer's PackError, ...) subclass it. This module imports nothing, so
that every other module of support/ can stand on it.
"""


class Error(Exception):
    """Something the user can put right (a flag, a folder, a file); the
    binary prints its message, which says what to do, as one line."""
