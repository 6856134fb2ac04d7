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
cluster flags are those of cifar10_train.py: on a cluster, each worker runs
its towers and the parameter servers hold the one set of variables.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keep TF's C++ chatter quiet.
# oneDNN's CPU kernels, which TensorFlow turns on by itself only on some CPUs,
# make the training step about 1.4x faster on plain AVX2 machines.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402

import cifar10  # noqa: E402
import cifar10_cluster  # noqa: E402
import cifar10_train  # noqa: E402

FLAGS = tf.compat.v1.flags.FLAGS
# --help lists the shared flags beside this binary's own.
tf.compat.v1.flags.adopt_module_key_flags(cifar10)
tf.compat.v1.flags.adopt_module_key_flags(cifar10_train)
tf.compat.v1.flags.adopt_module_key_flags(cifar10_cluster)

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
    """The devices to put the towers on, and the session config to match.

    Raises:
      cifar10_train.TrainingError: more towers asked for than GPUs present.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if FLAGS.num_gpus > len(gpus):
            raise cifar10_train.TrainingError(
                "--num_gpus=%d, but this machine has %d GPU(s). Pass "
                "--num_gpus=%d or fewer." % (FLAGS.num_gpus, len(gpus), len(gpus))
            )
        devices = ["/gpu:%d" % i for i in range(FLAGS.num_gpus)]
        device_count = {}
    else:
        devices = ["/cpu:%d" % i for i in range(FLAGS.num_gpus)]
        device_count = {"CPU": FLAGS.num_gpus}
    print(
        "Running %d tower(s) on %s%s."
        % (len(devices), ", ".join(devices), "" if gpus else " (no GPU found)")
    )
    config = tf.compat.v1.ConfigProto(
        # Ops without a GPU kernel fall back to the CPU instead of failing.
        allow_soft_placement=True,
        log_device_placement=FLAGS.log_device_placement,
        device_count=device_count,
    )
    return devices, config


def train(cluster=None):
    """Builds the multi-tower training graph and runs it.

    Args:
      cluster: a cifar10_cluster.Cluster to train on as one of its workers,
        or None for this machine alone.
    """
    devices, config = _tower_devices()
    with (
        tf.Graph().as_default(),
        cifar10_cluster.device_scope(cluster),
        tf.device("/cpu:0"),
    ):
        global_step = tf.compat.v1.train.get_or_create_global_step()

        # One input pipeline on the CPU, feeding a small queue of ready
        # batches from which each tower takes its own.
        images, labels = cifar10.distorted_inputs()
        batch_queue = tf.queue.FIFOQueue(
            capacity=2 * len(devices),
            dtypes=[images.dtype, labels.dtype],
            shapes=[images.shape, labels.shape],
            name="prefetch_queue",
        )
        tf.compat.v1.train.add_queue_runner(
            tf.compat.v1.train.QueueRunner(
                batch_queue, [batch_queue.enqueue([images, labels])]
            )
        )

        tower_grads = []
        with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope()):
            for i, device in enumerate(devices):
                with (
                    tf.device(device),
                    tf.name_scope("%s_%d" % (cifar10.TOWER_NAME, i)),
                ):
                    image_batch, label_batch = batch_queue.dequeue()
                    # cifar10.loss() sums this tower's own terms: those made
                    # under its name scope.
                    loss = cifar10.loss(cifar10.inference(image_batch), label_batch)
                    # The next tower reuses this tower's variables.
                    tf.compat.v1.get_variable_scope().reuse_variables()
                    variables = tf.compat.v1.trainable_variables()
                    grads = tf.compat.v1.gradients(loss, variables)
                    tower_grads.append(list(zip(grads, variables, strict=True)))

        # The loss summaries, learning rate, moving averages and the step
        # itself are cifar10.train()'s, applied to the averaged gradients.
        train_op = cifar10.train(
            loss,
            global_step,
            average_gradients(tower_grads),
            wrap_optimizer=cluster and cluster.wrap_optimizer,
        )

        # Every tower has the same activation summaries; keep the last one's.
        other_towers = tuple(
            "%s_%d/" % (cifar10.TOWER_NAME, i) for i in range(len(devices) - 1)
        )
        summary_op = tf.compat.v1.summary.merge(
            [
                s
                for s in tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.SUMMARIES)
                if not s.op.name.startswith(other_towers)
            ]
        )
        cifar10_train.run_training(
            train_op,
            loss,
            examples_per_step=FLAGS.batch_size * len(devices),
            num_towers=len(devices),
            summary_op=summary_op,
            config=config,
            cluster=cluster,
        )


def main(argv=None):
    del argv
    cifar10_train.run_main(train)


if __name__ == "__main__":
    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    app.run(main)
