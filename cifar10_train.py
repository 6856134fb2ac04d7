"""Trains the model (cifar10.py) on one device, on the data set that
cifar10_input.py describes.

    python cifar10_train.py --max_steps=3000

Every --log_frequency steps it prints

    <date time>: step N, loss = L.LL (E.E examples/sec; S.SSS sec/batch)

with the rates averaged since the previous line; when --max_steps is less
than a day away at the pace so far, the line goes on

    ..., H:MM:SS left to step M

Summaries for TensorBoard go to --train_dir every --save_summaries_steps
steps, and a checkpoint model.ckpt-<step> every --save_checkpoint_steps
steps and at the end.

A run that finds a checkpoint in --train_dir continues from it; pass
--fresh_start to begin again (the old folder is kept under a new name).
Ctrl+C or SIGTERM stops after the current step and saves a checkpoint.
With the cluster flags (--ps_hosts, --worker_hosts, --job_name, --task_index,
--sync_replicas) or TF_CONFIG it trains as one task of a cluster; see
docs/cluster.md.
"""

from support import startup

if __name__ == "__main__":
    startup.before_tensorflow()

import tensorflow as tf

import cifar10
import cifar10_input
from support import (
    bfloat16,
    checkpoints,
    cluster,
    download,
    memory,
    run_folder,
    signals,
    training,
)

FLAGS = tf.compat.v1.flags.FLAGS

tf.compat.v1.flags.DEFINE_string(
    "train_dir",
    "/tmp/%s_train" % cifar10.__name__,
    "Folder for event logs and checkpoints (evaluation's --checkpoint_dir); "
    "training resumes from the newest checkpoint found there.",
)
checkpoints.refuse_brackets("train_dir")
tf.compat.v1.flags.DEFINE_integer(
    "max_steps",
    1000000,
    "The global step to stop at: training ends when the step count, which "
    "goes on across runs in --train_dir, reaches it.",
    lower_bound=1,
)
tf.compat.v1.flags.DEFINE_integer(
    "log_frequency", 10, "How often (in steps) to print the step line.", lower_bound=1
)
tf.compat.v1.flags.DEFINE_boolean(
    "log_device_placement", False, "Log the device each operation runs on."
)
# --help lists these of the model's and the data's flags, and the flags of
# the training folder and of the cluster, beside this binary's own.
startup.use_flags(
    __name__, "batch_size", "data_dir", "data_url", "data_md5", "use_fp16",
    "mixed_precision", "min_queue_examples", "num_preprocess_threads",
)  # fmt: skip
for module in (run_folder, cluster):
    tf.compat.v1.flags.adopt_module_key_flags(module)


def train(graph=None, towers=1, config=None):
    """Trains for --max_steps steps, resuming from --train_dir.

    Args:
      graph: graph(task, data) builds the training graph: (loss, train_op,
        summary_op). one_device() below, or cifar10_multi_gpu_train.py's.
      towers: the batches a step of graph trains on at once.
      config: the session's config; the model's when None.
    """
    task = cluster.this_task()  # this machine alone, unless told otherwise
    if not task.trains:
        return task.serve()
    # The data first, so that a start that fails there leaves no --train_dir.
    download.fetch(
        FLAGS.data_url, FLAGS.data_md5, FLAGS.data_dir, cifar10_input.DATA_FOLDER,
        sizes={cifar10_input.DATA_MD5: cifar10_input.ARCHIVE_BYTES},
    )  # fmt: skip
    data = cifar10.data_set()
    memory.check(
        cifar10.inference, cifar10.IMAGE_SHAPE, FLAGS.batch_size, "train",
        queue_images=cifar10.queued_images(data, training=True, towers=towers),
        towers=towers, dtype=cifar10.float_type(),
    )  # fmt: skip
    with run_folder.TrainDir(FLAGS.train_dir, chief=task.is_chief) as train_dir:
        if train_dir.reached(FLAGS.max_steps):
            return
        train_dir.keep_class_names(data.class_names)
        with tf.Graph().as_default():
            loss, train_op, summary_op = (graph or one_device)(task, data)
            scaffold = train_dir.scaffold(summary_op)
            progress = training.ProgressHook(
                loss, FLAGS.batch_size * towers, log_frequency=FLAGS.log_frequency,
                train_dir=FLAGS.train_dir, num_towers=towers,
                shared_step=task.shared_step, last_step=FLAGS.max_steps,
            )  # fmt: skip
            bf16 = FLAGS.mixed_precision == "bf16"
            if bf16:
                bfloat16.say_if_emulated("--mixed_precision=bf16")
            config = config or cifar10.session_config(
                log_device_placement=FLAGS.log_device_placement
            )
            with signals.StopOnSignal(saves_checkpoint=task.is_chief) as stop:
                with tf.compat.v1.train.MonitoredSession(
                    session_creator=task.session_creator(
                        scaffold, config, train_dir, bf16=bf16
                    ),
                    # The log line first, to stop a diverged step unsaved.
                    hooks=[
                        progress,
                        tf.compat.v1.train.StopAtStepHook(last_step=FLAGS.max_steps),
                        *task.hooks(),
                        *train_dir.saving_hooks(scaffold),
                        stop.hook,
                    ],
                ) as mon_sess:
                    while not stop.received and not mon_sess.should_stop():
                        mon_sess.run(train_op)
    train_dir.report(progress, stop.received)


def one_device(task, data):
    """The training graph on one device: the model's prediction, its loss,
    and one step of training.

    Args:
      task: this process's task (cluster.this_task()): where the variables
        go, and how the step applies its gradients.
      data: what --data_dir holds, from cifar10.data_set().

    Returns:
      (loss, train_op, None: write every summary of the graph).
    """
    with task.device():
        global_step = tf.compat.v1.train.get_or_create_global_step()

        # The input pipeline stays on the CPU even on a GPU machine: its
        # queues and image ops are CPU work and would only slow a GPU.
        with tf.device("/cpu:0"):
            images, labels = cifar10.distorted_inputs()

        logits = cifar10.inference(images, data.num_classes)
        loss = cifar10.loss(logits, labels)
        train_op = cifar10.train(
            loss, global_step, data.num_train, apply_fn=task.apply_fn
        )
    return loss, train_op, None


@startup.user_errors(cifar10_input.DataError)
def main(argv):
    del argv
    train()


if __name__ == "__main__":
    startup.run(main)
