"""Reads the CIFAR-10 binary files and turns them into batches of images.

The binary version of CIFAR-10 is a handful of files of fixed-length records:
one label byte (0-9) followed by 3072 pixel bytes, the red, green and blue
planes of a 32x32 image, each stored row by row.

Training batches come from a shuffling queue fed by many preprocessing
threads that crop, flip and recolour each image differently; evaluation
batches are read once, in file order, so every image is counted once.
"""

import os

import tensorflow as tf

# The record format. Another data set of fixed-length records changes these.
LABEL_BYTES = 1
HEIGHT = 32
WIDTH = 32
DEPTH = 3
RECORD_BYTES = LABEL_BYTES + HEIGHT * WIDTH * DEPTH

# The network sees 24x24 crops: smaller than the stored 32x32 images, so a
# random crop is a cheap way to show it many slightly different views.
# Changing it changes the size of the first fully connected layer.
IMAGE_SIZE = 24

NUM_CLASSES = 10
NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN = 50000
NUM_EXAMPLES_PER_EPOCH_FOR_EVAL = 10000

TRAIN_FILES = ["data_batch_%d.bin" % i for i in range(1, 6)]
TEST_FILES = ["test_batch.bin"]

# Shuffling depth: training waits until this fraction of an epoch sits in the
# shuffling queue, so consecutive batches mix images from all over the data.
MIN_FRACTION_OF_EXAMPLES_IN_QUEUE = 0.4

NUM_PREPROCESS_THREADS = 16


class DataError(Exception):
    """A data file is missing, truncated or corrupt; the message says what to do."""


class CIFAR10Record:
    """One decoded record: plain attributes, filled in by read_cifar10()."""

    height = HEIGHT
    width = WIDTH
    depth = DEPTH
    key = None  # scalar string Tensor, "<file name>:<record index>"
    label = None  # int32 Tensor, 0..NUM_CLASSES-1
    uint8image = None  # uint8 Tensor [height, width, depth]


def read_cifar10(filename_queue):
    """Reads the next record from the files named by filename_queue.

    Each call adds one reader to the graph; to read in parallel, call it once
    per thread.

    Args:
      filename_queue: a queue of file names, e.g. from
        tf.compat.v1.train.string_input_producer.

    Returns:
      A CIFAR10Record with key, label and uint8image tensors.
    """
    result = CIFAR10Record()
    reader = tf.compat.v1.FixedLengthRecordReader(record_bytes=RECORD_BYTES)
    result.key, value = reader.read(filename_queue)
    record = tf.io.decode_raw(value, tf.uint8)

    result.label = tf.cast(tf.reshape(record[:LABEL_BYTES], []), tf.int32)
    # Stored as [depth, height, width] planes; the network wants [h, w, depth].
    planes = tf.reshape(record[LABEL_BYTES:RECORD_BYTES], [DEPTH, HEIGHT, WIDTH])
    result.uint8image = tf.transpose(planes, [1, 2, 0])
    return result


def check_data_files(data_dir, filenames):
    """Fails early and clearly on a missing or truncated data file.

    A missing file would otherwise make the queue runners fail in a background
    thread while training waits forever, and a truncated one fails only when
    the reader reaches its end, possibly hours into training.

    Args:
      data_dir: the folder holding the .bin files.
      filenames: the file names to check, relative to data_dir.

    Returns:
      The full paths of the files.

    Raises:
      DataError: a file is missing, empty, or not a whole number of records.
    """
    paths = []
    for name in filenames:
        path = os.path.join(data_dir, name)
        if not os.path.isfile(path):
            raise DataError(
                "Missing data file %s. Point --data_dir at the folder that holds "
                "cifar-10-batches-bin (or let the binaries download the data "
                "there)." % path
            )
        size = os.path.getsize(path)
        if size == 0 or size % RECORD_BYTES:
            raise DataError(
                "Data file %s is %d bytes, not a whole number of %d-byte records: "
                "it is truncated or not a CIFAR-10 binary file. Delete the "
                "cifar-10-batches-bin folder under --data_dir so that it is "
                "extracted again." % (path, size, RECORD_BYTES)
            )
        paths.append(path)
    return paths


