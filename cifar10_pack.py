"""Packs folders of images into the records that training reads.

    python cifar10_pack.py --image_dir=IMAGES --data_dir=DATA

IMAGES holds a folder of images per class, IMAGES/<class>/..., which are
split into training and test images by --test_fraction, class by class; or
its own split, IMAGES/train/<class>/... and IMAGES/test/<class>/... (or
Train/ and Test/, training_set/ and test_set/, ...). The class names are the
folders' names, sorted. Files named as JPEG, PNG, BMP, GIF (its first
frame) or WebP images (support/images.py: EXTENSIONS), of any size and
mode, are read; support/image_folders.py says which files and folders are
images, splits and classes, and which are left out (hidden files, the
folders systems keep for themselves), and splits the images. Each image is
turned as its EXIF orientation says, scaled until its shorter side fits the
stored image size of cifar10_input.py (HEIGHT x WIDTH), cut to that around
its centre, and stored as the official archive stores its images, in
DATA/<its data folder>/: the training records (in an order shuffled once,
with a fixed seed) in data_batch_<n>.bin, the test records in
test_batch.bin, the class names in batches.meta.txt, and data_set.json,
which says how many records each file holds. The binaries read that and
need no change of code:

    python cifar10_train.py --data_dir=DATA
    python cifar10_eval.py --data_dir=DATA --run_once
    python cifar10_classify.py photo.jpg

Files with other names (the .json or .xmp beside a photo, a video) are
ignored and counted by extension. An image that cannot be read, is too
large, or that a link reaches from outside its class folder is skipped;
each is listed in DATA/<data folder>.skipped.txt, and each kind is counted
at the end. More than a tenth of the images unreadable stops the packing.
Nothing is written over: a --data_dir that holds packed data already is
refused, and so is one inside IMAGES, or one whose data folder is a file, a
link or a mount point. A packing that fails (a full disk, say) keeps
nothing but that list, and leaves no folder it made.
"""

from support import startup

if __name__ == "__main__":
    startup.before_tensorflow()

import collections
import concurrent.futures
import contextlib
import errno
import json
import math
import os
import random
import re
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf

import cifar10  # noqa: F401  (it defines --data_dir)
import cifar10_input
from support import download, folders, image_folders, images, progress

FLAGS = tf.compat.v1.flags.FLAGS
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
    "images becomes test images, at least one of a class of two or more, "
    "chosen by a hash of each path: images added later seldom move old ones "
    "to the other split. Above 0, at most 0.9.",
    lower_bound=0.0,
    upper_bound=0.9,
)
tf.compat.v1.flags.DEFINE_string(
    "name", None, "The data set's name in messages (default: the folder's)."
)

# What --data_dir means to this binary, which writes there.
DATA_DIR_HELP = (
    "Folder to pack into: the records go to <data_dir>/%s/, which must not "
    "hold data already." % cifar10_input.DATA_FOLDER
)
# --help lists the one flag of the model the packer uses beside its own,
# with what it means here.
startup.use_flags(__name__, data_dir=DATA_DIR_HELP)

# The stored image, which every image is fit to.
SHAPE = [cifar10_input.HEIGHT, cifar10_input.WIDTH, cifar10_input.DEPTH]
# Training records a file, as the official archive has them.
RECORDS_PER_FILE = 10000
# Files decoded at a time, and the most bytes of them (as listed).
BATCH_FILES = 256
BATCH_BYTES = 32 * 2**20
# The training records' order is shuffled once, always the same way.
SEED = 0
# More unreadable images than this share of them stops the packing.
MOST_SKIPPED = 0.1
# Where an interrupted packing left its work: removed at the next start.
STAGING = re.compile("^" + re.escape(download.PACK_STAGING))
# The line that counts each kind of file skipped.
SUMMARY = {**images.SUMMARY, **image_folders.SUMMARY}


class PackError(startup.Error):
    """The images cannot be packed; the message says why and what to do."""


