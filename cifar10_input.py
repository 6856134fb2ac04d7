"""The data set: what it is, where it comes from, and the batches of images
the model learns from. As given, it describes CIFAR-10.

The data comes as a handful of files of fixed-length records (the binary
version of CIFAR-10): LABEL_BYTES bytes, the last of them the label,
followed by the pixel bytes of an image of HEIGHT x WIDTH pixels, its DEPTH
colour planes (red, green and blue) each stored row by row.

Training batches come from a shuffling queue fed by preprocessing threads
that read records in chunks and crop, flip and recolour every image
differently; evaluation batches are read once, in file order, so every
image is counted once.

Everything about the data set is said once, here: another data set of
fixed-length records changes the constants below, and every binary and
message follows.
"""

import json
import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf

# The data set, and the archive it comes in.
DATA_SET = "CIFAR-10"
DATA_URL = "http://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
DATA_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE_BYTES = 170052171
# The folder the archive holds, and the files in it.
DATA_FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = ["data_batch_%d.bin" % i for i in range(1, 6)]
TEST_FILES = ["test_batch.bin"]
NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN = 50000
NUM_EXAMPLES_PER_EPOCH_FOR_EVAL = 10000
# The class names, one a line in label order; CLASS_NAMES when it is absent.
CLASS_NAMES_FILE = "batches.meta.txt"
# Data that describes itself (cifar10_pack.py writes it so) has this file
# beside its class names: its name, image size, and each split's files with
# the records each holds. The official archive has none: the constants here
# describe it.
DESCRIPTION_FILE = "data_set.json"
CLASS_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
NUM_CLASSES = 10

# The record format.
LABEL_BYTES = 1
HEIGHT = 32
WIDTH = 32
DEPTH = 3
RECORD_BYTES = LABEL_BYTES + HEIGHT * WIDTH * DEPTH

# The network sees IMAGE_SIZE x IMAGE_SIZE crops: smaller than the stored
# images, so a random crop is a cheap way to show it many slightly different
# views.
# Changing it changes the size of the first fully connected layer.
IMAGE_SIZE = 24

# Shuffling depth: training waits until this fraction of an epoch sits in the
# shuffling queue, so consecutive batches mix images from all over the data.
MIN_FRACTION_OF_EXAMPLES_IN_QUEUE = 0.4

# Records read, distorted and queued by one run of a preprocessing thread.
RECORDS_PER_READ = 128
# The most preprocessing threads to start (by default one per core).
NUM_PREPROCESS_THREADS = 16


class DataError(Exception):
    """A data file is missing, truncated or corrupt; the message says what to do."""


class DataSet(NamedTuple):
    """What a data folder holds, as data_set() finds it.

    Attributes:
      name: the data set's name, for messages.
      train, test: {file name: records it holds}, for each split.
      class_names: the names of the classes, in label order.
      remedy: what to do when a file is damaged.
    """

    name: str
    train: dict
    test: dict
    class_names: list
    remedy: str

    @property
    def num_train(self):
        return sum(self.train.values())

    @property
    def num_test(self):
        return sum(self.test.values())

    @property
    def num_classes(self):
        return len(self.class_names)


def data_set(data_dir):
    """The data in a folder, as it describes itself (DESCRIPTION_FILE and
    CLASS_NAMES_FILE), or else as the constants above describe the official
    archive (whose CLASS_NAMES_FILE is read too).

    Raises:
      DataError: the description cannot be read, or is of images of another
        size than the model reads.
    """
    path = os.path.join(data_dir, DESCRIPTION_FILE)
    if not os.path.exists(path):
        return DataSet(
            name=DATA_SET,
            train=_equal_shares(TRAIN_FILES, NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN),
            test=_equal_shares(TEST_FILES, NUM_EXAMPLES_PER_EPOCH_FOR_EVAL),
            class_names=_official_class_names(data_dir),
            remedy="Delete the %s folder under --data_dir so that it is extracted "
            "again." % DATA_FOLDER,
        )
    described = _read_description(path)
    names = read_class_names(os.path.join(data_dir, CLASS_NAMES_FILE)) or []
    if len(names) < 2:
        raise DataError(
            "%s names %d class(es); a data set needs two or more. Pack the images "
            "again." % (os.path.join(data_dir, CLASS_NAMES_FILE), len(names))
        )
    return DataSet(
        name=described["name"],
        train=described["train"],
        test=described["test"],
        class_names=names,
        remedy="Pack the images again with cifar10_pack.py.",
    )


