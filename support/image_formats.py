"""What the bytes of image files say, read in a TensorFlow graph, so that
packing, classification and the exported model (which runs nothing but the
graph) read every file alike: which format it is, its size from its header,
where its EXIF orientation is, the colours of a BMP with a palette, and the
first frame alone of an animated GIF or WebP.

    kinds, sizes, palette = image_formats.headers(contents)  # from the headers
    tiff = image_formats.exif_offsets(contents, kinds)  # where EXIF begins
    cut, frames = image_formats.gif_first_frames(contents, kinds)  # GIFs

Each reads a few bytes at a time (tf.strings.substr), never a whole file,
except where it decodes one. Importing this module changes nothing and loads
nothing heavy.
"""

# The formats told apart, as kind() numbers them; 0 is none of them.
JPEG, PNG, GIF, BMP, WEBP = 1, 2, 3, 4, 5
# How many segments or chunks of a file are walked to find its EXIF (those of
# a JPEG before its image data, of a PNG or WebP all of them), and how many
# blocks of a GIF to find the end of its first frame.
MAX_CHUNKS = 4096
EXIF_STEPS_IN_LINE = 12  # of them, those walked outside a loop
MAX_GIF_BLOCKS = 2**20
# How many tags of EXIF's first directory are looked at for the orientation.
EXIF_ENTRIES = 64


def _tf():
    import tensorflow as tf  # noqa: PLC0415  (only when a graph is built)

    return tf


def read_bytes(data, pos, count):
    """The count bytes of each file from pos on, as int64 [..., count]; 0
    beyond its end (or before its start, for a negative pos).

    Args:
      data: string, a file's bytes, or [n] of them.
      pos: int64 of data's shape, where to read each.
      count: a Python int.
    """
    tf = _tf()
    pos = tf.cast(pos, tf.int64)
    end = tf.cast(tf.strings.length(data), tf.int64)
    start = tf.clip_by_value(pos, 0, end)
    raw = tf.io.decode_raw(
        tf.strings.substr(data, start, tf.ones_like(start) * count),
        tf.uint8,
        fixed_length=count,
    )
    raw = tf.cast(raw, tf.int64)
    return _where((pos >= 0)[..., None], raw, 0)


def _substr(data, pos, count):
    """tf.strings.substr, pos and count int64 or Python ints, either of them
    one for all."""
    tf = _tf()
    shape = tf.shape(data)
    pos = tf.broadcast_to(tf.cast(pos, tf.int64), shape)
    return tf.strings.substr(
        data, pos, tf.broadcast_to(tf.cast(count, tf.int64), shape)
    )


def _where(condition, x, y):
    """tf.where, with Python numbers taken as int64."""
    tf = _tf()
    x = tf.convert_to_tensor(x, dtype_hint=tf.int64)
    y = tf.convert_to_tensor(y, dtype_hint=x.dtype)
    return tf.where(condition, x, y)


def little(values):
    """The number of bytes [..., k] in little-endian order (int64 [...])."""
    tf = _tf()
    weights = [256**i for i in range(values.shape[-1])]
    return tf.reduce_sum(values * tf.constant(weights, tf.int64), -1)


def big(values):
    """The number of bytes [..., k] in big-endian order (int64 [...])."""
    return little(values[..., ::-1])


def _is(values, text):
    """Whether bytes [..., k] are text's k bytes."""
    tf = _tf()
    return tf.reduce_all(tf.equal(values, tf.constant(list(text), tf.int64)), -1)


def kind(contents):
    """The format of each file by its first bytes: JPEG, PNG, GIF, BMP, WEBP
    or 0 (int64, of contents' shape)."""
    tf = _tf()
    head = read_bytes(contents, tf.zeros_like(contents, tf.int64), 12)
    found = tf.zeros_like(contents, tf.int64)
    for number, signature, start in [
        (JPEG, b"\xff\xd8", 0), (PNG, b"\x89PNG\r\n\x1a\n", 0), (GIF, b"GIF8", 0),
        (BMP, b"BM", 0), (WEBP, b"WEBP", 8),
    ]:  # fmt: skip
        match = _is(head[..., start : start + len(signature)], signature)
        if number == WEBP:
            match &= _is(head[..., :4], b"RIFF")
        found = _where(match, tf.constant(number, tf.int64), found)
    return found


