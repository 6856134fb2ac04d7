"""What the groups share: their rows, the run they measure in, rates in
turns, and the binaries run as children that never outlive the run.

Each group module declares ROWS, its table's rows (rows() reads them from
a table in text), and measure(run), which
returns {key: value} with exactly the keys of its rows (the runner refuses
anything else, so that a renamed key cannot become an empty cell).
"""

import contextlib
import datetime
import importlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

import cifar10
from harness import fake_cifar, procs
from support import startup

LOG_RATE = re.compile(r": step (\d+), loss = \S+ \(([\d.]+) examples/sec")
LOG_STEP = re.compile(r"^(.+): step (\d+), loss = ", re.M)
SEC_PER_BATCH = re.compile(r"; ([\d.]+) sec/batch\)")
QUEUE_FILLED = re.compile(r"first step took ([\d.]+) s")
EVAL_RATE = re.compile(
    r"precision @ 1 = \S+ \(step \d+, (\d+) images, ([\d.]+) images/sec"
)


class Row(NamedTuple):
    """A line of the table: its label, the key of its figure, its format."""

    label: str
    key: str
    fmt: str


def rows(table):
    """The rows of a group's table, from lines "label | key | format"; a
    label's leading spaces (beyond the table's own) indent it under the row
    above it."""
    found = []
    for line in textwrap.dedent(table).strip("\n").splitlines():
        label, key, fmt = line.split("|")
        found.append(Row(label.rstrip(), key.strip(), fmt.strip()))
    return found


class Size(NamedTuple):
    """How much a run measures."""

    windows: int  # the windows (or turns) of a rate; its median is taken
    steps: int  # the runs of a step in a window
    seconds: float  # the length of a turn of a binary against another
    train_steps: int  # the steps of a training binary run from its start
    worker_steps: int  # a cluster's steps on hosts, for each of its workers
    log_frequency: int  # of those runs
    records: int  # the data set's records a training file (five files)
    test_records: int  # and in its test file
    images: int  # the image files to pack, per class (ten classes)
    batch_size: int


SIZES = {
    "full": Size(5, 20, 6, 400, 200, 20, 10000, 10000, 6000, 128),
    "quick": Size(3, 10, 6, 200, 100, 20, 10000, 10000, 6000, 128),
    # Every figure once, in seconds, from the same code: a test that the
    # groups run, not a measurement.
    "tiny": Size(1, 2, 0.1, 8, 60, 1, 100, 50, 5, 16),
}


class Children:
    """The processes a run starts, all in one process group of their own,
    led by a small process that waits for the run to end. stop_all() kills
    the group: each binary, and what it started (the measuring wrapper's
    child, a binary's own helpers), however the run ends, before its work
    folder is removed.

    With in_process=True, the binaries that run to their end run in this
    process instead (procs.run_here(), which the tests have set up), and
    those that run beside it are forked from one process that has loaded
    TensorFlow (Forks): the same output, without a start of TensorFlow each,
    and figures that mean nothing.
    """

    def __init__(self, in_process=False):
        self.in_process = in_process
        self._forks = None
        self._leader = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            process_group=0,
        )
        self.group = self._leader.pid

    def run_measured(self, script, *args):
        """procs.run_measured() in the group; exits on the binary's failure.

        Returns:
          (its stdout, its peak RSS in MB, its seconds in all).
        """
        if self.in_process:
            started = time.perf_counter()
            result = procs.run_here(script, *args)
            seconds = time.perf_counter() - started
            peak = peak_rss_mb(os.getpid())
        else:
            result, peak, seconds = procs.run_measured(
                script, *args, process_group=self.group
            )
            peak /= 2**20
        if result.returncode:
            sys.exit("%s failed:\n%s" % (script, result.stderr[-3000:]))
        return result.stdout, peak, seconds

    def popen(self, command, **kwargs):
        """subprocess.Popen in the group, from the project's folder."""
        return subprocess.Popen(
            command, cwd=procs.ROOT, process_group=self.group, **kwargs
        )

    def process(self, script, *args, log_path):
        """A procs.Process in the group (in_process: a Forked one)."""
        if self.in_process:
            if self._forks is None:
                self._forks = Forks(self.group)
            return self._forks.process(script, *args, log_path=log_path)
        return procs.Process(script, *args, log_path=log_path, process_group=self.group)

    def stop_all(self):
        """Kills every process of the group (SIGKILL, stopped or not)."""
        if self._forks is not None:
            self._forks.stop_all()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.group, signal.SIGKILL)
        self._leader.wait()
        self._leader.stdin.close()


