"""The binary-record reader and both input pipelines."""

import os

import numpy as np
import pytest
import tensorflow as tf

import cifar10_input
from harness import fake_cifar
from harness.sessions import queue_session


def _numbered_images(n):
    """Images whose every pixel value says where it is: no two alike."""
    r, c, ch = np.meshgrid(np.arange(32), np.arange(32), np.arange(3), indexing="ij")
    base = (r * 7 + c * 3 + ch * 50) % 256
    return np.stack([(base + i) % 256 for i in range(n)]).astype(np.uint8)


def test_records_decode_to_labels_and_pixels_in_the_stored_layout(tmp_path):
    labels = np.array([3, 7, 0], np.uint8)
    images = _numbered_images(3)
    path = str(tmp_path / "data.bin")
    fake_cifar.write_records(path, labels, images)

    # The file itself: label byte, then the red plane row by row.
    raw = (tmp_path / "data.bin").read_bytes()
    assert len(raw) == 3 * cifar10_input.RECORD_BYTES
    assert raw[0] == 3 and raw[1] == images[0, 0, 0, 0] and raw[2] == images[0, 0, 1, 0]
    assert raw[1 + 1024] == images[0, 0, 0, 1]  # the green plane follows

    with tf.Graph().as_default():
        queue = tf.compat.v1.train.string_input_producer(
            [path], num_epochs=1, shuffle=False
        )
        # Two records a read: the file's three come as two and one.
        label_op, image_op = cifar10_input._read_records(queue, 2)
        assert image_op.shape.as_list() == [None, 32, 32, 3]
        got_labels, got_images = [], []
        with queue_session() as sess:
            for size in (2, 1):
                label_batch, image_batch = sess.run([label_op, image_op])
                assert len(label_batch) == size
                got_labels.extend(label_batch)
                got_images.extend(image_batch)
            with pytest.raises(tf.errors.OutOfRangeError):
                sess.run(label_op)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(got_images, images)


