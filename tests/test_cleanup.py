"""What a run leaves behind: a passing test run, nothing of its own; the
benchmark, none of its work folder, even when a signal stops it; a
download, no lock file (see test_download.py)."""

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile

from absl.testing import flagsaver

from harness.procs import ROOT, Process

PROBE = """
import os

def test_passes(tmp_path):
    (tmp_path / "big").write_bytes(os.urandom(1 << 20))

def test_fails(tmp_path):
    (tmp_path / "big").write_bytes(os.urandom(1 << 20))
    assert os.environ.get("PROBE_PASSES")
"""


def pytest_run(folder, root, **env):
    """Runs pytest with the project's settings on folder's tests, its
    temporary folders under root; returns its output."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-c", os.path.join(ROOT, "pytest.ini"),
         "-n", "0", "-p", "no:cacheprovider", "--rootdir", str(folder), str(folder)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTEST_DEBUG_TEMPROOT": str(root), **env},
    )  # fmt: skip
    return result.stdout


def test_a_test_run_keeps_only_what_failed_tests_wrote(tmp_path):
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "test_probe.py").write_text(PROBE)
    root = tmp_path / "root"
    root.mkdir()
    assert "1 failed, 1 passed" in pytest_run(tmp_path / "probe", root)
    kept = sorted(p.name for p in root.rglob("big"))
    assert [p.parent.name for p in root.rglob("big")] == ["test_fails0"], kept
    # A run that passes keeps nothing of its own (and one earlier run at most).
    before = sorted(str(p) for p in root.rglob("*"))
    assert "2 passed" in pytest_run(tmp_path / "probe", root, PROBE_PASSES="1")
    after = sorted(str(p) for p in root.rglob("*") if not p.name.endswith("current"))
    assert set(after) <= set(before)


def test_the_benchmark_removes_its_work_folder(tmp_path, monkeypatch, capsys):
    # Its main() in this process, measuring nothing: what a run leaves where
    # temporary folders go. (A signal's way out, through startup.run(), is
    # the next test's, in a process of its own.)
    spec = importlib.util.spec_from_file_location(
        "benchmark", os.path.join(ROOT, "benchmarks", "benchmark.py")
    )
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with flagsaver.flagsaver(only=[], json=str(tmp_path / "out" / "figures.json")):
        benchmark.main([])
    assert "Wrote %s" % (tmp_path / "out" / "figures.json") in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_the_benchmark_stopped_by_sigterm_removes_its_work_folder(tmp_path):
    (tmp_path / "tmp").mkdir()
    proc = Process(
        os.path.join("benchmarks", "benchmark.py"), "--quick", "--only=eval",
        "--json=%s" % (tmp_path / "figures.json"),
        log_path=tmp_path / "benchmark.log",
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
    )  # fmt: skip
    try:
        proc.wait_for("^Writing a full-size fake data set to ")
        proc.send_signal(signal.SIGTERM)
        code, out = proc.finish()
    finally:
        proc.stop()
    assert code == 128 + signal.SIGTERM, out
    assert out.endswith("Interrupted.\n") and "Traceback" not in out, out
    assert os.listdir(tmp_path / "tmp") == []
