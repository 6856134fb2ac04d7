"""Image files as people have them: which files are images, reading them with
bounded memory, and decoding them as a photo viewer shows them.

    images.is_image_name(name)                         # by its extension
    kept, results, skips = images.run_on_files(run, paths)
    pixels = images.decode(contents, fit, [height, width, depth])  # a graph

Packing and classification read files through run_on_files(), and both they
and the exported model decode through decode(), so that training and serving
see the same picture, as Pillow shows it: JPEGs decoded accurately (as
Pillow and libjpeg do by default, not TensorFlow's faster approximation), a
BMP of a palette in its colours, a GIF or animated WebP as its first frame,
and every format that carries an EXIF orientation (JPEG, PNG, WebP) turned
as it says. What that needs of the files' bytes, the graph reads itself
(support/image_formats.py), so that the exported model does the same.

Importing this module changes nothing and loads nothing heavy.
"""

import io
import os
import stat
from typing import NamedTuple

from support import image_formats

# The files read, by extension (any case): what TensorFlow decodes.
EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp")
FORMATS = "JPEG, PNG, BMP, GIF or WebP"
# Images by name that are not read: a summary says to convert them.
OTHER_IMAGE_EXTENSIONS = (
    ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".dng", ".cr2", ".cr3",
    ".nef", ".arw", ".orf", ".rw2", ".raf", ".psd", ".svg", ".ico",
)  # fmt: skip
# A file larger than this is not read: no photo is, and a video named .jpg
# would otherwise be read whole.
MAX_FILE_BYTES = 64 * 2**20
# An image of more pixels than this is not decoded (a PNG of 16000x16000
# pixels can be 300 KB on disk and 768 MB decoded): read() skips it, and the
# graph refuses it from its header. A JPEG larger than a stored image is
# decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's own scaling), so a photo
# of up to 64 times this many pixels is read. Of a GIF or an animated WebP
# only the first frame is decoded, and counts.
MAX_PIXELS = 40_000_000
# How many times the stored size a JPEG scaled by libjpeg stays at least.
RATIO_MARGIN = 8

