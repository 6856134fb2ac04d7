"""A quiet start: the lines TensorFlow logs as it loads are held to what
TF_CPP_MIN_LOG_LEVEL asks (support/loading.py), and anything else it or
Python writes meanwhile reaches the user unchanged, even from a process
that dies."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from harness.procs import ROOT, run_binary
from helpers import PRECISION, form, logged_steps, train_flags

# What TensorFlow 2.21 writes as it loads on a machine without a GPU,
# whatever TF_CPP_MIN_LOG_LEVEL says, and the lines around it that must stay.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written "
    "to STDERR",
    "I0000 00:00:1796180238.340871    2914 port.cc:153] oneDNN custom operations "
    "are on. You may see slightly different numerical results.",
    "I0000 00:00:1796180238.341299    2914 cudart_stub.cc:31] Could not find cuda "
    "drivers on your machine, GPU will not be used.",
    "W0000 00:00:1796180238.341300    2914 some.cc:12] a warning below the level",
    "I0000 00:00:1796180238.469850    3461 cpu_feature_guard.cc:227] This "
    "TensorFlow binary is optimized to use available CPU instructions.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796180240.666255    2914 cuda_platform.cc:52] failed call to "
    "cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]
KEPT = [
    "E0000 00:00:1796180240.666300    2914 loader.cc:9] a real error while loading",
    "ImportError: libcudnn.so.9: cannot open shared object file",
    "a line of its own",
]

# A binary's start, with lines written as TensorFlow writes them (to file
# descriptor 2), then what it writes after the loading, or how it dies.
START = (
    """
import os, signal, sys
sys.path.insert(0, %r)
from support import loading
loading.hold()
for line in sys.argv[2:]:
    os.write(2, line.encode() + b"\\n")
print("to stdout", flush=True)
if sys.argv[1] == "dies":
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[1] == "raises":
    raise RuntimeError("a library is missing")
loading.release()
sys.stderr.write("after the loading\\n")
"""
    % ROOT
)


def start(ending, lines, level="2"):
    return subprocess.run(
        [sys.executable, "-c", START, ending, *lines],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": level},
        timeout=60,
    )


def test_loading_lines_below_the_level_are_dropped_and_the_rest_kept():
    mixed = [KEPT[0], *NOISE[:4], KEPT[1], *NOISE[4:], KEPT[2]]
    result = start("lives", mixed)
    assert result.returncode == 0
    assert result.stdout == "to stdout\n"
    assert result.stderr.splitlines() == [*KEPT, "after the loading"]
    # Asked for everything, it gets everything.
    result = start("lives", mixed, level="0")
    assert result.stderr.splitlines() == [*mixed, "after the loading"]


def test_a_process_that_dies_while_loading_still_has_its_last_words_shown():
    result = start("dies", [*NOISE, *KEPT])
    assert result.returncode == -9
    assert result.stderr.splitlines() == KEPT


def test_a_traceback_while_loading_is_passed_on(tmp_path):
    # Into a file, read as soon as the process has ended (release() runs at
    # exit, so that nothing comes after a shell's prompt).
    with open(tmp_path / "err", "w+") as err:
        done = subprocess.run(
            [sys.executable, "-c", START, "raises", *NOISE, KEPT[0]],
            stdout=subprocess.DEVNULL, stderr=err, timeout=60,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )  # fmt: skip
        err.seek(0)
        lines = err.read().splitlines()
    assert done.returncode == 1
    assert lines[:2] == [KEPT[0], "Traceback (most recent call last):"]
    assert lines[-1] == "RuntimeError: a library is missing"


# A script's start: the binary's start-up, as support/startup.py makes it.
PROLOGUE = (
    """
import os, signal, subprocess, sys
sys.path.insert(0, %r)
from support import loading, startup
startup.before_tensorflow()
"""
    % ROOT
)


def run_script(body, **kwargs):
    return subprocess.run(
        [sys.executable, "-c", PROLOGUE + body],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=60,
        **kwargs,
    )


def test_ctrl_c_while_the_loading_lines_are_shown_ends_as_interrupted():
    # More kept lines than the pipe to the test holds: until the test reads
    # them, showing them waits, and Ctrl+C comes then.
    kept = ["a kept line %05d %s" % (i, "x" * 80) for i in range(1000)]
    body = (
        """
for line in %r:
    os.write(2, line.encode() + b"\\n")
print("releasing", flush=True)
loading.release()
sys.stderr.write("after the loading\\n")
"""
        % kept
    )
    process = subprocess.Popen(
        [sys.executable, "-c", PROLOGUE + body],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        assert process.stdout.readline() == "releasing\n"
        # Asleep from now on means waiting inside release().
        stat = pathlib.Path("/proc/%d/stat" % process.pid)
        while stat.read_text().rpartition(")")[2].split()[0] != "S":
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert (process.returncode, err.splitlines()) == (130, [*kept, "Interrupted."])


def test_a_line_cut_short_before_the_end_of_the_loading_is_kept_as_it_is():
    result = run_script(
        """
os.write(2, b"no end of line")
loading.release()
sys.stderr.write("after the loading\\n")
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "no end of lineafter the loading\n"


def test_a_process_started_while_loading_writes_after_it_and_is_heard():
    result = run_script(
        """
late = subprocess.Popen(
    [sys.executable, "-c", "import sys; sys.stdin.readline(); "
     "sys.stderr.write('from a process started while loading\\\\n')"],
    stdin=subprocess.PIPE,
)
loading.release()
late.communicate(b"go\\n")
print(late.returncode)
sys.stderr.write("after the loading\\n")
"""
    )
    assert (result.returncode, result.stdout) == (0, "0\n"), result.stderr
    assert result.stderr.splitlines() == [
        "after the loading",
        "from a process started while loading",
    ]


def test_the_binarys_stderr_works_whatever_runs_beside_it_while_loading():
    # Every other process of its session killed while TensorFlow loads.
    result = run_script(
        """
os.write(2, %r)
for name in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open("/proc/%%s/stat" %% name) as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        continue
    if int(fields[3]) == os.getsid(0) and int(name) != os.getpid():
        os.kill(int(name), signal.SIGKILL)
os.write(2, %r)
loading.release()
sys.stderr.write("after the loading\\n")
"""
        % (
            ("\n".join([*NOISE, KEPT[0]]) + "\n").encode(),
            (KEPT[1] + "\n").encode(),
        ),
        start_new_session=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [KEPT[0], KEPT[1], "after the loading"]


@pytest.mark.slow
def test_a_healthy_run_prints_the_tutorials_lines_only(dataset, tmp_path):
    # Short: a step line (every 10 steps), 100 images scored.
    trained = run_binary(
        "cifar10_train.py",
        *train_flags(dataset, tmp_path / "train", "--max_steps=10"),
        "--batch_size=16", "--min_queue_examples=100",
    )  # fmt: skip
    scored = run_binary(
        "cifar10_eval.py", "--data_dir=%s" % dataset["root"],
        "--checkpoint_dir=%s" % (tmp_path / "train"),
        "--eval_dir=%s" % (tmp_path / "eval"), "--run_once", "--batch_size=100",
        "--num_examples=100",
    )  # fmt: skip
    for result in (trained, scored):
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        # Every line has a form the binaries print (helpers.FORMS).
        assert [line for line in result.stdout.splitlines() if not form(line)] == []
    assert logged_steps(trained.stdout) == [10]
    assert PRECISION.search(scored.stdout)