def test_distorted_inputs_shapes_and_standardized_values(dataset):
    with tf.Graph().as_default():
        images, labels = cifar10_input.distorted_inputs(
            dataset["dir"], batch_size=64, min_queue_examples=200
        )
        assert images.shape.as_list() == [64, 24, 24, 3]
        assert labels.shape.as_list() == [64]
        with queue_session() as sess:
            image_batch, label_batch = sess.run([images, labels])
    assert image_batch.dtype == np.float32 and label_batch.dtype == np.int32
    assert label_batch.min() >= 0 and label_batch.max() <= 9
    flat = image_batch.reshape(64, -1)
    np.testing.assert_allclose(flat.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(flat.std(axis=1), 1, atol=1e-3)


@pytest.fixture
def small(tmp_path, monkeypatch):
    """A small learnable data set, 1000 training and 300 test images, with
    the data set's declared sizes set to match."""
    data = fake_cifar.write_dataset(
        str(tmp_path / "small"), records_per_file=200, test_records=300
    )
    monkeypatch.setattr(cifar10_input, "NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN", 1000)
    monkeypatch.setattr(cifar10_input, "NUM_EXAMPLES_PER_EPOCH_FOR_EVAL", 300)
    return data


def test_distortions_differ_per_image(tmp_path, monkeypatch):
    """Crops, flips and contrast are drawn for each image, not each batch.

    Every record is the same image: red rises 8 per column (so a flip shows
    as a falling ramp), green is flat, blue is dark but for one bright marker
    pixel (whose place in the output gives the crop offset). Contrast scales
    the red ramp against the fixed green-blue gap, so their ratio measures
    the contrast factor even after standardization.
    """
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :, 0] = 8 * np.arange(32)[None, :]
    image[:, :, 1] = 200
    image[12, 12, 2] = 255
    n = 500
    monkeypatch.setattr(cifar10_input, "NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN", n)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in cifar10_input.TRAIN_FILES:
        copies = np.repeat(image[None], n // 5, axis=0)
        fake_cifar.write_records(str(folder / name), np.zeros(n // 5, np.uint8), copies)

    with tf.Graph().as_default():
        images, _ = cifar10_input.distorted_inputs(
            str(folder), batch_size=128, min_queue_examples=100
        )
        with queue_session() as sess:
            batch = sess.run(images)

    flipped = batch[:, 0, 1, 0] > batch[:, 0, 0, 0]
    rows, cols = [], []
    for out in batch:
        r, c = np.unravel_index(np.argmax(out[:, :, 2]), (24, 24))
        rows.append(r)
        cols.append(c)
    # Crop offset y = 12 - row, in 0..8; both mirror states occur.
    offsets_y = 12 - np.array(rows)
    assert offsets_y.min() >= 0 and offsets_y.max() <= 8
    assert len(set(offsets_y)) >= 5
    assert len(set(cols)) >= 5
    assert 20 < flipped.sum() < 108, flipped.sum()

    ramp_std = 8 * np.arange(24).std()
    gap = 200 - 255 / (24 * 24)
    contrast = batch[:, :, :, 0].std(axis=(1, 2)) / (
        batch[:, :, :, 1].mean(axis=(1, 2)) - batch[:, :, :, 2].mean(axis=(1, 2))
    )
    contrast /= ramp_std / gap
    assert contrast.min() > 0.2 - 1e-3 and contrast.max() < 1.8 + 1e-3
    assert contrast.min() < 0.6 and contrast.max() > 1.4


@pytest.mark.parametrize("eval_data", [True, False])
def test_inputs_reads_each_image_once_in_order(small, eval_data):
    labels, images = small["test"] if eval_data else small["train"]
    with tf.Graph().as_default():
        image_op, label_op = cifar10_input.inputs(eval_data, small["dir"], 128)
        got_images, got_labels, sizes = [], [], []
        with queue_session() as sess:
            while True:
                try:
                    image_batch, label_batch = sess.run([image_op, label_op])
                except tf.errors.OutOfRangeError:
                    break
                got_images.append(image_batch)
                got_labels.append(label_batch)
                sizes.append(len(label_batch))
    n = len(labels)
    assert sizes == [128] * (n // 128) + [n % 128]
    np.testing.assert_array_equal(np.concatenate(got_labels), labels)
    np.testing.assert_allclose(
        np.concatenate(got_images), fake_cifar.eval_images(images), atol=1e-4
    )


def test_missing_data_file_is_a_clear_error(dataset, tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    with pytest.raises(cifar10_input.DataError) as e:
        cifar10_input.inputs(True, str(folder), 16)
    assert str(folder / "test_batch.bin") in str(e.value)
    assert "--data_dir" in str(e.value)


def test_truncated_data_file_is_a_clear_error(small):
    truncated = os.path.join(small["dir"], "data_batch_3.bin")
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) - 100)
    with tf.Graph().as_default(), pytest.raises(cifar10_input.DataError) as e:
        cifar10_input.distorted_inputs(small["dir"], 16)
    assert str(truncated) in str(e.value)
    assert "truncated" in str(e.value)


def test_a_file_short_by_whole_records_is_named(small):
    short = os.path.join(small["dir"], "data_batch_3.bin")
    with open(short, "r+b") as f:
        f.truncate(150 * cifar10_input.RECORD_BYTES)
    with tf.Graph().as_default(), pytest.raises(cifar10_input.DataError) as e:
        cifar10_input.distorted_inputs(small["dir"], 16)
    assert str(e.value).startswith(
        "%s holds 150: the 5 file(s) should hold 1000 " % short
    )
    # The test file, checked against its own count, is fine.
    with tf.Graph().as_default():
        cifar10_input.inputs(True, small["dir"], 16)


def test_a_label_out_of_range_is_named(small):
    path = os.path.join(small["dir"], "test_batch.bin")
    with open(path, "r+b") as f:
        f.seek(17 * cifar10_input.RECORD_BYTES)
        f.write(bytes([252]))
    with tf.Graph().as_default(), pytest.raises(cifar10_input.DataError) as e:
        cifar10_input.inputs(True, small["dir"], 16)
    assert str(e.value).startswith(
        "Data file %s holds a label of 252 at record 17, but labels go from 0 to 9"
        % path
    )


def test_brightness_and_contrast_are_drawn_per_image_in_range():
    """Before standardization (which removes it) the brightness offset shows
    as the change of an image's mean; the contrast factor as the change of
    a channel's spread."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(400, 32, 32, 3), dtype=np.uint8)
    flat = np.full((400, 32, 32, 3), 100, np.uint8)
    flat[:, :, :, 0] = 50  # the means of every crop are known
    flat[:, ::2, :, 1] = 160  # and so is the spread of the green channel
    flat[:, 1::2, :, 1] = 40
    with tf.Graph().as_default():
        out = tf.compat.v1.Session().run(
            cifar10_input._distort(
                tf.constant(np.concatenate([images, flat]), tf.float32)
            )
        )
    assert out.shape == (800, 24, 24, 3)
    out = out[400:]
    brightness = out.mean(axis=(1, 2, 3)) - (50 + 100 + 100) / 3
    contrast = out[:, :, :, 1].std(axis=(1, 2)) / 60.0
    assert brightness.min() >= -63 - 1e-3 and brightness.max() < 63 + 1e-3
    assert brightness.min() < -50 and brightness.max() > 50
    assert contrast.min() >= 0.2 - 1e-4 and contrast.max() < 1.8 + 1e-4
    assert contrast.min() < 0.3 and contrast.max() > 1.7
    # Independent draws: brightness and contrast are uncorrelated.
    assert abs(np.corrcoef(brightness, contrast)[0, 1]) < 0.2


def _byte_transposes_run(fetches, feed=None):
    """The uint8 Transposes in the graphs a session runs for fetches: after
    TensorFlow's own rewrites, which may move a cast past a transpose."""
    options = tf.compat.v1.RunOptions(output_partition_graphs=True)
    metadata = tf.compat.v1.RunMetadata()
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.local_variables_initializer())
        for fetch in fetches:
            sess.run(fetch, feed, options=options, run_metadata=metadata)
    return [
        node.name
        for graph in metadata.partition_graphs
        for node in graph.node
        if node.op == "Transpose" and node.attr["T"].type == tf.uint8.as_datatype_enum
    ]


def test_no_transpose_of_bytes_which_onednn_logs_as_an_error(dataset):
    # oneDNN logs an error for every uint8 Transpose ("oneDNN supports
    # DT_UINT8 only on platforms with AVX-512") on every healthy run. The
    # records are cast to floats first, and TensorFlow must not move the
    # cast back past the transpose.
    for build in (
        lambda: cifar10_input.distorted_inputs(dataset["dir"], 16, 100),
        lambda: cifar10_input.inputs(True, dataset["dir"], 16),
    ):
        with tf.Graph().as_default():
            build()
            runners = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.QUEUE_RUNNERS)
            # Each queue's filling, in order: file names, then records.
            enqueues = [op for runner in runners for op in runner.enqueue_ops[:1]]
            assert len(enqueues) == 2
            assert _byte_transposes_run(enqueues) == []
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.uint8, [None, 40, 36, 3])
        prepared = cifar10_input.prepare_images(images)
        feed = {images: np.zeros([2, 40, 36, 3], np.uint8)}
        assert _byte_transposes_run([prepared], feed) == []
