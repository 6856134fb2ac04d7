"""Ctrl+C and SIGTERM stop training after the current step, with a checkpoint.

    with signals.StopOnSignal() as stop:
        with tf.compat.v1.train.MonitoredSession(creator, hooks + [stop.hook]) as sess:
            while not stop.received and not sess.should_stop():
                sess.run(train_op)

The first signal asks training to stop after the current step; leaving the
session then saves a checkpoint. While the input queues fill before the
first step, training stops at once instead: stop.hook (last among the hooks)
waits for them in Python, where a signal can end the wait. A second signal
ends the process at once, without a checkpoint, even while a step waits
inside TensorFlow. A signal after the session ended changes nothing: the
checkpoint is saved.

Python runs signal handlers only in the main thread, between two steps, and
merges two signals that come during one step into one. So a thread reads
them instead, as they come, from the file descriptor to which Python writes
each signal's number (signal.set_wakeup_fd). Leaving the context puts back
the handlers and the descriptor that were there before, and closes what it
opened.
"""

import os
import signal
import threading
import time

import tensorflow as tf

from support.startup import STOP_SIGNALS


class StopOnSignal:
    """The context of a training loop that SIGINT and SIGTERM stop cleanly.

    Attributes:
      received: the name of the first signal received ("SIGINT"), or None.
      hook: the SessionRunHook that waits for the input queues to fill.
    """

    def __init__(self, saves_checkpoint=True):
        self.received = None
        self.hook = _WaitForQueues(self)
        self._saving = " and saving a checkpoint" if saves_checkpoint else ""
        self._finished = False

    def __enter__(self):
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        # The handlers do nothing; the thread below acts on the signals.
        self._handlers = {
            signum: signal.signal(signum, lambda signum, frame: None)
            for signum in STOP_SIGNALS
        }
        self._wakeup_fd = signal.set_wakeup_fd(self._write_fd)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exception):
        self._finished = True
        signal.set_wakeup_fd(self._wakeup_fd)
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        os.close(self._write_fd)  # the thread reads the end of the pipe, and ends
        self._thread.join()
        os.close(self._read_fd)

    def _watch(self):
        while numbers := os.read(self._read_fd, 16):
            for signum in numbers:
                self._on_signal(signal.Signals(signum).name, signum)

    def _on_signal(self, name, signum):
        if self._finished:
            return  # The checkpoint is saved.
        if self.received:
            print("\n%s again: exiting now, without a checkpoint." % name, flush=True)
            os._exit(128 + signum)
        self.received = name
        print(
            "\n%s: stopping after this step%s (send it again to quit at once)."
            % (name, self._saving),
            flush=True,
        )


class _WaitForQueues(tf.compat.v1.train.SessionRunHook):
    """Waits, in Python, until the shuffling queues are full enough for the
    first batch, or a signal came; the first step would wait inside
    TensorFlow, where no signal reaches it, for as long as that takes."""

    def __init__(self, stop):
        self._stop = stop

    def begin(self):
        # The shuffling queues, and how full each must be before the first
        # batch can leave it.
        self._fill = [
            (
                runner.queue.size(),
                runner.queue.queue_ref.op.get_attr("min_after_dequeue"),
            )
            for runner in tf.compat.v1.get_collection(
                tf.compat.v1.GraphKeys.QUEUE_RUNNERS
            )
            if runner.queue.queue_ref.op.type.startswith("RandomShuffleQueue")
        ]

    def after_create_session(self, session, coord):
        # Last among the hooks: the queue runners run, the checkpoint of the
        # starting step is saved.
        while not self._stop.received and not coord.should_stop():
            sizes = session.run([size for size, _ in self._fill])
            if all(
                size > least for size, (_, least) in zip(sizes, self._fill, strict=True)
            ):
                return
            time.sleep(0.1)
