"""Fixtures: graph mode and parsed flags for in-process tests, and the fake
data set. What the tests share besides fixtures is in helpers.py.

Two variables of the project's own change what a run does:

  CIFAR10_HOST_TESTS=1  also runs the tests marked `hosts` (the cluster on
                        hosts of its own: network namespaces, bridges and
                        cgroups; they need root), as `-m hosts` runs them
                        alone. Without either they are deselected.
  CIFAR10_BENCHMARK_TESTS=1
                        also runs the tests marked `benchmarks` (every
                        benchmark group's binaries, at a tiny size), as
                        `-m benchmarks` runs them alone. Without either they
                        are deselected.
  CIFAR10_NO_SKIPS=1    turns every skip into a failure: where the suite
                        must run whole (.ci/run sets both).
"""

import contextlib
import fcntl
import os
import shutil
import sys

import pytest

# The tests run only when asked for: {marker: the variable that asks}.
ASKED_FOR = {"hosts": "CIFAR10_HOST_TESTS", "benchmarks": "CIFAR10_BENCHMARK_TESTS"}
NO_SKIPS = "CIFAR10_NO_SKIPS"

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_configure(config):
    """Sets up TensorFlow for in-process tests, in the processes that run
    tests: pytest-xdist's controller only hands them out, and loading
    TensorFlow there would cost seconds of CPU for nothing."""
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return
    from harness.procs import load_tensorflow_for_run_here

    load_tensorflow_for_run_here()
    import cifar10

    # In-process tests read FLAGS with their defaults; they change them
    # through absl.testing.flagsaver.
    cifar10.FLAGS(["pytest"])


# The test files that take longest, longest first (a file whose tests share
# a process, as pytest_collection_modifyitems() marks them, is one piece);
# the others follow in their usual order. pytest-xdist hands the tests to
# the test processes in the order of the collection, and a run ends when its
# last process is done: the long ones first and the short ones last keep the
# processes busy together to the end.
LONGEST_FIRST = [
    "test_eval.py",
    "test_classify.py",
    "test_cluster.py",
    "test_template.py",
    "test_pack.py",
    "test_readme.py",
    "test_train.py",
    "test_closed_output.py",
    "test_recovery.py",
    "test_images.py",
    "test_multi_gpu.py",
    "test_mixed_precision.py",
    "test_loading.py",
    "test_tensorboard.py",
    "test_download.py",
    "test_full_disk.py",
    "test_own_output.py",
    "test_imports.py",
    "test_help.py",
    "test_benchmarks.py",
]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Puts the longest files first; keeps the tests of a file that has a
    module fixture (a trained model, an export, a server) in one test
    process, so that it is made once (pytest.ini's --dist loadgroup; the
    other tests go to whichever process is free); and deselects the tests
    of ASKED_FOR unless they are asked for."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    for item in items:
        definitions = getattr(item, "_fixtureinfo", None)
        scopes = {
            definition.scope
            for defs in (definitions.name2fixturedefs.values() if definitions else ())
            for definition in defs
        }
        if scopes & {"module", "class", "package"}:
            item.add_marker(pytest.mark.xdist_group(item.path.name))
    for marker, variable in ASKED_FOR.items():
        if os.environ.get(variable) == "1" or marker in (config.option.markexpr or ""):
            continue
        left_out = [item for item in items if item.get_closest_marker(marker)]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [item for item in items if not item.get_closest_marker(marker)]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CIFAR10_NO_SKIPS=1, a skipped test fails, saying why it skipped."""
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and os.environ.get(NO_SKIPS) == "1"
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        report.outcome = "failed"
        report.longrepr = "%s=1, and this test skipped: %s" % (NO_SKIPS, reason)
    return report


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """A learnable fake data set in CIFAR-10's layout, a fifth of its size:
    10,000 training and 2,000 test images, which it describes (as packed data
    does) so that the binaries expect those counts.

    A dict: 'root' is the folder to pass as --data_dir; 'dir', 'train' and
    'test' are fake_cifar.write_dataset()'s.
    """
    from harness import fake_cifar

    root = str(tmp_path_factory.mktemp("cifar10_data"))
    data = fake_cifar.write_dataset(
        root, records_per_file=2000, test_records=2000, describe=True
    )
    data["root"] = root
    return data


def _shared_folder(tmp_path_factory, worker_id):
    """The folder that every test process of this run shares."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if worker_id != "master" else root


