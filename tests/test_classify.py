"""cifar10_classify.py: classifying image files, and the exported SavedModel
in a process of its own, with TensorFlow alone."""

import contextlib
import csv
import errno
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver
from PIL import Image, ImageOps

import cifar10_classify
from harness import fake_cifar, procs
from helpers import (
    MOMENTS,
    PRECISION,
    TENSORFLOW_ERROR,
    checkpoint_copies,
    checkpoint_step,
    evaluate,
    exit_line,
    independent_logits,
    run_here,
    summaries,
    vanish_at,
)
from support import image_folders

# Run by a Python of its own, away from this project: the SavedModel needs
# nothing but TensorFlow. It serves the look-alikes and thin images of
# files.json (its peak resident memory after that, VmHWM, in KB); scores the
# test images of labels.json through either signature; then runs
# saved_model_cli's show and run, as its command does, on the export.
SERVED = """
import contextlib, io, json, os, sys
import tensorflow as tf

export_dir, folder, pixels_npy = sys.argv[1:]
signatures = tf.saved_model.load(export_dir).signatures
by_bytes, by_pixels = signatures["serving_default"], signatures["predict_pixels"]
right = {}
with open(os.path.join(folder, "files.json")) as f:
    data = [open(path, "rb").read() for path in json.load(f)]
out = by_bytes(image_bytes=tf.constant(data))
right["served"] = out["probabilities"].numpy().tolist()
with open("/proc/self/status") as f:
    right["peak_kb"] = int(next(l for l in f if l.startswith("VmHWM:")).split()[1])

with open(os.path.join(folder, "labels.json")) as f:
    labels = json.load(f)
right.update(bytes=0, pixels=0)
for start in range(0, len(labels), 500):
    names = ["%d.png" % i for i in range(start, min(start + 500, len(labels)))]
    data = [open(os.path.join(folder, name), "rb").read() for name in names]
    truth = tf.constant(labels[start : start + len(names)], tf.int64)
    out = by_bytes(image_bytes=tf.constant(data))
    right["bytes"] += int(tf.reduce_sum(tf.cast(out["classes"] == truth, tf.int32)))
    out = by_pixels(images=tf.stack([tf.io.decode_png(d) for d in data]))
    right["pixels"] += int(tf.reduce_sum(tf.cast(out["classes"] == truth, tf.int32)))
right["classes"] = out["classes"].numpy().tolist()
right["names"] = [name.decode() for name in out["class_names"].numpy()]
odd = by_pixels(images=tf.zeros([2, 40, 50, 3], tf.uint8))
right["odd"] = odd["probabilities"].shape.as_list()
right["project"] = [m for m in sys.modules if m.startswith(("cifar10", "harness"))]
pair = [open(os.path.join(folder, n), "rb").read() for n in ("sideways.jpg", "up.png")]
out = by_bytes(image_bytes=tf.constant(pair))
right["pair"] = out["probabilities"].numpy().tolist()

from tensorflow.python.tools import saved_model_cli

version = ["--dir", export_dir]
for command in (
    ["show", *version, "--all"],
    ["run", *version, "--tag_set", "serve", "--signature_def", "predict_pixels",
     "--inputs", "images=%s" % pixels_npy],
):
    sys.argv = ["saved_model_cli", *command]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            saved_model_cli.main()  # what the saved_model_cli command runs
            code = 0
        except SystemExit as e:
            code = e.code or 0
    right[command[0]] = [code, out.getvalue()]
print(json.dumps(right))
"""


