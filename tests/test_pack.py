"""cifar10_pack.py: folders of one's own images, packed into the records that
the binaries train on, evaluate and classify with no code changed; a split
that stays put as images are added; and every bad input."""

import io
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from PIL import Image, ImageOps

import cifar10
import cifar10_eval
import cifar10_input
import cifar10_pack
import cifar10_train
from harness import fake_cifar, procs
from helpers import PRECISION, exit_line, run_here
from support import folders, image_folders

FLAGS = flags.FLAGS

NAMES = ["apple", "bean", "cherry", "date", "elder"]
FOLDER = cifar10_input.DATA_FOLDER


# The decoding graph of the packings in this process, built at the first
# (cifar10_pack._decoder()'s, in a graph and session of its own).
_DECODER = {}


@pytest.fixture(scope="module", autouse=True)
def one_decoding_graph():
    """The in-process packings of a test process share one decoding graph:
    building it costs seconds of CPU a packing, for the same graph each
    time. (A module fixture: the tests of a file that uses it run in one
    test process, conftest.py's group, which builds it once.) The packings
    as processes (packed_as_people_have_them) build their own, as users'
    do."""
    build = cifar10_pack._decoder

    def decoder(sess):
        del sess  # the packing's own, left empty
        if "decode" not in _DECODER:
            with tf.Graph().as_default() as graph:
                _DECODER["decode"] = build(tf.compat.v1.Session(graph=graph))
        return _DECODER["decode"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cifar10_pack, "_decoder", decoder)
        yield


def pack(image_dir, data_dir, **flags):
    """Runs the packer in this process."""
    with flagsaver.flagsaver(image_dir=str(image_dir), data_dir=str(data_dir), **flags):
        cifar10_pack.main(["binary"])


def pack_line(image_dir, data_dir, **flags):
    """The line the packer exits with."""
    return exit_line(
        cifar10_pack.main, image_dir=str(image_dir), data_dir=str(data_dir), **flags
    )


def records(data_dir, split):
    """The records of a split of packed data, as a set of bytes."""
    folder = os.path.join(str(data_dir), FOLDER)
    with open(os.path.join(folder, cifar10_input.DESCRIPTION_FILE)) as f:
        files = json.load(f)[split]
    found = set()
    for name, count in files.items():
        with open(os.path.join(folder, name), "rb") as f:
            data = f.read()
        assert len(data) == count * cifar10_input.RECORD_BYTES
        size = cifar10_input.RECORD_BYTES
        found |= {data[i : i + size] for i in range(0, len(data), size)}
    return found


