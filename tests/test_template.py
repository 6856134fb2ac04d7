"""cifar10.py as a template: another data set by cifar10_input.py's
description alone, in modules of new names.

The project is copied to a new folder, without the cluster's machinery
(support/cluster_*.py), every top-level file renamed as a new app would
name it (flowers.py, flowers_input.py, flowers_train.py, ...: the names in
the code that import and use them say so, and nothing else changes, the
strings and support/ least of all), and only the constants that the
README's "Use as a template" section names are changed: a data set of
another name, its own folder and file names, 16x16 images cropped to 12x12,
5 classes, 500 training and 100 test images. Then the copied binaries
train, evaluate, classify image files and export the model, and their
messages and --help name that data set, never CIFAR-10 or its sizes, and
folders named after the model module, never cifar10's. The copy runs in a
process of its own, which sees none of this project's modules.
"""

import io
import pathlib
import re
import shutil
import tokenize

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from harness import fake_cifar
from harness.procs import ROOT, run_one_after_another
from helpers import PRECISION

# What a copy for one machine needs: the cluster's work stays behind.
MODULES = [
    "cifar10.py",
    "cifar10_input.py",
    "cifar10_train.py",
    "cifar10_multi_gpu_train.py",
    "cifar10_eval.py",
    "cifar10_classify.py",
    "cifar10_pack.py",
]
SUPPORT_LEFT_BEHIND = ["cluster_config.py", "cluster_task.py", "cluster_hooks.py"]
# The template's modules, renamed as a new app would name them.
RENAMED = {
    name[: -len(".py")]: name[: -len(".py")].replace("cifar10", "flowers")
    for name in MODULES
}
# The binaries of the copy, by their new names.
BINARIES = [
    RENAMED[name[: -len(".py")]] + ".py"
    for name in MODULES
    if name not in ("cifar10.py", "cifar10_input.py")
]
# What a copy for another data set must not say.
CIFAR10_WORDS = re.compile(r"CIFAR-10|\b(10000|10,000|50000|50,000)\b|32x32")
# The copy's training steps, in batches of 50: the 5 hues score above 0.5
# (chance is 0.2) after fewer.
STEPS = 10
NAMES = ["apple", "bean", "cherry", "date", "elder"]
CHANGES = {
    "DATA_SET": '"FRUIT-5"',
    "DATA_URL": '"http://example.com/fruit-5.tar.gz"',
    "DATA_MD5": '"0123456789abcdef0123456789abcdef"',
    "ARCHIVE_BYTES": "123456",
    "DATA_FOLDER": '"fruit-batches"',
    "TRAIN_FILES": '["train_a.bin", "train_b.bin"]',
    "TEST_FILES": '["test.bin"]',
    "NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN": "500",
    "NUM_EXAMPLES_PER_EPOCH_FOR_EVAL": "100",
    "CLASS_NAMES": repr(NAMES),
    "NUM_CLASSES": "5",
    "HEIGHT": "16",
    "WIDTH": "16",
    "IMAGE_SIZE": "12",
}


def copy_project(folder, changes, modules=MODULES, renamed=None):
    """The modules copied to folder, with support/ (but what is left behind),
    and the constants of cifar10_input.py in changes set.

    Args:
      renamed: {module: new name}: each such module is written under its new
        name, and every name in the code (not in its strings) that is an old
        module's name becomes the new one (`import flowers`, `flowers.inference`).
    """
    renamed = renamed or {}
    shutil.copytree(
        pathlib.Path(ROOT, "support"),
        folder / "support",
        ignore=shutil.ignore_patterns("__pycache__", *SUPPORT_LEFT_BEHIND),
    )
    for name in modules:
        source = pathlib.Path(ROOT, name).read_text()
        if name == "cifar10_input.py":
            for constant, value in changes.items():
                source = _set_constant(source, constant, value)
        source = _renamed(source, renamed)
        module = name[: -len(".py")]
        (folder / (renamed.get(module, module) + ".py")).write_text(source)


