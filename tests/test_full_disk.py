"""A full disk, on small tmpfs mounts: while saving a checkpoint, resuming
with less room than a checkpoint, downloading, extracting and packing the
data; and --fresh_start when --train_dir is a mount point.

Each tmpfs is mounted in a user and mount namespace of its own, which plain
users may make where the kernel allows it (`unshare -rm`), and reached from
outside through /proc/<pid>/root of the process that holds it. Where the
kernel forbids it, these tests are skipped, saying so (a failure under
CIFAR10_NO_SKIPS=1, as in .ci/run).
"""

import errno
import glob
import hashlib
import os
import re
import subprocess

import pytest
from test_pack import one_decoding_graph  # noqa: F401  (a fixture, for all here)

import cifar10_input
import cifar10_pack
from harness import fake_cifar
from harness.procs import PATIENCE_SECS
from helpers import checkpoint_step, exit_line, train
from support import checkpoints, download

# Run in the namespace: mounts the tmpfs (of "$2" KB and at most "$3" files
# and folders, if given), then resizes it on each size read from its
# standard input, answering each time.
HOLDER = """
mount -t tmpfs -o size="$2"k${3:+,nr_inodes=$3} tmpfs "$1" || exit 1
echo ready
while read size; do
  mount -o remount,size="$size"k tmpfs "$1" && echo ok || echo failed
done
"""