@startup.user_errors(cifar10_input.DataError)
def main(argv):
    del argv
    if not FLAGS.image_dir:
        raise PackError(
            "Name the folder of images to pack with --image_dir (see --help)."
        )
    image_dir = FLAGS.image_dir.rstrip("/") or "/"
    _check_flags(image_dir)
    output = os.path.join(FLAGS.data_dir, cifar10_input.DATA_FOLDER)
    _check_output(output)
    found = find(image_dir)
    log = output + download.PACK_SKIPPED
    with folders.removed_on_failure(FLAGS.data_dir):
        folders.writable(FLAGS.data_dir, "data_dir")
        with _no_space_to_start(FLAGS.data_dir), _locked(FLAGS.data_dir):
            folders.remove_leftovers(FLAGS.data_dir, STAGING)
            if os.path.exists(output) and os.listdir(output):
                raise PackError(
                    "--data_dir=%s holds data already (%s); pack into another "
                    "--data_dir. Nothing was written."
                    % (images.shown(FLAGS.data_dir), images.shown(output))
                )
            staging = tempfile.mkdtemp(dir=FLAGS.data_dir, prefix=download.PACK_STAGING)
            counts, skips, seconds = _pack_into(output, staging, image_dir, found, log)
    files = sum(len(files) for files in found.splits.values())
    print(
        "Packed %d training and %d test images of %d classes into %s (%.1f s, %.0f "
        "images/sec)."
        % (
            counts["train"],
            counts["test"],
            len(found.class_names),
            images.shown(output),
            seconds,
            files / seconds,
        )
    )
    _summarize(skips, found.ignored, log)


def _check_flags(image_dir):
    """Raises PackError, before anything is read or written, for a
    --test_fraction that is not a share, or a --data_dir inside
    --image_dir (whose next packing would take it for a class)."""
    if math.isnan(FLAGS.test_fraction):
        raise PackError(
            "--test_fraction=nan is not a number: give the share of test "
            "images, above 0 and at most 0.9 (such as 0.2)."
        )
    data, images_real = (os.path.realpath(p) for p in (FLAGS.data_dir, image_dir))
    if image_folders.within(data, images_real):
        raise PackError(
            "--data_dir=%s is inside --image_dir=%s, where the next packing would "
            "take it for a class. Pack into a folder outside it."
            % (images.shown(FLAGS.data_dir), images.shown(image_dir))
        )


def _check_output(output):
    """Raises PackError, before anything is read or written, when the folder
    the data goes to is there but is not a plain folder: the packed folder
    is renamed onto it at the end, which a file, a link or a mount point
    refuses."""
    if os.path.islink(output):
        what = "a link to %s" % images.shown(os.readlink(output))
    elif os.path.lexists(output) and not os.path.isdir(output):
        what = "a file"
    elif os.path.ismount(output):
        what = "a mount point"
    else:
        return
    raise PackError(
        "%s is %s, where the packed data goes; move it away or pack into another "
        "--data_dir. Nothing was written." % (images.shown(output), what)
    )


def find(image_dir):
    """The classes and the image files of each split, and what was left out,
    as support/image_folders.py reads a folder of images: which files are
    images, which folders are splits and which are classes, and the split.

    Returns:
      An image_folders.Found, its files in splits "train" and "test".

    Raises:
      PackError, image_folders.LayoutError: the folder is not laid out as a
        folder per class (or per split and class), a class name would not
        survive batches.meta.txt, a class has no images, or no image can
        be a test image.
    """
    if not os.path.isdir(image_dir):
        raise PackError("--image_dir=%s is not a folder." % images.shown(image_dir))
    found = image_folders.find(image_dir, cifar10_input.CLASS_NAMES_FILE)
    if found.split_folders:
        if FLAGS["test_fraction"].present:
            print(
                "Note: --test_fraction does not apply: %s has its own %s/ and %s/ "
                "folders." % (images.shown(image_dir), *found.split_folders),
                flush=True,
            )
    elif FLAGS.test_fraction == 0:
        raise PackError(
            "--test_fraction=0 leaves no test images: give a share above 0 "
            "(such as 0.2), or train/ and test/ folders in --image_dir."
        )
    else:
        found = image_folders.split(found, FLAGS.test_fraction)
        if not found.splits["test"]:
            raise PackError(
                "None of the %d images can be a test image: each class holds one. "
                "Add images, or give train/ and test/ folders. Nothing was written."
                % len(found.splits["train"])
            )
    for note in found.notes:
        print(note, flush=True)
    return found


