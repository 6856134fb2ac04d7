"""Whether a --batch_size fits in this machine's memory, asked before any work.

Without the check, a batch too large grows the process until the system
kills it, without a word.

    memory.check(model.inference, shape, batch_size, "train",
                 queue_images=..., dtype=...)

The binary hands it the model, the images it takes and how many the input
holds, from the data it is about to read.
"""

import functools
import math
import os

import tensorflow as tf

from support.errors import Error

# What a process of the model takes besides its batches: TensorFlow, the
# graph and the weights (measured: about 0.6 GB at --batch_size=1).
BASE_BYTES = 0.6e9


def needed(inference, shape, images, queue_images, dtype=tf.float32):
    """About how many bytes training or evaluating a model takes.

    Each image of a batch holds the outputs of every layer of inference();
    with the tutorial's network a training or an evaluation step takes
    about what these add up to in one forward pass. Each queued image is
    shape's floats.

    Args:
      inference: the model's inference(images) function.
      shape: (height, width, depth) of the images the model takes.
      images: images that a step works on.
      queue_images: images held in the input queues.
      dtype: of the images the model takes.
    """
    per_image = _bytes_per_image(inference, shape, dtype)
    return BASE_BYTES + images * per_image + queue_images * 4 * math.prod(shape)


# The model's graph, built to count its outputs, once per model, image shape
# and type: a process that runs the binaries one after another builds it once.
@functools.cache
def _bytes_per_image(inference, shape, dtype):
    """The bytes of every layer's floating-point outputs for one image."""
    with tf.Graph().as_default() as graph:
        inference(tf.compat.v1.placeholder(dtype, [1, *shape]))
    return sum(
        t.shape.num_elements() * t.dtype.size
        for op in graph.get_operations()
        for t in op.outputs
        if t.dtype.is_floating and t.shape.rank and t.shape.is_fully_defined()
        and t.shape[0] == 1
    )  # fmt: skip


def machine():
    """The bytes of memory this process may use: the machine's, or its
    control group's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
    except OSError:
        limit = "max"
    return min(total, int(limit)) if limit.isdigit() else total


def check(inference, shape, batch_size, doing, queue_images=0, towers=1,
          dtype=tf.float32):  # fmt: skip
    """Refuses a --batch_size whose needs exceed the machine's memory.

    Args:
      inference: the model's inference(images) function.
      shape: (height, width, depth) of the images the model takes.
      batch_size: images per batch (--batch_size).
      doing: "train", "evaluate" or "classify", for the message.
      queue_images: images held in the input queues.
      towers: batches a step works on at once.
      dtype: of the images the model takes.

    Raises:
      Error: it needs more.
    """
    bytes_needed = needed(inference, shape, batch_size * towers, queue_images, dtype)
    have = machine()
    if bytes_needed > have:
        raise Error(
            "--batch_size=%d needs about %.1f GB of memory to %s, more than the "
            "%.1f GB of this machine. Lower --batch_size."
            % (batch_size, bytes_needed / 1e9, doing, have / 1e9)
        )
