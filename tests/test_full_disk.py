"""A full disk, on small tmpfs mounts: while saving a checkpoint, downloading
or extracting the data; and --fresh_start when --train_dir is a mount point.

Mounting a tmpfs needs root (as CI runs).
"""

import glob
import hashlib
import os
import re
import subprocess

import pytest
from absl.testing import flagsaver

import cifar10_input
from harness import fake_cifar
from helpers import checkpoint_step, train
from support import checkpoints, download


@pytest.fixture
def small_disk():
    """mount(folder, kilobytes) mounts a tmpfs of that size on the folder, or
    resizes the one mounted there; all are unmounted at the end."""
    mounted = []

    def mount(folder, kilobytes):
        folder.mkdir(parents=True, exist_ok=True)
        options = "size=%dk" % kilobytes
        if folder in mounted:
            options = "remount," + options
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, "mounting a tmpfs needs root: " + result.stderr
        if folder not in mounted:
            mounted.append(folder)

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_full_disk_at_a_checkpoint_loses_nothing(dataset, tmp_path, small_disk):
    train_dir = tmp_path / "train"
    # Room for the graph, the first summaries and two checkpoints of 8.8 MB.
    small_disk(train_dir, 24 * 1024)
    flags = ["--save_checkpoint_steps=5", "--save_summaries_steps=100000"]
    result = train(dataset, train_dir, "--max_steps=1000000", *flags)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    match = re.fullmatch(
        r"Error: No space left on the device of --train_dir=%s while saving step "
        r"(\d+); the checkpoint of step (\d+) is intact\. Free some space and run "
        r"again to resume\." % re.escape(str(train_dir)),
        result.stderr.splitlines()[-1],
    )
    assert match, result.stderr
    failed, intact = int(match[1]), int(match[2])
    assert failed == intact + 5
    newest, damaged = checkpoints.newest(str(train_dir))
    assert checkpoints.step(newest) == intact and not damaged
    # The half-written save is gone.
    assert not [n for n in os.listdir(train_dir) if "tmp" in n or "temp" in n]

    # With room again: what a save killed midway leaves goes at the next
    # start, and training resumes.
    small_disk(train_dir, 96 * 1024)
    (train_dir / "model.ckpt-7_temp").mkdir()
    (train_dir / "model.ckpt-7_temp" / "part-00000-of-00001.index").write_text("x")
    (train_dir / ("graph.pbtxt.tmp" + "0" * 32)).write_text("x")
    result = train(dataset, train_dir, "--max_steps=%d" % (intact + 5), *flags)
    assert result.returncode == 0, result.stderr
    assert (
        "Removed what interrupted saves left in %s: graph.pbtxt.tmp%s, "
        "model.ckpt-7_temp." % (train_dir, "0" * 32)
    ) in result.stdout, result.stdout
    assert (
        "Resuming from %s at step %d."
        % (
            train_dir / ("model.ckpt-%d" % intact),
            intact,
        )
        in result.stdout
    )
    assert checkpoint_step(train_dir) == intact + 5

    # --fresh_start cannot move a mount point; it moves what it holds.
    result = train(dataset, train_dir, "--max_steps=2", "--fresh_start", *flags)
    assert result.returncode == 0, result.stderr
    (kept,) = glob.glob(str(train_dir / "old-*"))
    assert (
        "--fresh_start: the previous contents of %s are now in %s." % (train_dir, kept)
        in result.stdout
    )
    assert checkpoint_step(kept) == intact + 5
    assert checkpoint_step(train_dir) == 2


def test_a_full_disk_while_fetching_the_data(tmp_path, small_disk):
    archive, md5 = fake_cifar.write_archive(
        str(tmp_path / "src"),
        str(tmp_path / "cifar-10-binary.tar.gz"),
        records_per_file=100,
        test_records=100,
    )
    size_kb = os.path.getsize(archive) // 1024
    data_dir = tmp_path / "data"

    def fetch():
        with flagsaver.flagsaver(
            data_dir=str(data_dir), data_url="file://" + archive, data_md5=md5
        ):
            download.maybe_download_and_extract()

    # No room for the archive: nothing half-written stays.
    small_disk(data_dir, size_kb // 2)
    with pytest.raises(cifar10_input.DataError) as e:
        fetch()
    assert str(e.value).startswith(
        "No space left on the device of --data_dir=%s while downloading file://%s."
        % (data_dir, archive)
    )
    assert os.listdir(data_dir) == []

    # Room for the archive, not for what it holds: the archive stays, intact,
    # and the message does not blame it.
    small_disk(data_dir, size_kb + 64)
    with pytest.raises(cifar10_input.DataError) as e:
        fetch()
    kept = data_dir / "cifar-10-binary.tar.gz"
    assert str(e.value).startswith(
        "No space left on the device of --data_dir=%s while extracting %s, which "
        "is intact." % (data_dir, kept)
    )
    assert hashlib.md5(kept.read_bytes()).hexdigest() == md5
    assert os.listdir(data_dir) == [kept.name]

    small_disk(data_dir, 4 * size_kb + 1024)
    fetch()
    assert os.path.isdir(data_dir / fake_cifar.FOLDER)