@contextlib.contextmanager
def _no_space_to_start(data_dir):
    """Turns a full disk (no room, or no inode) as packing starts into
    PackError."""
    try:
        yield
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        raise PackError(folders.no_space(images.shown(data_dir), "data_dir")) from None


@contextlib.contextmanager
def _locked(data_dir):
    """Holds the lock of data_dir: one packer at a time."""
    try:
        with folders.locked(os.path.join(data_dir, download.PACK_LOCK)):
            yield
    except folders.Taken as e:
        raise PackError(
            "--data_dir=%s is being packed into by another process (%s). Wait for "
            "it to end, or pack into another --data_dir." % (images.shown(data_dir), e)
        ) from None


def _pack_into(output, staging, image_dir, found, log):
    """Packs into staging, which it renames to output when complete, and
    removes otherwise.

    Returns:
      (pack()'s records and skips, the seconds it took).
    """
    # mkdtemp() makes a folder only its owner can read; the data gets the
    # modes of any other new folder.
    os.chmod(staging, 0o777 & ~folders.umask())
    try:
        started = time.time()
        counts, skips = pack(image_dir, found, staging, log)
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
            % images.shown(FLAGS.data_dir)
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts, skips, seconds


def pack(image_dir, found, staging, log):
    """Writes the records, the class names and the data's description.

    Returns:
      ({"train": records, "test": records}, [images.Skip] of every file
      skipped).

    Raises:
      PackError: more than a tenth of the images were unreadable, a class
        has no training image, or there is no test image.
    """
    train = list(found.splits["train"])
    random.Random(SEED).shuffle(train)
    jobs = {"train": train, "test": found.splits["test"]}
    total = len(train) + len(found.splits["test"])
    shown = images.shown(image_dir)
    line = progress.Progress(
        total,
        lambda done, percent: (
            ">> Packing %s %.1f%% (%d of %d images)" % (shown, percent, done, total)
        ),
    )
    described = {
        "name": FLAGS.name or os.path.basename(os.path.abspath(image_dir)),
        "height": cifar10_input.HEIGHT,
        "width": cifar10_input.WIDTH,
        "depth": cifar10_input.DEPTH,
    }
    skips, labels_seen, done, unreadable = list(found.skips), {}, 0, 0
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        decode = _decoder(sess)
        for split, files in jobs.items():
            out = _RecordFiles(staging, split)
            try:
                for size, labels, pixels, skipped in _decoded(_batches(files), decode):
                    out.write(labels, pixels)
                    skips += skipped
                    unreadable += sum(s.kind == images.UNREADABLE for s in skipped)
                    done += size
                    line.update(done)
                    if unreadable > MOST_SKIPPED * total:
                        _write_log(log, skips)
                        raise _too_many_skipped(unreadable, done, log)
            finally:  # closed however the packing ends
                described[split], labels_seen[split] = out.close()
    line.end()
    _write_log(log, skips)
    _check_classes(labels_seen, found, log)
    with open(
        os.path.join(staging, cifar10_input.CLASS_NAMES_FILE), "w", encoding="utf-8"
    ) as f:
        f.write("".join(name + "\n" for name in found.class_names))
    with open(os.path.join(staging, cifar10_input.DESCRIPTION_FILE), "w") as f:
        json.dump(described, f, indent=1)
    return {s: sum(described[s].values()) for s in jobs}, skips