def classify(*args):
    return run_here("cifar10_classify.py", *args)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The shared checkpoint, exported by the binary in a process of its own,
    its memory measured, which classifies odd and thin images in the same
    run, and skips a huge one: {"export_dir", "version", "pairs":
    write_look_alikes()'s, "files": those and the thin images, "huge": the
    huge one's path (in a folder named to the binary), "result": its
    subprocess.CompletedProcess, "peak": its peak resident memory in bytes}.

    The folder's name has what TensorFlow reads as a pattern elsewhere: a
    SavedModel of constants is written and loaded from it as from any."""
    folder = tmp_path_factory.mktemp("export")
    export_dir = folder / "v[1] ü*?"
    pairs = write_look_alikes(folder / "images")
    # A few hundred bytes each, scaled whole they would take gigabytes.
    (folder / "wide.png").write_bytes(fake_cifar.png_of_one_colour(100_000, 1))
    (folder / "tall.png").write_bytes(fake_cifar.png_of_one_colour(1, 200_000))
    files = [f for p in pairs for f in p] + [
        str(folder / "wide.png"), str(folder / "tall.png")
    ]  # fmt: skip
    # Pillow warns of an image above 89 million pixels as it opens it: this
    # one, which the binary refuses as too large in its own words.
    huge = folder / "huge" / "huge.png"
    huge.parent.mkdir()
    huge.write_bytes(fake_cifar.png_of_one_colour(9500, 9500))
    result, peak, _ = procs.run_measured(
        "cifar10_classify.py", "--checkpoint_dir=%s" % trained,
        "--export_dir=%s" % export_dir, *files, str(huge.parent),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # the huge image skipped
    version = export_dir / str(checkpoint_step(trained))
    assert (
        "Exported the model of %s to %s."
        % (
            tf.train.latest_checkpoint(trained),
            version,
        )
        in result.stdout
    )
    return {
        "export_dir": export_dir, "version": version, "pairs": pairs,
        "files": files, "huge": str(huge), "result": result, "peak": peak,
    }  # fmt: skip


@pytest.fixture(scope="module")
def served(exported, dataset, tmp_path_factory):
    """SERVED's run on the export, in a Python that knows nothing of this
    project: what it printed, as a dict."""
    labels, images = (a[:250] for a in dataset["test"])
    pngs = tmp_path_factory.mktemp("pngs")
    for i, image in enumerate(images):
        fake_cifar.write_png(pngs / ("%d.png" % i), image)
    (pngs / "labels.json").write_text(json.dumps(labels.tolist()))
    # A phone's photo, stored sideways with an EXIF orientation, is seen as
    # a viewer shows it, as in packing.
    write_sideways_photo(pngs / "sideways.jpg", pngs / "up.png", images[7])
    (pngs / "files.json").write_text(json.dumps(exported["files"]))
    np.save(pngs / "pixels.npy", images[:2])
    loaded = subprocess.run(
        [sys.executable, "-c", SERVED, str(exported["version"]), str(pngs),
         str(pngs / "pixels.npy")],
        cwd=pngs,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    return json.loads(loaded.stdout.splitlines()[-1])


@pytest.mark.slow
def test_the_exported_model_scores_as_evaluation_does(
    trained, served, dataset, tmp_path
):
    # 250 test images: cifar10_eval.py's count of right answers...
    scored = evaluate(
        dataset["root"], trained, tmp_path / "eval", "--run_once", "--batch_size=250",
        "--num_examples=250",
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    assert PRECISION.search(scored.stdout)
    ((_, precision),) = summaries(tmp_path / "eval")["Precision @ 1"]
    expected = round(precision * 250)

    # ...and the SavedModel's, through either signature, in a process that
    # knows nothing of this project.
    result = served
    assert (result["bytes"], result["pixels"]) == (expected, expected)
    assert result["odd"] == [2, 10]
    assert result["names"] == [fake_cifar.CLASS_NAMES[i] for i in result["classes"]]
    assert result["project"] == []
    # A phone's photo stored sideways is seen as a viewer shows it.
    sideways, up = result["pair"]
    np.testing.assert_allclose(sideways, up, atol=1e-6)


@pytest.mark.slow
def test_saved_model_cli_shows_and_runs_it(served):
    # In SERVED's process: saved_model_cli's main, show and then run.
    (shown_code, shown), (ran_code, ran) = served["show"], served["run"]
    assert shown_code == 0, shown
    for name in ("serving_default", "predict_pixels"):
        assert "signature_def['%s']" % name in shown
    assert ran_code == 0, ran
    assert re.search(r"probabilities\b", ran), ran


@pytest.mark.slow
def test_an_exported_version_is_never_written_over(trained, exported):
    export_dir, version = exported["export_dir"], exported["version"]
    assert os.listdir(export_dir) == [version.name]  # no temporary folder left
    before = os.stat(version / "saved_model.pb").st_mtime_ns
    with flagsaver.flagsaver(checkpoint_dir=trained, export_dir=str(export_dir)):
        with pytest.raises(cifar10_classify.ClassifyError) as e:
            cifar10_classify.run([])
    assert str(e.value) == (
        "%s exists already: the model of step %s is exported. Nothing was "
        "written." % (version, version.name)
    )
    assert os.stat(version / "saved_model.pb").st_mtime_ns == before
    assert os.listdir(export_dir) == [version.name]


def write_sideways_photo(path, upright_path, image):
    """A JPEG of image (twice as wide), stored turned, with the EXIF
    orientation that turns it back (6: 90 degrees clockwise); and as a PNG,
    the pixels Pillow shows for it."""
    wide = np.asarray(Image.fromarray(image).resize((64, 32)))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(wide)).save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as stored:
        ImageOps.exif_transpose(stored).save(upright_path)


def write_odd_images(folder, image):
    """The same image in other sizes, modes and formats."""
    folder.mkdir(parents=True)
    picture = Image.fromarray(image)
    picture.resize((50, 37)).convert("RGBA").save(folder / "rgba.png")
    picture.convert("L").save(folder / "gray.jpg")
    picture.convert("P").save(folder / "palette.png")
    picture.resize((7, 90)).save(folder / "tall.bmp")
    picture.save(folder / "two_frames.gif", save_all=True, append_images=[picture])
    picture.save(folder / "lossless.webp", lossless=True)
    picture.save(folder / os.fsdecode(b"caf\xe9.png"))  # a name not UTF-8
    write_sideways_photo(folder / "sideways.jpg", folder / "up.png", image)
    return sorted(str(folder / name) for name in os.listdir(folder))


def test_classify_files_as_the_evaluation_graph_does(trained, dataset, tmp_path):
    labels, images = dataset["test"]
    folder = tmp_path / "photos"
    folder.mkdir()
    pngs = [str(folder / ("%02d.png" % i)) for i in range(40)]
    for path, image in zip(pngs, images, strict=False):
        fake_cifar.write_png(path, image)
    odd = write_odd_images(folder / "odd", images[0])
    (folder / "odd" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a JPEG")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    (tmp_path / "empty").mkdir()
    # The class names are those beside the checkpoint, whatever the data in
    # --data_dir names.
    names = fake_cifar.CLASS_NAMES
    data_dir = tmp_path / "data" / fake_cifar.FOLDER
    data_dir.mkdir(parents=True)
    (data_dir / "batches.meta.txt").write_text("".join("c%d\n" % i for i in range(10)))

    result = classify(
        "--checkpoint_dir=%s" % trained, "--data_dir=%s" % data_dir.parent,
        "--output=%s" % (tmp_path / "out.csv"), "--batch_size=16",
        str(folder), str(notes), str(tmp_path / "missing"), str(tmp_path / "empty"),
    )  # fmt: skip
    # The bad inputs are reported, the good ones classified; exit status 1.
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        "Error: No such file or folder: %s." % (tmp_path / "missing"),
        "Error: The folder %s holds no image files (.jpg, .jpeg, .jfif, .png, .bmp, "
        ".gif, .webp)." % (tmp_path / "empty"),
        "Error: %s is a damaged or incomplete JPEG file (it ends before its image "
        "does)." % (folder / "odd" / "broken.jpg"),
        "Error: %s is not an image this can read (JPEG, PNG, BMP, GIF or WebP)."
        % notes,
        "Error: classified %d file(s); skipped the 4 above." % len(pngs + odd),
    ]
    lines = dict(
        line.split(": ", 1)
        for line in result.stdout.splitlines()
        if line.startswith(str(tmp_path))
    )
    shown = [os.fsencode(p).decode("utf-8", "backslashreplace") for p in pngs + odd]
    assert sorted(lines) == sorted(shown)
    with open(tmp_path / "out.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "class_1", "probability_1", "class_2",
                       "probability_2", "class_3", "probability_3"]  # fmt: skip
    assert {row[0]: row[1] for row in rows[1:]} == {
        path: line.split()[0] for path, line in lines.items()
    }
    # Top-1 as the evaluation graph gives it, for 32x32 images.
    logits = independent_logits(tf.train.latest_checkpoint(trained), images[:40])
    expected = [names[i] for i in np.argmax(logits, axis=1)]
    assert [lines[path].split()[0] for path in pngs] == expected
    # A photo stored sideways is seen as a viewer shows it.
    odd_folder = folder / "odd"
    assert lines[str(odd_folder / "sideways.jpg")] == lines[str(odd_folder / "up.png")]

    # Nothing to classify with: one line, and --output is never written over.
    empty = str(tmp_path / "empty")
    line = exit_line(
        cifar10_classify.main, str(folder), checkpoint_dir=empty, output=str(notes)
    )
    assert line == (
        "Error: --output=%s exists already; remove it or name a new file." % notes
    )
    line = exit_line(cifar10_classify.main, str(folder), checkpoint_dir=empty)
    assert line.startswith("Error: No checkpoint found in --checkpoint_dir=%s." % empty)


@pytest.fixture
def unreadable(monkeypatch):
    """unreadable(path) makes path unreadable until the test ends (then
    pytest can remove it)."""
    modes = {}

    def make(path):
        modes[path] = os.stat(path).st_mode
        _unreadable(path, monkeypatch)

    yield make
    for path, mode in modes.items():
        os.chmod(path, mode)


def _unreadable(path, monkeypatch):
    """Makes path unreadable: by its mode, or for root (whom modes do not
    stop) by failing os.open and os.scandir on it as the kernel would."""
    if os.geteuid() != 0:
        os.chmod(path, 0)
        return
    real_open, real_scandir = os.open, os.scandir

    def refuse(name):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(name))

    def fake_open(name, *args, **kwargs):
        if str(name) == str(path):
            refuse(name)
        return real_open(name, *args, **kwargs)

    def fake_scandir(name="."):
        if str(name) == str(path):
            refuse(name)
        return real_scandir(name)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "scandir", fake_scandir)


def photos_as_people_have_them(folder, images):
    """A folder of two images, and beside them what macOS and a Synology box
    leave beside photos, which are not photos; its images' paths, in order."""
    (folder / ".thumbnails").mkdir(parents=True)
    (folder / "@eaDir" / "good.png").mkdir(parents=True)
    fake_cifar.write_png(folder / "good.png", images[0])
    fake_cifar.write_png(folder / "also.JFIF", images[1])
    (folder / "._good.png").write_bytes(b"\0\5\26\7 AppleDouble")
    fake_cifar.write_png(folder / ".thumbnails" / "good.png", images[2])
    fake_cifar.write_png(
        folder / "@eaDir" / "good.png" / "SYNOFILE_THUMB_M.png", images[3]
    )
    return [str(folder / "also.JFIF"), str(folder / "good.png")]


