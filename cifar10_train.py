"""Trains the CIFAR-10 model on one device.

    python cifar10_train.py --train_dir=/tmp/cifar10_train

Every --log_frequency steps it prints

    <date time>: step N, loss = L.LL (E.E examples/sec; S.SSS sec/batch)

with the rates averaged since the previous line. Summaries for TensorBoard
go to --train_dir every --save_summaries_steps steps, and a checkpoint
model.ckpt-<step> every --save_checkpoint_steps steps and at the end.

A run that finds a checkpoint in --train_dir continues from it; pass
--fresh_start to begin again (the old folder is kept under a new name).
Ctrl+C or SIGTERM stops after the current step and saves a checkpoint.

This file builds the graph; the loop that runs it is cifar10_loop.py's,
shared with cifar10_multi_gpu_train.py. With the cluster flags (--ps_hosts,
--worker_hosts, --job_name, --task_index, --sync_replicas) it trains as one
process of a cluster; see cifar10_cluster.py and the README.
"""

import cifar10_app

import sys

import tensorflow as tf

import cifar10
import cifar10_input
import cifar10_loop

FLAGS = tf.compat.v1.flags.FLAGS
# --help lists the shared and training flags beside this binary's own.
tf.compat.v1.flags.adopt_module_key_flags(cifar10)
tf.compat.v1.flags.adopt_module_key_flags(cifar10_loop)


def build_graph(apply_fn=None):
    """The single-device training graph.

    Args:
      apply_fn: passed on to cifar10.train().

    Returns:
      (train_op, loss, None): the training step, the loss to log, and None
      for all of the graph's summaries.
    """
    global_step = tf.compat.v1.train.get_or_create_global_step()

    # The input pipeline stays on the CPU even on a GPU machine: its queues
    # and image ops are CPU work and would only slow a GPU.
    with tf.device("/cpu:0"):
        images, labels = cifar10.distorted_inputs()

    logits = cifar10.inference(images)
    loss = cifar10.loss(logits, labels)
    train_op = cifar10.train(loss, global_step, apply_fn=apply_fn)
    return train_op, loss, None


def main(argv):
    del argv
    try:
        cifar10_loop.run(build_graph, examples_per_step=FLAGS.batch_size)
    except (cifar10_input.DataError, cifar10_app.Error) as e:
        sys.exit("Error: %s" % e)


if __name__ == "__main__":
    cifar10_app.run(main)
