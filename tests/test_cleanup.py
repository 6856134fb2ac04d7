"""What a run leaves behind: a passing test run, nothing of its own (the
benchmarks: see test_benchmarks.py; a download: test_download.py)."""

import os
import subprocess
import sys

from harness.procs import ROOT

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