def test_entries_that_cannot_be_read_are_skips_and_folders_give_what_packing_takes(
    trained, dataset, tmp_path, unreadable, capsys
):
    # One run for both: the folder of photos as people have them adds no
    # error line (as a run on it alone ends with status 0).
    taken = photos_as_people_have_them(
        tmp_path / "as_people_have_them", dataset["test"][1]
    )
    folder = tmp_path / "photos"
    folder.mkdir()
    fake_cifar.write_png(folder / "good.png", dataset["test"][1][0])
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "device.png").symlink_to("/dev/zero")
    fake_cifar.write_png(folder / "secret.png", dataset["test"][1][1])
    unreadable(folder / "secret.png")
    (folder / "locked").mkdir()
    fake_cifar.write_png(folder / "locked" / "inside.png", dataset["test"][1][2])
    unreadable(folder / "locked")

    # Were the pipe opened for reading, this would free it after a while.
    def unblock():
        time.sleep(60)
        with contextlib.suppress(OSError):
            os.close(os.open(folder / "pipe.jpg", os.O_WRONLY | os.O_NONBLOCK))

    threading.Thread(target=unblock, daemon=True).start()
    with flagsaver.flagsaver(checkpoint_dir=trained):
        status = cifar10_classify.run(
            [str(folder), str(tmp_path / "as_people_have_them")]
        )
    out, err = capsys.readouterr()
    assert status == 1
    assert [line.split(":")[0] for line in out.splitlines() if ": " in line] == [
        str(folder / "good.png"),
        *taken,
    ]
    warnings = sorted(line for line in err.splitlines() if line.startswith("Error:"))
    assert warnings == sorted(
        [
            "Error: Cannot read %s (No such file or directory)."
            % (folder / "gone.jpg"),
            "Error: Cannot read %s (Too many levels of symbolic links)."
            % (folder / "loop.jpg"),
            "Error: %s is not a regular file; skipped." % (folder / "pipe.jpg"),
            "Error: %s is not a regular file; skipped." % (folder / "device.png"),
            "Error: Cannot read %s (Permission denied)." % (folder / "secret.png"),
            "Error: Cannot read the folder %s (Permission denied); skipped."
            % (folder / "locked"),
            "Error: classified 3 file(s); skipped the 6 above.",
        ]
    )


