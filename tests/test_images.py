"""support/images.py: image files decoded as a viewer shows them (Pillow is
the yardstick), and read with bounded memory."""

import io
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
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


# No image these tests decode is larger: the decoder puts each in a canvas
# of this size, with its height and width in a row below it.
CANVAS = 128


def in_canvas(image):
    """uint8 [1, h, w, 3] as [1, CANVAS + 1, CANVAS, 3]: the image at the top
    left, zeros beside it, and in the last row its height and width (two
    bytes each). An image larger than the canvas fails the run."""
    height, width = tf.shape(image)[1], tf.shape(image)[2]
    placed = tf.pad(image, [[0, 0], [0, CANVAS - height], [0, CANVAS - width], [0, 0]])
    size = tf.stack([height // 256, height % 256, width // 256, width % 256, 0, 0])
    row = tf.pad(
        tf.reshape(tf.cast(size, tf.uint8), [1, 1, 2, 3]),
        [[0, 0], [0, 0], [0, CANVAS - 2], [0, 0]],
    )
    return tf.concat([placed, row], axis=1)


class Decoder:
    """One graph of images.decode() and images.exif_orientations() for the
    tests of this module, each fed a batch of files: building the decoding
    graph, and its first run, take seconds."""

    def __init__(self):
        with tf.Graph().as_default() as graph:
            self.contents = tf.compat.v1.placeholder(tf.string, [None])
            self.pixels = images.decode(
                self.contents, in_canvas, [CANVAS + 1, CANVAS, 3]
            )
            self.orientations = images.exif_orientations(self.contents)
        self.sess = tf.compat.v1.Session(graph=graph)

    def decoded(self, files):
        """images.decode() of each file's bytes, fit to nothing: as decoded
        and turned, uint8 [h, w, 3] each."""
        found = self.sess.run(self.pixels, {self.contents: files})
        sizes = [image[CANVAS, :2].reshape(6)[:4].astype(int) for image in found]
        return [
            image[: h1 * 256 + h0, : w1 * 256 + w0]
            for image, (h1, h0, w1, w0) in zip(found, sizes, strict=True)
        ]

    def exif_orientations(self, files):
        return self.sess.run(self.orientations, {self.contents: files})


@pytest.fixture(scope="module")
def decoder():
    made = Decoder()
    yield made
    made.sess.close()


def test_a_jpeg_is_turned_as_its_exif_orientation_says(decoder):
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
    found = decoder.decoded(files)
    for orientation, got, wanted in zip(
        np.repeat(range(1, 9), 2), found, expected, strict=True
    ):
        assert got.tolist() == wanted.tolist(), orientation
    # Turned by Pillow, not stored as it is.
    assert {e.shape for e in expected} == {(40, 64, 3), (64, 40, 3)}


def test_orientations_of_a_batch_are_each_files_own(decoder):
    files = [jpeg(PICTURE, o) for o in (6, 1, 3, 8)]
    png = io.BytesIO()
    Image.fromarray(PICTURE).save(png, "PNG")
    files += [png.getvalue(), b"not an image", jpeg(PICTURE)]
    assert decoder.exif_orientations(files).tolist() == [6, 1, 3, 8, 1, 1, 1]


def test_jpegs_are_decoded_as_libjpeg_decodes_them_by_default(decoder):
    # Pillow, like libjpeg's own tools, uses the accurate integer transform;
    # TensorFlow's default is a faster one that is off by a few levels.
    files = []
    for size, quality, subsampling in [
        ((40, 64), 90, 0), ((33, 17), 75, 2), ((8, 8), 100, 1)
    ]:  # fmt: skip
        pixels = (RNG.random((*size, 3)) * 255).astype(np.uint8)
        files.append(jpeg(pixels, quality=quality, subsampling=subsampling))
    expected = [as_pillow_shows(data) for data in files]
    found = decoder.decoded(files)
    for got, wanted in zip(found, expected, strict=True):
        assert got.tolist() == wanted.tolist()


def test_a_large_jpeg_is_decoded_at_the_size_it_needs(in_a_process):
    # libjpeg decodes a photo far larger than needed at 1/2, 1/4 or 1/8 of
    # its size, and the image fit from that is nearly the one fit from the
    # whole: here 2048x1536 at 1/4, 512x384, for 32x32 (or 32x24).
    assert images.jpeg_ratio((1536, 2048), (32, 32)) == 4
    assert images.jpeg_ratio((1536, 2048), (32, 24)) == 4
    assert images.jpeg_ratio((3000, 4000), (32, 32)) == 8
    assert images.jpeg_ratio((3000, 4000), (64, 64)) == 4
    assert images.jpeg_ratio((480, 640), (32, 32)) == 1
    # The process fit both as classification does (cifar10_input.fit_images).
    scaled, whole = in_a_process["scaled"], in_a_process["whole"]
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
    # Of a GIF, only the first frame is decoded: only it counts.
    frames = [Image.new("RGB", (60, 60), c) for c in ("red", "blue", "green")]
    gif = tmp_path / "three.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    assert images.read(str(gif))[1] is None
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


def pillow_file(image, kind, **options):
    """The bytes of image saved by Pillow as kind."""
    out = io.BytesIO()
    image.save(out, kind, **options)
    return out.getvalue()


def exif_of(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def first_frame_as_pillow_shows(data):
    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        return np.asarray(image.convert("RGBA").convert("RGB"))


def bmp_of_4_bits(pixels, palette, top_down=False):
    """A BMP of 4 bits per pixel (which Pillow reads but does not write):
    pixels [h, w] of numbers into palette [(r, g, b)]."""
    height, width = pixels.shape
    stride = (4 * width + 31) // 32 * 4
    rows = []
    for row in pixels[:: 1 if top_down else -1]:
        padded = np.zeros(stride * 2, np.uint8)
        padded[:width] = row
        rows.append(bytes(padded[0::2] << 4 | padded[1::2]))
    table = b"".join(bytes([b, g, r, 0]) for r, g, b in palette)
    offset = 14 + 40 + len(table)
    info = struct.pack(
        "<IiiHHIIiiII", 40, width, -height if top_down else height, 1, 4, 0,
        stride * height, 2835, 2835, len(palette), 0,
    )  # fmt: skip
    body = info + table + b"".join(rows)
    return b"BM" + struct.pack("<IHHI", 14 + len(body), 0, 0, offset) + body


def test_a_bmp_of_a_palette_is_decoded_to_its_colours(decoder):
    red = Image.new("RGB", (12, 5), (255, 0, 0))
    colours = Image.fromarray(PICTURE).quantize(200)  # 8 bits a pixel
    drawing = Image.fromarray(PICTURE).convert("1")  # 1 bit a pixel
    numbers = RNG.integers(0, 11, (7, 9)).astype(np.uint8)
    palette = [tuple(RNG.integers(0, 256, 3)) for _ in range(11)]
    files = [
        pillow_file(red.quantize(4), "BMP"),
        pillow_file(colours, "BMP"),
        pillow_file(drawing, "BMP"),
        bmp_of_4_bits(numbers, palette),
        bmp_of_4_bits(numbers, palette, top_down=True),
    ]
    expected = [first_frame_as_pillow_shows(data) for data in files]
    found = decoder.decoded(files)
    assert found[0].tolist() == np.full((5, 12, 3), [255, 0, 0]).tolist()
    for got, wanted in zip(found, expected, strict=True):
        assert got.tolist() == wanted.tolist()


def jpeg_with_late_exif(orientation):
    """A JPEG whose EXIF follows an ICC profile of 200 KB (in four APP2
    segments), beyond the first 64 KB of the file."""
    data = jpeg(PICTURE, icc_profile=bytes(200_000))
    tables = data.index(b"\xff\xdb")
    return data[:tables] + big_endian_exif(orientation) + data[tables:]


def png_with_late_exif(orientation):
    """A PNG whose eXIf chunk follows its image data."""
    data = pillow_file(Image.fromarray(PICTURE), "PNG", exif=exif_of(orientation))
    start = data.index(b"eXIf") - 4
    end = start + 12 + struct.unpack(">I", data[start : start + 4])[0]
    chunk, rest = data[start:end], data[:start] + data[end:]
    last = rest.index(b"IEND") - 4
    return rest[:last] + chunk + rest[last:]


def test_every_format_with_exif_is_turned_as_it_says(decoder):
    picture = Image.fromarray(PICTURE)
    files = []
    for orientation in (3, 6, 8):
        files += [
            pillow_file(picture, "PNG", exif=exif_of(orientation)),
            png_with_late_exif(orientation),
            pillow_file(picture, "WEBP", lossless=True, exif=exif_of(orientation)),
            jpeg_with_late_exif(orientation),
        ]
    expected = [as_pillow_shows(data) for data in files]
    found = decoder.decoded(files)
    for i, (got, wanted) in enumerate(zip(found, expected, strict=True)):
        assert got.tolist() == wanted.tolist(), i
    assert {e.shape for e in expected} == {(40, 64, 3), (64, 40, 3)}
    found = decoder.exif_orientations(files)
    assert found.tolist() == [o for o in (3, 6, 8) for _ in range(4)]


def animated(frames, **options):
    return pillow_file(
        frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100,
        **options,
    )  # fmt: skip


def test_webp_with_alpha_or_animated_is_read_as_its_first_frame(decoder, tmp_path):
    see_through = np.dstack([PICTURE, RNG.integers(0, 256, (40, 64), np.uint8)])
    rgba = Image.fromarray(see_through)
    frames = [Image.fromarray(PICTURE), Image.new("RGB", (64, 40), "blue")]
    files = [
        pillow_file(rgba, "WEBP", lossless=True, exact=True),
        pillow_file(rgba, "WEBP", quality=90),
        animated(frames, lossless=True),
        animated([f.convert("RGBA") for f in frames], lossless=True),
        animated(frames, quality=90),
    ]
    expected = [first_frame_as_pillow_shows(data) for data in files]
    found = decoder.decoded(files)
    for i, (got, wanted) in enumerate(zip(found, expected, strict=True)):
        # The alpha left out as for PNG: the colours as stored.
        assert np.abs(got.astype(int) - wanted).max() <= (0 if i in (0, 2, 3) else 1)
    assert found[0].tolist() == PICTURE.tolist()
    for i, data in enumerate(files):
        (tmp_path / ("%d.webp" % i)).write_bytes(data)
        assert images.read(str(tmp_path / ("%d.webp" % i)))[1] is None


def many_frames_gif():
    """A GIF of 350 frames of 64x40, the first of them PICTURE: more than
    64 * 40 * 349 pixels in all."""
    frames = [Image.fromarray(PICTURE)] + [
        Image.new("RGB", (64, 40), (i % 256, i // 256 * 128, 50)) for i in range(349)
    ]
    return pillow_file(
        frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40
    )


def test_a_gif_counts_and_decodes_its_first_frame_alone(decoder, tmp_path):
    gif = tmp_path / "many.gif"
    gif.write_bytes(many_frames_gif())
    data = gif.read_bytes()
    with Image.open(gif) as image:
        assert image.n_frames == 350
    expected = first_frame_as_pillow_shows(data)
    assert decoder.decoded([data])[0].tolist() == expected.tolist()
    # 350 frames of 64x40: more than MAX_PIXELS in all, far less in one. (The
    # graph's bound counts the first frame alone too: see
    # test_an_image_of_too_many_pixels_is_refused_by_the_graph_too.)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(images, "MAX_PIXELS", 64 * 40 * 349)
        assert images.read(str(gif)) == (data, None)
        patch.setattr(images, "MAX_PIXELS", 64 * 40 - 1)
        assert images.read(str(gif)) == (
            None,
            images.Skip(
                images.TOO_MANY_PIXELS,
                "%s is an image of 64x40 pixels; images of more than 0 million "
                "pixels are skipped." % gif,
            ),
        )


# Decodes and fits files as classification does, in a process of its own:
# a small image, then the thin images, printing the growth of its peak
# resident memory (KB) from the one to the others; then a large JPEG, and
# fits the pixels Pillow decodes of all of it (an .npy file); both fit
# images saved as <out>scaled.npy and <out>whole.npy.
IN_A_PROCESS = """
import resource, sys
import numpy as np
import tensorflow as tf
import cifar10_input
from harness import fake_cifar
from support import images

tf.compat.v1.disable_eager_execution()
*thin, large, pillows, out = sys.argv[1:]
files = [open(path, "rb").read() for path in thin]
shape = [cifar10_input.HEIGHT, cifar10_input.WIDTH, cifar10_input.DEPTH]
with tf.compat.v1.Session() as sess:
    contents = tf.compat.v1.placeholder(tf.string, [None])
    pixels = images.decode(contents, cifar10_input.fit_images, shape)
    sess.run(pixels, {contents: [fake_cifar.png_of_one_colour(40, 30)]})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    found = sess.run(pixels, {contents: files})
    assert (found == 0x80).all(), found
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
    scaled = sess.run(pixels, {contents: [open(large, "rb").read()]})[0]
    whole = sess.run(cifar10_input.fit_images(np.load(pillows)[None]))[0]
np.save(out + "scaled.npy", scaled)
np.save(out + "whole.npy", whole)
"""


@pytest.fixture(scope="module")
def in_a_process(tmp_path_factory):
    """IN_A_PROCESS's run: {"growth": KB, "scaled": the large JPEG decoded
    and fit, "whole": Pillow's decode of all of it, fit}."""
    folder = tmp_path_factory.mktemp("in_a_process")
    # 100000x1 and 1x200000 pixels, of a few hundred bytes: scaled whole to
    # cover 32x32, they would take gigabytes.
    paths = [folder / "wide.png", folder / "tall.png"]
    paths[0].write_bytes(fake_cifar.png_of_one_colour(100_000, 1))
    paths[1].write_bytes(fake_cifar.png_of_one_colour(1, 200_000))
    smooth = Image.fromarray(PICTURE).resize((2048, 1536), Image.BILINEAR)
    stored = jpeg(np.asarray(smooth), 6, quality=95)
    (folder / "large.jpg").write_bytes(stored)
    np.save(folder / "pillow.npy", as_pillow_shows(stored))
    result = subprocess.run(
        [sys.executable, "-c", IN_A_PROCESS, *map(str, paths),
         str(folder / "large.jpg"), str(folder / "pillow.npy"), str(folder / "fit_")],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {
        "growth": int(result.stdout.split()[-1]),
        "scaled": np.load(folder / "fit_scaled.npy"),
        "whole": np.load(folder / "fit_whole.npy"),
    }


def test_a_thin_image_takes_memory_of_the_stored_size(in_a_process):
    assert in_a_process["growth"] < 100 * 1024  # KB


def every_format(picture):
    """picture in each format, and each way, that the graph decodes."""
    return [
        jpeg(np.asarray(picture)),
        pillow_file(picture, "PNG"),
        pillow_file(picture, "GIF"),
        pillow_file(picture, "BMP"),
        pillow_file(picture.quantize(16), "BMP"),
        pillow_file(picture, "WEBP", quality=90),
        pillow_file(picture, "WEBP", lossless=True),
        pillow_file(picture.convert("RGBA"), "WEBP", quality=90),
        animated([picture, picture.transpose(Image.FLIP_LEFT_RIGHT)]),
    ]


def test_an_image_of_too_many_pixels_is_refused_by_the_graph_too(monkeypatch):
    # The exported model decodes what it is sent: the bound is in the graph,
    # from each format's header, before anything is decoded. At a bound of
    # 64x40 pixels, an image of 197x13 (a pixel more) is refused, one of
    # 64x40 is not.
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 40)
    assert images.MAX_PIXELS + 1 == 197 * 13
    picture = Image.fromarray(PICTURE)
    files = [
        *every_format(picture),
        # Of a GIF, the first frame alone counts: 350 of them would not pass.
        many_frames_gif(),
    ]
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        contents = tf.compat.v1.placeholder(tf.string, [None])
        pixels = images.decode(contents, lambda image: image, [40, 64, 3])
        for data in every_format(picture.resize((197, 13))):
            with pytest.raises(tf.errors.InvalidArgumentError, match="not decoded"):
                sess.run(pixels, {contents: [data]})
        found = sess.run(pixels, {contents: files})
    assert found.shape == (10, 40, 64, 3)
    assert found[-1].tolist() == first_frame_as_pillow_shows(files[-1]).tolist()