@pytest.mark.slow
def test_own_images_train_evaluate_and_classify_with_no_code_changed(tmp_path):
    images = fake_cifar.write_image_folders(str(tmp_path / "images"), NAMES, 40)
    packed = run_here(
        "cifar10_pack.py", "--image_dir=%s" % (tmp_path / "images"),
        "--data_dir=%s" % (tmp_path / "data"),
    )  # fmt: skip
    assert packed.returncode == 0, packed.stderr
    match = re.search(
        r"^Packed (\d+) training and (\d+) test images of 5 classes into ",
        packed.stdout,
        re.M,
    )
    assert match and int(match[1]) + int(match[2]) == 200, packed.stdout
    num_test = int(match[2])

    common = ["--data_dir=%s" % (tmp_path / "data"), "--batch_size=64"]
    trained = run_here(
        "cifar10_train.py", *common, "--train_dir=%s" % (tmp_path / "train"),
        "--max_steps=25",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    # The shuffling queue holds 40% of the data's own training images.
    assert "Filling queue with %d images images" % int(int(match[1]) * 0.4) in (
        trained.stdout
    )

    scored = run_here(
        "cifar10_eval.py", *common, "--checkpoint_dir=%s" % (tmp_path / "train"),
        "--eval_dir=%s" % (tmp_path / "eval"), "--run_once",
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    (found,) = PRECISION.findall(scored.stdout)
    assert int(found[2]) == num_test  # every test image, by default
    # Chance is 0.2; 25 steps scored 0.88 in each of four runs (15 or 20
    # steps, now and then 0.71).
    assert float(found[0]) > 0.6, scored.stdout
    table = scored.stdout.split(found[0], 1)[1]
    assert re.findall(r"^  ([a-z]+) +\d+ +[01]\.\d{3}$", table, re.M) == NAMES

    # The classifier needs the checkpoint alone: its class names are beside it.
    some = sorted(images)[::20]
    classified = run_here(
        "cifar10_classify.py", "--checkpoint_dir=%s" % (tmp_path / "train"),
        "--data_dir=%s" % (tmp_path / "nothing here"), *some,
    )  # fmt: skip
    assert classified.returncode == 0, classified.stderr
    lines = dict(line.split(": ", 1) for line in classified.stdout.splitlines())
    assert sorted(lines) == some
    for line in lines.values():
        assert set(re.findall(r"([a-z]+) [01]\.\d{3}", line)) <= set(NAMES)
    right = [lines[path].split()[0] == NAMES[images[path]] for path in some]
    assert np.mean(right) > 0.6, lines


def test_the_split_stays_put_as_images_are_added(tmp_path):
    fake_cifar.write_image_folders(str(tmp_path / "images"), NAMES[:3], 60)
    pack(tmp_path / "images", tmp_path / "before")
    fake_cifar.write_image_folders(
        str(tmp_path / "images"), NAMES[:3], 30, seed=1, first=60
    )
    pack(tmp_path / "images", tmp_path / "after")
    before, after = (
        {s: records(tmp_path / d, s) for s in ("train", "test")}
        for d in ("before", "after")
    )
    assert before["train"] | before["test"] <= after["train"] | after["test"]
    # An old image moves only in a class whose count of test images by the
    # hash left the range the split keeps it in (image_folders.split): a few
    # images, next to the line (3 of these 180).
    moved = (before["train"] & after["test"]) | (before["test"] & after["train"])
    assert len(moved) <= 5, len(moved)
    # About --test_fraction of the images are test images.
    test, train = (len(records(tmp_path / "after", s)) for s in ("test", "train"))
    assert test + train == 270
    assert 0.1 < test / 270 < 0.3


def test_packed_data_describes_itself(tmp_path, capsys):
    fake_cifar.write_image_folders(str(tmp_path / "images" / "train"), NAMES, 30)
    fake_cifar.write_image_folders(str(tmp_path / "images" / "test"), NAMES, 6, seed=2)
    pack(tmp_path / "images", tmp_path / "data", name="fruit")
    assert "Packed 150 training and 30 test images of 5 classes" in (
        capsys.readouterr().out
    )
    with flagsaver.flagsaver(data_dir=str(tmp_path / "data"), batch_size=10):
        data = cifar10.data_set()
        assert (data.name, data.class_names) == ("fruit", NAMES)
        assert (data.num_train, data.num_test, data.num_classes) == (150, 30, 5)
        # The shuffling depth, the learning-rate schedule and --num_examples
        # follow the data's counts.
        with tf.Graph().as_default():
            images, labels = cifar10.distorted_inputs()
            assert "Filling queue with 60 fruit images" in capsys.readouterr().out
            global_step = tf.compat.v1.train.get_or_create_global_step()
            logits = cifar10.inference(images, data.num_classes)
            assert logits.shape.as_list() == [10, 5]
            cifar10.train(cifar10.loss(logits, labels), global_step, data.num_train)
            lr = tf.compat.v1.get_default_graph().get_tensor_by_name(
                "ExponentialDecay:0"
            )
            # 15 batches an epoch: the first drop after 350 epochs, step 5250.
            with tf.compat.v1.Session() as sess:
                rates = []
                sess.run(global_step.initializer)
                for step in (5249, 5250):
                    sess.run(global_step.assign(step))
                    rates.append(sess.run(lr))
            np.testing.assert_allclose(rates, [0.1, 0.01], rtol=1e-5)
    with flagsaver.flagsaver(eval_data="test"):
        assert cifar10_eval._num_examples(data) == 30
    with flagsaver.flagsaver(eval_data="train_eval"):
        assert cifar10_eval._num_examples(data) == 150


def test_folders_that_will_not_do_are_one_line_each(tmp_path):
    images = tmp_path / "images"
    assert exit_line(cifar10_pack.main, data_dir=str(tmp_path / "d")) == (
        "Error: Name the folder of images to pack with --image_dir (see --help)."
    )
    assert pack_line(images, tmp_path / "d") == (
        "Error: --image_dir=%s is not a folder." % images
    )
    images.mkdir()
    assert pack_line(images, tmp_path / "d").startswith(
        "Error: %s holds no class folders. Put each class's images in a folder "
        "of its own" % images
    )
    fake_cifar.write_image_folders(str(images), ["only"], 3)
    assert pack_line(images, tmp_path / "d") == (
        "Error: %s holds one class folder (only); a data set needs two or more."
        % images
    )
    (images / "empty").mkdir()
    (images / "empty" / "notes.txt").write_text("not an image")
    assert pack_line(images, tmp_path / "d") == (
        "Error: The class folder %s holds no image files (.jpg, .jpeg, .jfif, .png, "
        ".bmp, .gif, .webp): it holds 1 .txt file(s)." % (images / "empty")
    )
    split = tmp_path / "split"
    fake_cifar.write_image_folders(str(split / "train"), ["a", "b", "c"], 2)
    fake_cifar.write_image_folders(str(split / "test"), ["a", "b", "d"], 2)
    assert pack_line(split, tmp_path / "d") == (
        "Error: %s/train and %s/test hold other classes: only in train: c; only "
        "in test: d. Give both the same class folders." % (split, split)
    )
    assert not (tmp_path / "d").exists()


def test_data_already_there_is_never_written_over(tmp_path):
    fake_cifar.write_image_folders(str(tmp_path / "images"), NAMES[:2], 10)
    data = fake_cifar.write_dataset(str(tmp_path / "data"), 10, 10)
    before = {name: os.stat(os.path.join(data["dir"], name)).st_mtime_ns
              for name in os.listdir(data["dir"])}  # fmt: skip
    assert pack_line(tmp_path / "images", tmp_path / "data") == (
        "Error: --data_dir=%s holds data already (%s); pack into another "
        "--data_dir. Nothing was written." % (tmp_path / "data", data["dir"])
    )
    after = {name: os.stat(os.path.join(data["dir"], name)).st_mtime_ns
             for name in os.listdir(data["dir"])}  # fmt: skip
    assert after == before
    assert sorted(os.listdir(tmp_path / "data")) == [FOLDER]


def test_files_that_are_not_images_are_counted_skips(tmp_path, capsys):
    images = tmp_path / "images"
    written = fake_cifar.write_image_folders(str(images), NAMES[:2], 40)
    bad = images / NAMES[0]
    # Files not named as images are ignored: a photo export's sidecar files
    # beside every image stop nothing.
    for path in written:
        with open(path + ".json", "w") as f:
            f.write("{}")
    (bad / "notes.txt").write_text("not an image")
    (bad / "scan.TIFF").write_text("an image this does not read")
    (bad / "README").write_text("no extension")
    (bad / "broken.jpg").write_bytes(b"\xff\xd8\xff not a JPEG")
    (bad / "text.png").write_text("not a PNG")
    (bad / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (bad / "loop.jpg").symlink_to(bad / "loop.jpg")
    (bad / "sub").mkdir()
    (bad / "sub" / "up").symlink_to(bad)  # a loop of folders
    os.mkfifo(bad / "pipe.gif")
    pack(images, tmp_path / "data")
    out = capsys.readouterr().out
    log = tmp_path / "data" / (FOLDER + ".skipped.txt")
    assert re.search(r"\(\d+\.\d s, \d+ images/sec\)\.$", out.splitlines()[-4])
    assert out.splitlines()[-3:] == [
        "Skipped 5 file(s) that could not be read as images (JPEG, PNG, BMP, GIF "
        "or WebP).",
        "Each file skipped is listed in %s." % log,
        "Ignored 83 file(s) not named as images (.jpg, .jpeg, .jfif, .png, .bmp, "
        ".gif, .webp): 80 .json, 1 (none), 1 .tiff, 1 .txt. Images in .tiff are not "
        "read: convert them to JPEG or PNG to pack them.",
    ]
    assert sorted(log.read_text().splitlines()) == sorted(
        [
            "%s is a damaged or incomplete JPEG file (it ends before its image "
            "does)." % (bad / "broken.jpg"),
            "%s is not an image this can read (JPEG, PNG, BMP, GIF or WebP)."
            % (bad / "text.png"),
            "Cannot read %s (No such file or directory)." % (bad / "gone.png"),
            "Cannot read %s (Too many levels of symbolic links)." % (bad / "loop.jpg"),
            "%s is not a regular file; skipped." % (bad / "pipe.gif"),
        ]
    )
    packed = len(records(tmp_path / "data", "train")) + len(
        records(tmp_path / "data", "test")
    )
    assert packed == 80


def test_more_than_a_tenth_unreadable_stops_and_keeps_nothing(tmp_path):
    images = tmp_path / "images"
    fake_cifar.write_image_folders(str(images), NAMES[:2], 10)
    for n in range(3):  # 3 of 23
        (images / NAMES[1] / ("bad%d.png" % n)).write_text("not an image")
    line = pack_line(images, tmp_path / "data")
    log = tmp_path / "data" / (FOLDER + ".skipped.txt")
    assert re.fullmatch(
        r"Error: 3 of the first \d+ images could not be read, more than a tenth; "
        r"each is listed in %s\. Nothing was packed\." % re.escape(str(log)),
        line,
    ), line
    assert len(log.read_text().splitlines()) == 3
    assert os.listdir(tmp_path / "data") == [log.name]  # no half-packed data


def test_packed_data_that_changed_is_one_line(tmp_path):
    fake_cifar.write_image_folders(str(tmp_path / "images"), NAMES[:2], 30)
    pack(tmp_path / "images", tmp_path / "data", name="FRUIT-2")
    folder = tmp_path / "data" / FOLDER
    description = json.loads((folder / cifar10_input.DESCRIPTION_FILE).read_text())
    (name, count), *_ = description["train"].items()
    settings = dict(data_dir=str(tmp_path / "data"), train_dir=str(tmp_path / "t"))
    # A file cut short by whole records.
    with open(folder / name, "r+b") as f:
        f.truncate((count - 2) * cifar10_input.RECORD_BYTES)
    line = exit_line(cifar10_train.main, **settings)
    assert line.startswith(
        "Error: %s holds %d: the 1 file(s) should hold %d records in all, %d each. "
        "A file was cut short, or the data is not FRUIT-2." % (
            folder / name, count - 2, count, count)
    ), line  # fmt: skip
    assert line.endswith("Pack the images again with cifar10_pack.py.")
    # Images of another size than the model reads.
    description["height"] = 16
    (folder / cifar10_input.DESCRIPTION_FILE).write_text(json.dumps(description))
    line = exit_line(cifar10_train.main, **settings)
    assert line == (
        "Error: %s describes 16x32x3 images; this model reads 32x32x3 (HEIGHT, "
        "WIDTH and DEPTH in cifar10_input.py). Pack the images again, or set "
        "those to the data's." % (folder / cifar10_input.DESCRIPTION_FILE)
    )
    (folder / cifar10_input.DESCRIPTION_FILE).write_text("{not json")
    line = exit_line(cifar10_train.main, **settings)
    assert line.startswith(
        "Error: Cannot read %s (" % (folder / cifar10_input.DESCRIPTION_FILE)
    )


def test_a_checkpoint_meets_only_data_of_its_own_classes(trained, dataset, tmp_path):
    other = tmp_path / "other"
    fake_cifar.write_image_folders(str(tmp_path / "images"), NAMES, 10)
    pack(tmp_path / "images", other)
    # Evaluation: one line, naming both sets of classes.
    line = exit_line(
        cifar10_eval.main, data_dir=str(other), checkpoint_dir=trained,
        eval_dir=str(tmp_path / "eval"), run_once=True,
    )  # fmt: skip
    assert line == (
        "Error: %s was trained on the classes airplane, automobile, bird, cat, "
        "deer, ... (10 classes); --data_dir holds apple, bean, cherry, date, elder "
        "(5 classes). Evaluate it on the data it was trained on."
        % tf.train.latest_checkpoint(trained)
    )
    # Training on in the same folder: one line, nothing written.
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    for name in os.listdir(trained):
        os.symlink(os.path.join(trained, name), train_dir / name)
    before = sorted(os.listdir(train_dir))
    line = exit_line(
        cifar10_train.main, data_dir=str(other), train_dir=str(train_dir),
        max_steps=10000,
    )  # fmt: skip
    assert line.startswith(
        "Error: The checkpoints in --train_dir=%s were trained on the classes "
        "airplane, " % train_dir
    )
    assert sorted(os.listdir(train_dir)) == before


def photo(path, pixels, orientation):
    """Writes a JPEG whose EXIF orientation says how to turn it for viewing,
    as phones store their photos."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, "JPEG", quality=90, exif=exif.tobytes())


def test_photos_are_stored_as_a_viewer_shows_them(tmp_path):
    rng = np.random.default_rng(3)
    images = tmp_path / "images"
    expected = {}
    for split in ("train", "test"):
        labels, viewed = [], []
        for label, name in enumerate(NAMES[:2]):
            (images / split / name).mkdir(parents=True)
            for orientation in range(1, 9):
                # Wider than tall: turned, the crop takes another part.
                pixels = (rng.random((36, 60, 3)) * 255).astype(np.uint8)
                path = images / split / name / ("%d.jpg" % orientation)
                photo(path, pixels, orientation)
                with Image.open(path) as stored:
                    viewed.append(np.asarray(ImageOps.exif_transpose(stored)))
                labels.append(label)
        fit = fit_as_packing_does(viewed)
        expected[split] = {
            r.tobytes() for r in cifar10_input.encode_records(labels, fit)
        }
    pack(images, tmp_path / "data")
    for split, wanted in expected.items():
        assert records(tmp_path / "data", split) == wanted


@pytest.mark.parametrize(
    "name, problem",
    [
        ("line\ntwo", "holds a line break or another control character"),
        (" ", "begins or ends with a space"),
        ("trailing ", "begins or ends with a space"),
        (os.fsdecode(b"caf\xe9"), "is not UTF-8 text"),
    ],
)
def test_a_class_name_that_would_not_read_back_is_refused(tmp_path, name, problem):
    images = tmp_path / "images"
    fake_cifar.write_image_folders(str(images), ["ok", name], 3)
    shown = str(images) + "/" + os.fsencode(name).decode("utf-8", "backslashreplace")
    assert pack_line(images, tmp_path / "data") == (
        "Error: The class folder %s has a name that %s; class names are written one "
        "a line to batches.meta.txt. Rename it. Nothing was written." % (shown, problem)
    )
    assert not (tmp_path / "data").exists()


def test_links_pack_each_file_once_and_only_in_its_own_class(tmp_path, capsys):
    images = tmp_path / "images"
    fake_cifar.write_image_folders(str(images), NAMES[:3], 10)
    a, b = images / NAMES[0], images / NAMES[1]
    (a / "up").symlink_to("..")  # the folder of every class
    (a / "over").symlink_to("../%s" % NAMES[1])  # another class's folder
    (a / "their.jpg").symlink_to(b / "00000.jpg")  # another class's image
    (a / "again.png").symlink_to(a / "00001.png")  # the same image twice
    os.link(a / "00002.bmp", a / "hard.bmp")
    elsewhere = tmp_path / "elsewhere"  # images kept outside are packed
    fake_cifar.write_image_folders(str(elsewhere), ["more"], 4, first=50)
    (a / "more").symlink_to(elsewhere / "more")
    pack(images, tmp_path / "data")
    out = capsys.readouterr().out
    assert "Packed 34 training and " not in out  # the split decides
    counts = [len(records(tmp_path / "data", s)) for s in ("train", "test")]
    assert sum(counts) == 34  # 30, and the 4 kept elsewhere
    labels = [r[0] for s in ("train", "test") for r in records(tmp_path / "data", s)]
    assert sorted(labels).count(0) == 14
    log = (tmp_path / "data" / (FOLDER + ".skipped.txt")).read_text().splitlines()
    assert sorted(log) == sorted(
        [
            "%s is a link to %s, a folder that holds its class folder; not "
            "followed." % (a / "up", images),
            "%s is a link to %s, inside the class folder %s; not followed."
            % (a / "over", b, b),
            "%s is a link to %s, inside the class folder %s; not followed."
            % (a / "their.jpg", b / "00000.jpg", b),
            "%s is %s again; packed once." % (a / "again.png", a / "00001.png"),
            "%s is %s again; packed once." % (a / "hard.bmp", a / "00002.bmp"),
        ]
    )
    assert "Skipped 3 link(s) that lead out of their class folder (not followed)." in (
        out
    )
    assert "Skipped 2 file(s) met a second time through a link (each is packed " in out


def test_a_second_packer_on_the_same_data_dir_is_one_line(tmp_path):
    fake_cifar.write_image_folders(str(tmp_path / "images"), NAMES[:2], 10)
    (tmp_path / "data").mkdir()
    with folders.locked(str(tmp_path / "data" / ".pack.lock")):
        line = pack_line(tmp_path / "images", tmp_path / "data")
    assert re.fullmatch(
        r"Error: --data_dir=%s is being packed into by another process \(pid %d on "
        r".*\)\. Wait for it to end, or pack into another --data_dir\."
        % (re.escape(str(tmp_path / "data")), os.getpid()),
        line,
    ), line


def test_flags_and_layouts_that_will_not_do_fail_before_anything_is_written(
    tmp_path, capsys
):
    images = tmp_path / "images"
    fake_cifar.write_image_folders(str(images), NAMES[:2], 3)
    for data_dir in (images, images / "packed", images / NAMES[0] / "deeper"):
        assert pack_line(images, data_dir) == (
            "Error: --data_dir=%s is inside --image_dir=%s, where the next packing "
            "would take it for a class. Pack into a folder outside it."
            % (data_dir, images)
        )
    data = tmp_path / "data"
    assert pack_line(images, data, test_fraction=float("nan")) == (
        "Error: --test_fraction=nan is not a number: give the share of test images, "
        "above 0 and at most 0.9 (such as 0.2)."
    )
    assert pack_line(images, data, test_fraction=0.0) == (
        "Error: --test_fraction=0 leaves no test images: give a share above 0 (such "
        "as 0.2), or train/ and test/ folders in --image_dir."
    )
    # However small the share, each class of two or more images has a test
    # image.
    pack(images, tmp_path / "small share", test_fraction=0.001)
    assert labels_of(tmp_path / "small share", "test") == {0: 1, 1: 1}
    capsys.readouterr()
    split = tmp_path / "split"
    fake_cifar.write_image_folders(str(split / "train"), NAMES[:2], 3)
    assert pack_line(split, data) == (
        "Error: %s has a train/ folder but no test/ folder. Give it both, "
        "%s/train/<class>/... and %s/test/<class>/..., or a folder per class and "
        "no train/." % (split, split, split)
    )
    assert not data.exists()
    # With train/ and test/ folders, --test_fraction does not apply: it says so.
    fake_cifar.write_image_folders(str(split / "test"), NAMES[:2], 3, seed=1)
    with flagsaver.flagsaver(test_fraction=0.5):
        FLAGS["test_fraction"].present = 1
        try:
            pack(split, data)
        finally:
            FLAGS["test_fraction"].present = 0
    assert capsys.readouterr().out.startswith(
        "Note: --test_fraction does not apply: %s has its own train/ and test/ "
        "folders.\n" % split
    )


# What TensorFlow itself writes as it loads (the README's Troubleshooting
# explains these lines): anything else on stderr is the packer's or a fault.
TENSORFLOW_LOADING = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWE]\d{4} [\d:. ]+ +\d+ (port|cudart_stub|cuda_platform|cpu_feature_guard)"
    r"\.cc:\d+\]|To enable the following instructions)"
)


def deep_folder(folder, depth, name_length=200):
    """Makes folder/ddd.../ddd.../... depth levels down, by relative paths,
    so that its path can be longer than the system's limit; returns a file
    descriptor of the deepest folder."""
    fd = os.open(folder, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("d" * name_length, dir_fd=fd)
        deeper = os.open("d" * name_length, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    return fd


def saved(image, kind, **options):
    """The bytes of image saved by Pillow as kind."""
    out = io.BytesIO()
    image.save(out, kind, **options)
    return out.getvalue()


# The colours of the classes of the folder as people have it, and their
# labels (the packer's order of the class folders).
COLOURS = {"blue": (0, 0, 255), "red": (255, 0, 0)}


def write_every_format(images):
    """Writes images/train/<colour>/: one colour in files of every kind: a
    BMP of a palette, a PNG and a WebP turned by their EXIF (a colour each
    half), WebPs with alpha and animated, a GIF of many frames, and strips
    of 100000x1 and 1x200000 pixels (a few hundred bytes, which scaled whole
    would take gigabytes); and a PNG of the colour in images/test/<colour>/."""
    exif = Image.Exif()
    exif[0x0112] = 6
    for name, colour in COLOURS.items():
        folder = images / "train" / name
        folder.mkdir(parents=True)
        plain = Image.new("RGB", (64, 40), colour)
        (images / "test" / name).mkdir(parents=True)
        plain.save(images / "test" / name / "plain.png")
        # Its left half in the colour, the right black: turned by 6, the
        # top half in the colour.
        half = np.zeros((40, 64, 3), np.uint8)
        half[:, :32] = colour
        files = {
            "palette.bmp": saved(plain.quantize(4), "BMP"),
            "one.bmp": saved(plain.convert("1"), "BMP") if name == "red" else None,
            "turned.png": saved(Image.fromarray(half), "PNG", exif=exif.tobytes()),
            "turned.webp": saved(
                Image.fromarray(half), "WEBP", lossless=True, exif=exif.tobytes()
            ),
            "alpha.webp": saved(plain.convert("RGBA"), "WEBP", lossless=True),
            "moving.webp": saved(
                plain, "WEBP", lossless=True, save_all=True, duration=100,
                append_images=[Image.new("RGB", (64, 40), "green")],
            ),
            "moving.gif": saved(
                plain, "GIF", save_all=True, duration=40,
                append_images=[Image.new("RGB", (9, 9), (i, 9, 0)) for i in range(60)],
            ),
        }  # fmt: skip
        for file_name, data in files.items():
            if data:
                (folder / file_name).write_bytes(data)
    (images / "train" / "red" / "wide.png").write_bytes(
        fake_cifar.png_of_one_colour(100_000, 1)
    )
    (images / "train" / "blue" / "tall.png").write_bytes(
        fake_cifar.png_of_one_colour(1, 200_000)
    )


def write_as_people_have_them(images, tmp_path):
    """Writes 30 images in each class folder of images/test/, with what
    people's folders hold beside them: sidecar files, files this does not
    read, huge files and images, a cut JPEG, a photo turned by its EXIF,
    broken links and links met twice, a name that is not UTF-8, a pipe."""
    a, b = (images / "test" / name for name in COLOURS)
    written = fake_cifar.write_image_folders(str(images / "test"), list(COLOURS), 30)
    for path in written:  # a photo export's sidecar files
        with open(path + ".json", "w") as f:
            f.write("{}")
    (a / "IMG_0001.HEIC").write_bytes(b"an image this does not read")
    (a / ".hidden.jpg").write_bytes(b"left alone")
    for name in ("holiday.mov", "huge.jpg"):  # 2 GB each, sparse
        with open((a if name.endswith(".mov") else b) / name, "wb") as f:
            f.truncate(2 * 2**30)
    (a / "bomb.png").write_bytes(fake_cifar.png_of_one_colour(16000, 16000))
    # Decoded: 108 MB of pixels, within the bound.
    (b / "screen.png").write_bytes(fake_cifar.png_of_one_colour(6000, 6000))
    sideways = np.kron(
        np.eye(2, dtype=np.uint8)[..., None] * 200, np.ones((1500, 2000, 3), np.uint8)
    )
    photo(b / "phone.jpg", sideways, 6)
    cut = (b / "phone.jpg").read_bytes()
    (a / "cut.jpg").write_bytes(cut[: len(cut) // 2])
    (a / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (a / os.fsdecode(b"caf\xe9.png")).write_bytes(b"not a PNG")
    os.mkfifo(a / "pipe.gif")
    (a / "up").symlink_to("..")
    (a / "again.png").symlink_to(a / "00001.png")


def shown(path):
    """A path as the binaries show it: its bytes that are not UTF-8 as \\xNN."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


@pytest.fixture(scope="module")
def packed_as_people_have_them(tmp_path_factory):
    """One run of the packer, as a process whose memory is measured, on a
    folder that holds images of every format in train/ and, in test/, images
    beside all that people's folders hold. The folder of images and the data
    folder are named in Latin-1, as an old archive or a Windows share has
    them: paths whose bytes are not UTF-8, on the command line.

    Returns:
      (images folder, data folder, subprocess.CompletedProcess, peak bytes).
    """
    tmp_path = tmp_path_factory.mktemp("people")
    images = tmp_path / os.fsdecode(b"caf\xe9 images")
    data = tmp_path / os.fsdecode(b"donn\xe9es")
    write_every_format(images)
    write_as_people_have_them(images, tmp_path)
    proc, peak, _ = procs.run_measured(
        "cifar10_pack.py", "--image_dir=%s" % images, "--data_dir=%s" % data
    )
    return images, data, proc, peak


def fit_as_packing_does(pixels):
    """Each uint8 image [h, w, 3] of pixels fit as packing fits it, by one
    graph: uint8 images [n, HEIGHT, WIDTH, DEPTH]."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        one = tf.compat.v1.placeholder(tf.uint8, [1, None, None, cifar10_input.DEPTH])
        fit = cifar10_input.fit_images(one)
        return np.concatenate([sess.run(fit, {one: p[None]}) for p in pixels])


@pytest.mark.slow
def test_images_of_every_format_pack_as_a_viewer_shows_them(
    packed_as_people_have_them,
):
    images, data, proc, peak = packed_as_people_have_them
    assert proc.returncode == 0, proc.stderr
    # Of what was skipped (test_a_folder_as_people_have_them_...), nothing
    # is of train/.
    skipped = (data / (FOLDER + ".skipped.txt")).read_text(encoding="utf-8")
    assert shown(images / "train") not in skipped, skipped
    assert peak < 2**30
    # As Pillow shows each (its first frame, turned), fit as packing fits.
    labels, viewed = [], []
    for label, name in enumerate(COLOURS):
        for path in sorted((images / "train" / name).iterdir()):
            with Image.open(path) as image:
                viewed.append(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
            labels.append(label)
    fit = fit_as_packing_does(viewed)
    expected = {r.tobytes() for r in cifar10_input.encode_records(labels, fit)}
    assert records(data, "train") == expected


@pytest.mark.slow
def test_a_folder_as_people_have_them_packs_with_one_line_per_kind(
    packed_as_people_have_them,
):
    images, data, proc, peak = packed_as_people_have_them
    a = images / "test" / "blue"
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, err
    assert [
        line for line in err.splitlines() if not TENSORFLOW_LOADING.match(line)
    ] == []
    log = data / (FOLDER + ".skipped.txt")
    lines = out.splitlines()
    packed = re.match(
        r"Packed (\d+) training and (\d+) test images of 2 classes into %s "
        r"\(\d+\.\d s, \d+ images/sec\)\.$" % re.escape(shown(data / FOLDER)),
        lines[-8],
    )
    # 15 of every format; 60, screen, phone and a plain PNG of each colour.
    assert packed and (int(packed[1]), int(packed[2])) == (15, 64), lines
    assert lines[-7:] == [
        "Skipped 4 file(s) that could not be read as images (JPEG, PNG, BMP, GIF "
        "or WebP).",
        "Skipped 1 file(s) of more than 64 MB.",
        "Skipped 1 image(s) of more than 40 million pixels.",
        "Skipped 1 link(s) that lead out of their class folder (not followed).",
        "Skipped 1 file(s) met a second time through a link (each is packed once).",
        "Each file skipped is listed in %s." % shown(log),
        "Ignored 62 file(s) not named as images (.jpg, .jpeg, .jfif, .png, .bmp, "
        ".gif, .webp): 60 .json, 1 .heic, 1 .mov. Images in .heic are not read: "
        "convert them to JPEG or PNG to pack them.",
    ]
    skipped = log.read_text(encoding="utf-8").splitlines()
    assert len(skipped) == 8
    assert (
        "%s/caf\\xe9.png is not an image this can read (JPEG, PNG, BMP, GIF or "
        "WebP)." % shown(a) in skipped
    )
    # The bound the README states: files over 64 MB are not read, images over
    # 40 million pixels not decoded, one image at a time in each of two
    # threads.
    assert peak < 2**30, peak


def test_a_folder_too_deep_to_read_is_one_line_and_the_rest_packs(tmp_path, capsys):
    # Of a folder as people have them, in a folder whose name is not UTF-8:
    # the line names it with those bytes as \xNN, as the other skip lines do.
    images = tmp_path / os.fsdecode(b"imag\xe9s")
    fake_cifar.write_image_folders(str(images), NAMES[:2], 10, varied=False)
    a = images / NAMES[0]
    fd = deep_folder(a, 25)  # 5,025 bytes more of path than the class folder's
    os.close(os.open("lost.png", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
    pack(images, tmp_path / "data")
    log = tmp_path / "data" / (FOLDER + ".skipped.txt")
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "Skipped 1 folder(s) that could not be read.",
        "Each file skipped is listed in %s." % log,
    ]
    (skipped,) = log.read_text(encoding="utf-8").splitlines()
    assert skipped.startswith("Cannot read the folder %s/ddd" % shown(a)), skipped
    assert skipped.endswith("(File name too long)."), skipped
    packed = [len(records(tmp_path / "data", s)) for s in ("train", "test")]
    assert sum(packed) == 20


@pytest.mark.slow
def test_paths_that_are_not_utf8_pack(packed_as_people_have_them, tmp_path):
    _, data, proc, _ = packed_as_people_have_them
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    # Shown with the bytes that are not UTF-8 as \xNN.
    assert "%s/donn\\xe9es/%s" % (data.parent, FOLDER) == shown(data / FOLDER)
    assert "images of 2 classes into %s (" % shown(data / FOLDER) in output, output
    assert sorted(os.listdir(data)) == [FOLDER, FOLDER + ".skipped.txt"], output

    # Training and evaluation read it.
    data_flag = "--data_dir=%s" % data
    train_dir = "--train_dir=%s" % (tmp_path / "train")
    small = ["--batch_size=4", "--min_queue_examples=8"]
    result = run_here("cifar10_train.py", data_flag, train_dir, "--max_steps=2", *small)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_here(
        "cifar10_eval.py", data_flag, "--checkpoint_dir=%s" % (tmp_path / "train"),
        "--eval_dir=%s" % (tmp_path / "eval"), "--run_once", "--batch_size=4",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def class_names(data_dir):
    path = os.path.join(str(data_dir), FOLDER, cifar10_input.CLASS_NAMES_FILE)
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def labels_of(data_dir, split):
    """How many records of each label a split of packed data holds."""
    found = [record[0] for record in records(data_dir, split)]
    return {label: found.count(label) for label in sorted(set(found))}


def jpegs(folder, class_names, per_class, **kwargs):
    """Small JPEGs in folder/<class>/, quick to write and to pack."""
    return fake_cifar.write_image_folders(
        str(folder), class_names, per_class, varied=False, **kwargs
    )


@pytest.mark.parametrize(
    "train, test",
    [
        ("Train", "Test"),
        ("training_set", "test_set"),
        ("TRAINING", "testing"),
        ("train", "Validation"),
    ],
)
def test_split_folders_of_every_usual_name_are_splits(tmp_path, capsys, train, test):
    images = tmp_path / "images"
    jpegs(images / train, ["cats", "dogs"], 6)
    jpegs(images / test, ["cats", "dogs"], 2, seed=1)
    pack(images, tmp_path / "data")
    lines = capsys.readouterr().out.splitlines()
    assert any(
        line.startswith("Packed 12 training and 4 test images of 2 classes")
        for line in lines
    ), lines
    assert class_names(tmp_path / "data") == ["cats", "dogs"]
    if test == "Validation":  # a test split by another name
        assert (
            "Note: %s is the test split: there is no test folder." % (images / test)
        ) in lines


def test_kaggles_folders_in_folders_of_the_same_name_are_splits(tmp_path, capsys):
    images = tmp_path / "images"
    jpegs(images / "training_set" / "training_set", ["cats", "dogs"], 5)
    jpegs(images / "test_set" / "test_set", ["cats", "dogs"], 2, seed=1)
    pack(images, tmp_path / "data")
    assert "Packed 10 training and 4 test images of 2 classes" in (
        capsys.readouterr().out
    )
    assert class_names(tmp_path / "data") == ["cats", "dogs"]


def test_split_folders_that_are_not_a_pair_are_refused_with_a_hint(tmp_path):
    images = tmp_path / "images"
    jpegs(images, ["cats", "dogs", "Test"], 3)
    assert pack_line(images, tmp_path / "data") == (
        "Error: %s holds Test/, a split's name, beside the folders cats, dogs: give "
        "it a training and a test folder, each with a folder per class, or rename "
        "Test/ if it is a class." % images
    )
    two = tmp_path / "two"
    for split in ("train", "Training", "test"):
        jpegs(two / split, ["cats", "dogs"], 2)
    assert pack_line(two, tmp_path / "data") == (
        "Error: %s holds Training/ and train/, folders of one split: keep one of "
        "them." % two
    )
    inner = tmp_path / "inner"
    for split in ("train", "test"):
        jpegs(inner / split, ["cats", "dogs", "val"], 2)
    assert pack_line(inner, tmp_path / "data") == (
        "Error: %s holds val/, a split's name, among its class folders: a split "
        "folder is never a class. Move it out, or rename it if it is a class."
        % (inner / "train")
    )
    assert not (tmp_path / "data").exists()


def test_every_class_of_two_or_more_gets_its_share_of_test_images(tmp_path, capsys):
    images = tmp_path / "images"
    sizes = {"a": 2, "b": 3, "c": 5, "d": 12, "e": 60, "f": 1}
    for name, size in sizes.items():
        jpegs(images, [name], size, seed=ord(name))
    pack(images, tmp_path / "data")
    out = capsys.readouterr().out
    test = labels_of(tmp_path / "data", "test")
    train = labels_of(tmp_path / "data", "train")
    for label, size in enumerate(sizes.values()):
        assert train.get(label, 0) + test.get(label, 0) == size
        if size > 1:
            low, high = image_folders.range_of_test_images(size, 0.2)
            assert low <= test[label] <= high, (label, test)
    assert 5 not in test
    assert (
        "Note: the class(es) f hold one image each, too few to test: it is a "
        "training image, and evaluation scores none of theirs." in out.splitlines()
    )
    # A fifth of each class, give or take chance's spread, never none.
    sizes = (2, 3, 5, 10, 60, 1000)
    assert [image_folders.range_of_test_images(n, 0.2) for n in sizes] == [
        (1, 1), (1, 1), (1, 1), (1, 3), (9, 15), (188, 212)
    ]  # fmt: skip
    assert image_folders.range_of_test_images(2, 0.9) == (1, 1)


def test_folders_that_systems_keep_are_skipped_wherever_they_are(tmp_path, capsys):
    images = tmp_path / "images"
    jpegs(images, ["cats", "dogs"], 10)
    # Synology's thumbnails of each photo, in a folder beside them.
    jpegs(images / "cats" / "@eaDir", ["00000.jpg", "00001.jpg"], 3, seed=1)
    jpegs(images / "__MACOSX", ["cats", "dogs"], 2, seed=2)
    jpegs(images / "$RECYCLE.BIN", ["S-1-5-21"], 2, seed=3)
    jpegs(images / "System Volume Information", ["x"], 1, seed=4)
    pack(images, tmp_path / "data")
    out = capsys.readouterr().out
    assert class_names(tmp_path / "data") == ["cats", "dogs"]
    assert (
        sum(labels_of(tmp_path / "data", "train").values())
        + sum(labels_of(tmp_path / "data", "test").values())
        == 20
    )
    assert (
        "Note: skipped 4 folder(s) that systems keep for themselves, not images: 1 "
        "$RECYCLE.BIN, 1 System Volume Information, 1 __MACOSX, 1 @eaDir."
        in out.splitlines()
    )


def test_what_is_left_out_is_said_with_counts(tmp_path, capsys):
    images = tmp_path / "images"
    jpegs(images / "train", ["cats", "dogs"], 5)
    jpegs(images / "test", ["cats", "dogs"], 2, seed=1)
    jpegs(images / "val", ["cats", "dogs"], 3, seed=2)
    jpegs(images, ["stray"], 2, seed=3)
    for n in range(2):  # two images beside the split folders, an empty folder
        os.rename(images / "stray" / ("%05d.jpg" % n), images / ("%d.jpg" % n))
    (images / "train" / "loose.png").write_bytes(b"beside the class folders")
    pack(images, tmp_path / "data")
    lines = capsys.readouterr().out.splitlines()
    assert (
        "Note: left out what %s holds beside train/ and test/: stray/ (0 images), "
        "val/ (6 images)." % images in lines
    )
    assert (
        "Note: left out 3 image file(s) that lie in no class folder: 2 in %s, 1 in "
        "%s. Put each in its class folder to pack it."
        % (images, images / "train")
        in lines
    )


def test_one_name_in_nfc_and_nfd_is_one_class_and_case_twins_are_refused(
    tmp_path, capsys
):
    images = tmp_path / "images"
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    jpegs(images / "train", [nfd, "tea"], 5)  # written on a Mac
    jpegs(images / "test", [nfc, "tea"], 2, seed=1)
    pack(images, tmp_path / "data")
    assert "Packed 10 training and 4 test images of 2 classes" in (
        capsys.readouterr().out
    )
    assert class_names(tmp_path / "data") == [nfc, "tea"]
    both = tmp_path / "both"
    jpegs(both, [nfc, nfd, "tea"], 5)
    pack(both, tmp_path / "both data")
    assert class_names(tmp_path / "both data") == [nfc, "tea"]
    twins = tmp_path / "twins"
    jpegs(twins, ["Cat", "cat", "dog"], 3)
    assert pack_line(twins, tmp_path / "twins data") == (
        "Error: %s holds the class folders Cat and cat, whose names differ only in "
        "case: merge them, or rename all but one. Nothing was written." % twins
    )


def test_jfif_files_are_read_and_a_folder_of_heic_says_what_it_holds(tmp_path, capsys):
    images = tmp_path / "images"
    written = jpegs(images, ["cats", "dogs"], 5)
    for path in written:
        os.rename(path, path[: -len(".jpg")] + ".jfif")
    pack(images, tmp_path / "data")
    assert "Packed 8 training and 2 test images of 2 classes" in (
        capsys.readouterr().out
    )
    (images / "phone").mkdir()
    for n in range(12):
        (images / "phone" / ("IMG_%04d.HEIC" % n)).write_bytes(b"HEIC")
    (images / "phone" / "IMG_0000.AAE").write_bytes(b"edits")
    assert pack_line(images, tmp_path / "more") == (
        "Error: The class folder %s holds no image files (.jpg, .jpeg, .jfif, .png, "
        ".bmp, .gif, .webp): it holds 12 .heic, 1 .aae file(s). Images in .heic are "
        "not read: convert them to JPEG or PNG." % (images / "phone")
    )


def test_a_class_without_training_images_says_what_happened(tmp_path):
    images = tmp_path / "images"
    jpegs(images, ["cats", "dogs"], 5)
    (images / "kittens").symlink_to("cats")  # the same folder, by a link
    assert pack_line(images, tmp_path / "data") == (
        "Error: The image files of the class folder %s were all met before, under "
        "another class or split (%s is %s again): links or hard links to the same "
        "files, each packed once, where it is met first. Give the class images of "
        "its own." % (images / "kittens", images / "kittens" / "00000.jpg",
                      images / "cats" / "00000.jpg")
    )  # fmt: skip
    (images / "kittens").unlink()
    (images / "all").symlink_to(".")  # every class again
    assert pack_line(images, tmp_path / "data") == (
        "Error: The class folder %s holds the class folder %s: it is a link to %s. "
        "Remove it, or give each class a folder of its own."
        % (images / "all", images / "cats", images)
    )
    split = tmp_path / "split"
    jpegs(split / "train", ["cats", "dogs"], 5)
    jpegs(split / "test", ["cats", "dogs"], 5, seed=1)
    for n in range(5):
        (split / "train" / "dogs" / ("%05d.jpg" % n)).write_bytes(b"not a JPEG")
    jpegs(split / "train", ["cats"], 45, seed=2, first=5)  # 5 unreadable of 65
    line = pack_line(split, tmp_path / "data")
    assert line == (
        "Error: No training image of the class(es) dogs could be read: none of "
        "their 5 training file(s) could be read as an image; each is listed in %s. "
        "Nothing was packed." % (tmp_path / "data" / (FOLDER + ".skipped.txt"))
    )
