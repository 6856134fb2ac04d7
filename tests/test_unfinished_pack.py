"""Training and evaluation on a --data_dir that cifar10_pack.py packs into,
was cut short in, or refused the images in: one line that says so, rather
than a download of CIFAR-10 into it."""

import os

import pytest
from test_pack import one_decoding_graph  # noqa: F401  (a fixture, for all here)

import cifar10_input
import cifar10_pack
from harness import fake_cifar
from harness.procs import run_here
from helpers import exit_line
from support import folders

# Where the data would be fetched from if it were: nowhere.
NO_DOWNLOAD = "--data_url=file:///nonexistent/cifar-10-binary.tar.gz"


def last_line(script, data_dir, tmp_path):
    flags = ["--data_dir=%s" % data_dir, NO_DOWNLOAD, "--max_steps=100000"]
    if script == "cifar10_eval.py":
        flags = flags[:2] + ["--checkpoint_dir=%s" % tmp_path, "--run_once"]
    result = run_here(script, *flags)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.splitlines()[-1]


@pytest.mark.parametrize("script", ["cifar10_train.py", "cifar10_eval.py"])
def test_a_packing_under_way(tmp_path, script):
    data_dir = tmp_path / "data"
    (data_dir / ".packing-abc123").mkdir(parents=True)
    with folders.locked(str(data_dir / ".pack.lock")):
        line = last_line(script, data_dir, tmp_path)
    assert line.startswith(
        "Error: --data_dir=%s is being packed into (pid %d on "
        % (data_dir, os.getpid())
    ), line
    assert line.endswith(
        "); wait for the packing to end, then run again. Nothing was written."
    ), line
    assert sorted(os.listdir(data_dir)) == [".packing-abc123"]


def test_a_packing_cut_short(tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / ".packing-abc123").mkdir(parents=True)
    (data_dir / ".pack.lock").write_text("pid 1 on elsewhere\n")  # not held
    line = last_line("cifar10_train.py", data_dir, tmp_path)
    assert line == (
        "Error: --data_dir=%s holds what an interrupted packing left (.packing-abc123)"
        " and no data: pack the images into it again, or choose another --data_dir. "
        "Nothing was written." % data_dir
    )
    assert sorted(os.listdir(data_dir)) == [".pack.lock", ".packing-abc123"]


def test_a_packing_that_refused_the_images(tmp_path):
    images = tmp_path / "images"
    fake_cifar.write_image_folders(str(images), ["a", "b"], 10, varied=False)
    for n in range(4):  # a fifth of them unreadable
        (images / "a" / ("broken%d.jpg" % n)).write_bytes(b"not an image")
    data_dir = tmp_path / "data"
    refused = exit_line(
        cifar10_pack.main, image_dir=str(images), data_dir=str(data_dir)
    )
    assert "could not be read, more than a tenth" in refused
    log = data_dir / (cifar10_input.DATA_FOLDER + ".skipped.txt")
    assert os.listdir(data_dir) == [log.name]

    line = last_line("cifar10_train.py", data_dir, tmp_path)
    assert line == (
        "Error: --data_dir=%s holds no data but the list of the images a packing "
        "skipped (%s): that packing failed. Pack the images into it again, or choose "
        "another --data_dir. Nothing was written." % (data_dir, log)
    )
    assert os.listdir(data_dir) == [log.name]
