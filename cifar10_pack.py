"""Packs folders of images into the records that training reads.

    python cifar10_pack.py --image_dir=IMAGES --data_dir=DATA

IMAGES holds a folder of images per class, IMAGES/<class>/..., which are
split into training and test images by --test_fraction; or its own split,
IMAGES/train/<class>/... and IMAGES/test/<class>/.... The class names are
the folders' names, sorted. Every JPEG, PNG, BMP or GIF (its first frame),
of any size and mode, is scaled until its shorter side fits the stored
image size of cifar10_input.py (HEIGHT x WIDTH, 32x32 for CIFAR-10), cut
to that around its centre, and stored as the official archive stores its
images, in DATA/<its data folder>/: the training records (in an order
shuffled once, with a fixed seed) in data_batch_<n>.bin, the test records
in test_batch.bin, the class names in batches.meta.txt, and data_set.json,
which says how many records each file holds. The binaries read that and
need no change of code:

    python cifar10_train.py --data_dir=DATA
    python cifar10_eval.py --data_dir=DATA --run_once
    python cifar10_classify.py photo.jpg

A file that is not an image, or cannot be read, is skipped; each is listed
in DATA/<data folder>.skipped.txt, and they are counted at the end. More
than a tenth of them stops the packing. Nothing is written over: a
--data_dir that holds packed data already is refused.
"""

from support import startup

if __name__ == "__main__":
    startup.before_tensorflow()

import collections
import concurrent.futures
import contextlib
import errno
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf

import cifar10
import cifar10_input
from support import folders, progress

FLAGS = tf.compat.v1.flags.FLAGS
tf.compat.v1.flags.adopt_module_key_flags(cifar10)

tf.compat.v1.flags.DEFINE_string(
    "image_dir",
    None,
    "Folder of images: a folder per class, <image_dir>/<class>/..., or "
    "<image_dir>/train/<class>/... and <image_dir>/test/<class>/.... Each "
    "image is scaled until its shorter side fits %dx%d, then cut to that "
    "around its centre." % (cifar10_input.HEIGHT, cifar10_input.WIDTH),
)
tf.compat.v1.flags.DEFINE_float(
    "test_fraction",
    0.2,
    "Without train/ and test/ folders, about this share of each class's "
    "images becomes test images, each by a hash of its path: images added "
    "later never move old ones to the other split.",
    lower_bound=0.0,
    upper_bound=0.9,
)
tf.compat.v1.flags.DEFINE_string(
    "name", None, "The data set's name in messages (default: the folder's)."
)

# Training records a file, as the official archive has them.
RECORDS_PER_FILE = 10000
# Files decoded at a time.
BATCH_FILES = 256
# The training records' order is shuffled once, always the same way.
SEED = 0
# More skipped files than this share of them stops the packing.
MOST_SKIPPED = 0.1
# Where an interrupted packing left its work: removed at the next start.
STAGING = re.compile(r"^\.packing-")


class PackError(startup.Error):
    """The images cannot be packed; the message says why and what to do."""


