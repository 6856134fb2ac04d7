"""Writes small data sets in the official CIFAR-10 binary layout (or another
data set's, for the template).

    <root>/cifar-10-batches-bin/data_batch_1.bin .. data_batch_5.bin
    <root>/cifar-10-batches-bin/test_batch.bin
    <root>/cifar-10-batches-bin/batches.meta.txt

Each record is one label byte and 3072 pixel bytes (red, green, blue planes
of 32x32, row-major). With learnable=True each class has its own hue, which
survives every training distortion (a crop, a flip, a brightness shift and a
contrast change all keep the difference between the colour channels), plus
noise, so a network learns it in a few hundred steps.
"""

import hashlib
import json
import os
import struct
import tarfile
import zlib

import numpy as np
from PIL import Image

import cifar10_input

# The data set's own, as cifar10_input.py describes it.
CLASS_NAMES = cifar10_input.CLASS_NAMES
FOLDER = cifar10_input.DATA_FOLDER


def make_images(labels, rng, learnable=True, size=32, num_classes=10):
    """uint8 images [n, size, size, 3] for the given labels.

    Learnable images are a class hue plus noise; others are pure noise.
    """
    n = len(labels)
    if not learnable:
        return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    angle = 2 * np.pi * np.asarray(labels) / num_classes
    phases = np.array([0.0, -2 * np.pi / 3, 2 * np.pi / 3])
    hue = 128 + 90 * np.cos(angle[:, None] + phases[None, :])  # [n, 3]
    noise = rng.normal(0, 20, size=(n, size, size, 3)).astype(np.float32)
    return np.clip(hue[:, None, None, :] + noise, 0, 255).astype(np.uint8)


def eval_images(images, size=24):
    """What the evaluation input makes of images, computed in numpy: the
    central size x size crop, standardized per image."""
    offset = (images.shape[1] - size) // 2
    crop = images[:, offset : offset + size, offset : offset + size, :]
    crop = crop.astype(np.float64)
    mean = crop.mean(axis=(1, 2, 3), keepdims=True)
    std = crop.std(axis=(1, 2, 3), keepdims=True)
    return (crop - mean) / np.maximum(std, 1 / np.sqrt(crop[0].size))


def encode_records(labels, images):
    """The bytes of CIFAR-10 records: label, then the R, G, B planes."""
    return cifar10_input.encode_records(labels, images).tobytes()


def write_records(path, labels, images):
    """Writes one .bin file of CIFAR-10 records."""
    with open(path, "wb") as f:
        f.write(encode_records(labels, images))


def write_dataset(
    root,
    records_per_file=100,
    test_records=100,
    learnable=True,
    seed=0,
    size=32,
    num_classes=10,
    class_names=CLASS_NAMES,
    folder=FOLDER,
    train_files=tuple(cifar10_input.TRAIN_FILES),
    test_file=cifar10_input.TEST_FILES[0],
    describe=False,
):
    """Writes the data set's folder under root.

    Args:
      root: the folder that plays --data_dir.
      records_per_file: records in each training file.
      test_records: records in the test file.
      learnable: class hues (True) or pure noise (False).
      seed: random seed; the same seed gives the same files.
      size, num_classes, class_names, folder, train_files, test_file: those
        of another data set than CIFAR-10.
      describe: write the description that packed data has (with the
        counts written), so that files of any size will do.

    Returns:
      A dict: 'dir' (the data folder's path), 'train' and 'test', each a
      (labels [n] uint8, images [n, size, size, 3] uint8) pair in file order.
    """
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, folder)
    os.makedirs(folder, exist_ok=True)

    def write(name, n):
        labels = rng.integers(0, num_classes, size=n).astype(np.uint8)
        images = make_images(labels, rng, learnable, size, num_classes)
        write_records(os.path.join(folder, name), labels, images)
        return labels, images

    parts = [write(name, records_per_file) for name in train_files]
    train = (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
    )
    test = write(test_file, test_records)
    with open(os.path.join(folder, cifar10_input.CLASS_NAMES_FILE), "w") as f:
        f.write("\n".join(class_names) + "\n")
    if describe:
        write_description(
            folder, size, {name: records_per_file for name in train_files},
            {test_file: test_records},
        )  # fmt: skip
    return {"dir": folder, "train": train, "test": test}


