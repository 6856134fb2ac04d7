"""Training as a task of a cluster: the task, its server and its session.

support/cluster.py's seam returns a Task when the cluster flags or TF_CONFIG
describe a cluster (cluster_config.py): a parameter server serves, a worker
places the variables on the parameter servers, adds the cluster's hooks
(cluster_hooks.py) and creates its session through SessionCreator, which
waits for the parameter servers and, on the workers other than the chief,
for the chief. This module imports nothing of the training loop.
"""

import contextlib
import os
import time

import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from support import checkpoints, cluster_hooks
from support.cluster_config import ClusterError, unanswered

# gRPC's keepalive pings, on every connection a task opens to another: a
# connection whose other end is gone without a word (its process restarted,
# or dropped it, while the link between them was down) then fails, and the
# step waiting on it ends in a reconnection, instead of waiting for an answer
# that never comes. A ping goes out after KEEPALIVE_MS without one, on a
# connection with a call open; one unanswered for KEEPALIVE_TIMEOUT_MS closes
# it. (gRPC itself sends fewer on a connection that carries nothing else: a
# worker waiting for its next synchronous step learns within about a minute.)
KEEPALIVE_MS = 10000
KEEPALIVE_TIMEOUT_MS = 20000


class Task:
    """This process's task of a cluster, as support/cluster.py's seam meets it.

    Attributes:
      config: the ClusterConfig that describes it and its cluster.
      trains: whether this task trains: the chief and the workers do.
      is_chief: whether it is the chief, which initializes the model and
        writes the checkpoints and summaries.
      spec: the cluster, as a tf.train.ClusterSpec.
      apply_fn: for cifar10.train(): None for asynchronous updates, or the
        synchronous updates' (cluster_hooks.SyncReplicasHook).
    """

    shared_step = True  # every worker moves the global step

    def __init__(self, config):
        self.config = config
        self.trains = config.trains
        self.is_chief = config.is_chief
        self.spec = tf.train.ClusterSpec(config.jobs)
        self._hooks = [
            cluster_hooks.SameHostsHook(config),
            cluster_hooks.UnansweredHook(config),
        ]
        self.apply_fn = None
        if config.replicas_to_aggregate:
            sync = cluster_hooks.SyncReplicasHook(config)
            self.apply_fn = sync.apply_gradients
            self._hooks.append(sync)

    def serve(self):
        """What a task that does not train does: a parameter server serves
        until Ctrl+C; TF_CONFIG's evaluator says where evaluation runs."""
        if self.config.job_name == "ps":
            serve(self)
            return
        print(
            "This is TF_CONFIG's evaluator task, which the training binaries leave "
            "idle: evaluate with cifar10_eval.py --checkpoint_dir=<the chief's "
            "--train_dir>."
        )

    def device(self):
        """Places variables on the parameter servers, all else on this worker."""
        return tf.compat.v1.device(
            tf.compat.v1.train.replica_device_setter(
                worker_device="/job:%s/task:%d"
                % (self.config.job_name, self.config.task_index),
                cluster=self.spec,
            )
        )

    def hooks(self):
        """Session hooks: the host-list check, the parameter servers that do
        not answer, and synchronous updates."""
        return list(self._hooks)

    def session_creator(self, scaffold, config, train_dir, bf16=False):
        """This worker's SessionCreator; the chief's restores from train_dir.
        bf16: whether config turns on the oneDNN bfloat16 rewrite."""
        return SessionCreator(
            self, scaffold, session_config(self, config, bf16), train_dir.path
        )

    def __str__(self):
        return str(self.config)


def _keepalive_options():
    """TF_GRPC_DEFAULT_OPTIONS with the keepalive options added.

    TensorFlow reads that variable once, as it opens its first connection;
    options already in it are the user's, and stay.
    """
    given = os.environ.get("TF_GRPC_DEFAULT_OPTIONS", "").strip(", ")
    names = {option.partition("=")[0].strip() for option in given.split(",")}
    options = [given] if given else []
    for name, value in (
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ):
        if name not in names:
            options.append("%s=%d" % (name, value))
    return ",".join(options)


def start_server(task, config=None):
    """Starts the task's server and returns it.

    Before it, it turns on gRPC's keepalive pings for the process (see
    KEEPALIVE_MS).

    Raises:
      ClusterError: the server cannot listen on its address.
    """
    os.environ["TF_GRPC_DEFAULT_OPTIONS"] = _keepalive_options()
    try:
        return tf.distribute.Server(
            task.spec, task.config.job_name, task.config.task_index, config=config
        )
    except (tf.errors.OpError, ValueError) as e:
        raise ClusterError(
            "Cannot start %s: %s. Is another process using port %s? Check %s."
            % (task, getattr(e, "message", e),
               task.config.address.rpartition(":")[2],
               task.config.where_hosts_are())
        ) from None  # fmt: skip


def session_config(task, config, bf16=False):
    """config, limited to the devices this worker talks to.

    Without the filter, a worker's session would wait for every other worker
    to be up, and a worker that died would block the others. bf16: whether
    config turns on the oneDNN bfloat16 rewrite.
    """
    config.device_filters.extend(
        ["/job:ps", "/job:%s/task:%d" % (task.config.job_name, task.config.task_index)]
    )
    if bf16:
        # On a processor with native bfloat16 the remapper fuses convolutions
        # into _FusedConv2D ops in bfloat16, which only oneDNN's layout pass
        # can run; a cluster's workers do not run that pass, and the step
        # would fail. Unfused, they run.
        config.graph_options.rewrite_options.remapping = (
            rewriter_config_pb2.RewriterConfig.OFF
        )
    return config