class SmallDisk:
    """A tmpfs of some kilobytes, held by a process in namespaces of its own.

    Args:
      folder: where it is mounted.
      kilobytes: its size.
      inodes: the most files and folders it holds (itself one of them), or
        None for the default.

    Attributes:
      path: the tmpfs, as this process reaches it (a pathlib.Path).
    """

    def __init__(self, folder, kilobytes, inodes=None):
        folder.mkdir(parents=True, exist_ok=True)
        self._holder = subprocess.Popen(
            ["unshare", "-rm", "sh", "-c", HOLDER, "holder", str(folder),
             str(kilobytes), str(inodes or "")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        if self._holder.stdout.readline().strip() != "ready":
            self.problem = self._holder.communicate(timeout=PATIENCE_SECS)[1].strip()
            return
        self.problem = None
        self.path = folder.__class__("/proc/%d/root%s" % (self._holder.pid, folder))

    def resize(self, kilobytes):
        self._holder.stdin.write("%d\n" % kilobytes)
        self._holder.stdin.flush()
        assert self._holder.stdout.readline().strip() == "ok"

    def close(self):
        # Its end of input lets it go; its pipes are closed, whether it still
        # ran or not.
        with self._holder:
            if self._holder.poll() is None:
                self._holder.stdin.close()
                self._holder.wait(timeout=PATIENCE_SECS)


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(name, kilobytes, inodes=None) -> a SmallDisk under
    tmp_path; all are let go at the end."""
    made = []

    def make(name, kilobytes, inodes=None):
        disk = SmallDisk(tmp_path / name, kilobytes, inodes)
        made.append(disk)
        if disk.problem is not None:
            pytest.skip(
                "Not tested: a full disk. This kernel lets no plain user mount a "
                "tmpfs in a namespace of its own (%s)." % disk.problem
            )
        return disk

    yield make
    for disk in made:
        disk.close()


FLAGS = [
    "--save_checkpoint_steps=5",
    "--save_summaries_steps=100000",
    # Small steps: the checkpoints are what fills the disk.
    "--batch_size=8",
    "--min_queue_examples=16",
]
FULL = (
    r"Error: No space left on the device of --train_dir=%s while saving step "
    r"(\d+); the checkpoint of step (\d+) is intact\. Free some space and run "
    r"again to resume\."
)


def last_line(result):
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.splitlines()[-1]


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_or_after_resuming_loses_nothing(
    dataset, small_disk
):
    # Room for the graph, the first summaries and two checkpoints of 8.8 MB.
    disk = small_disk("train", 24 * 1024)
    train_dir = disk.path
    result = train(dataset, train_dir, "--max_steps=1000000", *FLAGS)
    match = re.fullmatch(FULL % re.escape(str(train_dir)), last_line(result))
    assert match, result.stderr
    failed, intact = int(match[1]), int(match[2])
    assert failed == intact + 5
    newest, damaged = checkpoints.newest(str(train_dir))
    assert checkpoints.step(newest) == intact and not damaged
    # The half-written save is gone.
    assert not [n for n in os.listdir(train_dir) if "tmp" in n or "temp" in n]

    # With room again: what a save killed midway leaves goes at the next
    # start, and training resumes.
    disk.resize(96 * 1024)
    (train_dir / "model.ckpt-7_temp").mkdir()
    (train_dir / "model.ckpt-7_temp" / "part-00000-of-00001.index").write_text("x")
    (train_dir / ("graph.pbtxt.tmp" + "0" * 32)).write_text("x")
    result = train(dataset, train_dir, "--max_steps=%d" % (intact + 5), *FLAGS)
    assert result.returncode == 0, result.stderr
    assert (
        "Removed what interrupted saves left in %s: graph.pbtxt.tmp%s, "
        "model.ckpt-7_temp." % (train_dir, "0" * 32)
    ) in result.stdout, result.stdout
    assert (
        "Resuming from %s at step %d."
        % (train_dir / ("model.ckpt-%d" % intact), intact)
        in result.stdout
    )
    assert checkpoint_step(train_dir) == intact + 5

    # Resuming with less room than a checkpoint (4 MB of 8.8) does not fail
    # saving the step it resumed from, which is on disk, but the next.
    resumed = intact + 5
    used = sum(f.stat().st_size for f in train_dir.iterdir()) // 1024
    disk.resize(used + 4 * 1024)
    result = train(dataset, train_dir, "--max_steps=1000000", *FLAGS)
    match = re.fullmatch(FULL % re.escape(str(train_dir)), last_line(result))
    assert match, result.stderr
    assert (int(match[1]), int(match[2])) == (resumed + 5, resumed)
    assert (
        "Resuming from %s at step %d."
        % (train_dir / ("model.ckpt-%d" % resumed), resumed)
        in result.stdout
    )

    # --fresh_start cannot move a mount point; it moves what it holds.
    disk.resize(96 * 1024)
    result = train(dataset, train_dir, "--max_steps=2", "--fresh_start", *FLAGS)
    assert result.returncode == 0, result.stderr
    (kept,) = glob.glob(str(train_dir / "old-*"))
    assert (
        "--fresh_start: the previous contents of %s are now in %s." % (train_dir, kept)
        in result.stdout
    )
    assert checkpoint_step(kept) == resumed
    assert checkpoint_step(train_dir) == 2


def test_a_full_disk_while_fetching_the_data(tmp_path, small_disk):
    archive, md5 = fake_cifar.write_archive(
        str(tmp_path / "src"),
        str(tmp_path / "cifar-10-binary.tar.gz"),
        records_per_file=100,
        test_records=100,
    )
    size_kb = os.path.getsize(archive) // 1024
    # No room for the archive: nothing half-written stays.
    disk = small_disk("data", size_kb // 2)
    data_dir = disk.path

    def fetch():
        download.fetch(
            "file://" + archive, md5, str(data_dir), cifar10_input.DATA_FOLDER
        )

    with pytest.raises(download.FetchError) as e:
        fetch()
    assert str(e.value).startswith(
        "No space left on the device of --data_dir=%s while downloading file://%s."
        % (data_dir, archive)
    )
    assert os.listdir(data_dir) == []

    # Room for the archive, not for what it holds: the archive stays, intact,
    # and the message does not blame it.
    disk.resize(size_kb + 64)
    with pytest.raises(download.FetchError) as e:
        fetch()
    kept = data_dir / "cifar-10-binary.tar.gz"
    assert str(e.value).startswith(
        "No space left on the device of --data_dir=%s while extracting %s, which "
        "is intact." % (data_dir, kept)
    )
    assert hashlib.md5(kept.read_bytes()).hexdigest() == md5
    assert os.listdir(data_dir) == [kept.name]

    disk.resize(4 * size_kb + 1024)
    fetch()
    assert os.path.isdir(data_dir / fake_cifar.FOLDER)


def test_a_full_disk_while_packing_keeps_nothing(tmp_path, small_disk):
    fake_cifar.write_image_folders(
        str(tmp_path / "images"), ["a", "b"], 60, varied=False
    )
    # Room for a third of the records.
    disk = small_disk("data", 120 * cifar10_input.RECORD_BYTES // 3 // 1024)
    line = exit_line(
        cifar10_pack.main, image_dir=str(tmp_path / "images"), data_dir=str(disk.path)
    )
    assert line == (
        "Error: No space left on the device of --data_dir=%s while packing; nothing "
        "was kept. Free some space, or choose another --data_dir." % disk.path
    )
    assert os.listdir(disk.path) == []


def fill(folder):
    """Writes a file in folder until its device is full."""
    with open(folder / "filler", "wb", buffering=0) as f, pytest.raises(OSError) as e:
        while True:
            f.write(b"\0" * 4096)
    assert e.value.errno == errno.ENOSPC


NO_SPACE_TO_START = (
    "Error: No space left on the device of --data_dir=%s. Free some space, or "
    "choose another --data_dir."
)


@pytest.mark.parametrize("data_dir_there", [False, True])
def test_packing_on_a_full_disk_writes_nothing(tmp_path, small_disk, data_dir_there):
    fake_cifar.write_image_folders(
        str(tmp_path / "images"), ["a", "b"], 20, varied=False
    )
    disk = small_disk("data", 64)
    data_dir = disk.path / "data" if data_dir_there else disk.path / "new" / "data"
    if data_dir_there:
        data_dir.mkdir()
    fill(disk.path)
    before = sorted(disk.path.rglob("*"))
    line = exit_line(
        cifar10_pack.main, image_dir=str(tmp_path / "images"), data_dir=str(data_dir)
    )
    assert line == NO_SPACE_TO_START % data_dir
    assert sorted(disk.path.rglob("*")) == before


@pytest.mark.parametrize("inodes_left", [0, 1])
def test_packing_with_no_inode_left_writes_nothing(tmp_path, small_disk, inodes_left):
    fake_cifar.write_image_folders(
        str(tmp_path / "images"), ["a", "b"], 20, varied=False
    )
    # The tmpfs and data_dir take one inode each; one left makes the lock,
    # and then there is none for the data.
    disk = small_disk("data", 1024, inodes=2 + inodes_left)
    data_dir = disk.path / "data"
    data_dir.mkdir()
    line = exit_line(
        cifar10_pack.main, image_dir=str(tmp_path / "images"), data_dir=str(data_dir)
    )
    assert line == NO_SPACE_TO_START % data_dir
    assert list(disk.path.rglob("*")) == [data_dir]