def pytest_sessionfinish(session, exitstatus):
    """Removes the shared checkpoint when every test passed (pytest removes
    each test's own folder, but a failed one's)."""
    if exitstatus == 0 and not hasattr(session.config, "workerinput"):
        root = session.config._tmp_path_factory.getbasetemp()
        shutil.rmtree(root / "trained", ignore_errors=True)


@pytest.fixture(scope="session")
def trained(dataset, tmp_path_factory, worker_id):
    """A train_dir with a checkpoint that scores at least 0.9 on the learnable
    test images: helpers.train_until_learned()'s. The test processes share it:
    the first to need it trains, the others wait and use it."""
    import tensorflow as tf

    import helpers

    root = _shared_folder(tmp_path_factory, worker_id)
    train_dir = root / "trained"
    with open(root / "trained.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tf.train.latest_checkpoint(str(train_dir)):
            train_dir.mkdir(exist_ok=True)
            helpers.train_until_learned(train_dir, dataset)
    return str(train_dir)


@pytest.fixture
def clusters(dataset, tmp_path):
    """clusters(kind, *args) makes kind(dataset, tmp_path, *args), a
    helpers.LocalCluster or TFConfigCluster; what they started is stopped at
    the end of the test."""
    made = []

    def make(kind, *args):
        made.append(kind(dataset, tmp_path, *args))
        return made[-1]

    yield make
    for cluster in made:
        cluster.stop_all()


@pytest.fixture
def needs_hosts():
    """Skips a test of the cluster on hosts (harness/hosts.py) where they
    cannot be made (they need root), saying why (a failure under
    CIFAR10_NO_SKIPS=1)."""
    from harness import hosts

    why_not = hosts.usable()
    if why_not:
        pytest.skip(why_not)


@pytest.fixture
def on_hosts(dataset, tmp_path):
    """on_hosts(num_workers, *flags, rate_mbit=30, worker_cpus=1, name=""): a
    hosts.TrainingCluster of the training binary on the fake data set, its
    parameter server started, its output in tmp_path and its checkpoints in
    its train_dir, tmp_path / (name + "train"). Each task has a host of a
    core (a worker, of worker_cpus), on a link of rate_mbit (None: no
    limit): at 30 Mbit/s a step waits seconds on the network (it moves 8.6
    MB) and computes for a fraction of one, which leaves most of the machine
    to the tests beside these. The clusters of a test share its lab, under
    names of their own. Every run has a --max_steps it cannot reach: the
    tests stop them. What it made is removed at the end of the test."""
    from harness import hosts
    from helpers import FAST_FLAGS

    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(hosts.Hosts())

        def make(num_workers, *flags, rate_mbit=30, worker_cpus=1, name=""):
            train_dir = tmp_path / (name + "train")
            cluster = hosts.TrainingCluster(
                lab,
                num_workers,
                [
                    "--data_dir=%s" % dataset["root"],
                    "--train_dir=%s" % train_dir,
                    *FAST_FLAGS,
                    "--max_steps=1000000",
                    *flags,
                ],
                str(tmp_path),
                ps_cpus=1,
                worker_cpus=worker_cpus,
                rate_mbit=rate_mbit,
                name=name,
            )
            cluster.train_dir = train_dir
            stack.callback(cluster.stop_all)
            cluster.start("ps", 0)
            return cluster

        yield make
