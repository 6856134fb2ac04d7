"""Trains the model (cifar10.py) on several GPUs with synchronous updates,
on the data set that cifar10_input.py describes.

    python cifar10_multi_gpu_train.py --num_gpus=2

Each GPU runs a copy of the model (a tower) on its own batch. The towers
share one set of variables, kept on the CPU; each step averages their
gradients and applies them once, so N towers train like one device with an
N times larger batch.

Without GPUs the towers run on as many CPU devices, which share the
machine's cores: the graph and its checkpoints are the same, the speed is
not.

Everything else is cifar10_train.py's: this binary builds the towers'
graph and trains it in cifar10_train.train(), with the same flags,
checkpoints (either binary resumes the other's), log line, Ctrl+C and
cluster flags (on a cluster, each worker runs its towers and the parameter
servers hold the one set of variables).
"""

from support import startup

if __name__ == "__main__":
    startup.before_tensorflow()

import functools

import tensorflow as tf

import cifar10
import cifar10_input
import cifar10_train

FLAGS = tf.compat.v1.flags.FLAGS
# The training binary's flags, all of which apply here, beside this one.
tf.compat.v1.flags.adopt_module_key_flags(cifar10_train)

tf.compat.v1.flags.DEFINE_integer(
    "num_gpus",
    1,
    "How many GPUs (towers) to use; without GPUs, as many CPU devices, which "
    "share the cores.",
    lower_bound=1,
)
startup.use_flags(
    __name__,
    batch_size="Images in each tower's batch: a step trains on --num_gpus of them.",
)


def towers(devices, task, data):
    """The training graph: a tower on each device, each on a batch of its
    own, and one update from the average of their gradients.

    Args:
      devices: where to put the towers, from tower_devices().
      task: this process's task (cluster.this_task()): where the variables
        go, and how the step applies its gradients.
      data: what --data_dir holds, from cifar10.data_set().

    Returns:
      (the last tower's loss, train_op, the summaries to write).
    """
    print_towers(devices)
    with task.device(), tf.device("/cpu:0"):
        global_step = tf.compat.v1.train.get_or_create_global_step()
        batch_queue = prefetch_queue(len(devices))
        tower_grads, loss = tower_gradients(batch_queue, devices, data.num_classes)
        # The loss summaries, learning rate, moving averages and the step
        # itself are cifar10.train()'s, applied to the average of the
        # towers' gradients.
        train_op = cifar10.train(
            loss,
            global_step,
            data.num_train,
            grads_and_vars=average_gradients(tower_grads),
            apply_fn=task.apply_fn,
        )
    return loss, train_op, last_tower_summaries(len(devices))


def print_towers(devices):
    print(
        "Running %d tower(s) on %s%s."
        % (
            len(devices),
            ", ".join(devices),
            " (no GPU found)" if devices[0].startswith("/cpu") else "",
        )
    )


def prefetch_queue(num_towers):
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


def tower_gradients(batch_queue, devices, num_classes):
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
                logits = cifar10.inference(image_batch, num_classes)
                loss = cifar10.loss(logits, label_batch)
                # The next tower reuses this tower's variables.
                tf.compat.v1.get_variable_scope().reuse_variables()
                variables = tf.compat.v1.trainable_variables()
                grads = tf.compat.v1.gradients(loss, variables)
                tower_grads.append(list(zip(grads, variables, strict=True)))
    return tower_grads, loss


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


def last_tower_summaries(num_towers):
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


def tower_devices():
    """The devices to put the towers on: the GPUs, or CPU devices if none.

    Raises:
      startup.Error: more towers asked for than GPUs present.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return ["/cpu:%d" % i for i in range(FLAGS.num_gpus)]
    if FLAGS.num_gpus > len(gpus):
        raise startup.Error(
            "--num_gpus=%d, but this machine has %d GPU(s). Pass --num_gpus=%d or "
            "fewer." % (FLAGS.num_gpus, len(gpus), len(gpus))
        )
    return ["/gpu:%d" % i for i in range(FLAGS.num_gpus)]


def session_config(devices):
    """The session config for the towers."""
    config = cifar10.session_config(log_device_placement=FLAGS.log_device_placement)
    # Ops without a GPU kernel fall back to the CPU instead of failing.
    config.allow_soft_placement = True
    if devices[0].startswith("/cpu"):
        config.device_count["CPU"] = len(devices)
    return config


@startup.user_errors(cifar10_input.DataError)
def main(argv):
    """Trains for --max_steps steps on --num_gpus towers, in the training loop
    of cifar10_train.py."""
    del argv
    devices = tower_devices()
    cifar10_train.train(
        functools.partial(towers, devices),
        towers=len(devices),
        config=session_config(devices),
    )


if __name__ == "__main__":
    startup.run(main)
