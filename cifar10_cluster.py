"""Training on a cluster: parameter servers and workers.

With the cluster flags, the training binaries train one model across several
processes, on one machine or on several, with TensorFlow's own distributed
runtime (between-graph replication):

  - parameter servers (--job_name=ps) hold the variables and do nothing else;
  - every worker (--job_name=worker) builds the whole training graph, reads
    and distorts its own batches and sends its gradients to the parameter
    servers;
  - worker 0, the chief, initializes the variables or restores them from
    --train_dir, and writes the checkpoints and summaries there. The other
    workers wait until it has.

By default each worker applies its gradients as soon as they are computed
(asynchronous updates). With --sync_replicas the parameter servers gather
--replicas_to_aggregate gradients, apply their average as one step, and
every worker waits for that step before computing its next gradients.

Every process gets the same --ps_hosts and --worker_hosts, and its own
--job_name and --task_index.
"""

import contextlib
import signal
import socket
import threading
import time

import tensorflow as tf

FLAGS = tf.compat.v1.flags.FLAGS

tf.compat.v1.flags.DEFINE_string(
    "ps_hosts",
    "",
    "Comma-separated host:port of the parameter servers, e.g. "
    "'ps0.example.com:2222'. With --worker_hosts and --job_name, trains on a "
    "cluster; without them, on this machine alone.",
)
tf.compat.v1.flags.DEFINE_string(
    "worker_hosts",
    "",
    "Comma-separated host:port of the workers; the first is the chief, which "
    "writes checkpoints and summaries.",
)
tf.compat.v1.flags.DEFINE_enum(
    "job_name", None, ["ps", "worker"], "This process's job in the cluster."
)
tf.compat.v1.flags.DEFINE_integer(
    "task_index",
    0,
    "This process's place in the host list of its job, from 0.",
    lower_bound=0,
)
tf.compat.v1.flags.DEFINE_boolean(
    "sync_replicas",
    False,
    "Apply the workers' gradients together, averaged, instead of each as soon "
    "as it is ready.",
)
tf.compat.v1.flags.DEFINE_integer(
    "replicas_to_aggregate",
    None,
    "With --sync_replicas: gradients averaged into one step (default: one per "
    "worker). Fewer lets the slowest workers' gradients be dropped.",
    lower_bound=1,
)
tf.compat.v1.flags.DEFINE_integer(
    "cluster_timeout_secs",
    300,
    "How long a worker waits for the parameter servers to answer, and a worker "
    "other than the chief for the chief to initialize the model, before it "
    "gives up.",
    lower_bound=1,
)


def device_scope(cluster):
    """The device scope to build the training graph in: the cluster's
    device_setter(), or none on one machine."""
    if cluster is None:
        return contextlib.nullcontext()
    return tf.compat.v1.device(cluster.device_setter())


class ClusterError(Exception):
    """The cluster flags do not fit together, or the cluster cannot be reached."""


def _hosts(flag_name):
    """The host:port entries of a host-list flag, checked for form."""
    entries = [h.strip() for h in FLAGS[flag_name].value.split(",") if h.strip()]
    if not entries:
        raise ClusterError("--%s lists no host:port." % flag_name)
    for entry in entries:
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ClusterError(
                "--%s: '%s' is not host:port. Give each task as host:port, e.g. "
                "localhost:2222, separated by commas." % (flag_name, entry)
            )
    return entries


