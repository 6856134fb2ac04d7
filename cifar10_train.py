"""Trains the model (cifar10.py) on one device, on the data set that
cifar10_input.py describes.

    python cifar10_train.py --train_dir=/tmp/cifar10_train

Every --log_frequency steps it prints

    <date time>: step N, loss = L.LL (E.E examples/sec; S.SSS sec/batch)

with the rates averaged since the previous line. Summaries for TensorBoard
go to --train_dir every --save_summaries_steps steps, and a checkpoint
model.ckpt-<step> every --save_checkpoint_steps steps and at the end.

A run that finds a checkpoint in --train_dir continues from it; pass
--fresh_start to begin again (the old folder is kept under a new name).
Ctrl+C or SIGTERM stops after the current step and saves a checkpoint.
With the cluster flags (--ps_hosts, --worker_hosts, --job_name, --task_index,
--sync_replicas) or TF_CONFIG it trains as one task of a cluster; see the
README.
"""

from support import startup

if __name__ == "__main__":
    startup.before_tensorflow()

import tensorflow as tf

import cifar10
import cifar10_input
from support import (
    cluster,
    download,
    memory,
    run_folder,
    signals,
    training,
)

FLAGS = tf.compat.v1.flags.FLAGS
# --help lists the flags of the model, the data and training beside these.
for module in (cifar10, run_folder, training, cluster):
    tf.compat.v1.flags.adopt_module_key_flags(module)


def train():
    """Trains for --max_steps steps, resuming from --train_dir."""
    task = cluster.this_task()  # this machine alone, unless told otherwise
    if not task.trains:
        return task.serve()
    memory.check(cifar10.inference, cifar10_input, "train")
    with run_folder.TrainDir(chief=task.is_chief) as train_dir:
        if train_dir.reached(FLAGS.max_steps):
            return
        download.maybe_download_and_extract(cifar10_input)
        data = cifar10.data_set()
        train_dir.keep_class_names(data.class_names)
        with tf.Graph().as_default():
            with task.device():
                global_step = tf.compat.v1.train.get_or_create_global_step()

                # The input pipeline stays on the CPU even on a GPU machine:
                # its queues and image ops are CPU work and would only slow a
                # GPU.
                with tf.device("/cpu:0"):
                    images, labels = cifar10.distorted_inputs()

                # The model's prediction, its loss, and one step of training.
                logits = cifar10.inference(images, data.num_classes)
                loss = cifar10.loss(logits, labels)
                train_op = cifar10.train(
                    loss, global_step, data.num_train, apply_fn=task.apply_fn
                )

            scaffold = train_dir.scaffold()
            progress = training.ProgressHook(
                loss, FLAGS.batch_size, shared_step=task.shared_step
            )
            config = cifar10.session_config(
                log_device_placement=FLAGS.log_device_placement
            )
            with signals.StopOnSignal(saves_checkpoint=task.is_chief) as stop:
                with tf.compat.v1.train.MonitoredSession(
                    session_creator=task.session_creator(scaffold, config, train_dir),
                    # The log line first: it stops a diverged step before
                    # anything saves it.
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


def main(argv):
    del argv
    train()


if __name__ == "__main__":
    startup.run(main, cifar10_input.DataError)
