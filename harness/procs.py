"""Running the binaries: as processes, one after another in one process, or
in this one; and free ports for a cluster of them."""

import contextlib
import importlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from unittest import mock

from absl.testing import flagsaver

from support import loading, startup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# How long one wait for a process may take before it counts as a hang.
PATIENCE_SECS = 300


def free_ports(count):
    """count distinct TCP ports on 127.0.0.1 that nothing listens on.

    They are free again once this returns; the processes given them bind
    them moments later.
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def command(script, *args, folder=ROOT):
    """The command line that runs a binary (unbuffered output)."""
    return [sys.executable, "-u", os.path.join(folder, script), *args]


def run_binary(script, *args, folder=ROOT, timeout=PATIENCE_SECS, prefix=(), env=None):
    """Runs one of the binaries to completion.

    Args:
      script: its file name, in folder.
      *args: its flags.
      folder: where the binary is; also its working folder.
      timeout: seconds before it counts as hung (subprocess.TimeoutExpired).
      prefix: a command to run it under, such as /usr/bin/time.
      env: environment variables to set for it.

    Returns:
      The subprocess.CompletedProcess, with stdout and stderr as text.
    """
    return subprocess.run(
        [*prefix, *command(script, *args, folder=folder)],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# Runs a command and writes its peak resident memory (KB) and its exit
# status to a file. The command runs under this small Python of its own, not
# under the caller: Linux keeps a process's peak across exec(), and counts
# there the memory of the process that started it, which for the tests and
# the benchmark holds TensorFlow and more.
MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as f:
    f.write("%d %d" % (usage.ru_maxrss, os.waitstatus_to_exitcode(status)))
"""


def run_measured(script, *args, folder=ROOT, process_group=None):
    """Runs one of the binaries to completion, measuring it.

    Args:
      script: its file name, in folder.
      *args: its flags.
      folder: where the binary is; also its working folder.
      process_group: the process group to run it in (None: this one's).

    Returns:
      (the subprocess.CompletedProcess, with stdout and stderr as text; its
      peak resident memory in bytes; the seconds it ran, start-up included).
    """
    with tempfile.TemporaryDirectory() as work:
        measured = os.path.join(work, "measured")
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", MEASURE, measured,
             *command(script, *args, folder=folder)],
            cwd=folder, capture_output=True, text=True, process_group=process_group,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        with open(measured) as f:
            peak, status = map(int, f.read().split())
    result.returncode = status
    return result, peak * 1024, seconds


def run_here(script, *args):
    """Runs a binary in this process, as its start-up would: the flags of
    args parsed as on its command line, then its main(), which turns the
    errors a user can cause into one line. The binary is imported from
    sys.path.

    A process of its own costs seconds of loading TensorFlow; a test that
    needs one (signals, several processes at once) starts the binary itself.

    Returns:
      What subprocess.run would: returncode, stdout and stderr (where an
      error line, or a flag the binary refuses, goes).
    """
    binary = importlib.import_module(os.path.splitext(script)[0])
    out, err = io.StringIO(), io.StringIO()
    with (
        flagsaver.flagsaver(),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            if startup.help_asked([script, *args]) is not None:
                print(startup.help_text(binary), end="")
                return subprocess.CompletedProcess(script, 0, out.getvalue(), "")
            argv = startup.parse_flags([script, *args], binary)
            status = startup.one_line_errors(binary.main)(argv) or 0
        except startup.Error as e:
            print("Error: %s" % e, file=sys.stderr)
            status = 1
        except SystemExit as e:
            print(e.code, file=sys.stderr)
            status = 1
    return subprocess.CompletedProcess(script, status, out.getvalue(), err.getvalue())


def run_started_here(script, *args, stdout=None):
    """Runs a binary in this process as its own process starts it: through
    startup.run() (its --help, its flags, its main() and the way it ends),
    where run_here() calls its main() alone. Meanwhile sys.argv and the
    __main__ module are the binary's; what absl does once a process (its
    logging handler, faulthandler) is left out; the signal handlers and the
    flags are put back after.

    Args:
      script: the binary's file name; it is imported from sys.path.
      *args: its flags.
      stdout: a file to be its sys.stdout (None: what it prints is caught).

    Returns:
      What subprocess.run would: returncode, the status that sys.exit()
      ends a process with (1 for a message, which goes to stderr), and
      stdout (when caught) and stderr as text.
    """
    from absl import app  # noqa: PLC0415

    binary = importlib.import_module(os.path.splitext(script)[0])
    out, err = io.StringIO(), io.StringIO()
    handlers = {signum: signal.getsignal(signum) for signum in startup.STOP_SIGNALS}
    main, argv = sys.modules["__main__"], sys.argv
    sys.modules["__main__"], sys.argv = binary, [script, *args]
    try:
        with (
            flagsaver.flagsaver(),
            mock.patch.object(app._run_init, "done", True),
            contextlib.redirect_stdout(out if stdout is None else stdout),
            contextlib.redirect_stderr(err),
        ):
            try:
                startup.run(binary.main)
                status = 0
            except SystemExit as e:
                status = e.code
                if isinstance(status, str):
                    print(status, file=sys.stderr)
                    status = 1
    finally:
        sys.modules["__main__"], sys.argv = main, argv
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return subprocess.CompletedProcess(
        script, status or 0, out.getvalue(), err.getvalue()
    )


def load_tensorflow_for_run_here():
    """Loads TensorFlow in this process as a binary's start-up does (its
    environment defaults first, which it reads only as it loads, and the
    lines it logs while it loads held to what they ask), in graph mode and
    with its Python logging quiet: what run_here() needs."""
    startup.set_tensorflow_defaults()
    loading.hold()
    try:
        import tensorflow as tf  # noqa: PLC0415  (after the defaults)

        # The first list of devices is the last of TensorFlow's loading lines.
        tf.config.list_physical_devices()
    finally:
        loading.release()
    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)