# The kinds of files skipped, and the line that counts each kind.
UNREADABLE = "unreadable"
TOO_LARGE = "too large"
TOO_MANY_PIXELS = "too many pixels"
SUMMARY = {
    UNREADABLE: "%d file(s) that could not be read as images (" + FORMATS + ")",
    TOO_LARGE: "%%d file(s) of more than %d MB" % (MAX_FILE_BYTES // 2**20),
    TOO_MANY_PIXELS: "%%d image(s) of more than %d million pixels"
    % (MAX_PIXELS // 10**6),
}


class Skip(NamedTuple):
    """A file not used: which kind of problem, and a line that names the file
    and says why."""

    kind: str
    line: str


def is_image_name(name):
    """Whether a file's name says it is an image this reads."""
    return name.lower().endswith(EXTENSIONS)


def shown(path):
    """A path as it can be printed: bytes that are not UTF-8 as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read(path, target=(1, 1)):
    """The contents of an image file, if it is one that decode() can take
    with bounded memory.

    Args:
      path: the file.
      target: (height, width) of what the image will be fit to: a JPEG is
        decoded at the smallest size that still covers it.

    Returns:
      (contents, None), or (None, Skip). A pipe or a device is not read: it
      could block, or never end.
    """
    try:
        # O_NONBLOCK: opening a pipe that no one writes to returns at once.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        return None, _cannot_read(path, e)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, Skip(
                UNREADABLE, "%s is not a regular file; skipped." % shown(path)
            )
        if info.st_size > MAX_FILE_BYTES:
            return None, _too_large(path, info.st_size)
        try:
            # One byte more than it holds: enough to see that it grew.
            data = f.read(info.st_size + 1)
        except OSError as e:
            return None, _cannot_read(path, e)
    if len(data) > MAX_FILE_BYTES:
        return None, _too_large(path, len(data))
    skip = _check(path, data, target)
    return (None, skip) if skip else (data, None)


def _cannot_read(path, error):
    return Skip(UNREADABLE, "Cannot read %s (%s)." % (shown(path), error.strerror))


def _too_large(path, size):
    return Skip(
        TOO_LARGE,
        "%s is %.0f MB; files of more than %d MB are skipped."
        % (shown(path), size / 2**20, MAX_FILE_BYTES // 2**20),
    )


def _check(path, data, target):
    """A Skip for a JPEG cut short or of a structure libjpeg would refuse
    (so that libjpeg never prints its own complaint), or for an image of
    more pixels than MAX_PIXELS decoded; else None."""
    if data[:2] == b"\xff\xd8":
        size = _jpeg_size(data)
        if size is None:
            return Skip(
                UNREADABLE,
                "%s is a damaged or incomplete JPEG file (it ends before its "
                "image does)." % shown(path),
            )
        ratio = jpeg_ratio(size, target)
        pixels, described = size[0] * size[1] // ratio**2, "%dx%d" % size[::-1]
    else:
        pixels, described = _other_size(data)
    if pixels > MAX_PIXELS:
        return Skip(
            TOO_MANY_PIXELS,
            "%s is an image of %s pixels; images of more than %d million pixels "
            "are skipped." % (shown(path), described, MAX_PIXELS // 10**6),
        )
    return None


def _jpeg_size(data):
    """(height, width) of a JPEG whose segments lead to its image data and
    whose image data ends (an EOI marker after the first scan); else None."""
    pos, size = 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        code = data[pos + 1]
        if code == 0xFF:  # a fill byte
            pos += 1
            continue
        if code == 0x01 or 0xD0 <= code <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if code in _START_OF_FRAME and pos + 9 <= len(data):
            size = (
                int.from_bytes(data[pos + 5 : pos + 7], "big"),
                int.from_bytes(data[pos + 7 : pos + 9], "big"),
            )
        if code == 0xDA:  # the first scan: the image data follows
            ends = data.find(b"\xff\xd9", pos + 2 + length) >= 0
            return size if ends and size else None
        pos += 2 + length
    return None


# The markers of a frame header, which gives the image's size.
_START_OF_FRAME = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7} | {
    0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF,
}  # fmt: skip


def _other_size(data):
    """(pixels decoded, their description) of an image that is not a JPEG,
    from its header (of a GIF or an animated WebP, the first frame's: the
    only one decoded), or (0, None) when Pillow cannot tell: TensorFlow
    decides then."""
    from PIL import Image  # noqa: PLC0415  (only packing and classifying)

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        # Pillow's own limit, far above MAX_PIXELS.
        limit = 2 * Image.MAX_IMAGE_PIXELS
        return limit + 1, "more than %d million" % (limit // 10**6)
    except Exception:  # noqa: BLE001  (any file at all comes here)
        return 0, None
    return width * height, "%dx%d" % (width, height)


def jpeg_ratio(size, target):
    """The scale, 1, 2, 4 or 8, a JPEG of (height, width) size is decoded at:
    the largest of them that keeps its shorter side at least RATIO_MARGIN
    times the longer side of target. So scaled by libjpeg, then averaged
    down, its pixels differ from those of the whole image by less than a
    level on average (by 0.24 for a 4000x3000 photo fit to 32x32)."""
    ratio = 8
    while ratio > 1 and min(size) // ratio < RATIO_MARGIN * max(target):
        ratio //= 2
    return ratio


def run_on_files(run, paths, target=(1, 1)):
    """Runs run(contents) on the image files at paths that read() takes: on
    all of them at once, or, when one is not an image (run raises
    tf.errors.InvalidArgumentError), on each alone, so that the others still
    count.

    Returns:
      (kept, results, skips): the indexes in paths of the files run on,
      run's result for each, and a Skip for each file skipped.
    """
    import tensorflow as tf  # noqa: PLC0415

    kept, contents, skips = [], [], []
    for i, path in enumerate(paths):
        data, skip = read(path, target)
        if skip:
            skips.append(skip)
        else:
            kept.append(i)
            contents.append(data)
    if not contents:
        return [], [], skips
    try:
        return kept, list(run(contents)), skips
    except tf.errors.InvalidArgumentError:
        pass
    alone, results = [], []
    for i, data in zip(kept, contents, strict=True):
        try:
            results.append(run([data])[0])
            alone.append(i)
        except tf.errors.InvalidArgumentError:
            skips.append(
                Skip(
                    UNREADABLE,
                    "%s is not an image this can read (%s)."
                    % (shown(paths[i]), FORMATS),
                )
            )
    return alone, results, skips


def decode(contents, fit, shape):
    """Image files as a viewer shows them, each fit to a stored image.

    JPEGs are decoded accurately (dct_method INTEGER_ACCURATE) and, when
    they are far larger than needed, at 1/2, 1/4 or 1/8 of their size by
    libjpeg itself (jpeg_ratio()). A BMP of a palette is decoded to its
    colours, a GIF or an animated WebP to its first frame alone; PNG, other
    BMPs and WebP by tf.io.decode_image, alpha left out. Each is then turned
    as its EXIF orientation says, whatever its format
    (support/image_formats.py reads it), and fit.

    An image of more than MAX_PIXELS pixels decoded (as its header says) is
    refused before it is decoded: read() skips such files, and for the
    exported model, which runs this graph on any bytes, running it raises
    InvalidArgumentError.

    Args:
      contents: string [n], the files' bytes.
      fit: a function from uint8 [1, h, w, depth] to uint8 [1, *shape].
      shape: [height, width, depth] of the stored image.

    Returns:
      uint8 [n, *shape]; running it raises tf.errors.InvalidArgumentError
      when a file is not an image.
    """
    import tensorflow as tf  # noqa: PLC0415

    height, width, depth = shape
    target = max(height, width)
    kinds, sizes, palette = image_formats.headers(contents)
    # Outside the loop over the files: a loop within it costs every file.
    cut, frames = image_formats.gif_first_frames(contents, kinds)
    cut = image_formats.webp_first_frames(cut, kinds)
    # Which of _decode_image()'s ways: JPEG 1, palette BMP 2, GIF 3, WebP 4,
    # else (PNG, other BMPs) 0.
    ways = tf.where(
        palette,
        tf.constant(2, tf.int64),
        tf.gather(tf.constant([0, 1, 0, 3, 0, 4], tf.int64), kinds),
    )
    with tf.control_dependencies([_within_bound(tf.maximum(sizes, frames))]):
        ways = tf.identity(ways)

    # Plain graph-building Python: autograph need not convert it.
    @tf.autograph.experimental.do_not_convert
    def decode_one(args):
        data, way, orientation = args
        image = _decode_image(data, way, target, depth)
        image = tf.cond(
            orientation > 1, lambda: _orient(image, orientation), lambda: image
        )
        return fit(image[None])[0]

    # One image at a time: a batch's memory is that of its largest image.
    return tf.map_fn(
        decode_one,
        (cut, ways, exif_orientations(contents)),
        fn_output_signature=tf.TensorSpec(shape, tf.uint8),
        parallel_iterations=1,
    )


def _decode_image(data, way, target, depth):
    """The pixels of one file, uint8 [h, w, depth], as stored (not turned):
    a JPEG at the smallest of libjpeg's scales that covers target, a GIF or
    WebP already cut to its first frame."""
    import tensorflow as tf  # noqa: PLC0415

    def jpeg():
        size = tf.io.extract_jpeg_shape(data)[:2]
        # As jpeg_ratio() says: the largest of 2, 4 and 8 that keeps the
        # shorter side at least RATIO_MARGIN times the target.
        room = tf.reduce_min(size) // (RATIO_MARGIN * target)
        index = tf.reduce_sum(tf.cast(tf.constant([2, 4, 8]) <= room, tf.int32))
        ratio = tf.gather([1, 2, 4, 8], index)
        scaled = tf.cast(size // ratio, tf.int64)
        with tf.control_dependencies([_within_bound(scaled[None])]):
            return tf.switch_case(
                index,
                [
                    lambda r=r: tf.io.decode_jpeg(
                        data, depth, ratio=r, dct_method="INTEGER_ACCURATE"
                    )
                    for r in (1, 2, 4, 8)
                ],
            )

    def gif():
        return _channels(tf.io.decode_gif(data)[0], depth)

    def webp():
        # Three channels, or four of one with alpha, and of an animation
        # (webp_first_frames() says so in its header).
        return _channels(tf.io.decode_webp(data)[0], depth)

    def palette():
        return _channels(image_formats.bmp_with_palette(data), depth)

    def other():  # PNG, and BMP of 24 or 32 bits
        return tf.io.decode_image(data, depth, expand_animations=False)

    image = tf.switch_case(tf.cast(way, tf.int32), [other, jpeg, palette, gif, webp])
    image.set_shape([None, None, depth])
    return image


def _within_bound(sizes):
    """An op that fails (InvalidArgumentError) when one of sizes, (height,
    width) int64 [n, 2], has more than MAX_PIXELS pixels."""
    import tensorflow as tf  # noqa: PLC0415

    # The raw op: tf.debugging's asserts add a cond around it, which
    # Grappler then logs it cannot sort.
    return tf.raw_ops.Assert(
        condition=tf.reduce_all(sizes[:, 0] * sizes[:, 1] <= MAX_PIXELS),
        data=[
            "An image of more than %d million pixels is not decoded; the sizes "
            "(height, width) are" % (MAX_PIXELS // 10**6),
            sizes,
        ],
    )


def _channels(image, depth):
    """RGB or RGBA pixels, uint8 [h, w, 3 or 4], as depth channels: alpha
    left out (as tf.io.decode_image leaves it out of a PNG), gray by the
    ITU-R 601 weights for one channel."""
    import tensorflow as tf  # noqa: PLC0415

    image = image[..., :3]
    if depth == 1:
        gray = tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))
        return tf.cast(tf.round(gray), tf.uint8)
    if depth == 4:
        return tf.pad(image, [[0, 0], [0, 0], [0, 1]], constant_values=255)
    return image


def _orient(image, orientation):
    """An image [h, w, c] turned as its EXIF orientation (1-8) says: swapped
    across its diagonal for 5-8, then mirrored."""
    import tensorflow as tf  # noqa: PLC0415

    def swapped():
        # Each pixel's bytes moved as one float32 (channels padded to four,
        # the fourth 64 so that every one is a normal number, neither NaN
        # nor denormal): oneDNN logs an error for every transpose of integers
        # on most CPUs, and floats of each byte would take four times the
        # memory of a large image's bytes.
        channels = image.shape[-1]
        padded = tf.pad(image, [[0, 0], [0, 0], [0, 4 - channels]], constant_values=64)
        moved = tf.transpose(tf.bitcast(padded, tf.float32))
        return tf.bitcast(moved, tf.uint8)[..., :channels]

    image = tf.cond(orientation >= 5, swapped, lambda: image)
    left_right = tf.reduce_any(tf.equal(orientation, [2, 3, 6, 7]))
    up_down = tf.reduce_any(tf.equal(orientation, [3, 4, 7, 8]))
    image = tf.cond(left_right, lambda: tf.reverse(image, [1]), lambda: image)
    return tf.cond(up_down, lambda: tf.reverse(image, [0]), lambda: image)


def exif_orientations(contents):
    """The EXIF orientation of each file, 1 (as stored) to 8; 1 for a file
    that has none. A JPEG, PNG or WebP file can hold one
    (image_formats.exif_offsets() says where).

    Args:
      contents: string [n], the files' bytes.

    Returns:
      int32 [n].
    """
    import tensorflow as tf  # noqa: PLC0415

    kinds = image_formats.kind(contents)
    tiff = image_formats.exif_offsets(contents, kinds)
    # Read only in a batch where some file has EXIF.
    return tf.cond(
        tf.reduce_any(tiff >= 0),
        lambda: image_formats.orientations(contents, tiff),
        lambda: tf.ones_like(tiff, tf.int32),
    )
