"""Packing one's own images: cifar10_pack.py on small JPEG files in 10 class
folders (the rate it reports, the rate of its whole run, and its peak
memory), beside the rate of decoding and fitting the same files alone, from
memory, two batches at a time as the packer does, in this process, and the
same with TensorFlow's fast JPEG decoding (in turns); then its peak memory
on a folder of 2 GB files and a 16000x16000 PNG."""

import concurrent.futures
import os
import re
import statistics

import tensorflow as tf

import cifar10_input
import cifar10_pack
from benchmarks import common
from harness import fake_cifar

ROWS = common.rows("""
cifar10_pack.py, the JPEG files           | pack_rate                | %.0f images/sec
    the same, start-up included           | pack_rate_end_to_end     | %.0f images/sec
decoding and fitting alone                | decode_rate              | %.0f images/sec
    packing/decoding                      | pack_ratio               | %.3f
the same, TensorFlow's fast JPEG decoding | decode_fast_rate         | %.0f images/sec
    accurate/fast                         | accurate_ratio           | %.3f
peak RSS, cifar10_pack.py                 | pack_peak_rss_mb         | %.0f MB
    on 2 GB files, a 16000x16000 PNG      | pack_hostile_peak_rss_mb | %.0f MB
""")


def measure(run):
    print(
        "writing %d JPEG files, then packing them ..." % (10 * run.size.images),
        flush=True,
    )
    image_dir = run.folder("images")
    files = sorted(
        fake_cifar.write_image_folders(
            image_dir, ["class%d" % i for i in range(10)], run.size.images, varied=False
        )
    )
    out, rss, seconds = run.children.run_measured(
        "cifar10_pack.py",
        "--image_dir=%s" % image_dir,
        "--data_dir=%s" % run.folder("packed"),
    )
    rate = float(re.search(r"([\d.]+) images/sec\)", out).group(1))
    contents = []
    for path in files[:: max(len(files) // 5000, 1)]:
        with open(path, "rb") as f:
            contents.append(f.read())
    figures = decoding_rates(run, contents)
    return {
        "pack_rate": rate,
        "pack_rate_end_to_end": len(files) / seconds,
        **figures,
        "pack_ratio": rate / figures["decode_rate"],
        "accurate_ratio": figures["decode_rate"] / figures["decode_fast_rate"],
        "pack_peak_rss_mb": rss,
        "pack_hostile_peak_rss_mb": pack_hostile(run),
    }


def decoding_rates(run, contents):
    """The packer's decoding and the fast one, on the files' contents, two
    batches at a time, in turns: {"decode_rate": ..., "decode_fast_rate": ...}."""
    with (
        tf.Graph().as_default(),
        tf.compat.v1.Session() as sess,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        decoders = {
            "decode_rate": cifar10_pack._decoder(sess),
            "decode_fast_rate": _fast_decoder(sess),
        }
        batch = min(cifar10_pack.BATCH_FILES, len(contents) // 2)
        position = [0]

        def run_once(decode):
            # Two batches at once, as the packer decodes them.
            starts = [(position[0] + i * batch) % (len(contents) - batch + 1)
                      for i in range(2)]  # fmt: skip
            list(pool.map(lambda s: decode(contents[s : s + batch]), starts))
            position[0] += 2 * batch

        rates = common.steps_in_turns(
            {key: lambda d=decode: run_once(d) for key, decode in decoders.items()},
            run.size.windows,
            lambda step: common.median_rate(
                step, 2 * batch, 1, min(4, run.size.steps), 0
            ),
        )
    return {key: statistics.median(values) for key, values in rates.items()}


def _fast_decoder(sess):
    """Decoding and fitting with TensorFlow's default, faster JPEG
    transform, and no EXIF: what the packer's accurate decoding costs."""
    contents = tf.compat.v1.placeholder(tf.string, [None])

    def decode(data):
        image = tf.io.decode_image(data, 3, expand_animations=False)
        return cifar10_input.fit_images(image[None])[0]

    shape = tf.TensorSpec(cifar10_pack.SHAPE, tf.uint8)
    images = tf.map_fn(decode, contents, fn_output_signature=shape)
    return lambda data: sess.run(images, {contents: data})


def pack_hostile(run):
    """The packer's peak RSS in MB on a folder of 200 images (fewer at a
    size of fewer) beside what would take memory: a 2 GB video, a 2 GB file
    named .jpg, a PNG of 16000x16000 pixels (768 MB decoded) and one of
    6000x6000 (108 MB)."""
    print("packing a folder of huge files ...", flush=True)
    image_dir = run.folder("hostile")
    fake_cifar.write_image_folders(image_dir, ["a", "b"], min(100, run.size.images))
    for name in ("a/holiday.mov", "b/huge.jpg"):
        with open(os.path.join(image_dir, name), "wb") as f:
            f.truncate(2 * 2**30)  # sparse
    for name, side in (("a/bomb.png", 16000), ("b/screen.png", 6000)):
        with open(os.path.join(image_dir, name), "wb") as f:
            f.write(fake_cifar.png_of_one_colour(side, side))
    _, rss, _ = run.children.run_measured(
        "cifar10_pack.py",
        "--image_dir=%s" % image_dir,
        "--data_dir=%s" % run.folder("hostile_packed"),
    )
    return rss
