"""How the suite runs: what a run leaves behind (a passing test run, nothing
of its own; the benchmarks: see test_benchmarks.py; a download:
test_download.py), the tests of a module fixture kept in one test process,
and the tests that run only when asked for."""

import os
import re
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


def pytest_run(folder, root, *args, **env):
    """Runs pytest with the project's settings on folder's tests, its
    temporary folders under root, with args; returns its output."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-c", os.path.join(ROOT, "pytest.ini"),
         "-n", "0", "-p", "no:cacheprovider", "--rootdir", str(folder), *args,
         str(folder)],
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


GROUPED = """
import os

import pytest


@pytest.fixture(scope="module")
def made_once():
    with open(os.environ["MADE_LOG"], "a") as f:
        f.write("%d\\n" % os.getpid())
    return os.getpid()


@pytest.mark.parametrize("i", range(6))
def test_shares_it(made_once, i):
    assert made_once == os.getpid()


@pytest.mark.parametrize("i", range(6))
def test_alone(i):
    pass
"""


def probe_with_the_projects_collection(folder, tests):
    """A folder of tests, folder/test_probe.py, whose conftest.py takes the
    project's collection hook (its order, groups and tests left out)."""
    folder.mkdir()
    (folder / "test_probe.py").write_text(tests)
    (folder / "conftest.py").write_text(
        "import importlib.util\n"
        "spec = importlib.util.spec_from_file_location('project_conftest', %r)\n"
        "project = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(project)\n"
        "pytest_collection_modifyitems = project.pytest_collection_modifyitems\n"
        % os.path.join(ROOT, "tests", "conftest.py")
    )


ASKED_FOR = """
import pytest

@pytest.mark.hosts
def test_on_hosts():
    pass

@pytest.mark.benchmarks
def test_a_benchmark():
    pass

def test_plain():
    pass
"""


def test_the_hosts_and_benchmark_tests_run_only_when_asked_for(tmp_path):
    probe_with_the_projects_collection(tmp_path / "probe", ASKED_FOR)
    root = tmp_path / "root"
    root.mkdir()

    def passed(*args, **env):
        out = pytest_run(tmp_path / "probe", root, *args, "-rA", **env)
        return sorted(re.findall(r"^PASSED \S+::(\w+)$", out, re.M))

    env = {name: "" for name in ("CIFAR10_HOST_TESTS", "CIFAR10_BENCHMARK_TESTS")}
    assert passed(**env) == ["test_plain"]
    assert passed(**{**env, "CIFAR10_BENCHMARK_TESTS": "1"}) == [
        "test_a_benchmark",
        "test_plain",
    ]
    assert passed(**{**env, "CIFAR10_HOST_TESTS": "1"}) == [
        "test_on_hosts",
        "test_plain",
    ]
    assert passed("-m", "benchmarks", **env) == ["test_a_benchmark"]


def test_a_module_fixture_is_made_once_for_its_tests_across_the_test_processes(
    tmp_path,
):
    # conftest.py puts the tests of a file with a module fixture in one test
    # process (pytest-xdist's --dist loadgroup, which needs a pytest whose
    # node ids it can mark: requirements.txt pins one).
    probe_with_the_projects_collection(tmp_path / "probe", GROUPED)
    root = tmp_path / "root"
    root.mkdir()
    made = tmp_path / "made.log"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-c", os.path.join(ROOT, "pytest.ini"),
         "-n", "3", "-p", "no:cacheprovider", "--rootdir", str(tmp_path / "probe"),
         str(tmp_path / "probe")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTEST_DEBUG_TEMPROOT": str(root), "MADE_LOG": str(made)},
    )  # fmt: skip
    assert "12 passed" in result.stdout, result.stdout + result.stderr
    assert len(made.read_text().split()) == 1, made.read_text()