def test_output_that_cannot_be_written_is_refused_before_any_work(
    trained, tmp_path, capsys
):
    image = tmp_path / "a.png"
    fake_cifar.write_png(image, np.zeros((32, 32, 3), np.uint8))
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    for output in (tmp_path / "missing" / "out.csv", a_file / "out.csv"):
        line = exit_line(
            cifar10_classify.main, str(image), checkpoint_dir=trained,
            output=str(output),
        )  # fmt: skip
        assert line.startswith("Error: Cannot write --output=%s (" % output), line
        assert str(image) not in capsys.readouterr().out  # nothing classified
    assert a_file.read_text() == "keep me"


def test_checkpoint_names_a_folder_a_file_of_one_or_its_prefix(trained, tmp_path):
    newest = tf.train.latest_checkpoint(trained)
    for given in (
        trained,
        newest,
        newest + ".index",
        newest + ".data-00000-of-00001",
        newest + ".meta",
    ):
        with flagsaver.flagsaver(checkpoint=given):
            assert cifar10_classify._checkpoint() == newest, given
    for given in (str(tmp_path), str(tmp_path / "nothing"), newest + ".x"):
        with flagsaver.flagsaver(checkpoint=given):
            with pytest.raises(cifar10_classify.ClassifyError) as e:
                cifar10_classify._checkpoint()
        assert str(e.value).startswith("Cannot read --checkpoint=%s" % given)
        assert "model.ckpt-<step>" in str(e.value)