def from_flags():
    """This process's Cluster, or None when no cluster flags are given.

    Raises:
      ClusterError: the cluster flags are incomplete or contradict each
        other; the message names the flag.
    """
    cluster_flags = ("ps_hosts", "worker_hosts", "job_name")
    given = [name for name in cluster_flags if FLAGS[name].value]
    if not given:
        for name in ("sync_replicas", "replicas_to_aggregate", "task_index"):
            if FLAGS[name].value != FLAGS[name].default:
                raise ClusterError(
                    "--%s only applies to training on a cluster: add --ps_hosts, "
                    "--worker_hosts and --job_name, or leave it out." % name
                )
        return None
    missing = ["--" + name for name in cluster_flags if name not in given]
    if missing:
        raise ClusterError(
            "Training on a cluster needs --ps_hosts, --worker_hosts and "
            "--job_name together; %s missing." % " and ".join(missing)
        )
    ps_hosts, worker_hosts = _hosts("ps_hosts"), _hosts("worker_hosts")
    seen = set()
    for entry in ps_hosts + worker_hosts:
        if entry in seen:
            raise ClusterError(
                "%s is listed twice in --ps_hosts and --worker_hosts; every task "
                "needs an address of its own." % entry
            )
        seen.add(entry)
    hosts = ps_hosts if FLAGS.job_name == "ps" else worker_hosts
    if FLAGS.task_index >= len(hosts):
        raise ClusterError(
            "--task_index=%d is out of range: --%s_hosts lists %d %s task(s), "
            "numbered from 0 to %d."
            % (
                FLAGS.task_index,
                FLAGS.job_name,
                len(hosts),
                FLAGS.job_name,
                len(hosts) - 1,
            )
        )
    if FLAGS.replicas_to_aggregate is not None:
        if not FLAGS.sync_replicas:
            raise ClusterError(
                "--replicas_to_aggregate only applies with --sync_replicas."
            )
        if FLAGS.replicas_to_aggregate > len(worker_hosts):
            raise ClusterError(
                "--replicas_to_aggregate=%d, but --worker_hosts lists %d "
                "worker(s); aggregate at most one gradient per worker."
                % (FLAGS.replicas_to_aggregate, len(worker_hosts))
            )
    return Cluster(ps_hosts, worker_hosts, FLAGS.job_name, FLAGS.task_index)


class Cluster:
    """This process's place in the cluster, and what training there needs.

    Attributes:
      job_name: 'ps' or 'worker'.
      task_index: this process's index in its job.
      is_chief: whether this is worker 0.
      num_workers: how many workers the cluster has.
      wrap_optimizer: for cifar10.train(): None for asynchronous updates, or
        the function that turns its optimizer into a SyncReplicasOptimizer.
    """

    def __init__(self, ps_hosts, worker_hosts, job_name, task_index):
        self.ps_hosts = ps_hosts
        self.job_name = job_name
        self.task_index = task_index
        self.is_chief = job_name == "worker" and task_index == 0
        self.num_workers = len(worker_hosts)
        self.address = (ps_hosts if job_name == "ps" else worker_hosts)[task_index]
        self.spec = tf.train.ClusterSpec({"ps": ps_hosts, "worker": worker_hosts})
        self.wrap_optimizer = self._sync_replicas if FLAGS.sync_replicas else None
        self.sync_optimizer = None
        self.server = None

    def __str__(self):
        return "%s %d (%s)" % (self.job_name, self.task_index, self.address)

    def start_server(self, config=None):
        """Starts this task's server; returns its session target.

        Raises:
          ClusterError: the server cannot listen on its address.
        """
        try:
            self.server = tf.distribute.Server(
                self.spec, self.job_name, self.task_index, config=config
            )
        except (tf.errors.OpError, ValueError) as e:
            raise ClusterError(
                "Cannot start %s: %s. Is another process using port %s? Check "
                "--%s_hosts."
                % (
                    self,
                    getattr(e, "message", e),
                    self.address.rpartition(":")[2],
                    self.job_name,
                )
            ) from None
        return self.server.target

    def device_setter(self):
        """Places variables on the parameter servers, all else on this worker."""
        return tf.compat.v1.train.replica_device_setter(
            worker_device="/job:worker/task:%d" % self.task_index, cluster=self.spec
        )

    def session_config(self, config):
        """config, limited to the devices this worker talks to.

        Without the filter, a worker's session would wait for every other
        worker to be up, and a worker that died would block the others.
        """
        config.device_filters.extend(
            ["/job:ps", "/job:worker/task:%d" % self.task_index]
        )
        return config

    def _sync_replicas(self, optimizer, variable_averages):
        replicas = FLAGS.replicas_to_aggregate or self.num_workers
        self.sync_optimizer = tf.compat.v1.train.SyncReplicasOptimizer(
            optimizer,
            replicas_to_aggregate=replicas,
            total_num_replicas=self.num_workers,
            # The moving averages follow the aggregated steps, once each.
            variable_averages=variable_averages,
            variables_to_average=tf.compat.v1.trainable_variables(),
        )
        return self.sync_optimizer

    def hooks(self):
        """Session hooks: the host-list check, and synchronous updates."""
        hooks = [_SameHostsHook(self)]
        if self.sync_optimizer is not None:
            hooks.append(
                _SyncReplicasHook(self.sync_optimizer, self.is_chief, self.num_workers)
            )
        return hooks

    def wait_for_ps(self):
        """Returns once every parameter server accepts connections.

        Raises:
          ClusterError: one did not within --cluster_timeout_secs.
        """
        deadline = time.time() + FLAGS.cluster_timeout_secs
        for task, address in enumerate(self.ps_hosts):
            host, _, port = address.rpartition(":")
            said = False
            while True:
                try:
                    socket.create_connection((host.strip("[]"), int(port)), 5).close()
                    break
                except OSError as e:
                    if time.time() > deadline:
                        raise ClusterError(
                            "Cannot reach parameter server %d at %s (%s) after "
                            "%d s. Start it with --job_name=ps --task_index=%d "
                            "and the same host lists, or correct --ps_hosts."
                            % (
                                task,
                                address,
                                e.strerror or e,
                                FLAGS.cluster_timeout_secs,
                                task,
                            )
                        ) from None
                    if not said:
                        print(
                            "Waiting for parameter server %d at %s ..."
                            % (task, address),
                            flush=True,
                        )
                        said = True
                    time.sleep(1)


