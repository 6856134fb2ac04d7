"""The benchmarks (benchmarks/): every group runs, at a tiny size, and prints
a figure in each row of its table; and a run leaves nothing behind, even
when a signal stops it while one of its binaries runs.

The runs of the binaries (marked `benchmarks`) check a developer's tool,
not the tutorial, and take a sixth of the suite: they run when asked for
(-m benchmarks or CIFAR10_BENCHMARK_TESTS=1), and always in CI."""

import os
import signal
import tempfile

import pytest

from benchmarks import DEFAULT_GROUPS, common, runner
from harness.procs import Process


@pytest.fixture
def tiny_run(tmp_path):
    """A tiny run, its children stopped at the end; the binaries that run
    to their end run in this process (one TensorFlow for all of them), the
    others are forked from one process that has loaded TensorFlow."""
    children = common.Children(in_process=True)
    try:
        yield common.Run(common.SIZES["tiny"], str(tmp_path), children)
    finally:
        children.stop_all()


def assert_prints_its_table(group, out):
    rows = runner.group_module(group).ROWS
    lines = out.splitlines()
    table = lines[lines.index(group) + 4 :][: len(rows)]
    assert [line.split(" | ")[0] for line in table] == [
        "| " + row.label for row in rows
    ], out
    assert all(line.endswith(" |") and " | n/a" not in line for line in table), out


# The groups that run binaries in one run, one after another, as
# `python -m benchmarks` runs them: they share its data set, its checkpoint
# and its forks; lrn, which runs none, in a quick run of its own.
@pytest.mark.parametrize(
    "groups",
    [
        pytest.param(
            [g for g in DEFAULT_GROUPS if g != "lrn"],
            marks=[pytest.mark.slow, pytest.mark.benchmarks],
            id="the_rest",
        ),
        pytest.param(["lrn"], id="lrn"),
    ],
)
def test_each_group_prints_its_rows(groups, tiny_run, capsys):
    figures = runner.measure(tiny_run, groups)
    out = capsys.readouterr().out
    keys = []
    for group in groups:
        assert_prints_its_table(group, out)
        keys += [row.key for row in runner.group_module(group).ROWS]
    assert sorted(figures) == sorted(keys)


@pytest.mark.hosts
@pytest.mark.slow
def test_the_hosts_group_prints_its_rows(needs_hosts, tiny_run, capsys):
    runner.measure(tiny_run, ["hosts"])
    assert_prints_its_table("hosts", capsys.readouterr().out)


def test_a_group_that_does_not_exist_is_one_line(tmp_path):
    with pytest.raises(runner.Error, match=r"No benchmark group 'trainning'; the "):
        runner.run(["training", "trainning"], "tiny", str(tmp_path))
    assert os.listdir(tmp_path) == []  # nothing measured


def test_a_run_removes_its_work_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    results = runner.run([], "tiny")
    assert results["size"] == "tiny"
    assert os.listdir(tmp_path) == []


def processes_naming(text):
    """{pid: command line} of the processes whose command line holds text."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone
        if text in command:
            found[int(pid)] = command
    return found


@pytest.mark.benchmarks
@pytest.mark.slow
def test_sigterm_while_a_binary_runs_stops_it_and_removes_the_work_folder(tmp_path):
    (tmp_path / "tmp").mkdir()
    proc = Process(
        "benchmarks", "--tiny", "evaluation",
        "--json=%s" % (tmp_path / "figures.json"),
        log_path=tmp_path / "benchmark.log",
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
    )  # fmt: skip
    try:
        # The training binary that makes the evaluation's checkpoint, in the
        # work folder, started by the wrapper that measures it.
        proc.wait_until(
            lambda _: [
                command
                for command in processes_naming(str(tmp_path / "tmp")).values()
                if "cifar10_train.py" in command
            ],
            "the training binary",
        )
        proc.send_signal(signal.SIGTERM)
        code, out = proc.finish()
    finally:
        proc.stop()
    assert code == 128 + signal.SIGTERM, out
    assert out.endswith("Interrupted.\n") and "Traceback" not in out, out
    assert processes_naming(str(tmp_path / "tmp")) == {}
    assert os.listdir(tmp_path / "tmp") == []
