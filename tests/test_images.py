"""support/images.py: image files decoded as a viewer shows them (Pillow is
the yardstick), and read with bounded memory."""

import io
import os
import struct

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from harness import fake_cifar
from support import images

RNG = np.random.default_rng(7)
# A picture with detail at every scale, which turning or mirroring changes.
PICTURE = (RNG.random((40, 64, 3)) * 255).astype(np.uint8)


def jpeg(pixels, orientation=None, quality=90, **options):
    """A JPEG file's bytes, with an EXIF orientation tag if one is given
    (written by Pillow, in its byte order: little-endian)."""
    out = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality, **options)
    return out.getvalue()


def with_segment(data, segment):
    """A JPEG with one more segment right after its start marker."""
    return data[:2] + segment + data[2:]


def big_endian_exif(orientation):
    """An APP1 segment of EXIF in Motorola (big-endian) order, as many
    cameras write it, with one tag: the orientation."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def as_pillow_shows(data):
    """The pixels a viewer shows: Pillow's decode (libjpeg's accurate
    integer transform), turned by ImageOps.exif_transpose."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def decoded(files):
    """images.decode() of each file, fit to nothing: as decoded and turned.

    Args:
      files: [(file's bytes, [height, width, depth] it decodes to)].
    """
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        contents = tf.compat.v1.placeholder(tf.string, [None])
        graphs = {}
        found = []
        for data, shape in files:
            key = tuple(shape)
            if key not in graphs:
                graphs[key] = images.decode(contents, lambda image: image, key)
            found.append(sess.run(graphs[key], {contents: [data]})[0])
        return found


def test_a_jpeg_is_turned_as_its_exif_orientation_says():
    plain = jpeg(PICTURE)
    jfif = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    comment = b"\xff\xfe\x00\x07hello"
    files = []
    for orientation in range(1, 9):
        files.append(jpeg(PICTURE, orientation))
        # The same in big-endian order, after a JFIF segment and a comment.
        files.append(
            b"\xff\xd8" + jfif + comment + big_endian_exif(orientation) + plain[2:]
        )
    expected = [as_pillow_shows(data) for data in files]
    found = decoded([(data, e.shape) for data, e in zip(files, expected, strict=True)])
    for orientation, got, wanted in zip(
        np.repeat(range(1, 9), 2), found, expected, strict=True
    ):
        assert got.tolist() == wanted.tolist(), orientation
    # Turned by Pillow, not stored as it is.
    assert {e.shape for e in expected} == {(40, 64, 3), (64, 40, 3)}


def test_orientations_of_a_batch_are_each_files_own():
    files = [jpeg(PICTURE, o) for o in (6, 1, 3, 8)]
    png = io.BytesIO()
    Image.fromarray(PICTURE).save(png, "PNG")
    files += [png.getvalue(), b"not an image", jpeg(PICTURE)]
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        contents = tf.compat.v1.placeholder(tf.string, [None])
        found = sess.run(images.exif_orientations(contents), {contents: files})
    assert found.tolist() == [6, 1, 3, 8, 1, 1, 1]


def test_jpegs_are_decoded_as_libjpeg_decodes_them_by_default():
    # Pillow, like libjpeg's own tools, uses the accurate integer transform;
    # TensorFlow's default is a faster one that is off by a few levels.
    files = []
    for size, quality, subsampling in [
        ((40, 64), 90, 0), ((33, 17), 75, 2), ((8, 8), 100, 1)
    ]:  # fmt: skip
        pixels = (RNG.random((*size, 3)) * 255).astype(np.uint8)
        files.append(jpeg(pixels, quality=quality, subsampling=subsampling))
    expected = [as_pillow_shows(data) for data in files]
    found = decoded([(data, e.shape) for data, e in zip(files, expected, strict=True)])
    for got, wanted in zip(found, expected, strict=True):
        assert got.tolist() == wanted.tolist()


