"""What cifar10_pack.py refuses before it reads an image, in one line, leaving
nothing on disk: a data folder that is not a plain folder (a file, a link, a
mount point), and paths whose bytes are not UTF-8."""

import os
import subprocess

import pytest

import cifar10_input
import cifar10_pack
from harness import fake_cifar
from harness.procs import PATIENCE_SECS, ROOT, command, run_here
from helpers import exit_line

NOT_A_FOLDER = (
    "Error: %s is %s, where the packed data goes; move it away or pack into "
    "another --data_dir. Nothing was written."
)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    fake_cifar.write_image_folders(str(folder), ["a", "b"], 10, varied=False)
    return str(folder)


def contents(folder):
    """Every path under folder, relative, links not followed."""
    return sorted(
        os.path.relpath(os.path.join(top, name), folder)
        for top, dirs, files in os.walk(folder)
        for name in dirs + files
    )


@pytest.mark.parametrize("kind", ["file", "broken link", "link to an empty folder"])
def test_a_data_folder_that_is_not_a_folder_is_refused_before_packing(
    tmp_path, image_dir, kind
):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    output = data_dir / cifar10_input.DATA_FOLDER
    if kind == "file":
        output.write_text("x")
        what = "a file"
    elif kind == "broken link":
        output.symlink_to(tmp_path / "nowhere")
        what = "a link to %s" % (tmp_path / "nowhere")
    else:
        (tmp_path / "empty").mkdir()
        output.symlink_to(tmp_path / "empty")
        what = "a link to %s" % (tmp_path / "empty")
    before = contents(tmp_path)
    line = exit_line(cifar10_pack.main, image_dir=image_dir, data_dir=str(data_dir))
    assert line == NOT_A_FOLDER % (output, what)
    assert contents(tmp_path) == before


MOUNT = """
mount -t tmpfs tmpfs "$1" || exit 3
shift
exec "$@"
"""


def test_a_data_folder_that_is_a_mount_point_is_refused_before_packing(
    tmp_path, image_dir
):
    data_dir = tmp_path / "data"
    output = data_dir / cifar10_input.DATA_FOLDER
    output.mkdir(parents=True)
    # A tmpfs on the data folder, in a user and mount namespace of its own,
    # which plain users may make where the kernel allows it.
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", MOUNT, "mount", str(output),
         *command("cifar10_pack.py", "--image_dir=" + image_dir,
                  "--data_dir=%s" % data_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=PATIENCE_SECS,
    )  # fmt: skip
    if result.returncode == 3 or "unshare:" in result.stderr:
        pytest.skip(
            "Not tested: a mount point. This kernel lets no plain user mount a "
            "tmpfs in a namespace of its own (%s)." % result.stderr.strip()
        )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == NOT_A_FOLDER % (output, "a mount point")
    assert result.stdout == ""
    assert contents(data_dir) == [cifar10_input.DATA_FOLDER]


def test_paths_that_are_not_utf8_pack(tmp_path, image_dir):
    # Folders named in Latin-1, as an old archive or a Windows share has them.
    images = os.path.join(os.fsencode(tmp_path), b"caf\xe9 images")
    os.symlink(image_dir, images)
    data_dir = os.path.join(os.fsencode(tmp_path), b"donn\xe9es")
    result = subprocess.run(
        command("cifar10_pack.py", os.fsdecode(b"--image_dir=" + images),
                os.fsdecode(b"--data_dir=" + data_dir)),
        cwd=ROOT, capture_output=True, timeout=PATIENCE_SECS,
    )  # fmt: skip
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, output
    assert "Traceback" not in output, output
    # Shown with the bytes that are not UTF-8 as \xNN.
    shown = "%s/donn\\xe9es/%s" % (tmp_path, cifar10_input.DATA_FOLDER)
    assert "images of 2 classes into %s (" % shown in output, output
    assert os.listdir(data_dir) == [os.fsencode(cifar10_input.DATA_FOLDER)], output

    # Training and evaluation read it.
    data_flag = os.fsdecode(b"--data_dir=" + data_dir)
    train_dir = "--train_dir=%s" % (tmp_path / "train")
    small = ["--batch_size=4", "--min_queue_examples=8"]
    result = run_here("cifar10_train.py", data_flag, train_dir, "--max_steps=2", *small)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_here(
        "cifar10_eval.py", data_flag, "--checkpoint_dir=%s" % (tmp_path / "train"),
        "--eval_dir=%s" % (tmp_path / "eval"), "--run_once", "--batch_size=4",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
