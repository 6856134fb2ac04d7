"""Trains the CIFAR-10 model on several GPUs with synchronous updates.

    python cifar10_multi_gpu_train.py --num_gpus=2

Each GPU runs a copy of the model (a tower) on its own batch. The towers
share one set of variables, kept on the CPU; each step averages their
gradients and applies them once, so N towers train like one device with an
N times larger batch, in about the time of one batch.

Without GPUs the towers run on as many CPU devices, which share the
machine's cores: the graph and its checkpoints are the same, the speed is
not.

The training loop, checkpoints, resume, Ctrl+C, the log line and the
cluster flags are cifar10_loop.py's, as for cifar10_train.py: on a cluster,
each worker runs its towers and the parameter servers hold the one set of
variables.
"""

import cifar10_app

import sys

import tensorflow as tf

import cifar10
import cifar10_input
import cifar10_loop

FLAGS = tf.compat.v1.flags.FLAGS
# --help lists the shared flags beside this binary's own.
tf.compat.v1.flags.adopt_module_key_flags(cifar10)
tf.compat.v1.flags.adopt_module_key_flags(cifar10_loop)

tf.compat.v1.flags.DEFINE_integer(
    "num_gpus", 1, "How many GPUs (towers) to use.", lower_bound=1
)


def average_gradients(tower_grads):
    """Averages each variable's gradient over the towers.

    Args:
      tower_grads: one list of (gradient, variable) pairs per tower, every
        list in the same variable order.

    Returns:
      One list of (average gradient, variable) pairs. A None gradient (the
      tower's loss does not depend on the variable) counts as zero; a
      variable with no gradient in any tower keeps None, which the optimizer
      skips.
    """
    average_grads = []
    for grad_and_vars in zip(*tower_grads, strict=True):
        var = grad_and_vars[0][1]
        grads = [g for g, _ in grad_and_vars if g is not None]
        grad = tf.add_n(grads) / len(grad_and_vars) if grads else None
        average_grads.append((grad, var))
    return average_grads


def _tower_devices():
    """The devices to put the towers on: the GPUs, or CPU devices if none.

    Raises:
      cifar10_loop.TrainingError: more towers asked for than GPUs present.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return ["/cpu:%d" % i for i in range(FLAGS.num_gpus)]
    if FLAGS.num_gpus > len(gpus):
        raise cifar10_loop.TrainingError(
            "--num_gpus=%d, but this machine has %d GPU(s). Pass --num_gpus=%d or "
            "fewer." % (FLAGS.num_gpus, len(gpus), len(gpus))
        )
    return ["/gpu:%d" % i for i in range(FLAGS.num_gpus)]


def _session_config():
    """The session config for the towers."""
    devices = _tower_devices()
    config = cifar10_loop.session_config()
    # Ops without a GPU kernel fall back to the CPU instead of failing.
    config.allow_soft_placement = True
    if devices[0].startswith("/cpu"):
        config.device_count["CPU"] = len(devices)
    return config


def build_graph(apply_fn=None):
    """The multi-tower training graph, on the devices of _tower_devices().

    Args:
      apply_fn: passed on to cifar10.train().

    Returns:
      (train_op, loss, summary_op): the training step, the last tower's loss
      to log, and the summaries to write.
    """
    devices = _tower_devices()
    print(
        "Running %d tower(s) on %s%s."
        % (
            len(devices),
            ", ".join(devices),
            " (no GPU found)" if devices[0].startswith("/cpu") else "",
        )
    )
    with tf.device("/cpu:0"):
        global_step = tf.compat.v1.train.get_or_create_global_step()
        batch_queue = _prefetch_queue(len(devices))
        tower_grads, loss = _tower_gradients(batch_queue, devices)
        # The loss summaries, learning rate, moving averages and the step
        # itself are cifar10.train()'s, applied to the averaged gradients.
        train_op = cifar10.train(
            loss, global_step, average_gradients(tower_grads), apply_fn=apply_fn
        )
    return train_op, loss, _last_tower_summaries(len(devices))


def _prefetch_queue(num_towers):
    """One input pipeline on the CPU, feeding a small queue of ready batches
    from which each tower takes its own."""
    images, labels = cifar10.distorted_inputs()
    batch_queue = tf.queue.FIFOQueue(
        capacity=2 * num_towers,
        dtypes=[images.dtype, labels.dtype],
        shapes=[images.shape, labels.shape],
        name="prefetch_queue",
    )
    tf.compat.v1.train.add_queue_runner(
        tf.compat.v1.train.QueueRunner(
            batch_queue, [batch_queue.enqueue([images, labels])]
        )
    )
    return batch_queue


def _tower_gradients(batch_queue, devices):
    """A tower on each device, each on a batch of its own.

    Returns:
      (one list of (gradient, variable) pairs per tower, the last tower's
      loss).
    """
    tower_grads = []
    with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope()):
        for i, device in enumerate(devices):
            with tf.device(device), tf.name_scope("%s_%d" % (cifar10.TOWER_NAME, i)):
                image_batch, label_batch = batch_queue.dequeue()
                # cifar10.loss() sums this tower's own terms: those made
                # under its name scope.
                loss = cifar10.loss(cifar10.inference(image_batch), label_batch)
                # The next tower reuses this tower's variables.
                tf.compat.v1.get_variable_scope().reuse_variables()
                variables = tf.compat.v1.trainable_variables()
                grads = tf.compat.v1.gradients(loss, variables)
                tower_grads.append(list(zip(grads, variables, strict=True)))
    return tower_grads, loss


def _last_tower_summaries(num_towers):
    """The graph's summaries but the other towers' activation summaries: every
    tower has the same ones, and the last tower's are kept."""
    other_towers = tuple(
        "%s_%d/" % (cifar10.TOWER_NAME, i) for i in range(num_towers - 1)
    )
    return tf.compat.v1.summary.merge(
        [
            s
            for s in tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.SUMMARIES)
            if not s.op.name.startswith(other_towers)
        ]
    )


def main(argv):
    del argv
    try:
        cifar10_loop.run(
            build_graph,
            examples_per_step=FLAGS.batch_size * FLAGS.num_gpus,
            num_towers=FLAGS.num_gpus,
            config=_session_config(),
        )
    except (cifar10_input.DataError, cifar10_app.Error) as e:
        sys.exit("Error: %s" % e)


if __name__ == "__main__":
    cifar10_app.run(main)
