"""cifar10_classify.py: classifying image files, and the exported SavedModel
in a process of its own, with TensorFlow alone."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver
from PIL import Image

import cifar10_classify
from harness import fake_cifar
from harness.procs import run_binary
from helpers import (
    PRECISION,
    checkpoint_step,
    evaluate,
    exit_line,
    independent_logits,
    summaries,
)

# Run by a Python of its own, away from this project: the SavedModel needs
# nothing but TensorFlow.
LOAD_AND_PREDICT = """
import json, os, sys
import tensorflow as tf

export_dir, folder = sys.argv[1:]
signatures = tf.saved_model.load(export_dir).signatures
by_bytes, by_pixels = signatures["serving_default"], signatures["predict_pixels"]
with open(os.path.join(folder, "labels.json")) as f:
    labels = json.load(f)
right = {"bytes": 0, "pixels": 0}
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
print(json.dumps(right))
"""


def classify(*args):
    return run_binary("cifar10_classify.py", *args)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The shared checkpoint, exported by the binary: (export_dir, version)."""
    export_dir = tmp_path_factory.mktemp("export")
    result = classify("--checkpoint_dir=%s" % trained, "--export_dir=%s" % export_dir)
    assert result.returncode == 0, result.stderr
    version = export_dir / str(checkpoint_step(trained))
    assert (
        "Exported the model of %s to %s."
        % (
            tf.train.latest_checkpoint(trained),
            version,
        )
        in result.stdout
    )
    return export_dir, version


@pytest.mark.slow
def test_the_exported_model_scores_as_evaluation_does(
    trained, exported, dataset, tmp_path
):
    # The whole test set: cifar10_eval.py's count of right answers...
    scored = evaluate(
        dataset["root"], trained, tmp_path / "eval", "--run_once", "--batch_size=500",
        "--num_examples=10000",
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    assert PRECISION.search(scored.stdout)
    ((_, precision),) = summaries(tmp_path / "eval")["Precision @ 1"]
    expected = round(precision * 10000)

    # ...and the SavedModel's, through either signature, in a process that
    # knows nothing of this project.
    labels, images = dataset["test"]
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i, image in enumerate(images):
        fake_cifar.write_png(pngs / ("%d.png" % i), image)
    (pngs / "labels.json").write_text(json.dumps(labels.tolist()))
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(exported[1]), str(pngs)],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert loaded.returncode == 0, loaded.stderr
    result = json.loads(loaded.stdout.splitlines()[-1])
    assert (result["bytes"], result["pixels"]) == (expected, expected)
    assert result["odd"] == [2, 10]
    assert result["names"] == [fake_cifar.CLASS_NAMES[i] for i in result["classes"]]
    assert result["project"] == []


@pytest.mark.slow
def test_saved_model_cli_shows_and_runs_it(exported, dataset, tmp_path):
    _, version = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run(
        [cli, "show", "--dir", str(version), "--all"], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    for name in ("serving_default", "predict_pixels"):
        assert "signature_def['%s']" % name in shown.stdout
    np.save(tmp_path / "pixels.npy", dataset["test"][1][:2])
    ran = subprocess.run(
        [cli, "run", "--dir", str(version), "--tag_set", "serve",
         "--signature_def", "predict_pixels",
         "--inputs", "images=%s" % (tmp_path / "pixels.npy")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert re.search(r"probabilities\b", ran.stdout), ran.stdout


@pytest.mark.slow
def test_an_exported_version_is_never_written_over(trained, exported):
    export_dir, version = exported
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


def write_odd_images(folder, image):
    """The same image in other sizes, modes and formats."""
    folder.mkdir(parents=True)
    picture = Image.fromarray(image)
    picture.resize((50, 37)).convert("RGBA").save(folder / "rgba.png")
    picture.convert("L").save(folder / "gray.jpg")
    picture.convert("P").save(folder / "palette.png")
    picture.resize((7, 90)).save(folder / "tall.bmp")
    picture.save(folder / "two_frames.gif", save_all=True, append_images=[picture])
    return sorted(str(folder / name) for name in os.listdir(folder))


@pytest.mark.slow
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
    # Class names from the data set's file, when --data_dir has one.
    names = ["c%d" % i for i in range(10)]
    data_dir = tmp_path / "data" / fake_cifar.FOLDER
    data_dir.mkdir(parents=True)
    (data_dir / "batches.meta.txt").write_text("\n".join(names) + "\n")

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
        "Error: The folder %s holds no image files (.jpg, .jpeg, .png, .bmp, .gif)."
        % (tmp_path / "empty"),
        "Error: %s is not an image this can read (JPEG, PNG, BMP or GIF)."
        % (folder / "odd" / "broken.jpg"),
        "Error: %s is not an image this can read (JPEG, PNG, BMP or GIF)." % notes,
    ]
    lines = dict(
        line.split(": ", 1)
        for line in result.stdout.splitlines()
        if line.startswith(str(tmp_path))
    )
    assert sorted(lines) == sorted(pngs + odd)
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
