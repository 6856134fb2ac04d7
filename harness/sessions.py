"""A session with the input queues running, for in-process tests and the
benchmark."""

import contextlib

import tensorflow as tf


@contextlib.contextmanager
def queue_session(target=""):
    """A session on the default graph with the variables initialized and the
    queue runners started; stops and joins them on exit.

    Args:
      target: the server to run it on (a tf.distribute.Server's target), or
        "" for this process.
    """
    with tf.compat.v1.Session(target) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        sess.run(tf.compat.v1.local_variables_initializer())
        coord = tf.train.Coordinator()
        threads = tf.compat.v1.train.start_queue_runners(sess=sess, coord=coord)
        try:
            yield sess
        finally:
            coord.request_stop()
            coord.join(threads, stop_grace_period_secs=10)