def distorted_inputs(data_dir, batch_size, min_queue_examples=None):
    """Shuffled training batches, every image randomly distorted.

    Args:
      data_dir: folder with the data_batch_N.bin files.
      batch_size: images per batch.
      min_queue_examples: shuffling depth; defaults to 40% of an epoch.

    Returns:
      images: float32 Tensor [batch_size, IMAGE_SIZE, IMAGE_SIZE, 3].
      labels: int32 Tensor [batch_size].

    Raises:
      DataError: a data file is missing or truncated.
    """
    filenames = check_data_files(data_dir, TRAIN_FILES)
    if min_queue_examples is None:
        min_queue_examples = int(
            NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN * MIN_FRACTION_OF_EXAMPLES_IN_QUEUE
        )

    with tf.name_scope("data_augmentation"):
        filename_queue = tf.compat.v1.train.string_input_producer(filenames)
        read_input = read_cifar10(filename_queue)
        image = tf.cast(read_input.uint8image, tf.float32)

        # Each image a little different each epoch: a random crop, a mirror
        # image half of the time, and random brightness and contrast. The
        # order of the last two matters little; this is the tutorial's.
        image = tf.image.random_crop(image, [IMAGE_SIZE, IMAGE_SIZE, DEPTH])
        image = tf.image.random_flip_left_right(image)
        image = tf.image.random_brightness(image, max_delta=63)
        image = tf.image.random_contrast(image, lower=0.2, upper=1.8)
        image = tf.image.per_image_standardization(image)

        image.set_shape([IMAGE_SIZE, IMAGE_SIZE, DEPTH])
        read_input.label.set_shape([])

        print(
            "Filling queue with %d CIFAR images before starting to train. "
            "This will take a few minutes." % min_queue_examples
        )
        images, labels = tf.compat.v1.train.shuffle_batch(
            [image, read_input.label],
            batch_size=batch_size,
            num_threads=NUM_PREPROCESS_THREADS,
            capacity=min_queue_examples + 3 * batch_size,
            min_after_dequeue=min_queue_examples,
        )
        tf.compat.v1.summary.image("images", images)
        return images, tf.reshape(labels, [batch_size])


def inputs(eval_data, data_dir, batch_size):
    """Evaluation batches: each image once, in file order, undistorted.

    The files are read for exactly one epoch, so the last batch may be
    smaller than batch_size and the next run of the batch raises
    tf.errors.OutOfRangeError. The epoch counter is a local variable: run
    tf.compat.v1.local_variables_initializer() before starting the queues.

    Args:
      eval_data: True for the test set, False for the training set.
      data_dir: folder with the .bin files.
      batch_size: images per batch.

    Returns:
      images: float32 Tensor [<=batch_size, IMAGE_SIZE, IMAGE_SIZE, 3].
      labels: int32 Tensor [<=batch_size].

    Raises:
      DataError: a data file is missing or truncated.
    """
    filenames = check_data_files(data_dir, TEST_FILES if eval_data else TRAIN_FILES)

    with tf.name_scope("input"):
        filename_queue = tf.compat.v1.train.string_input_producer(
            filenames, num_epochs=1, shuffle=False
        )
        # A whole batch of records a read, then one preprocessing graph over
        # the batch: in order, and far less per-image overhead than a reader
        # per record. A single thread keeps the file order.
        reader = tf.compat.v1.FixedLengthRecordReader(record_bytes=RECORD_BYTES)
        _, values = reader.read_up_to(filename_queue, batch_size)
        records = tf.reshape(tf.io.decode_raw(values, tf.uint8), [-1, RECORD_BYTES])
        labels = tf.cast(records[:, 0], tf.int32)
        planes = tf.reshape(records[:, LABEL_BYTES:], [-1, DEPTH, HEIGHT, WIDTH])
        images = tf.cast(tf.transpose(planes, [0, 2, 3, 1]), tf.float32)

        images = tf.image.resize_with_crop_or_pad(images, IMAGE_SIZE, IMAGE_SIZE)
        images = tf.image.per_image_standardization(images)
        images.set_shape([None, IMAGE_SIZE, IMAGE_SIZE, DEPTH])

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
