"""What cifar10_pack.py refuses before it reads an image, in one line, leaving
nothing on disk: a data folder that is not a plain folder (a file, a link, a
mount point). (Paths whose bytes are not UTF-8 pack: test_pack.py's
test_paths_that_are_not_utf8_pack, on the run of the binary that its
folder as people have them shares.)"""

import os
import subprocess

import pytest

import cifar10_input
import cifar10_pack
from harness import fake_cifar
from harness.procs import PATIENCE_SECS
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


# Run in a user and mount namespace of its own, which plain users may make
# where the kernel allows it: mounts a tmpfs on "$1", says so, and holds it
# until its standard input closes.
HOLDER = """
mount -t tmpfs tmpfs "$1" || exit 3
echo ready
read done
"""


def test_a_data_folder_that_is_a_mount_point_is_refused_before_packing(
    tmp_path, image_dir, capsys
):
    data_dir = tmp_path / "data"
    (data_dir / cifar10_input.DATA_FOLDER).mkdir(parents=True)
    holder = subprocess.Popen(
        ["unshare", "-rm", "sh", "-c", HOLDER, "holder",
         str(data_dir / cifar10_input.DATA_FOLDER)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        if holder.stdout.readline().strip() != "ready":
            pytest.skip(
                "Not tested: a mount point. This kernel lets no plain user mount a "
                "tmpfs in a namespace of its own (%s)."
                % holder.communicate(timeout=PATIENCE_SECS)[1].strip()
            )
        # The packer, in this process, reaches the tmpfs through the root of
        # the process that holds it.
        data_dir = "/proc/%d/root%s" % (holder.pid, data_dir)
        output = os.path.join(data_dir, cifar10_input.DATA_FOLDER)
        line = exit_line(cifar10_pack.main, image_dir=image_dir, data_dir=data_dir)
        assert line == NOT_A_FOLDER % (output, "a mount point")
        assert capsys.readouterr().out == ""
        assert contents(data_dir) == [cifar10_input.DATA_FOLDER]
    finally:
        # Its end of input lets it go; communicate() closes its pipes too.
        holder.communicate(timeout=PATIENCE_SECS)