# The program of Forks' process: TensorFlow loaded as a binary's start-up
# loads it, then serve_forks().
FORK_SERVER = """
import sys
sys.path.insert(0, sys.argv[1])
from harness.procs import load_tensorflow_for_run_here
load_tensorflow_for_run_here()
from benchmarks import common
common.serve_forks()
"""


class Forks:
    """A process that has loaded TensorFlow, and forks a binary from itself
    each time one is asked for (Children(in_process=True), for the tests):
    the binary runs as its own process, from its own main(), without a
    start of TensorFlow of its own. The forks are its children, in the
    group; it reaps them all as it ends (stop_all()), so that the CPU time
    they took is counted as a process's children's is."""

    def __init__(self, group):
        self._server = subprocess.Popen(
            [sys.executable, "-u", "-c", FORK_SERVER, procs.ROOT],
            cwd=procs.ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            process_group=group,
        )

    def process(self, script, *args, log_path):
        """script with args forked, its output going to log_path: a Forked."""
        open(log_path, "w").close()
        self._server.stdin.write(json.dumps([script, args, str(log_path)]) + "\n")
        self._server.stdin.flush()
        pid = self._server.stdout.readline()
        if not pid:
            sys.exit("The process that forks the binaries ended.")
        return Forked(int(pid), log_path)

    def stop_all(self):
        """Kills the forks, and ends the process once it has reaped them."""
        with contextlib.suppress(OSError):
            self._server.stdin.close()
        try:
            self._server.wait(timeout=procs.PATIENCE_SECS)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()


def serve_forks():
    """Forks's process: for each line [script, args, log_path] of stdin,
    forks script's main() with args (as its start-up runs it), and prints
    the fork's pid. At the end of stdin, kills the forks and reaps them; not
    before, so that no pid of theirs goes to another process meanwhile."""
    forked = []
    for line in iter(sys.stdin.readline, ""):
        script, args, log_path = json.loads(line)
        binary = importlib.import_module(os.path.splitext(script)[0])
        pid = os.fork()
        if pid == 0:
            _run_forked(binary, script, args, log_path)  # never returns
        forked.append(pid)
        print(pid, flush=True)
    for pid in forked:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in forked:
        os.waitpid(pid, 0)


def _run_forked(binary, script, args, log_path):
    """A fork's life: binary's start-up and main(), its output to log_path."""
    status = 1
    try:
        log = os.open(log_path, os.O_WRONLY)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        nothing = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nothing, 0)
        os.close(nothing)
        sys.argv = [os.path.join(procs.ROOT, script), *args]
        sys.modules["__main__"] = binary
        try:
            startup.run(binary.main)
            status = 0
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            status = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


class Forked(procs.Process):
    """A procs.Process forked by Forks (not this process's child)."""

    def __init__(self, pid, log_path):  # not super().__init__(): it starts one
        self.log_path = log_path
        self.proc = _ForkedProc(pid)