def test_a_checkpoint_that_vanishes_gives_way_to_the_newest(
    trained, tmp_path, monkeypatch, capsys
):
    # Each newest checkpoint in turn vanishes, at one of the moments (see
    # helpers.vanish_at): 400 right after it is chosen, 300 after its
    # variables were compared with the model's, 200 as its weights are
    # restored. One run meets them all, and ends with 100.
    oldest, *newer = checkpoint_copies(trained, tmp_path / "ckpt", (100, 200, 300, 400))
    moments = dict(zip(newer, reversed(MOMENTS), strict=True))
    for checkpoint, moment in moments.items():
        vanish_at(moment, checkpoint, monkeypatch)
    image = tmp_path / "a.png"
    fake_cifar.write_png(image, np.zeros((32, 32, 3), np.uint8))
    with flagsaver.flagsaver(
        checkpoint_dir=str(tmp_path / "ckpt"), export_dir=str(tmp_path / "export")
    ):
        assert cifar10_classify.run([str(image)]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("Warning:")]
    assert warnings == [
        "Warning: %s vanished while being read; using the newest checkpoint "
        "instead." % checkpoint
        for checkpoint in reversed(newer)
    ], moments
    assert "%s: " % image in out
    exported_to = tmp_path / "export" / "100"
    assert "Exported the model of %s to %s." % (oldest, exported_to) in out
    # Named by --checkpoint, it has no stand-in.
    older, newer = checkpoint_copies(trained, tmp_path / "again", (100, 200))
    vanish_at("restoring", newer, monkeypatch)
    with (
        flagsaver.flagsaver(checkpoint=newer),
        pytest.raises(cifar10_classify.ClassifyError) as e,
    ):
        cifar10_classify.run([str(image)])
    assert str(e.value).startswith("Cannot read --checkpoint=%s" % newer)


def test_a_checkpoint_without_class_names_takes_the_datas(trained, tmp_path):
    # Checkpoints made before training wrote its class names beside them.
    older = tmp_path / "older"
    older.mkdir()
    for path in glob.glob(tf.train.latest_checkpoint(trained) + ".*"):
        shutil.copy(path, older)
    checkpoint = str(older / os.path.basename(tf.train.latest_checkpoint(trained)))
    data_dir = tmp_path / "data" / fake_cifar.FOLDER
    data_dir.mkdir(parents=True)
    names = ["c%d" % i for i in range(10)]
    (data_dir / "batches.meta.txt").write_text("".join(n + "\n" for n in names))
    with flagsaver.flagsaver(data_dir=str(data_dir.parent)):
        assert cifar10_classify._class_names(checkpoint) == names
    assert cifar10_classify._class_names(tf.train.latest_checkpoint(trained)) == (
        fake_cifar.CLASS_NAMES
    )