def headers(contents):
    """What the first bytes of each file say: its format, its size (as far as
    its header gives it), and whether it is a BMP of a palette.

    The size is that of PNG's IHDR, a GIF's logical screen (its first frame
    can be larger: gif_frame()), a BMP's header, a WebP's VP8X, VP8 or VP8L
    header; (0, 0) for a JPEG (tf.io.extract_jpeg_shape() reads it) or
    another file.

    Args:
      contents: string [n], the files' bytes.

    Returns:
      (kind() int64 [n], (height, width) int64 [n, 2], bool [n]).
    """
    tf = _tf()
    kinds = kind(contents)
    head = read_bytes(contents, tf.zeros_like(contents, tf.int64), 30)

    def pair(height, width):
        return tf.stack([height, width], -1)

    png = pair(big(head[:, 20:24]), big(head[:, 16:20]))
    gif = pair(little(head[:, 8:10]), little(head[:, 6:8]))
    chunk, lossless = head[:, 12:16], little(head[:, 21:25])
    webp = _where(
        _is(chunk, b"VP8X")[:, None],
        pair(little(head[:, 27:30]), little(head[:, 24:27])) + 1,
        _where(
            _is(chunk, b"VP8L")[:, None],
            pair(lossless // 2**14 % 2**14, lossless % 2**14) + 1,
            pair(little(head[:, 28:30]), little(head[:, 26:28])) % 2**14,
        ),
    )
    every = tf.stack([tf.zeros_like(png), png, gif, _bmp_size(head), webp], 1)
    index = tf.gather(tf.constant([0, 0, 1, 2, 3, 4], tf.int64), kinds)
    sizes = tf.gather(every, index, batch_dims=1)
    palette = tf.equal(kinds, BMP) & (bmp_bits(head) <= 8)
    return kinds, sizes, palette


def _bmp_size(head):
    """(height, width) [..., 2] of BMPs whose first 30 bytes are head."""
    tf = _tf()
    core = tf.equal(little(head[..., 14:18]), 12)  # OS/2's: 16-bit sizes
    signed = tf.stack([little(head[..., 22:26]), little(head[..., 18:22])], -1)
    signed = _where(signed >= 2**31, 2**32 - signed, signed)  # its magnitude
    short = tf.stack([little(head[..., 20:22]), little(head[..., 18:20])], -1)
    return _where(core[..., None], short, signed)


def exif_offsets(contents, kinds):
    """Where the TIFF structure of each file's EXIF begins, or -1: in a
    JPEG's APP1 segment that begins "Exif\\0\\0" (among the segments before
    its image data), a PNG's eXIf chunk, or a WebP's EXIF chunk, wherever
    they are in the file (after an ICC profile of many segments, or after
    the image data). Up to MAX_CHUNKS segments or chunks are walked, for a
    whole batch at once.

    Args:
      contents: string [n], the files' bytes.
      kinds: their kind().

    Returns:
      int64 [n].
    """
    tf = _tf()
    starts = tf.gather(tf.constant([-1, 2, 8, -1, -1, 12], tf.int64), kinds)
    length = tf.cast(tf.strings.length(contents), tf.int64)

    def step(i, pos, tiff):
        head = read_bytes(contents, pos, 14)
        found, following = _exif_chunk(head, kinds, pos)
        tiff = _where(found & (pos >= 0), following, tiff)
        more = (pos >= 0) & ~found & (following > pos) & (following < length)
        return i + 1, _where(more, following, -1), tiff

    # The first steps in line, which most files need alone (a loop's steps
    # cost more), then a loop for those that go on.
    state = (
        tf.constant(0),
        starts,
        tf.fill(tf.shape(starts), tf.constant(-1, tf.int64)),
    )
    for _ in range(EXIF_STEPS_IN_LINE):
        state = step(*state)
    _, _, tiff = tf.cond(
        tf.reduce_any(state[1] >= 0),
        lambda: tf.while_loop(
            lambda i, pos, _: (i < MAX_CHUNKS) & tf.reduce_any(pos >= 0), step, state
        ),
        lambda: state,
    )
    return tiff


def _exif_chunk(head, kinds, pos):
    """Of a segment (JPEG) or chunk (PNG, WebP) whose first 14 bytes are
    head, at pos: (whether it holds EXIF, where its TIFF structure begins if
    so, else where the next one begins; a position at or before pos ends the
    walk)."""
    tf = _tf()
    # A JPEG: a marker, then for most a length; the image data ends the walk.
    code = head[:, 1]
    alone = tf.equal(code, 0x01) | ((code >= 0xD0) & (code <= 0xD7))
    jpeg_next = _where(
        tf.equal(code, 0xFF),  # a fill byte
        pos + 1,
        _where(alone, pos + 2, pos + 2 + big(head[:, 2:4])),
    )
    stop = ~tf.equal(head[:, 0], 0xFF) | tf.equal(code, 0xDA) | tf.equal(code, 0xD9)
    jpeg_next = _where(stop, pos, jpeg_next)
    jpeg_exif = tf.equal(code, 0xE1) & _is(head[:, 4:10], b"Exif\0\0")
    # A PNG: length, type, data, CRC; IEND ends it.
    png_exif = _is(head[:, 4:8], b"eXIf")
    png_next = _where(_is(head[:, 4:8], b"IEND"), pos, pos + 12 + big(head[:, :4]))
    # A WebP: type, length, data of an even number of bytes.
    webp_exif = _is(head[:, :4], b"EXIF")
    webp_next = pos + 8 + little(head[:, 4:8]) + little(head[:, 4:8]) % 2
    # Some writers put "Exif\0\0" before the TIFF structure in PNG and WebP.
    prefix = _where(_is(head[:, 8:14], b"Exif\0\0"), 6, 0)
    is_jpeg, is_png = tf.equal(kinds, JPEG), tf.equal(kinds, PNG)
    found = _where(is_jpeg, jpeg_exif, _where(is_png, png_exif, webp_exif))
    following = _where(
        is_jpeg,
        _where(jpeg_exif, pos + 10, jpeg_next),
        _where(found, pos + 8 + prefix, _where(is_png, png_next, webp_next)),
    )
    return found, following


def orientations(contents, tiff):
    """The EXIF orientation (tag 0x0112 in the first directory) of the TIFF
    structure at tiff in each file: 1 (as stored) to 8, and 1 where tiff is
    -1 or there is none.

    Returns:
      int32 [n].
    """
    tf = _tf()
    header = read_bytes(contents, tiff, 8)
    is_little = tf.equal(header[:, 0], ord("I"))

    def number(values):  # of bytes [n, ..., k], in the structure's order
        order = tf.reshape(is_little, [-1] + [1] * (values.shape.rank - 2))
        return _where(order, little(values), big(values))

    directory = tiff + number(header[:, 4:8])
    count = number(read_bytes(contents, directory, 2)[..., None, :])
    entries = tf.reshape(
        read_bytes(contents, directory + 2, 12 * EXIF_ENTRIES), [-1, EXIF_ENTRIES, 12]
    )
    tags, values = number(entries[..., :2]), number(entries[..., 8:10])
    index = tf.range(EXIF_ENTRIES, dtype=tf.int64)[None]
    found = tf.equal(tags, 0x0112) & (index < count) & (tiff >= 0)[:, None]
    value = tf.reduce_max(_where(found, values, 0), axis=1)
    return tf.cast(_where((value >= 1) & (value <= 8), value, 1), tf.int32)


def gif_first_frames(contents, kinds):
    """The GIFs among the files cut to their first frame (TensorFlow decodes
    every frame of a GIF, and only the first is used), and the size of that
    frame (it can be larger than the logical screen). A GIF's blocks are
    walked a sub-block at a time up to the end of its first image's data,
    and the trailer put after it; a file whose first image does not end is
    left as it is. A loop runs only for a batch with a GIF.

    Args:
      contents: string [n], the files' bytes.
      kinds: their kind().

    Returns:
      (string [n], (height, width) int64 [n, 2], (0, 0) for other files).
    """
    tf = _tf()
    is_gif = tf.equal(kinds, GIF)

    def cut():
        frame, end = _gif_walk(contents, is_gif)
        head = read_bytes(contents, frame, 10)
        sizes = tf.stack([little(head[:, 7:9]), little(head[:, 5:7])], -1)
        sizes = _where((is_gif & (frame >= 0))[:, None], sizes, 0)
        first = tf.strings.join([_substr(contents, 0, tf.maximum(end, 0)), ";"])
        return _where(is_gif & (end > 0), first, contents), sizes

    return tf.cond(
        tf.reduce_any(is_gif),
        cut,
        lambda: (contents, tf.zeros(tf.stack([tf.size(kinds), 2]), tf.int64)),
    )


def _gif_walk(contents, is_gif):
    """Walks the blocks of the GIFs among the files: extensions (a label,
    then sub-blocks) and the first image (a descriptor, a colour table, a
    code size, then sub-blocks). Returns (where the first image's
    descriptor is, where its data ends), each int64 [n], -1 where none."""
    tf = _tf()
    length = tf.cast(tf.strings.length(contents), tf.int64)
    packed = read_bytes(
        contents, tf.fill(tf.shape(contents), tf.constant(10, tf.int64)), 1
    )[:, 0]
    start = 13 + _where(packed >= 128, 3 * 2 ** (packed % 8 + 1), 0)
    # state: 0 expects a block, 1 is in an extension's sub-blocks, 2 in the
    # image's; 3 is done.
    blocks, image, done = 0, 2, 3

    def step(i, pos, state, frame, end):
        head = read_bytes(contents, pos, 10)
        first = head[:, 0]
        table = _where(head[:, 9] >= 128, 3 * 2 ** (head[:, 9] % 8 + 1), 0)
        in_block = tf.equal(state, blocks)
        is_image = in_block & tf.equal(first, 0x2C)
        is_extension = in_block & tf.equal(first, 0x21)
        ends_image = tf.equal(state, image) & tf.equal(first, 0)
        frame = _where(is_image, pos, frame)
        end = _where(ends_image, pos + 1, end)
        following = _where(
            is_image, pos + 11 + table, _where(is_extension, pos + 2, pos + 1 + first)
        )
        new_state = _where(
            is_image,
            image,
            _where(
                is_extension,
                1,
                _where(in_block, done, _where(tf.equal(first, 0), blocks, state)),
            ),
        )
        stop = ends_image | (following >= length) | tf.equal(state, done)
        return i + 1, following, _where(stop, done, new_state), frame, end

    none = tf.fill(tf.shape(start), tf.constant(-1, tf.int64))
    _, _, _, frame, end = tf.while_loop(
        lambda i, pos, state, frame, end: (
            (i < MAX_GIF_BLOCKS) & tf.reduce_any(state < done)
        ),
        step,
        [tf.constant(0), start, _where(is_gif, blocks, done), none, none],
    )
    return frame, end


def bmp_bits(head):
    """The bits per pixel of BMPs whose first 30 bytes are head [..., 30]:
    1, 2, 4 or 8 for one of a palette."""
    core = _tf().equal(little(head[..., 14:18]), 12)
    return _where(core, little(head[..., 24:26]), little(head[..., 28:30]))


def bmp_with_palette(data):
    """The pixels of a BMP file of 1, 2, 4 or 8 bits per pixel, each the
    colour of the palette its bits name (TensorFlow's decoder gives the
    numbers of an 8-bit one as gray, and refuses the others). Rows of
    compressed files (RLE) are not read: running it raises
    InvalidArgumentError for them, and for a file cut short.

    Args:
      data: string, a BMP file's bytes.

    Returns:
      uint8 [height, width, 3].
    """
    tf = _tf()
    head = read_bytes(data, tf.constant(0, tf.int64), 54)
    header = little(head[14:18])
    core = tf.equal(header, 12)
    height, width = tf.unstack(_bmp_size(head))
    bits = bmp_bits(head)
    compression = _where(core, 0, little(head[30:34]))
    used = _where(core, 0, little(head[46:50]))
    colours = _where((used > 0) & (used < 2**bits), used, 2**bits)
    stride = (bits * width + 31) // 32 * 4
    offset = little(head[10:14])
    rows = tf.io.decode_raw(_substr(data, offset, stride * height), tf.uint8)
    # Raw asserts: tf.debugging's add a cond, which Grappler cannot sort.
    checks = [
        tf.raw_ops.Assert(
            condition=tf.equal(compression, 0),
            data=["A BMP of compressed rows (RLE) is not read"],
        ),
        tf.raw_ops.Assert(
            condition=tf.equal(tf.size(rows, tf.int64), stride * height),
            data=["A BMP cut short"],
        ),
    ]
    with tf.control_dependencies(checks):
        rows = tf.reshape(rows, tf.stack([height, stride]))
    # Each byte holds 8 / bits pixels, the first in its highest bits.
    shifts = tf.cast(8 - bits * (1 + tf.range(8 // bits)), tf.uint8)
    mask = tf.cast(2**bits - 1, tf.uint8)
    numbers = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(rows[:, :, None], shifts), mask
    )
    numbers = tf.reshape(numbers, tf.stack([height, -1]))[:, :width]
    # The palette: blue, green, red (and a byte unused) for each colour.
    entry = _where(core, 3, 4)
    table = read_bytes(data, 14 + header, 4 * 256)
    colour = tf.range(256, dtype=tf.int64)[:, None]
    palette = tf.gather(table, colour * entry + [2, 1, 0])
    palette = tf.cast(_where(colour < colours, palette, 0), tf.uint8)
    image = tf.gather(palette, tf.cast(numbers, tf.int32))
    # Rows are stored from the bottom up, unless the height is negative.
    bottom_up = core | (little(head[22:26]) < 2**31)
    rows = tf.range(height)
    # By a gather, not a cond: a cond here would cost every file decoded.
    return tf.gather(image, _where(bottom_up, height - 1 - rows, rows))


def webp_first_frames(contents, kinds):
    """The WebP files as TensorFlow's decoder can take them: of an
    animation, its chunks up to its first frame alone, with the flag of
    alpha set (the decoder writes four channels of every animation, and
    without the flag gives it room for three). A loop runs only for a batch
    with an animation.

    Args:
      contents: string [n], the files' bytes.
      kinds: their kind().

    Returns:
      string [n].
    """
    tf = _tf()
    head = read_bytes(contents, tf.zeros_like(contents, tf.int64), 21)
    animated = (
        tf.equal(kinds, WEBP)
        & _is(head[:, 12:16], b"VP8X")
        & tf.equal(head[:, 20] // 2 % 2, 1)
    )
    length = tf.cast(tf.strings.length(contents), tf.int64)

    def step(i, pos, end):
        chunk = read_bytes(contents, pos, 8)
        following = pos + 8 + little(chunk[:, 4:8]) + little(chunk[:, 4:8]) % 2
        end = _where(_is(chunk[:, :4], b"ANMF") & (end < 0), following, end)
        return i + 1, _where(pos + 8 <= length, following, pos), end

    def cut():
        _, _, end = tf.while_loop(
            lambda i, pos, end: (i < MAX_CHUNKS)
            & tf.reduce_any(animated & (pos + 8 <= length) & (end < 0)),
            step,
            [tf.constant(0), tf.fill(tf.shape(length), tf.constant(12, tf.int64)),
             tf.fill(tf.shape(length), tf.constant(-1, tf.int64))],
        )  # fmt: skip
        end = tf.minimum(end, length)
        size = tf.stack([(end - 8) // 256**i % 256 for i in range(4)], -1)
        first = tf.strings.join(
            [
                _substr(contents, 0, 4),
                _as_bytes(tf.clip_by_value(size, 0, 255)),
                _substr(contents, 8, 12),
                _as_bytes(tf.bitwise.bitwise_or(head[:, 20:21], 16)),
                _substr(contents, 21, tf.maximum(end - 21, 0)),
            ]
        )
        return _where(animated & (end > 21), first, contents)

    return tf.cond(tf.reduce_any(animated), cut, lambda: contents)


def _as_bytes(values):
    """Strings [n] of the bytes int64 [n, k]."""
    tf = _tf()
    table = tf.constant([bytes([i]) for i in range(256)])
    return tf.strings.reduce_join(tf.gather(table, values), axis=-1)
