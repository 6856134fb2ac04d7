"""The session hooks of a cluster's training task (cluster_task.Task.hooks()).

SameHostsHook      stops a worker whose host lists differ from the chief's
UnansweredHook     names the parameter servers that do not answer while a
                   step waits
SyncReplicasHook   synchronous updates (--sync_replicas): the training step,
                   and the chief's loop that applies them

Each is handed the task's ClusterConfig (cluster_config.py).
"""

import threading
import time

import tensorflow as tf

from support.cluster_config import ClusterError, unanswered


class SameHostsHook(tf.compat.v1.train.SessionRunHook):
    """Stops a worker whose host lists differ from the chief's.

    Workers with other lists would place the variables on other parameter
    servers, or count other workers, and train apart without a word. The
    chief leaves its lists on parameter server 0, in a variable that is not
    saved in checkpoints; every other worker compares its own with them.
    """

    def __init__(self, config):
        self._config = config
        self._own_hosts = config.describe()

    def begin(self):
        self._chief_hosts = _on_ps0("chief_hosts", lambda: self._own_hosts)
        if not self._config.is_chief:
            self._is_set = tf.compat.v1.is_variable_initialized(self._chief_hosts)

    def after_create_session(self, session, coord):
        if self._config.is_chief:
            session.run(self._chief_hosts.initializer)
            return
        # The chief sets it right after initializing the model.
        wait_for_chief(session, self._is_set, "its host lists", self._config)
        chief_hosts = session.run(self._chief_hosts).decode()
        if chief_hosts != self._own_hosts:
            raise ClusterError(
                "This worker's host lists differ from the chief's. The chief has "
                "%s; this worker has %s. Start every process with the same %s."
                % (chief_hosts, self._own_hosts, self._config.same_everywhere())
            )


class UnansweredHook(tf.compat.v1.train.SessionRunHook):
    """Names the parameter servers that do not answer while a step waits.

    A step whose parameter server has died waits inside TensorFlow until it
    is back (the chief then restores its last checkpoint onto it), which
    looks like a hang; so may what follows a step, such as a checkpoint's
    save or the closing of the session that a lost parameter server broke.
    When STALL_SECS have passed since a step began and no other has, this
    looks whether each parameter server accepts connections, and names those
    that do not, once until the next step begins.
    """

    STALL_SECS = 10

    def __init__(self, config):
        self._config = config
        self._step_started = None
        self._thread = None

    def after_create_session(self, session, coord):
        if self._thread is None:  # one for the process, across reconnections
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()

    def before_run(self, run_context):
        # Not cleared in after_run: the hooks after this one (the saver's)
        # and a reconnection run after it, and can wait as long.
        self._step_started = time.time()

    def _watch(self):
        reported = None
        while True:
            time.sleep(1)
            started = self._step_started
            if started in (None, reported) or time.time() - started < self.STALL_SECS:
                continue
            reported = started
            for task, address in enumerate(self._config.jobs["ps"]):
                e = unanswered(address)
                if e is not None:
                    print(
                        "Parameter server %d at %s does not answer (%s); this step "
                        "waits for it. %s."
                        % (task, address, e.strerror or e,
                           self._config.how_to_start("ps", task)),
                        flush=True,
                    )  # fmt: skip


class SyncReplicasHook(tf.compat.v1.train.SessionRunHook):
    """Synchronous updates: the training step, and the loop that applies them.

    Its apply_gradients() is cifar10.train()'s apply_fn: each worker sends its
    gradients to accumulators on the parameter servers and waits for a token.
    On the chief, a thread applies the average once enough gradients for a
    step have arrived, together with the weights' moving averages (once per
    step, not once per worker), then hands every worker a token for the next
    step.

    SyncReplicasOptimizer's own hook runs that thread as a queue runner,
    which the session waits two minutes for at the end, since its last run
    waits for gradients no worker will send. Here it is a daemon thread that
    ends with the session.

    When a worker stops, it also hands each other worker a token: one may be
    waiting for a step that now never comes, and with the token it finishes
    its run, sees the final global step and stops too.

    Unlike SyncReplicasOptimizer's own hook, the chief hands out no tokens
    to start with: every worker's first gradients then wait for the first
    step, as all later ones wait for theirs, and each step takes one gradient
    from each worker. With tokens to spare, one worker could fill a step with
    two gradients of its own, and then a worker that was gone would go
    unnoticed, or a stale gradient would use up a token and stop them all.

    A step waits for --replicas_to_aggregate gradients: a worker that is
    gone stops them all, or, when its token is left over, the others fill
    the steps with two gradients each at half the speed; GradientsSent
    names such a worker.
    """

    def __init__(self, config):
        self._config = config
        self._optimizer = None
        self._ending = threading.Event()
        self._sent = GradientsSent(config, self._ending)

    def apply_gradients(self, optimizer, grads_and_vars, global_step, averages):
        """cifar10.apply_gradients(), synchronized across the workers."""
        self._optimizer = tf.compat.v1.train.SyncReplicasOptimizer(
            optimizer,
            replicas_to_aggregate=self._config.replicas_to_aggregate,
            total_num_replicas=self._config.num_workers,
            variable_averages=averages,
            variables_to_average=tf.compat.v1.trainable_variables(),
        )
        self._sent.record(grads_and_vars, global_step)
        # cifar10.train() calls this under control dependencies on the step's
        # loss. Left on the chief's update ops, they would make each update
        # compute a forward pass of its own, reading every weight from the
        # parameter servers, while the workers wait. The workers' runs keep
        # them, through an op made here, where they apply.
        step_dependencies = tf.no_op(name="step_dependencies")
        with tf.control_dependencies(None):
            train_op = self._optimizer.apply_gradients(grads_and_vars, global_step)
        return tf.group(train_op, step_dependencies)

    def begin(self):
        opt = self._optimizer
        self._release_op = opt.get_init_tokens_op(self._config.num_workers)
        # The session creator has already waited for the chief's
        # initialization; this op of the optimizer's is not needed.
        opt.ready_for_local_init_op.mark_used()
        if self._config.is_chief:
            self._local_init_op = opt.chief_init_op
            (self._update_op,) = opt.get_chief_queue_runner().enqueue_ops
        else:
            self._local_init_op = opt.local_step_init_op
        self._sent.begin()

    def after_create_session(self, session, coord):
        session.run(self._local_init_op)
        self._sent.after_create_session(session, coord)
        if self._config.is_chief:
            threading.Thread(
                target=self._apply_updates, args=(session, coord), daemon=True
            ).start()

    def before_run(self, run_context):
        return tf.compat.v1.train.SessionRunArgs(self._sent.record_op)

    def _apply_updates(self, session, coord):
        try:
            while not self._ending.is_set():
                session.run(self._update_op)
        except (tf.errors.OpError, RuntimeError) as e:
            # Closing the session ends the last run; anything else stops
            # training with the error.
            if not self._ending.is_set() and not coord.should_stop():
                coord.request_stop(e)

    def end(self, session):
        self._ending.set()
        session.run(self._release_op)