# The program of run_one_after_another()'s process.
_ONE_AFTER_ANOTHER = """
import json, sys
folder, root, runs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path[:0] = [folder, root]
from harness.procs import load_tensorflow_for_run_here, run_here
load_tensorflow_for_run_here()
print(json.dumps([vars(run_here(*run)) for run in runs]))
"""


def run_one_after_another(folder, *runs, timeout=PATIENCE_SECS, root=ROOT):
    """Runs binaries of folder one after another in one new process, each
    as run_here() runs it: they share one loading of TensorFlow.

    Args:
      folder: where the binaries, and the modules they import, are; also the
        process's working folder.
      root: where harness/ is, for the process (a copy of the project that
        holds its own keeps this project's modules out of its way).
      *runs: (script, flag, ...) tuples.
      timeout: seconds before the process counts as hung.

    Returns:
      A subprocess.CompletedProcess for each run.
    """
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _ONE_AFTER_ANOTHER,
            str(folder),
            str(root),
            json.dumps(runs),
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return [
        subprocess.CompletedProcess(**result)
        for result in json.loads(done.stdout.splitlines()[-1])
    ]


class Process:
    """A binary running in the background, its stdout and stderr going to a
    file that the waits below read."""

    def __init__(
        self, script, *args, log_path, folder=ROOT, env=None, prefix=(), **popen
    ):
        """Starts it: script with args (as run_binary()), under the command of
        prefix, with the environment env (None: this one's), and any other
        arguments of subprocess.Popen in popen (a process_group)."""
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(
                [*prefix, *command(script, *args, folder=folder)],
                cwd=folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                **popen,
            )

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_for(self, pattern, patience=PATIENCE_SECS):
        """Waits until the output matches pattern (re.MULTILINE).

        Returns:
          The match.

        Raises:
          AssertionError: the process ended, or patience ran out, first.
        """
        return self.wait_until(
            lambda out: re.search(pattern, out, re.MULTILINE), pattern, patience
        )

    def wait_until(self, condition, what="the condition", patience=PATIENCE_SECS):
        """Waits until condition(output) is true; returns what it returned.

        Raises:
          AssertionError: the process ended, or patience ran out, first.
        """
        deadline = time.time() + patience
        while True:
            ended = self.proc.poll() is not None
            result = condition(self.output())
            if result:
                return result
            if ended:
                raise AssertionError(
                    "%s not seen before the process ended with status %s:\n%s"
                    % (what, self.proc.returncode, self.output())
                )
            if time.time() > deadline:
                raise AssertionError("%s not seen in time:\n%s" % (what, self.output()))
            time.sleep(0.2)

    def send_signal(self, signum):
        self.proc.send_signal(signum)

    def finish(self, patience=PATIENCE_SECS):
        """Waits for the process to end.

        Returns:
          (exit status, output).
        """
        try:
            self.proc.wait(timeout=patience)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        return self.proc.returncode, self.output()

    def stop(self):
        """Kills the process if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