def _renamed(source, renamed):
    """Python source with each name token that renamed has, renamed; its
    strings and comments as they were."""
    lines = source.splitlines(keepends=True)
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    found = [t for t in tokens if t.type == tokenize.NAME and t.string in renamed]
    for token in reversed(found):  # each edit leaves the earlier ones' places
        (row, start), (_, end) = token.start, token.end
        line = lines[row - 1]
        lines[row - 1] = line[:start] + renamed[token.string] + line[end:]
    return "".join(lines)


def _set_constant(source, name, value):
    """Source with the one statement `NAME = ...` (a line, or a bracketed
    list over several) set to value."""
    pattern = re.compile(r"^%s = (\[[^]]*\].*|.*)$" % name, re.MULTILINE)
    assert len(pattern.findall(source)) == 1, name
    return pattern.sub(lambda _: "%s = %s" % (name, value), source)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The copied modules with the changed constants, a data set of 16x16
    images in 5 classes, and the copied binaries' runs on it, one after
    another in one process: training, evaluation, evaluation of a damaged
    copy of the data, and classification of two image files with an export.
    A dict of folders and of the runs' results, and each binary's --help.

    The process sees the copy alone: the harness that runs the binaries is
    copied beside them, and this project's folder is not on its path."""
    root = tmp_path_factory.mktemp("template")
    code = root / "code"
    copy_project(code, CHANGES, renamed=RENAMED)
    shutil.copytree(
        pathlib.Path(ROOT, "harness"),
        code / "harness",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    written = fake_cifar.write_dataset(
        str(root / "data"), records_per_file=250, test_records=100, size=16,
        num_classes=5, class_names=NAMES, folder="fruit-batches",
        train_files=["train_a.bin", "train_b.bin"], test_file="test.bin",
    )  # fmt: skip
    broken = root / "broken" / "fruit-batches"
    shutil.copytree(root / "data" / "fruit-batches", broken)
    with open(broken / "test.bin", "r+b") as f:
        f.truncate(1000)
    # Classification scales any image to 16x16.
    images = written["test"][1]
    fake_cifar.write_png(root / "small.png", images[0])
    Image.fromarray(images[1]).resize((40, 30)).save(root / "large.jpg")

    common = ["--data_dir=%s" % (root / "data"), "--batch_size=50"]
    checkpoints = "--checkpoint_dir=%s" % (root / "train")
    runs = run_one_after_another(
        code,
        ("flowers_train.py", *common, "--train_dir=%s" % (root / "train"),
         "--max_steps=%d" % STEPS),
        ("flowers_eval.py", *common, checkpoints, "--eval_dir=%s" % (root / "eval"),
         "--run_once", "--num_examples=100"),
        ("flowers_eval.py", "--data_dir=%s" % broken.parent, checkpoints,
         "--eval_dir=%s" % (root / "eval2"), "--run_once", "--num_examples=100"),
        ("flowers_classify.py", *common, checkpoints,
         "--export_dir=%s" % (root / "export"), "--top_k=5",
         str(root / "small.png"), str(root / "large.jpg")),
        *[(binary, "--help") for binary in BINARIES],
        root=code,
    )  # fmt: skip
    trained, scored, failed, classified, *helps = runs
    assert trained.returncode == 0, trained.stderr
    assert "Filling queue with 200 FRUIT-5 images" in trained.stdout  # 40% of 500
    return dict(
        root=root, code=code, broken=broken, runs=runs, scored=scored,
        failed=failed, classified=classified,
        helps=dict(zip(BINARIES, helps, strict=True)),
    )  # fmt: skip


@pytest.mark.slow
def test_another_image_size_and_class_count_trains_and_evaluates(template):
    scored = template["scored"]
    assert scored.returncode == 0, scored.stderr
    (match,) = PRECISION.findall(scored.stdout)
    assert match[1:] == (str(STEPS), "100")
    assert float(match[0]) > 0.5  # chance is 0.2
    # The per-class table names the data set's own 5 classes.
    table = scored.stdout.split(match[0], 1)[1]
    assert re.findall(r"^  ([a-z]+) +\d+ +[01]\.\d{3}$", table, re.M) == NAMES

    # Its messages name it, its folder and its record size.
    failed = template["failed"]
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1] == (
        "Error: Data file %s is 1000 bytes, not a whole number of 769-byte "
        "records: it is truncated or not a file of FRUIT-5. Delete the "
        "fruit-batches folder under --data_dir so that it is extracted again."
        % (template["broken"] / "test.bin")
    )