def write_description(folder, size, train, test):
    """Writes the description that packed data has: images of size x size,
    and the {file: records} of train and test."""
    described = {
        "name": "CIFAR-10",
        "height": size,
        "width": size,
        "depth": 3,
        "train": train,
        "test": test,
    }
    with open(os.path.join(folder, cifar10_input.DESCRIPTION_FILE), "w") as f:
        json.dump(described, f)


def write_png(path, image):
    """Writes a uint8 image [height, width, 3] as a PNG file."""
    Image.fromarray(image).save(path)


def write_archive(root, archive_path, **kwargs):
    """Writes a data set under root and packs it as the official .tar.gz.

    Returns:
      (archive_path, md5 hex digest of the archive).
    """
    write_dataset(root, **kwargs)
    with tarfile.open(archive_path, "w:gz") as tar:
        tar.add(os.path.join(root, FOLDER), arcname=FOLDER)
    with open(archive_path, "rb") as f:
        md5 = hashlib.md5(f.read()).hexdigest()
    return archive_path, md5


FORMATS = ("jpg", "png", "bmp", "gif")
# Grayscale, rarely: it keeps no hue, which is what tells the classes apart.
MODES = ("RGB", "RGB", "P", "RGBA", "RGB", "RGB", "RGB", "RGB", "RGB", "L")


def write_image_folders(folder, class_names, per_class, seed=0, first=0, varied=True):
    """Writes folder/<class>/<n>.<format>: per_class learnable images of each
    class (its hue, as in write_dataset, plus noise).

    Args:
      folder: where the class folders go.
      class_names: one folder each, the class of label i the i-th.
      per_class: images a class.
      seed: random seed; the same seed gives the same files.
      first: the number of the first file, to add files to a folder.
      varied: sizes from 20 to 90 pixels a side, every format of FORMATS,
        and now and then a palette, RGBA or grayscale image; else 32x32
        JPEGs.

    Returns:
      {path: label} of the files written.
    """
    rng = np.random.default_rng(seed)
    written = {}
    for label, name in enumerate(class_names):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for n in range(first, first + per_class):
            height, width = rng.integers(20, 91, 2) if varied else (32, 32)
            side = max(height, width)
            pixels = make_images([label], rng, size=side, num_classes=len(class_names))
            image = Image.fromarray(pixels[0, :height, :width])
            kind = FORMATS[n % len(FORMATS)] if varied else "jpg"
            mode = MODES[(n // len(FORMATS)) % len(MODES)] if varied else "RGB"
            if not (kind == "jpg" and mode in ("P", "RGBA")):
                image = image.convert(mode)
            path = os.path.join(folder, name, "%05d.%s" % (n, kind))
            image.save(path)
            written[path] = label
    return written


def png_of_one_colour(width, height, rows=None):
    """A PNG file's bytes, of any size, all one colour, made in about a
    second even at 16000x16000 pixels (a file of a few MB that decodes to
    768 MB); of its first rows alone if rows is given (a header that claims
    more than the file holds)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + b"\x80" * (3 * width)  # no filter, then the pixels
    count = height if rows is None else rows
    # The compressed form of a block of rows, flushed so that it refers to
    # nothing before it, repeated: the same rows again, without compressing
    # them again.
    block = min(count, 256)
    packer = zlib.compressobj(9)
    compressed = packer.compress(row * block) + packer.flush(zlib.Z_FULL_FLUSH)
    repeats, rest = divmod(count, block)
    checksum, rows_of_block = 1, row * block
    for _ in range(repeats):
        checksum = zlib.adler32(rows_of_block, checksum)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw: it continues the stream
    tail_data = tail.compress(row * rest) + tail.flush()
    checksum = zlib.adler32(row * rest, checksum)
    data = (
        compressed[:2]  # the zlib header
        + compressed[2:] * repeats
        + tail_data
        + struct.pack(">I", checksum)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", data)
        + chunk(b"IEND", b"")
    )