class _SameHostsHook(tf.compat.v1.train.SessionRunHook):
    """Stops a worker whose host lists differ from the chief's.

    Workers with other lists would place the variables on other parameter
    servers, or count other workers, and train apart without a word. The
    chief leaves its lists on parameter server 0, in a variable that is not
    saved in checkpoints; every other worker compares its own with them.
    """

    def __init__(self, cluster):
        self._cluster = cluster

    def begin(self):
        hosts = self._cluster.spec.as_dict()
        text = "--ps_hosts=%s --worker_hosts=%s" % (
            ",".join(hosts["ps"]),
            ",".join(hosts["worker"]),
        )
        with tf.device("/job:ps/task:0"):
            # Not in any collection: neither saved nor initialized with the
            # model.
            self._chief_hosts = tf.compat.v1.Variable(
                text, trainable=False, collections=[], name="chief_hosts"
            )
            if not self._cluster.is_chief:
                self._is_set = tf.compat.v1.is_variable_initialized(self._chief_hosts)
        self._own_hosts = text

    def after_create_session(self, session, coord):
        if self._cluster.is_chief:
            session.run(self._chief_hosts.initializer)
            return
        # The chief sets it right after initializing the model.
        deadline = time.time() + FLAGS.cluster_timeout_secs
        while not session.run(self._is_set):
            if time.time() > deadline:
                raise ClusterError(
                    "The chief (worker 0) did not leave its host lists on "
                    "parameter server 0 within %d s (--cluster_timeout_secs). "
                    "Is it running?" % FLAGS.cluster_timeout_secs
                )
            time.sleep(0.5)
        chief_hosts = session.run(self._chief_hosts).decode()
        if chief_hosts != self._own_hosts:
            raise ClusterError(
                "This worker's host lists differ from the chief's. The chief has "
                "%s; this worker has %s. Start every process with the same "
                "--ps_hosts and --worker_hosts." % (chief_hosts, self._own_hosts)
            )