class _ForkedProc:
    """What procs.Process uses of a subprocess.Popen, for a process that
    another one (Forks') started and reaps."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def poll(self):
        """Its exit status once it has ended (a zombie until Forks ends)."""
        if self.returncode is None:
            try:
                with open("/proc/%d/stat" % self.pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                self.returncode = -signal.SIGKILL  # reaped: Forks has ended
            else:
                if fields[0] in "ZX":
                    status = int(fields[49])  # exit_code, as wait() gives it
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.time() + timeout
        while self.poll() is None:
            if deadline is not None and time.time() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, signum):
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self):
        self.send_signal(signal.SIGKILL)


class Run:
    """What the groups of one run share: its size, its work folder, its
    children, and the data set and checkpoint made when first needed."""

    def __init__(self, size, work_dir, children):
        self.size = size
        self.work_dir = work_dir
        self.children = children
        self._data_dir = None
        self.checkpoint_dir = None

    def folder(self, prefix):
        """A new folder in the work folder."""
        return tempfile.mkdtemp(prefix=prefix + "-", dir=self.work_dir)

    def data_dir(self):
        """The --data_dir of a learnable data set of the run's size."""
        if self._data_dir is None:
            root = os.path.join(self.work_dir, "data")
            print("Writing a fake data set to %s ..." % root, flush=True)
            fake_cifar.write_dataset(
                root,
                records_per_file=self.size.records,
                test_records=self.size.test_records,
                describe=True,
            )
            self._data_dir = root
        return self._data_dir

    def data_folder(self):
        """The folder of the data files (what cifar10_input reads)."""
        return os.path.join(self.data_dir(), fake_cifar.FOLDER)

    def binary_flags(self, train_dir, *flags):
        """The flags of a training binary on the run's data."""
        return [
            "--data_dir=%s" % self.data_dir(),
            "--train_dir=%s" % train_dir,
            "--batch_size=%d" % self.size.batch_size,
            *flags,
        ]

    def trained(self):
        """A train_dir with a checkpoint: a training group's, or else one of
        a short run made now."""
        if self.checkpoint_dir is None:
            train_dir = self.folder("train")
            self.children.run_measured(
                "cifar10_train.py",
                *self.binary_flags(
                    train_dir, "--max_steps=%d" % self.size.log_frequency
                ),
            )
            self.checkpoint_dir = train_dir
        return self.checkpoint_dir


def median_rate(run_once, examples_per_run, windows, runs_per_window, warmup):
    """Median examples/sec of run_once over windows, after warm-up runs."""
    for _ in range(warmup):
        run_once()
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(runs_per_window):
            run_once()
        rates.append(examples_per_run * runs_per_window / (time.perf_counter() - start))
    return statistics.median(rates)


def rate_for(step, seconds, batch_size):
    """Examples/sec of step() run for about this many seconds (once at least)."""
    start, runs = time.perf_counter(), 0
    while runs == 0 or time.perf_counter() - start < seconds:
        step()
        runs += 1
    return runs * batch_size / (time.perf_counter() - start)


def steps_in_turns(steps, turns, rate):
    """Each named step function measured by rate(step) (examples/sec), in
    turns: a slow spell of a shared machine falls on all of them.

    Returns:
      {name: [its rate in each turn]}.
    """
    rates = {name: [] for name in steps}
    for _ in range(turns):
        for name, step in steps.items():
            step()  # the caches the one before had
            rates[name].append(rate(step))
    return rates