def _equal_shares(filenames, num_examples):
    return {name: num_examples // len(filenames) for name in filenames}


def _read_description(path):
    """DESCRIPTION_FILE, checked.

    Raises:
      DataError: it cannot be read, is not of the expected form, or describes
        images of another size than HEIGHT x WIDTH x DEPTH.
    """
    try:
        with open(path) as f:
            described = json.load(f)
        size = [described["height"], described["width"], described["depth"]]
        for split in ("train", "test"):
            files = described[split]
            if not files or not all(
                isinstance(n, int) and n > 0 for n in files.values()
            ):
                raise ValueError("no files with records for %s" % split)
        str(described["name"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(
            "Cannot read %s (%s): it describes the data beside it. Pack the images "
            "again with cifar10_pack.py." % (path, e)
        ) from None
    if size != [HEIGHT, WIDTH, DEPTH]:
        raise DataError(
            "%s describes %dx%dx%d images; this model reads %dx%dx%d (HEIGHT, "
            "WIDTH and DEPTH in cifar10_input.py). Pack the images again, or set "
            "those to the data's." % (path, *size, HEIGHT, WIDTH, DEPTH)
        )
    return described


def read_class_names(path):
    """The class names in a file of them, one a line in label order, blank
    lines left out; None when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError):
        return None


def _official_class_names(data_dir):
    """NUM_CLASSES names: the first lines of CLASS_NAMES_FILE in data_dir,
    when it names that many; else CLASS_NAMES, when it names that many; else
    "class 0", "class 1", ..."""
    in_file = read_class_names(os.path.join(data_dir, CLASS_NAMES_FILE)) or []
    for candidates in (in_file, CLASS_NAMES):
        if len(candidates) >= NUM_CLASSES:
            return candidates[:NUM_CLASSES]
    return ["class %d" % i for i in range(NUM_CLASSES)]


def _decode(values):
    """Splits raw records into labels and images.

    Args:
      values: 1-D string Tensor of RECORD_BYTES-long records.

    Returns:
      labels: int32 [n], the last label byte of each record.
      images: float32 [n, HEIGHT, WIDTH, DEPTH], the bytes' values.
    """
    records = tf.reshape(tf.io.decode_raw(values, tf.uint8), [-1, RECORD_BYTES])
    labels = tf.cast(records[:, LABEL_BYTES - 1], tf.int32)
    # Stored as [depth, height, width] planes; the network wants [height,
    # width, depth]. Floats are moved, not bytes: oneDNN logs an error for
    # every transpose of bytes, and every use of the images needs floats.
    # An einsum, because TensorFlow would move the cast of a tf.transpose
    # after it, to move fewer bytes.
    planes = tf.reshape(records[:, LABEL_BYTES:], [-1, DEPTH, HEIGHT, WIDTH])
    return labels, tf.einsum("ndhw->nhwd", tf.cast(planes, tf.float32))


def encode_records(labels, images):
    """Records as the data files store them (what _decode() reads): each
    label in the last of LABEL_BYTES bytes, then the image's colour planes,
    each row by row.

    Args:
      labels: [n] ints from 0 to 255.
      images: [n, height, width, depth] values from 0 to 255.

    Returns:
      uint8 [n, LABEL_BYTES + height * width * depth].
    """
    n = len(labels)
    planes = np.transpose(np.asarray(images, np.uint8), (0, 3, 1, 2)).reshape(n, -1)
    head = np.zeros((n, LABEL_BYTES), np.uint8)
    head[:, -1] = labels
    return np.concatenate([head, planes], axis=1)


def _read_records(filename_queue, num_records):
    """Reads up to num_records records at once (fewer at the end of a file).

    One graph run over many records costs far less per image than a run
    per record, which matters when the input shares the CPU with training.

    Returns:
      labels: int32 [n].
      images: float32 [n, HEIGHT, WIDTH, DEPTH].
    """
    reader = tf.compat.v1.FixedLengthRecordReader(record_bytes=RECORD_BYTES)
    _, values = reader.read_up_to(filename_queue, num_records)
    return _decode(values)


def _distort(images):
    """The training distortions, drawn independently for every image.

    Each image gets what tf.image's random_crop (to IMAGE_SIZE),
    random_flip_left_right, random_brightness(max_delta=63) and
    random_contrast(0.2, 1.8) would give it one image at a time, computed as
    a few ops over the whole batch.

    Args:
      images: float32 [n, HEIGHT, WIDTH, DEPTH].

    Returns:
      float32 [n, IMAGE_SIZE, IMAGE_SIZE, DEPTH].
    """
    n = tf.shape(images)[0]
    # A random IMAGE_SIZE window of each image, its columns read backwards
    # for the half of the images that are mirrored.
    top = tf.random.uniform([n, 1], 0, HEIGHT - IMAGE_SIZE + 1, tf.int32)
    left = tf.random.uniform([n, 1], 0, WIDTH - IMAGE_SIZE + 1, tf.int32)
    mirror = tf.random.uniform([n, 1]) < 0.5
    steps = tf.range(IMAGE_SIZE)[None, :]
    rows = top + steps
    cols = left + tf.where(mirror, IMAGE_SIZE - 1 - steps, steps)
    images = tf.gather(images, rows, axis=1, batch_dims=1)
    images = tf.gather(images, cols, axis=2, batch_dims=1)

    # Brightness: one offset for all of an image's pixels.
    images += tf.random.uniform([n, 1, 1, 1], -63.0, 63.0)
    # Contrast: scale each channel's deviations from its mean.
    factor = tf.random.uniform([n, 1, 1, 1], 0.2, 1.8)
    mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
    return (images - mean) * factor + mean


def eval_images(images):
    """What evaluation does to images of the stored size: the central
    IMAGE_SIZE crop, then standardization of each image.

    Args:
      images: [n, HEIGHT, WIDTH, DEPTH], uint8 or float.

    Returns:
      float32 [n, IMAGE_SIZE, IMAGE_SIZE, DEPTH].
    """
    images = tf.image.resize_with_crop_or_pad(images, IMAGE_SIZE, IMAGE_SIZE)
    images = tf.image.per_image_standardization(tf.cast(images, tf.float32))
    images.set_shape([None, IMAGE_SIZE, IMAGE_SIZE, DEPTH])
    return images


# How many times a stored image's pixels an image is scaled to before it is
# cut (fit_images()): beyond, it is cut first. Photos, of up to 4:1, are
# scaled whole.
FIT_MARGIN = 4


def fit_images(images):
    """Images of any size as the data set stores its own: each scaled
    (averaging the pixels each new one covers) until it covers HEIGHT x
    WIDTH, its shorter side to fit, then cut to that size around its centre.
    cifar10_pack.py stores images so, and classification prepares them so;
    images of the stored size come out as they go in.

    An image whose scaled form would hold more than FIT_MARGIN times the
    pixels of a stored one (a strip of 100000x1 pixels would become one of
    32x3200000) is first cut around its centre to the stored image's shape,
    then scaled: the work is bounded by the stored size, whatever the shape.

    Args:
      images: uint8 [n, height, width, DEPTH], all of one size.

    Returns:
      uint8 [n, HEIGHT, WIDTH, DEPTH].
    """
    shape = tf.shape(images)[1:3]
    target = tf.constant([HEIGHT, WIDTH])
    scale = tf.reduce_max(tf.cast(target, tf.float32) / tf.cast(shape, tf.float32))
    scaled = tf.round(tf.cast(shape, tf.float32) * scale)
    # Of an image too large scaled, the part the stored one shows: its
    # centre, of the stored image's shape (at least a pixel each way), scaled
    # to the stored size; of any other, the whole, scaled to cover it.
    thin = tf.reduce_prod(scaled) > FIT_MARGIN * HEIGHT * WIDTH
    centre = tf.cast(tf.round(tf.cast(target, tf.float32) / scale), tf.int32)
    kept = tf.where(thin, tf.clip_by_value(centre, 1, shape), shape)
    size = tf.where(thin, target, tf.maximum(tf.cast(scaled, tf.int32), target))
    offset = (shape - kept) // 2
    part = tf.slice(
        images, tf.concat([[0], offset, [0]], 0), tf.concat([[-1], kept, [-1]], 0)
    )
    resized = tf.image.resize(part, size, method="area")
    cropped = tf.image.resize_with_crop_or_pad(resized, HEIGHT, WIDTH)
    return tf.cast(tf.round(cropped), tf.uint8)


def prepare_images(images):
    """What classification does to images of any size: fit_images(), then
    eval_images(). Images of the stored size come out as evaluation makes
    them.

    Args:
      images: uint8 [n, height, width, DEPTH], all of one size.

    Returns:
      float32 [n, IMAGE_SIZE, IMAGE_SIZE, DEPTH].
    """
    return eval_images(fit_images(images))


def check_data_files(data_dir, files, data):
    """Fails early and clearly on a missing, short or corrupt data file.

    A missing file would otherwise make the queue runners fail in a background
    thread while training waits forever, a truncated one fails only when the
    reader reaches its end, possibly hours into training, and a label out of
    range fails in the loss, far from its cause.

    Args:
      data_dir: the folder holding the files.
      files: {file name: records it should hold}: data.train or data.test.
      data: the DataSet, from data_set().

    Returns:
      The full paths of the files.

    Raises:
      DataError: a file is missing, not a whole number of records, holds
        fewer or more records than it should, or a label of num_classes or
        above.
    """
    paths = [os.path.join(data_dir, name) for name in files]
    counts = [_count_records(path, data) for path in paths]
    expected = list(files.values())
    if counts != expected:
        odd = [
            "%s holds %d" % (path, count)
            for path, count, should in zip(paths, counts, expected, strict=True)
            if count != should
        ]
        raise DataError(
            "%s: the %d file(s) should hold %d records in all, %s. A file was cut "
            "short, or the data is not %s. %s"
            % (
                "; ".join(odd),
                len(paths),
                sum(expected),
                "%d each" % expected[0]
                if len(set(expected)) == 1
                else "as %s says" % DESCRIPTION_FILE,
                data.name,
                data.remedy,
            )
        )
    for path in paths:
        _check_labels(path, data)
    return paths


def _check_labels(path, data):
    """Raises DataError when a record's label is data.num_classes or above."""
    labels = np.memmap(path, np.uint8, mode="r")[LABEL_BYTES - 1 :: RECORD_BYTES]
    (bad,) = np.nonzero(labels >= data.num_classes)
    if bad.size:
        raise DataError(
            "Data file %s holds a label of %d at record %d, but labels go from 0 "
            "to %d: it is corrupt, or not a file of %s. %s"
            % (
                path,
                labels[bad[0]],
                bad[0],
                data.num_classes - 1,
                data.name,
                data.remedy,
            )
        )


def _count_records(path, data):
    """The records in a data file.

    Raises:
      DataError: it is missing, empty or not a whole number of records.
    """
    if not os.path.isfile(path):
        raise DataError(
            "Missing data file %s. Point --data_dir at the folder that holds "
            "%s (or let the binaries download the data there)." % (path, DATA_FOLDER)
        )
    size = os.path.getsize(path)
    if size == 0 or size % RECORD_BYTES:
        raise DataError(
            "Data file %s is %d bytes, not a whole number of %d-byte records: "
            "it is truncated or not a file of %s. %s"
            % (path, size, RECORD_BYTES, data.name, data.remedy)
        )
    return size // RECORD_BYTES


def distorted_inputs(data_dir, batch_size, min_queue_examples=None, num_threads=None):
    """Shuffled training batches, every image randomly distorted.

    Args:
      data_dir: the data's folder (data_set() says what it holds).
      batch_size: images per batch.
      min_queue_examples: shuffling depth; defaults to
        MIN_FRACTION_OF_EXAMPLES_IN_QUEUE of the training images.
      num_threads: preprocessing threads; defaults to one per core, at most
        NUM_PREPROCESS_THREADS.

    Returns:
      images: float32 Tensor [batch_size, IMAGE_SIZE, IMAGE_SIZE, DEPTH].
      labels: int32 Tensor [batch_size].

    Raises:
      DataError: a data file is missing, short or corrupt.
    """
    data = data_set(data_dir)
    filenames = check_data_files(data_dir, data.train, data)
    if min_queue_examples is None:
        min_queue_examples = int(data.num_train * MIN_FRACTION_OF_EXAMPLES_IN_QUEUE)
    if num_threads is None:
        num_threads = min(os.cpu_count() or 1, NUM_PREPROCESS_THREADS)

    with tf.name_scope("data_augmentation"):
        # The paths as their bytes: they need not be UTF-8.
        filename_queue = tf.compat.v1.train.string_input_producer(
            [os.fsencode(name) for name in filenames]
        )
        labels, images = _read_records(filename_queue, RECORDS_PER_READ)
        # Each image a little different each epoch: a random crop, a mirror
        # image half of the time, and random brightness and contrast.
        images = tf.image.per_image_standardization(_distort(images))
        images.set_shape([None, IMAGE_SIZE, IMAGE_SIZE, DEPTH])

        print(
            "Filling queue with %d %s images before starting to train. "
            "This takes a few seconds." % (min_queue_examples, data.name),
            flush=True,
        )
        images, labels = tf.compat.v1.train.shuffle_batch(
            [images, labels],
            batch_size=batch_size,
            num_threads=num_threads,
            capacity=min_queue_examples + 3 * batch_size,
            min_after_dequeue=min_queue_examples,
            enqueue_many=True,
        )
        tf.compat.v1.summary.image("images", images)
        return images, labels


def inputs(eval_data, data_dir, batch_size):
    """Evaluation batches: each image once, in file order, undistorted.

    The files are read for exactly one epoch, so the last batch may be
    smaller than batch_size and the next run of the batch raises
    tf.errors.OutOfRangeError. The epoch counter is a local variable: run
    tf.compat.v1.local_variables_initializer() before starting the queues.

    Args:
      eval_data: True for the test set, False for the training set.
      data_dir: the data's folder (data_set() says what it holds).
      batch_size: images per batch.

    Returns:
      images: float32 Tensor [<=batch_size, IMAGE_SIZE, IMAGE_SIZE, DEPTH].
      labels: int32 Tensor [<=batch_size].

    Raises:
      DataError: a data file is missing, short or corrupt.
    """
    data = data_set(data_dir)
    filenames = check_data_files(data_dir, data.test if eval_data else data.train, data)

    with tf.name_scope("input"):
        filename_queue = tf.compat.v1.train.string_input_producer(
            [os.fsencode(name) for name in filenames], num_epochs=1, shuffle=False
        )
        # In file order: a single reader, run by a single thread.
        labels, images = _read_records(filename_queue, batch_size)
        images = eval_images(images)

        images, labels = tf.compat.v1.train.batch(
            [images, labels],
            batch_size=batch_size,
            num_threads=1,
            capacity=4 * batch_size,
            enqueue_many=True,
            allow_smaller_final_batch=True,
        )
        tf.compat.v1.summary.image("images", images)
        return images, labels