def test_a_large_jpeg_is_decoded_at_the_size_it_needs():
    # libjpeg decodes a photo far larger than needed at 1/2, 1/4 or 1/8 of
    # its size, and the image fit from that is nearly the one fit from the
    # whole: here 2048x1536 at 1/4, 512x384, for 32x24.
    assert images.jpeg_ratio((1536, 2048), (32, 24)) == 4
    assert images.jpeg_ratio((3000, 4000), (32, 32)) == 8
    assert images.jpeg_ratio((3000, 4000), (64, 64)) == 4
    assert images.jpeg_ratio((480, 640), (32, 32)) == 1
    smooth = Image.fromarray(PICTURE).resize((2048, 1536), Image.BILINEAR)
    stored = jpeg(np.asarray(smooth), 6, quality=95)

    def fit(image):
        return tf.cast(tf.image.resize(image, [32, 24], method="area"), tf.uint8)

    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        contents = tf.compat.v1.placeholder(tf.string, [None])
        scaled = images.decode(contents, fit, [32, 24, 3])[0]
        whole = fit(as_pillow_shows(stored)[None])[0]
        scaled, whole = sess.run([scaled, whole], {contents: [stored]})
    assert np.abs(scaled.astype(int) - whole).mean() < 0.5


def test_files_too_large_or_of_too_many_pixels_are_not_read(tmp_path, monkeypatch):
    video = tmp_path / "holiday.jpg"
    with open(video, "wb") as f:
        f.truncate(images.MAX_FILE_BYTES + 1)  # sparse: nothing is written
    assert images.read(str(video)) == (
        None,
        images.Skip(
            images.TOO_LARGE,
            "%s is 64 MB; files of more than 64 MB are skipped." % video,
        ),
    )
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    big = tmp_path / "big.png"
    big.write_bytes(fake_cifar.png_of_one_colour(101, 100))
    assert images.read(str(big)) == (
        None,
        images.Skip(
            images.TOO_MANY_PIXELS,
            "%s is an image of 101x100 pixels; images of more than 0 million "
            "pixels are skipped." % big,
        ),
    )
    # A GIF is decoded whole: every frame counts.
    frames = [Image.new("RGB", (60, 60), c) for c in ("red", "blue", "green")]
    gif = tmp_path / "three.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert images.read(str(gif))[1].line.startswith(
        "%s is an image of 60x60 in each of 3 frames pixels" % gif
    )
    # A JPEG this large is decoded at 1/8 of its size for 32x32, 512x256
    # pixels; at 1/4 for 64x64.
    monkeypatch.setattr(images, "MAX_PIXELS", 200_000)
    wide = tmp_path / "wide.jpg"
    wide.write_bytes(jpeg(np.zeros((2048, 4096, 3), np.uint8)))
    data, skip = images.read(str(wide), (32, 32))
    assert skip is None and data == wide.read_bytes()
    assert images.read(str(wide), (64, 64))[1].kind == images.TOO_MANY_PIXELS
    # Pillow's own bound: a bomb it will not even open.
    monkeypatch.undo()
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(fake_cifar.png_of_one_colour(16000, 16000, rows=1))
    assert images.read(str(bomb))[1].kind == images.TOO_MANY_PIXELS


def test_a_jpeg_cut_short_is_skipped_before_libjpeg_sees_it(tmp_path):
    whole = jpeg(PICTURE, 6)
    # An EXIF thumbnail holds an end marker of its own: it does not count.
    thumbnail = b"\xff\xe1\x00\x0cExif\x00\x00\xff\xd9\x00\x00"
    for name, data in [
        ("half.jpg", whole[: len(whole) // 2]),
        ("header.jpg", whole[:300]),
        ("thumbnail.jpg", with_segment(whole, thumbnail)[: len(whole) - 10]),
        ("bogus.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 40),
    ]:
        (tmp_path / name).write_bytes(data)
        assert images.read(str(tmp_path / name)) == (
            None,
            images.Skip(
                images.UNREADABLE,
                "%s is a damaged or incomplete JPEG file (it ends before its image "
                "does)." % (tmp_path / name),
            ),
        ), name
    (tmp_path / "whole.jpg").write_bytes(with_segment(whole, thumbnail))
    assert images.read(str(tmp_path / "whole.jpg"))[1] is None


def test_names_that_are_not_utf8_are_shown_as_bytes(tmp_path):
    name = os.fsdecode(b"caf\xe9.jpg")
    (tmp_path / name).write_bytes(b"\xff\xd8 cut")
    _, skip = images.read(str(tmp_path / name))
    assert skip.line.startswith("%s/caf\\xe9.jpg is a damaged" % tmp_path)
    skip.line.encode("utf-8")  # printable, and writable to a UTF-8 file
    assert images.is_image_name("IMG_0001.JPG") and images.is_image_name("a.webp")
    assert not images.is_image_name("IMG_0001.JPG.json")
    assert not images.is_image_name("scan.tiff")