def _wait_for_ps(cluster):
    """Returns once every parameter server accepts connections.

    Args:
      cluster: the ClusterConfig.

    Raises:
      ClusterError: one did not within --cluster_timeout_secs.
    """
    deadline = time.time() + cluster.timeout_secs
    for task, address in enumerate(cluster.jobs["ps"]):
        waiting = False
        while (e := unanswered(address)) is not None:
            if time.time() > deadline:
                raise ClusterError(
                    "Cannot reach parameter server %d at %s (%s) after %d s. %s."
                    % (task, address, e.strerror or e, cluster.timeout_secs,
                       cluster.how_to_start("ps", task))
                ) from None  # fmt: skip
            if not waiting:
                print(
                    "Waiting for parameter server %d at %s ..." % (task, address),
                    flush=True,
                )
                waiting = True
            time.sleep(1)


class SessionCreator(tf.compat.v1.train.SessionCreator):
    """Creates (and after a lost connection re-creates) a worker's session.

    Before each session it waits, for a bounded time, until the parameter
    servers answer; then (the first time) it starts this worker's server,
    which lives as long as the process: a worker that gives up on an
    unreachable cluster never held its port. The chief then
    initializes the variables or restores the newest readable checkpoint in
    checkpoint_dir (after a parameter server restarted, the one it saved
    last); the other workers wait until it has.
    """

    def __init__(self, task, scaffold, config, checkpoint_dir):
        self._task = task
        self._cluster = task.config
        self._server = None
        self._scaffold = scaffold
        self._config = config
        self._checkpoint_dir = checkpoint_dir
        self._connected = False
        self._failing_since = None

    def create_session(self):
        if self._connected:
            print(
                "Lost the connection to the cluster; reconnecting. The chief "
                "restores its last checkpoint if a parameter server restarted.",
                flush=True,
            )
        _wait_for_ps(self._cluster)
        if self._server is None:
            self._server = start_server(self._task, self._config)
        # The training loop retries on these errors without end; a cluster
        # that keeps failing to start a session for longer than the timeout
        # is an error to report instead.
        try:
            if self._cluster.is_chief:
                session = self._chief_session()
            else:
                session = self._session_after_the_chief()
        except (tf.errors.AbortedError, tf.errors.UnavailableError) as e:
            self._failing_since = self._failing_since or time.time()
            if time.time() - self._failing_since > self._cluster.timeout_secs:
                raise ClusterError(
                    "%s cannot start a session with the cluster (%s). Check "
                    "that every process got the same %s."
                    % (self._cluster, e.message.splitlines()[0],
                       self._cluster.same_everywhere())
                ) from None  # fmt: skip
            raise
        self._connected = True
        self._failing_since = None
        return session

    def _chief_session(self):
        checkpoint = checkpoints.newest(self._checkpoint_dir)[0]
        session = tf.compat.v1.train.ChiefSessionCreator(
            scaffold=self._scaffold,
            master=self._server.target,
            config=self._config,
            checkpoint_filename_with_path=checkpoint,
        ).create_session()
        if self._connected and checkpoint:  # as at start-up
            print(
                "Resuming from %s at step %d."
                % (checkpoint, checkpoints.step(checkpoint)),
                flush=True,
            )
        return session

    def _session_after_the_chief(self):
        self._scaffold.finalize()
        manager = tf.compat.v1.train.SessionManager(
            local_init_op=self._scaffold.local_init_op,
            ready_op=self._scaffold.ready_op,
            ready_for_local_init_op=self._scaffold.ready_for_local_init_op,
            graph=tf.compat.v1.get_default_graph(),
            recovery_wait_secs=1,  # how often to look whether the chief is done
        )
        chief, timeout_secs = self._cluster.chief, self._cluster.timeout_secs
        if not self._failing_since:
            print("Waiting for the chief (%s) to initialize the model." % chief,
                  flush=True)  # fmt: skip
        try:
            return manager.wait_for_session(
                self._server.target, config=self._config, max_wait_secs=timeout_secs
            )
        except tf.errors.DeadlineExceededError:
            job_name, _, task_index = chief.partition(" ")
            raise ClusterError(
                "The chief (%s) has not initialized the model within %d s "
                "(--cluster_timeout_secs). %s."
                % (chief, timeout_secs,
                   self._cluster.how_to_start(job_name, int(task_index)))
            ) from None  # fmt: skip


def serve(task):
    """Runs a parameter server until Ctrl+C or SIGTERM."""
    _server = start_server(task)  # it serves while this reference lives
    print(
        "Parameter server %d listening on %s. Stop it with Ctrl+C when "
        "training is done." % (task.config.task_index, task.config.address),
        flush=True,
    )
    # The server runs on its own threads. Waiting here in Python, rather than
    # in server.join(), keeps Ctrl+C and SIGTERM working (the binary's
    # start-up turns both into KeyboardInterrupt).
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)
    print("Parameter server %d stopped." % task.config.task_index)
