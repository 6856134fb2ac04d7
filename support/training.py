"""What both training binaries share besides the model: their flags, and the
hook that prints the tutorial's log line.

    progress = training.ProgressHook(loss, FLAGS.batch_size)

Every --log_frequency steps it prints

    <date time>: step N, loss = L.LL (E.E examples/sec; S.SSS sec/batch)

with the rates averaged since the previous line, and it stops training when
the loss is not a number.
"""

import datetime
import time

import numpy as np
import tensorflow as tf

from support.errors import Error

FLAGS = tf.compat.v1.flags.FLAGS

tf.compat.v1.flags.DEFINE_integer(
    "max_steps", 1000000, "Number of batches to run.", lower_bound=1
)
tf.compat.v1.flags.DEFINE_boolean(
    "log_device_placement", False, "Whether to log device placement."
)
tf.compat.v1.flags.DEFINE_integer(
    "log_frequency", 10, "How often (in steps) to log results.", lower_bound=1
)


class ProgressHook(tf.compat.v1.train.SessionRunHook):
    """Prints the log line, stops on a NaN loss and follows the global step.

    Put it first among the hooks: it stops a diverged step before the summary
    and checkpoint hooks can save it.

    When only this process moves the global step, counting runs from the
    restored value gives the true step without reading it. When other
    processes move it too (shared_step, on a cluster), it is read each run.

    Attributes:
      step: the global step after the last run.
      own_steps: the runs of this process.
      shared_step: whether other processes move the global step too.
    """

    def __init__(self, loss, examples_per_step, num_towers=1, shared_step=False):
        self._loss = loss
        self._examples_per_step = examples_per_step
        self._num_towers = num_towers
        self.shared_step = shared_step
        self.step = None
        self.own_steps = 0

    def after_create_session(self, session, coord):
        self.step = int(session.run(tf.compat.v1.train.get_global_step()))
        self._started = time.time()
        self._logged_at = None  # (own steps, time) of the last line

    def before_run(self, run_context):
        fetches = {"loss": self._loss}
        if self.shared_step:
            fetches["step"] = tf.compat.v1.train.get_global_step()
        return tf.compat.v1.train.SessionRunArgs(fetches)

    def after_run(self, run_context, run_values):
        self.own_steps += 1
        if self.shared_step:
            self.step = int(run_values.results["step"]) + 1
        else:
            self.step += 1
        loss_value = run_values.results["loss"]
        if not np.isfinite(loss_value):
            raise Error(
                "Model diverged with loss = %s at step %d. The checkpoints in "
                "%s from before it are kept."
                % (
                    "NaN" if np.isnan(loss_value) else loss_value,
                    self.step,
                    FLAGS.train_dir,
                )
            )
        now = time.time()
        if self._logged_at is None:
            # The first step waits for the shuffling queue to fill; leave it
            # out of the rates.
            print(
                "Input queue filled; the first step took %.1f s."
                % (now - self._started),
                flush=True,
            )
            self._logged_at = (self.own_steps, now)
        elif (self.own_steps if self.shared_step else self.step) % (
            FLAGS.log_frequency
        ) == 0:
            self._log(now, loss_value)

    def _log(self, now, loss_value):
        steps, then = self._logged_at
        sec_per_step = (now - then) / (self.own_steps - steps)
        print(
            "%s: step %d, loss = %.2f (%.1f examples/sec; %.3f sec/batch)"
            % (
                datetime.datetime.now(),
                self.step,
                loss_value,
                self._examples_per_step / sec_per_step,
                sec_per_step / self._num_towers,
            ),
            flush=True,
        )
        self._logged_at = (self.own_steps, now)