@pytest.mark.slow
def test_the_copy_classifies_and_exports(template):
    # Classification names the 5 classes.
    classified = template["classified"]
    assert classified.returncode == 0, classified.stderr
    for name in ("small.png", "large.jpg"):
        (line,) = [s for s in classified.stdout.splitlines() if name in s]
        assert sorted(re.findall(r"([a-z]+) [01]\.\d{3}", line)) == NAMES

    # The export takes images of any size, and gives the 5 classes' names.
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        model = tf.compat.v1.saved_model.load(
            sess, ["serve"], str(template["root"] / "export" / str(STEPS))
        )
        signature = model.signature_def["predict_pixels"]
        probabilities, class_names = sess.run(
            [signature.outputs[k].name for k in ("probabilities", "class_names")],
            {signature.inputs["images"].name: np.zeros((3, 20, 9, 3), np.uint8)},
        )
    assert probabilities.shape == (3, 5)
    assert {n.decode() for n in class_names} <= set(NAMES)


@pytest.mark.slow
def test_images_of_another_size_need_only_the_image_size(tmp_path):
    # Folders of images, packed by the copied packer: the data describes
    # itself, and only the stored and cropped image sizes are set.
    copy_project(
        tmp_path, {"HEIGHT": "16", "WIDTH": "16", "IMAGE_SIZE": "12"},
        renamed=RENAMED,
    )  # fmt: skip
    names = ["circle", "square", "star"]
    fake_cifar.write_image_folders(str(tmp_path / "images"), names, 60)
    data_dir = "--data_dir=%s" % (tmp_path / "data")
    common = [data_dir, "--batch_size=50"]
    runs = run_one_after_another(
        tmp_path,
        ("flowers_pack.py", data_dir, "--image_dir=%s" % (tmp_path / "images")),
        ("flowers_train.py", *common, "--train_dir=%s" % (tmp_path / "train"),
         "--max_steps=2"),
        ("flowers_eval.py", *common, "--checkpoint_dir=%s" % (tmp_path / "train"),
         "--eval_dir=%s" % (tmp_path / "eval"), "--run_once"),
    )  # fmt: skip
    for result in runs:
        assert result.returncode == 0, result.stderr
    (match,) = PRECISION.findall(result.stdout)
    table = result.stdout.split(match[0], 1)[1]
    assert re.findall(r"^  ([a-z]+) +\d+ +[01]\.\d{3}$", table, re.M) == names
    records = (tmp_path / "data" / "cifar-10-batches-bin" / "test_batch.bin").stat()
    assert records.st_size == int(match[2]) * (1 + 16 * 16 * 3)


@pytest.mark.slow
def test_the_copy_speaks_of_its_own_data_set_only(template):
    code = template["code"]
    # support/ is as it is here: nothing in it names the template's modules.
    for path in (code / "support").glob("*.py"):
        assert (
            path.read_bytes() == pathlib.Path(ROOT, "support", path.name).read_bytes()
        )
    assert sorted(p.name for p in code.glob("*.py")) == sorted(
        name + ".py" for name in RENAMED.values()
    )
    defaults = " ".join(shown.stdout for shown in template["helps"].values())
    for folder in ("/tmp/flowers_data", "/tmp/flowers_train", "/tmp/flowers_eval"):
        assert "(default: '%s')" % folder in defaults
    for binary, shown in template["helps"].items():
        assert shown.returncode == 0, shown.stderr
        # Its folders are named after its model module, never cifar10.
        assert not re.findall(r"\S*/\S*cifar10\S*", shown.stdout), binary
        assert "--data_dir" in shown.stdout, binary
        assert not CIFAR10_WORDS.findall(shown.stdout), (binary, shown.stdout)
    assert "the 100 test images of FRUIT-5" in " ".join(
        template["helps"]["flowers_eval.py"].stdout.split()
    )
    for run in template["runs"]:
        assert not CIFAR10_WORDS.findall(run.stdout + run.stderr), run