def _batches(files):
    """files, (path, label, bytes) each, in batches of at most BATCH_FILES
    files and, unless one file is larger, BATCH_BYTES bytes."""
    batch, size = [], 0
    for file in files:
        if batch and (len(batch) == BATCH_FILES or size + file[2] > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(file)
        size += file[2]
    if batch:
        yield batch


class _RecordFiles:
    """Writes a split's records: the training ones RECORDS_PER_FILE a file,
    data_batch_1.bin, data_batch_2.bin, ...; the test ones in test_batch.bin."""

    def __init__(self, staging, split):
        self._staging = staging
        self._split = split
        self._counts = {}
        self._labels = set()
        self._file = None

    def write(self, labels, pixels):
        if not len(labels):
            return
        records = cifar10_input.encode_records(labels, pixels)
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
    pixels = images.decode(contents, cifar10_input.fit_images, SHAPE)
    return lambda data: sess.run(pixels, {contents: data})


def _decoded(batches, decode):
    """(files, labels, images, skips) of each batch of (path, label, bytes),
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
      WIDTH, DEPTH], an images.Skip for each file skipped).
    """
    kept, pixels, skips = images.run_on_files(
        decode, [path for path, _, _ in batch], SHAPE[:2]
    )
    labels = np.array([batch[i][1] for i in kept], np.uint8)
    pixels = np.reshape(pixels, [-1, *SHAPE]).astype(np.uint8)
    return len(batch), labels, pixels, skips


def _write_log(log, skips):
    """Lists the skipped files in log, one a line; removes an older log."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(log)
    if skips:
        with open(log, "w", encoding="utf-8") as f:
            f.write("".join(skip.line + "\n" for skip in skips))


def _too_many_skipped(unreadable, done, log):
    return PackError(
        "%d of the first %d images could not be read, more than a tenth; each is "
        "listed in %s. Nothing was packed." % (unreadable, done, images.shown(log))
    )


def _check_classes(labels_seen, found, log):
    """Raises PackError unless every class has a training image, and there is
    a test image. find() gives every class a training file: one that has
    no training image has none that could be read."""
    missing = [
        n for i, n in enumerate(found.class_names) if i not in labels_seen["train"]
    ]
    if missing:
        files = sum(found.class_names[f[1]] in missing for f in found.splits["train"])
        raise PackError(
            "No training image of the class(es) %s could be read: none of their %d "
            "training file(s) could be read as an image; each is listed in %s. "
            "Nothing was packed." % (", ".join(missing), files, images.shown(log))
        )
    if not labels_seen["test"]:
        raise PackError(
            "No test image could be read: raise --test_fraction, or add test "
            "images. Nothing was packed."
        )


def _summarize(skips, ignored, log):
    """Prints a line for each kind of file skipped, and one for the files
    ignored, by extension."""
    kinds = collections.Counter(skip.kind for skip in skips)
    for kind, line in SUMMARY.items():
        if kinds[kind]:
            print("Skipped " + line % kinds[kind] + ".")
    if skips:
        print("Each file skipped is listed in %s." % images.shown(log))
    if ignored:
        by_count = sorted(ignored.items(), key=lambda item: (-item[1], item[0]))
        unread = sorted(e for e in ignored if e in images.OTHER_IMAGE_EXTENSIONS)
        print(
            "Ignored %d file(s) not named as images (%s): %s.%s"
            % (
                sum(ignored.values()),
                ", ".join(images.EXTENSIONS),
                ", ".join("%d %s" % (n, extension) for extension, n in by_count),
                " Images in %s are not read: convert them to JPEG or PNG to pack "
                "them." % ", ".join(unread)
                if unread
                else "",
            )
        )


if __name__ == "__main__":
    startup.run(main)