@pytest.mark.slow
def test_the_export_holds_only_what_its_signatures_need(exported):
    version = exported["version"]
    with tf.Graph().as_default() as graph, tf.compat.v1.Session() as sess:
        tf.compat.v1.saved_model.load(sess, ["serve"], str(version))
        graph_def = graph.as_graph_def()
    # The graph's ops, and those of its functions (map_fn's body, say).
    types = {node.op for node in graph_def.node} | {
        node.op for function in graph_def.library.function for node in function.node_def
    }
    # No training, summaries, weight decay or initializers: the weights are
    # constants, read by the ops of the two signatures alone.
    unneeded = {"HistogramSummary", "ScalarSummary", "L2Loss", "TruncatedNormal",
                "VarHandleOp", "AssignVariableOp", "RestoreV2"}  # fmt: skip
    assert not unneeded & types, unneeded & types
    assert {"Conv2D", "DecodeImage", "Softmax"} <= types
    assert os.path.getsize(version / "saved_model.pb") < 6e6


def test_a_folder_without_images_says_what_it_holds(tmp_path):
    phone = tmp_path / "phone"
    phone.mkdir()
    for n in range(12):
        (phone / ("IMG_%04d.HEIC" % n)).write_bytes(b"HEIC")
    (phone / "._IMG_0000.jpg").write_bytes(b"AppleDouble")
    assert image_folders.image_files([str(phone)]) == (
        [],
        [
            "The folder %s holds no image files (.jpg, .jpeg, .jfif, .png, .bmp, "
            ".gif, .webp): it holds 12 .heic file(s). Images in .heic are not read: "
            "convert them to JPEG or PNG." % phone
        ],
    )


def write_look_alikes(folder):
    """Pairs of files that show one picture: (a file, its plain PNG)."""
    folder.mkdir()
    rng = np.random.default_rng(5)
    picture = Image.fromarray((rng.random((40, 64, 3)) * 255).astype(np.uint8))
    pairs = []

    def pair(name, save, shown):
        save(folder / name)
        shown.save(folder / (name + ".png"))
        pairs.append((str(folder / name), str(folder / (name + ".png"))))

    colours = picture.quantize(64)
    pair("palette.bmp", colours.save, colours.convert("RGB"))
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = picture.transpose(Image.Transpose.ROTATE_270)  # what 6 undoes
    mirrored = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pair("turned.png", lambda p: picture.save(p, exif=exif.tobytes()), turned)
    pair(
        "turned.webp",
        lambda p: picture.save(p, lossless=True, exif=exif.tobytes()),
        turned,
    )
    pair(
        "moving.webp",
        lambda p: picture.save(
            p, lossless=True, save_all=True, append_images=[mirrored], duration=50
        ),
        picture,
    )
    return pairs


@pytest.mark.slow
def test_odd_and_thin_images_classify_and_serve_alike_within_1_gb(exported, served):
    # The binary classified them as it exported the model, in a process
    # whose memory was measured.
    result, pairs, files = exported["result"], exported["pairs"], exported["files"]
    assert exported["peak"] < 2**30
    lines = dict(
        line.split(": ", 1)
        for line in result.stdout.splitlines()
        if not line.startswith("Exported the model of ")
    )
    assert sorted(lines) == sorted(files)
    for path, plain in pairs:
        assert lines[path] == lines[plain], path
    # SERVED's process served them, its peak measured after that.
    assert served["peak_kb"] * 1024 < 2**30
    by_file = dict(zip(files, served["served"], strict=True))
    for path, plain in pairs:
        assert np.allclose(by_file[path], by_file[plain], atol=1e-6), path


@pytest.mark.slow
def test_classifying_a_huge_image_says_so_in_its_own_words(exported):
    # In the run of the odd and thin images: only the binary's own lines.
    result = exported["result"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        "Error: %s is an image of 9500x9500 pixels; images of more than 40 "
        "million pixels are skipped." % exported["huge"],
        "Error: classified %d file(s); skipped the 1 above." % len(exported["files"]),
    ]
    assert "Warning" not in result.stderr, result.stderr
    assert TENSORFLOW_ERROR.findall(result.stderr) == [], result.stderr