class GradientsSent:
    """The step of each worker's last gradients, and the chief's report of
    the workers that send none.

    Each worker leaves on parameter server 0, in a variable that is not
    saved in checkpoints, the step of the last gradients it computed (the
    global step as its run began). A worker that has sent none for
    WAITING_REPORT_SECS while the global step is past them is named by the
    chief, and again after each such interval.

    Attributes:
      variable: that record, a step for each worker (-1: none yet).
      record_op: what a worker's step runs to record its own.
    """

    WAITING_REPORT_SECS = 15

    def __init__(self, config, ending):
        self._config = config
        self._ending = ending

    def record(self, grads_and_vars, global_step):
        """Makes record_op, which a worker's step runs once its gradients
        are computed (and so being sent)."""
        self.variable = _on_ps0(
            "sync_gradients_sent",
            lambda: tf.fill([self._config.num_workers], tf.constant(-1, tf.int64)),
        )  # -1: none yet
        step = tf.cast(global_step.read_value(), tf.int64)
        replica = self._config.trainers.index(
            "%s %d (%s)" % (self._config.job_name, self._config.task_index,
                            self._config.address)
        )  # fmt: skip
        with tf.control_dependencies([g for g, _ in grads_and_vars if g is not None]):
            self.record_op = tf.compat.v1.scatter_update(
                self.variable, [replica], [step]
            )

    def begin(self):
        self._global_step = tf.compat.v1.train.get_global_step()
        if not self._config.is_chief:
            self._is_set = tf.compat.v1.is_variable_initialized(self.variable)

    def after_create_session(self, session, coord):
        if not self._config.is_chief:
            wait_for_chief(session, self._is_set, "its gradients' record", self._config)
            return
        session.run(self.variable.initializer)
        threading.Thread(
            target=self._report, args=(session, coord), daemon=True
        ).start()

    def _report(self, session, coord):
        changed = {}  # worker -> (its last step sent, when that changed)
        reports = {}  # worker -> lines printed since
        while not self._ending.is_set() and not coord.should_stop():
            time.sleep(1)
            try:
                step, sent = session.run([self._global_step, self.variable])
            except (tf.errors.OpError, RuntimeError):
                return  # the session ended, or the cluster is lost
            now = time.time()
            for task, last in zip(self._config.trainers, sent, strict=True):
                if changed.get(task, (None,))[0] != last:
                    changed[task], reports[task] = (last, now), 0
                    continue
                quiet = now - changed[task][1]
                if last < step and quiet >= (reports[task] + 1) * (
                    self.WAITING_REPORT_SECS
                ):
                    print(
                        "No gradients from %s for %d s: %s, and the global step "
                        "is %d." % (task, quiet, "its last were for step %d" % last
                                    if last >= 0 else "it has sent none yet", step),
                        flush=True,
                    )  # fmt: skip
                    reports[task] += 1


def _on_ps0(name, initial_value):
    """A variable on parameter server 0 in no collection: neither saved nor
    initialized with the model.

    Args:
      name: its name.
      initial_value: makes its initial value (there too).
    """
    with tf.device("/job:ps/task:0"):
        return tf.compat.v1.Variable(
            initial_value(), trainable=False, collections=[], name=name
        )


def wait_for_chief(session, is_set, what, config):
    """Returns once the chief has set a variable on parameter server 0.

    Raises:
      ClusterError: it has not within --cluster_timeout_secs.
    """
    deadline = time.time() + config.timeout_secs
    while not session.run(is_set):
        if time.time() > deadline:
            raise ClusterError(
                "The chief (%s) did not leave %s on parameter server 0 within "
                "%d s (--cluster_timeout_secs). Is it running?"
                % (config.chief, what, config.timeout_secs)
            )
        time.sleep(0.5)
