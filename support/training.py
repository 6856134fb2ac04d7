"""The training loop's hook that prints the tutorial's log line.

    progress = training.ProgressHook(
        loss, batch_size, log_frequency=every, train_dir=train_dir
    )

Every log_frequency steps (the binary's --log_frequency) it prints

    <date time>: step N, loss = L.LL (E.E examples/sec; S.SSS sec/batch)

with the rates averaged since the previous line, and it stops training when
the loss is not a number. Given the step training stops at (last_step), and
less than a day away at the pace since the first step, the line goes on

    ..., H:MM:SS left to step M

so that a parser of the tutorial's line still reads its fields.
"""

import datetime
import time

import numpy as np
import tensorflow as tf

from support.errors import Error

# How far the end of training may be for the log line to say when it comes.
DAY_SECS = 24 * 60 * 60


class ProgressHook(tf.compat.v1.train.SessionRunHook):
    """Prints the log line, stops on a NaN loss and follows the global step.

    Put it first among the hooks: it stops a diverged step before the summary
    and checkpoint hooks can save it.

    When only this process moves the global step, counting runs from the
    restored value gives the true step without reading it. When other
    processes move it too (shared_step, on a cluster), it is read each run.

    Args:
      loss: the loss tensor, fetched with each step.
      examples_per_step: the images a step trains on (of every tower).
      log_frequency: print the line every this many steps.
      train_dir: the folder whose checkpoints a diverged run keeps, for the
        message.
      num_towers: batches a step works on at once.
      shared_step: whether other processes move the global step too.
      last_step: the global step training stops at, or None.

    Attributes:
      step: the global step after the last run.
      own_steps: the runs of this process.
      shared_step, last_step: as given.
    """

    def __init__(
        self, loss, examples_per_step, *, log_frequency, train_dir, num_towers=1,
        shared_step=False, last_step=None,
    ):  # fmt: skip
        self._loss = loss
        self._examples_per_step = examples_per_step
        self._log_frequency = log_frequency
        self._train_dir = train_dir
        self._num_towers = num_towers
        self.shared_step = shared_step
        self.last_step = last_step
        self.step = None
        self.own_steps = 0

    def after_create_session(self, session, coord):
        self.step = int(session.run(tf.compat.v1.train.get_global_step()))
        self._started = time.time()
        self._logged_at = None  # (own steps, time) of the last line
        self._first = None  # (global step, time) after the first step

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
                    self._train_dir,
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
            self._first = (self.step, now)
        elif (self.own_steps if self.shared_step else self.step) % (
            self._log_frequency
        ) == 0:
            self._log(now, loss_value)

    def _log(self, now, loss_value):
        steps, then = self._logged_at
        sec_per_step = (now - then) / (self.own_steps - steps)
        print(
            "%s: step %d, loss = %.2f (%.1f examples/sec; %.3f sec/batch)%s"
            % (datetime.datetime.now(), self.step, loss_value,
               self._examples_per_step / sec_per_step, sec_per_step / self._num_towers,
               _time_left(self._first, (self.step, now), self.last_step)),
            flush=True,
        )  # fmt: skip
        self._logged_at = (self.own_steps, now)


def _time_left(first, last, last_step):
    """', H:MM:SS left to step last_step' at the pace of the global step from
    first to last ((global step, time) each; the steps of other processes
    count too), or '' without a last_step or when it is a day or more away."""
    (first_step, then), (step, now) = first, last
    if last_step is None or step == first_step:
        return ""
    secs = (last_step - step) * (now - then) / (step - first_step)
    if not 0 <= secs < DAY_SECS:
        return ""
    return ", %s left to step %d" % (datetime.timedelta(seconds=int(secs)), last_step)