def median_of_ratios(name, numerators, denominators):
    """The median of the turns' ratios, which it prints."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    print(
        "    turns' %s: %s" % (name, " ".join("%.3f" % r for r in ratios)), flush=True
    )
    return statistics.median(ratios)


def session_config(mixed_precision):
    """A session config with, for mixed_precision "bf16", the oneDNN
    bfloat16 rewrite on, as cifar10.session_config() turns it on in the
    binaries for --mixed_precision=bf16."""
    config = tf.compat.v1.ConfigProto()
    if mixed_precision == "bf16":
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = (
            rewriter_config_pb2.RewriterConfig.ON
        )
    return config


@contextlib.contextmanager
def training_step(batch_size, mixed_precision="off"):
    """A function that runs one training step of the model on one constant
    batch, in a graph and session of its own."""
    rng = np.random.default_rng(0)
    with tf.Graph().as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        images = tf.constant(rng.normal(size=(batch_size, 24, 24, 3)), tf.float32)
        labels = tf.constant(rng.integers(0, 10, batch_size), tf.int32)
        loss = cifar10.loss(cifar10.inference(images), labels)
        train_op = cifar10.train(loss, global_step)
        with tf.compat.v1.Session(config=session_config(mixed_precision)) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            yield lambda: sess.run(train_op)


def settled(values, skip=2):
    """values after the first skip (a warm-up), or the last of them when
    there are no more than skip (a worker that joined its cluster late)."""
    return values[skip:] or values[-1:]


def logged_rates(out, skip, count=1):
    """The examples/sec of a training binary's log lines after its first
    skip lines: count of them, or None if it logged fewer; or all of them
    (one at least) for count None."""
    rates = [float(m.group(2)) for m in LOG_RATE.finditer(out)][skip:]
    if count is None:
        if not rates:
            sys.exit(
                "A training binary logged no rate after its first %d lines: "
                "give it more steps.\n%s" % (skip, out[-3000:])
            )
        return rates
    return rates[:count] if len(rates) >= count else None


@contextlib.contextmanager
def stopped_binary(run, train_dir, *flags, log_frequency=5):
    """cifar10_train.py in a child process, run past its first steps (its
    queue filled, its graph warm) and stopped (SIGSTOP). It logs every
    log_frequency steps, or every run.size.log_frequency if fewer.

    Yields:
      Its procs.Process, and as its turn(seconds) a function that resumes
      it (SIGCONT) for about this many seconds, stops it again, and returns
      its examples/sec within that turn, from its own log lines (their
      times and steps): the pauses never count.
    """
    binary = run.children.process(
        "cifar10_train.py",
        *run.binary_flags(
            train_dir,
            "--max_steps=100000",  # more than the turns reach; killed when done
            "--log_frequency=%d" % min(log_frequency, run.size.log_frequency),
        ),
        log_path=train_dir + ".log",
    )

    def turn(seconds):
        binary.send_signal(signal.SIGCONT)
        start = datetime.datetime.now()
        time.sleep(seconds)
        (t0, n0), *_, (t1, n1) = binary.wait_until(
            lambda out: _two_or_more_lines(out, start)
        )
        binary.send_signal(signal.SIGSTOP)
        return (n1 - n0) * run.size.batch_size / (t1 - t0).total_seconds()

    binary.turn = turn
    try:
        binary.wait_until(lambda out: len(LOG_STEP.findall(out)) >= 4)
        binary.send_signal(signal.SIGSTOP)
        yield binary
    finally:
        binary.stop()  # SIGKILL, stopped or not


def peak_rss_mb(pid):
    """The peak resident memory of a running process, in MB."""
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M).group(1)) / 1024


def _two_or_more_lines(out, start):
    """(time, step) of the log lines in out logged after start, if two or
    more; None if fewer."""
    lines = [
        (datetime.datetime.fromisoformat(when), int(step))
        for when, step in LOG_STEP.findall(out)
    ]
    lines = [(when, step) for when, step in lines if when > start]
    return lines if len(lines) >= 2 else None


def evaluation(run, train_dir, *flags):
    """cifar10_eval.py --run_once on the run's test images: its images/sec."""
    out, _, _ = run.children.run_measured(
        "cifar10_eval.py",
        "--data_dir=%s" % run.data_dir(),
        "--checkpoint_dir=%s" % train_dir,
        "--eval_dir=%s" % run.folder("eval"),
        "--run_once",
        "--batch_size=%d" % run.size.batch_size,
        *flags,
    )
    m = EVAL_RATE.search(out)
    assert int(m.group(1)) == run.size.test_records, out
    return float(m.group(2))