class _SyncReplicasHook(tf.compat.v1.train.SessionRunHook):
    """Runs synchronous updates alongside the training loop.

    Each worker, after sending its gradients, waits for a token. On the
    chief, a thread applies the average once enough gradients for a step
    have arrived, then hands every worker a token for the next step.

    SyncReplicasOptimizer's own hook runs that thread as a queue runner,
    which the session waits two minutes for at the end, since its last run
    waits for gradients no worker will send. Here it is a daemon thread that
    ends with the session.

    When a worker stops, it also hands each other worker a token: one may be
    waiting for a step that now never comes, and with the token it finishes
    its run, sees the final global step and stops too.
    """

    def __init__(self, sync_optimizer, is_chief, num_workers):
        self._sync_optimizer = sync_optimizer
        self._is_chief = is_chief
        self._num_workers = num_workers
        self._ending = False

    def begin(self):
        opt = self._sync_optimizer
        self._release_op = opt.get_init_tokens_op(self._num_workers)
        # The session creator has already waited for the chief's
        # initialization; this op of the optimizer's is not needed.
        opt.ready_for_local_init_op.mark_used()
        if self._is_chief:
            self._local_init_op = opt.chief_init_op
            self._init_tokens_op = opt.get_init_tokens_op()
            (self._update_op,) = opt.get_chief_queue_runner().enqueue_ops
        else:
            self._local_init_op = opt.local_step_init_op

    def after_create_session(self, session, coord):
        session.run(self._local_init_op)
        if self._is_chief:
            session.run(self._init_tokens_op)
            threading.Thread(
                target=self._apply_updates, args=(session, coord), daemon=True
            ).start()

    def _apply_updates(self, session, coord):
        try:
            while not self._ending:
                session.run(self._update_op)
        except (tf.errors.OpError, RuntimeError) as e:
            # Closing the session ends the last run; anything else stops
            # training with the error.
            if not self._ending and not coord.should_stop():
                coord.request_stop(e)

    def end(self, session):
        self._ending = True
        session.run(self._release_op)


class SessionCreator(tf.compat.v1.train.SessionCreator):
    """Creates (and after a lost connection re-creates) a worker's session.

    It first waits, for a bounded time, until the parameter servers answer.
    The chief then initializes the variables or restores the newest
    checkpoint in checkpoint_dir; the other workers wait until it has.
    """

    def __init__(self, cluster, target, scaffold, config, checkpoint_dir):
        self._cluster = cluster
        self._target = target
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
        self._cluster.wait_for_ps()
        # The training loop retries on these errors without end; a cluster
        # that keeps failing to start a session for longer than the timeout
        # is an error to report instead.
        try:
            session = self._create()
        except (tf.errors.AbortedError, tf.errors.UnavailableError) as e:
            self._failing_since = self._failing_since or time.time()
            if time.time() - self._failing_since > FLAGS.cluster_timeout_secs:
                raise ClusterError(
                    "%s cannot start a session with the cluster (%s). Check "
                    "that every process got the same --ps_hosts and "
                    "--worker_hosts." % (self._cluster, e.message.splitlines()[0])
                ) from None
            raise
        self._connected = True
        self._failing_since = None
        return session

    def _create(self):
        if self._cluster.is_chief:
            return tf.compat.v1.train.ChiefSessionCreator(
                scaffold=self._scaffold,
                master=self._target,
                config=self._config,
                checkpoint_dir=self._checkpoint_dir,
            ).create_session()
        self._scaffold.finalize()
        manager = tf.compat.v1.train.SessionManager(
            local_init_op=self._scaffold.local_init_op,
            ready_op=self._scaffold.ready_op,
            ready_for_local_init_op=self._scaffold.ready_for_local_init_op,
            graph=tf.compat.v1.get_default_graph(),
            recovery_wait_secs=1,  # how often to look whether the chief is done
        )
        if not self._failing_since:
            print(
                "Waiting for the chief (worker 0) to initialize the model.",
                flush=True,
            )
        try:
            return manager.wait_for_session(
                self._target,
                config=self._config,
                max_wait_secs=FLAGS.cluster_timeout_secs,
            )
        except tf.errors.DeadlineExceededError:
            raise ClusterError(
                "The chief (worker 0) has not initialized the model within %d s "
                "(--cluster_timeout_secs). Start it with --job_name=worker "
                "--task_index=0, or check --worker_hosts." % FLAGS.cluster_timeout_secs
            ) from None


def serve(cluster):
    """Runs a parameter server until Ctrl+C or SIGTERM."""
    cluster.start_server()
    print(
        "Parameter server %d listening on %s. Stop it with Ctrl+C when "
        "training is done." % (cluster.task_index, cluster.address),
        flush=True,
    )
    # The server runs on its own threads. Waiting here in Python, rather than
    # in server.join(), keeps Ctrl+C working.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("Parameter server %d stopped." % cluster.task_index)