def main(argv):
    del argv
    if not FLAGS.image_dir:
        raise PackError(
            "Name the folder of images to pack with --image_dir (see --help)."
        )
    image_dir = FLAGS.image_dir.rstrip("/") or "/"
    class_names, splits = find_images(image_dir)
    output = os.path.join(FLAGS.data_dir, cifar10_input.DATA_FOLDER)
    folders.writable(FLAGS.data_dir, "data_dir")
    log = output + ".skipped.txt"
    with folders.locked(os.path.join(FLAGS.data_dir, ".pack.lock")):
        folders.remove_leftovers(FLAGS.data_dir, STAGING)
        if os.path.exists(output) and os.listdir(output):
            raise PackError(
                "--data_dir=%s holds data already (%s); pack into another "
                "--data_dir. Nothing was written." % (FLAGS.data_dir, output)
            )
        staging = tempfile.mkdtemp(dir=FLAGS.data_dir, prefix=".packing-")
        # mkdtemp() makes a folder only its owner can read; the data gets the
        # modes of any other new folder.
        os.chmod(staging, 0o777 & ~folders.umask())
        try:
            started = time.time()
            counts, skipped = pack(image_dir, class_names, splits, staging, log)
            seconds = time.time() - started
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(output)  # an empty folder of that name
            os.rename(staging, output)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise PackError(
                "No space left on the device of --data_dir=%s while packing; "
                "nothing was kept. Free some space, or choose another --data_dir."
                % FLAGS.data_dir
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    files = sum(len(files) for files in splits.values())
    print(
        "Packed %d training and %d test images of %d classes into %s (%.1f s, %.0f "
        "files/sec)."
        % (
            counts["train"],
            counts["test"],
            len(class_names),
            output,
            seconds,
            files / seconds,
        )
    )
    if skipped:
        print("Skipped %d file(s); each is listed in %s." % (skipped, log))


def find_images(image_dir):
    """The classes and the image files of each split.

    Returns:
      (class names, sorted; {"train": [(path, label)], "test": [...]}).

    Raises:
      PackError: the folder is not laid out as a folder per class (or per
        split and class), or a class has no files.
    """
    if not os.path.isdir(image_dir):
        raise PackError("--image_dir=%s is not a folder." % image_dir)
    own_split = all(
        os.path.isdir(os.path.join(image_dir, split)) for split in ("train", "test")
    )
    if not own_split:
        class_names = _class_folders(image_dir)
        files = _files_by_class(image_dir, class_names)
        in_test = [_in_test(os.path.relpath(path, image_dir)) for path, _ in files]
        return class_names, {
            "train": [f for f, test in zip(files, in_test, strict=True) if not test],
            "test": [f for f, test in zip(files, in_test, strict=True) if test],
        }
    names = {s: _class_folders(os.path.join(image_dir, s)) for s in ("train", "test")}
    if names["train"] != names["test"]:
        raise PackError(
            "%s/train and %s/test hold other classes: only in train: %s; only in "
            "test: %s. Give both the same class folders."
            % (
                image_dir,
                image_dir,
                ", ".join(sorted(set(names["train"]) - set(names["test"]))) or "-",
                ", ".join(sorted(set(names["test"]) - set(names["train"]))) or "-",
            )
        )
    return names["train"], {
        split: _files_by_class(os.path.join(image_dir, split), names["train"])
        for split in ("train", "test")
    }


def _class_folders(folder):
    """The class folders in folder, sorted: two or more, each named on one
    line of batches.meta.txt.

    Raises:
      PackError: fewer than two, or more than a label byte can tell apart.
    """
    names = sorted(
        name
        for name in os.listdir(folder)
        if not name.startswith(".") and os.path.isdir(os.path.join(folder, name))
    )
    if not names:
        raise PackError(
            "%s holds no class folders. Put each class's images in a folder of "
            "its own, %s/<class>/... (or %s/train/<class>/... and "
            "%s/test/<class>/...)." % (folder, folder, folder, folder)
        )
    if len(names) == 1:
        raise PackError(
            "%s holds one class folder (%s); a data set needs two or more."
            % (folder, names[0])
        )
    if len(names) > 256:
        raise PackError(
            "%s holds %d class folders; a label byte tells 256 apart at most."
            % (folder, len(names))
        )
    return names


def _files_by_class(folder, class_names):
    """[(path, label)] of every file in the class folders, sorted by path.

    Raises:
      PackError: a class folder holds no files.
    """
    files = []
    for label, name in enumerate(class_names):
        found = _files_under(os.path.join(folder, name))
        if not found:
            raise PackError(
                "The class folder %s holds no files." % os.path.join(folder, name)
            )
        files += [(path, label) for path in found]
    return files


def _files_under(folder):
    """The files in folder and its subfolders (links followed, each folder
    once however many links lead to it, so that a loop ends), but hidden
    ones, sorted."""
    found, seen = [], set()
    for parent, subfolders, names in os.walk(folder, followlinks=True):
        identity = os.stat(parent)
        if (identity.st_dev, identity.st_ino) in seen:
            subfolders[:] = []  # a folder met before: a loop of links
            continue
        seen.add((identity.st_dev, identity.st_ino))
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        found += [os.path.join(parent, n) for n in names if not n.startswith(".")]
    return sorted(found)


def _in_test(relative_path):
    """Whether the image at this path under --image_dir is a test image: a
    hash of the path, not its place in a listing, decides."""
    digest = hashlib.sha256(relative_path.encode("utf-8", "surrogateescape"))
    return int.from_bytes(digest.digest()[:8], "big") < FLAGS.test_fraction * 2**64


def pack(image_dir, class_names, splits, staging, log):
    """Writes the records, the class names and the data's description.

    Returns:
      ({"train": records, "test": records}, files skipped).

    Raises:
      PackError: more than a tenth of the files were skipped, a class has no
        training image, or there is no test image.
    """
    train = list(splits["train"])
    random.Random(SEED).shuffle(train)
    jobs = {"train": train, "test": splits["test"]}
    total = len(train) + len(splits["test"])
    line = progress.Progress(
        total,
        lambda done, percent: (
            ">> Packing %s %.1f%% (%d of %d images)" % (image_dir, percent, done, total)
        ),
    )
    described = {
        "name": FLAGS.name or os.path.basename(os.path.abspath(image_dir)),
        "height": cifar10_input.HEIGHT,
        "width": cifar10_input.WIDTH,
        "depth": cifar10_input.DEPTH,
    }
    skipped, labels_seen, done = [], {}, 0
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        decode = _decoder(sess)
        for split, files in jobs.items():
            out = _RecordFiles(staging, split)
            batches = [
                files[i : i + BATCH_FILES] for i in range(0, len(files), BATCH_FILES)
            ]
            for size, labels, images, problems in _decoded(batches, decode):
                out.write(labels, images)
                skipped += problems
                done += size
                line.update(done)
                if len(skipped) > MOST_SKIPPED * total:
                    _write_log(log, skipped)
                    raise _too_many_skipped(skipped, done, log)
            described[split], labels_seen[split] = out.close()
    line.end()
    _write_log(log, skipped)
    _check_classes(labels_seen, class_names)
    with open(os.path.join(staging, cifar10_input.CLASS_NAMES_FILE), "w") as f:
        f.write("".join(name + "\n" for name in class_names))
    with open(os.path.join(staging, cifar10_input.DESCRIPTION_FILE), "w") as f:
        json.dump(described, f, indent=1)
    return {s: sum(described[s].values()) for s in jobs}, len(skipped)


class _RecordFiles:
    """Writes a split's records: the training ones RECORDS_PER_FILE a file,
    data_batch_1.bin, data_batch_2.bin, ...; the test ones in test_batch.bin."""

    def __init__(self, staging, split):
        self._staging = staging
        self._split = split
        self._counts = {}
        self._labels = set()
        self._file = None

    def write(self, labels, images):
        records = cifar10_input.encode_records(labels, images)
        self._labels.update(labels.tolist())
        while len(records):
            if self._file is None or self._full():
                self._next_file()
            room = (
                RECORDS_PER_FILE - self._counts[self._name]
                if self._split == "train"
                else len(records)
            )
            chunk, records = records[:room], records[room:]
            self._file.write(chunk.tobytes())
            self._counts[self._name] += len(chunk)

    def _full(self):
        return self._split == "train" and self._counts[self._name] == RECORDS_PER_FILE

    def _next_file(self):
        if self._file:
            self._file.close()
        if self._split == "train":
            self._name = "data_batch_%d.bin" % (len(self._counts) + 1)
        else:
            self._name = "test_batch.bin"
        self._file = open(os.path.join(self._staging, self._name), "wb")  # noqa: SIM115
        self._counts[self._name] = 0

    def close(self):
        """Returns ({file name: records}, the labels written)."""
        if self._file:
            self._file.close()
        return self._counts, self._labels


def _decoder(sess):
    """decode(contents) -> uint8 images [n, HEIGHT, WIDTH, DEPTH] of a list of
    encoded image files, as classification decodes and fits them; raises
    tf.errors.InvalidArgumentError when one is not an image."""
    contents = tf.compat.v1.placeholder(tf.string, [None])
    images = cifar10_input.decode_images(contents)
    return lambda data: sess.run(images, {contents: data})


def _decoded(batches, decode):
    """(files, labels, images, skipped) of each batch of (path, label) pairs,
    in order: two batches are decoded at once, a core each, and no more are
    read ahead, so that memory does not grow with the number of files."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pending = collections.deque()
        for batch in batches:
            pending.append(pool.submit(_decode_batch, batch, decode))
            if len(pending) == 2:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _decode_batch(batch, decode):
    """The labels and images of the files of a batch that are images.

    Returns:
      (the files of the batch, uint8 labels [n], uint8 images [n, HEIGHT,
      WIDTH, DEPTH], a line for each file skipped that names it and says
      why).
    """
    kept, images, skipped = folders.run_on_image_files(
        decode, [path for path, _ in batch]
    )
    labels = np.array([batch[i][1] for i in kept], np.uint8)
    shape = [cifar10_input.HEIGHT, cifar10_input.WIDTH, cifar10_input.DEPTH]
    images = np.reshape(images, [-1, *shape]).astype(np.uint8)
    return len(batch), labels, images, skipped


def _write_log(log, skipped):
    """Lists the skipped files in log, one a line; removes an older log."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(log)
    if skipped:
        with open(log, "w") as f:
            f.write("".join(line + "\n" for line in skipped))


def _too_many_skipped(skipped, done, log):
    return PackError(
        "%d of the first %d files could not be read as images, more than a tenth; "
        "each is listed in %s. Nothing was packed." % (len(skipped), done, log)
    )


def _check_classes(labels_seen, class_names):
    """Raises PackError unless every class has a training image, and there is
    a test image."""
    missing = [n for i, n in enumerate(class_names) if i not in labels_seen["train"]]
    if missing:
        raise PackError(
            "No training image of the class(es) %s could be read. Nothing was "
            "packed." % ", ".join(missing)
        )
    if not labels_seen["test"]:
        raise PackError(
            "No test image: raise --test_fraction, or add test images. Nothing was "
            "packed."
        )


if __name__ == "__main__":
    startup.run(main)
