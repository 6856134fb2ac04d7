"""Training on a cluster: parameter servers and workers.

With the cluster flags (support/cluster.py), or TF_CONFIG, the training
binaries train one model across several processes, on one machine or on
several, with TensorFlow's own distributed runtime (between-graph
replication):

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
--job_name and --task_index. A training binary meets a Cluster through
support/cluster.py's seam: this module imports nothing of the training loop.
"""

import contextlib
import json
import os
import socket
import threading
import time

import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from support import checkpoints
from support.errors import Error

FLAGS = tf.compat.v1.flags.FLAGS


class ClusterError(Error):
    """The cluster flags do not fit together, or the cluster cannot be reached."""


# The flags that say which task this process is; TF_CONFIG says it instead.
# The others (--sync_replicas, ...) go with either.
TASK_FLAGS = ("ps_hosts", "worker_hosts", "job_name", "task_index")


def this_task():
    """This process's Cluster: from the cluster flags, else from TF_CONFIG.

    --sync_replicas, --replicas_to_aggregate and --cluster_timeout_secs apply
    to either.

    Returns:
      The Cluster, or None when TF_CONFIG describes a cluster of this one
      task (as a scheduler may for a job of one machine): training then runs
      on this machine alone.

    Raises:
      ClusterError: the flags or TF_CONFIG are wrong; the message quotes them.
    """
    tf_config = os.environ.get("TF_CONFIG", "").strip()
    placed_by_flags = any(not FLAGS[name].using_default_value for name in TASK_FLAGS)
    if placed_by_flags and tf_config:
        print("The cluster flags are given: ignoring TF_CONFIG.", flush=True)
    if placed_by_flags or not tf_config:
        return from_flags()
    return from_tf_config(tf_config)


def _checked_hosts(entries, where):
    """The host:port entries of a host list, checked for form."""
    entries = [h.strip() for h in entries if h.strip()]
    if not entries:
        raise ClusterError("%s lists no host:port." % where)
    for entry in entries:
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ClusterError(
                "%s: '%s' is not host:port. Give each task as host:port, e.g. "
                "localhost:2222, separated by commas." % (where, entry)
            )
    return entries


def _hosts(flag_name):
    """The host:port entries of a host-list flag, checked for form."""
    return _checked_hosts(FLAGS[flag_name].value.split(","), "--" + flag_name)


def from_flags():
    """This process's Cluster, from the cluster flags.

    Raises:
      ClusterError: the cluster flags are incomplete or contradict each
        other; the message names the flag.
    """
    host_flags = ("ps_hosts", "worker_hosts", "job_name")
    given = [name for name in host_flags if FLAGS[name].value]
    if not given:
        for name in ("sync_replicas", "replicas_to_aggregate", "task_index"):
            if FLAGS[name].value != FLAGS[name].default:
                raise ClusterError(
                    "--%s only applies to training on a cluster: add --ps_hosts, "
                    "--worker_hosts and --job_name, or leave it out." % name
                )
    missing = ["--" + name for name in host_flags if name not in given]
    if missing:
        raise ClusterError(
            "Training on a cluster needs --ps_hosts, --worker_hosts and "
            "--job_name together; %s missing." % " and ".join(missing)
        )
    jobs = {"ps": _hosts("ps_hosts"), "worker": _hosts("worker_hosts")}
    _check_distinct(jobs, "--ps_hosts and --worker_hosts")
    job_name, task_index = FLAGS.job_name, FLAGS.task_index
    if task_index >= len(jobs[job_name]):
        raise ClusterError(
            "--task_index=%d is out of range: --%s_hosts lists %d %s task(s), "
            "numbered from 0 to %d."
            % (
                task_index,
                job_name,
                len(jobs[job_name]),
                job_name,
                len(jobs[job_name]) - 1,
            )
        )
    _check_replicas(len(jobs["worker"]), "--worker_hosts lists")
    return Cluster(jobs, job_name, task_index)


# The jobs a TF_CONFIG cluster may have; an evaluator runs nothing here.
TF_CONFIG_JOBS = ("chief", "ps", "worker", "evaluator")


def from_tf_config(text):
    """This process's Cluster, from TF_CONFIG: the JSON that schedulers
    (Kubeflow's TFJob, Vertex AI, ...) set in every process of a job, e.g.

        {"cluster": {"chief": ["host0:2222"], "ps": ["host1:2222"],
                     "worker": ["host2:2222"]},
         "task": {"type": "worker", "index": 0}}

    The chief is the "chief" task, or worker 0 when there is no "chief" job.

    Returns:
      The Cluster, or None for a cluster of one chief or worker alone.

    Raises:
      ClusterError: TF_CONFIG is not of that form; the message quotes it.
    """
    config = _tf_config_json(text)
    cluster, task = config["cluster"], config["task"]
    job_name, task_index = task.get("type"), task.get("index", 0)
    if not isinstance(task_index, int) or isinstance(task_index, bool):
        raise ClusterError(
            "TF_CONFIG's task index is %s, not a whole number: %s"
            % (json.dumps(task_index), _quote(config))
        )
    for name in [*cluster, job_name]:
        if name not in TF_CONFIG_JOBS:
            raise ClusterError(
                "TF_CONFIG names the job %s, which is none of %s: %s"
                % (json.dumps(name), ", ".join(TF_CONFIG_JOBS), _quote(config))
            )
    if job_name == "evaluator":
        return Cluster({}, job_name, task_index, from_tf_config=True)
    jobs = {
        name: _tf_config_hosts(name, hosts, config)
        for name, hosts in cluster.items()
        if name != "evaluator"
    }
    if job_name not in jobs:
        raise ClusterError(
            "TF_CONFIG's task is a %s, but its cluster has no %s job: %s"
            % (json.dumps(job_name), json.dumps(job_name), _quote(config))
        )
    if not 0 <= task_index < len(jobs[job_name]):
        raise ClusterError(
            "TF_CONFIG's task %s is beyond its %s job of %d task(s): %s"
            % (
                json.dumps(task),
                json.dumps(job_name),
                len(jobs[job_name]),
                _quote(config),
            )
        )
    return _tf_config_cluster(jobs, job_name, task_index, config)


def _tf_config_json(text):
    """TF_CONFIG read, with a "task" and a "cluster" of the right kinds."""
    try:
        config = json.loads(text)
    except ValueError as e:
        raise ClusterError(
            "TF_CONFIG is not JSON (%s): %s" % (e, _quote(text))
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("task"), dict):
        raise ClusterError(
            'TF_CONFIG has no "task" saying which task this process is: %s'
            % _quote(config)
        )
    if not isinstance(config.get("cluster"), dict) or not config["cluster"]:
        raise ClusterError('TF_CONFIG has no "cluster": %s' % _quote(config))
    return config


def _tf_config_hosts(name, hosts, config):
    """The host:port entries of a job of TF_CONFIG's cluster, checked."""
    where = "TF_CONFIG's %s job" % json.dumps(name)
    if isinstance(hosts, str):
        raise ClusterError(
            "%s is %s, not a list of host:port: write [%s]. %s"
            % (where, json.dumps(hosts), json.dumps(hosts), _quote(config))
        )
    if not isinstance(hosts, list):
        raise ClusterError(
            "%s is %s, not a list of host:port: %s"
            % (where, json.dumps(hosts), _quote(config))
        )
    return _checked_hosts([str(host) for host in hosts], where)


def _tf_config_cluster(jobs, job_name, task_index, config):
    workers = len(jobs.get("chief", [])) + len(jobs.get("worker", []))
    if "ps" not in jobs:
        if workers == 1:
            print("TF_CONFIG names this task alone: training on this machine.")
            return None
        raise ClusterError(
            'TF_CONFIG\'s cluster has no "ps" job: training on several workers '
            "here needs parameter servers. %s" % _quote(config)
        )
    if not workers:
        raise ClusterError(
            'TF_CONFIG\'s cluster has no "chief" or "worker" job: %s' % _quote(config)
        )
    _check_distinct(jobs, "TF_CONFIG")
    _check_replicas(workers, "TF_CONFIG's cluster has")
    return Cluster(jobs, job_name, task_index, from_tf_config=True)


def _quote(value, most=400):
    """value as JSON, shortened to most characters."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= most else text[: most - 3] + "..."


def _check_distinct(jobs, where):
    seen = set()
    for entry in (host for hosts in jobs.values() for host in hosts):
        if entry in seen:
            raise ClusterError(
                "%s is listed twice in %s; every task needs an address of its own."
                % (entry, where)
            )
        seen.add(entry)


def _check_replicas(num_workers, where):
    if FLAGS.replicas_to_aggregate is None:
        return
    if not FLAGS.sync_replicas:
        raise ClusterError("--replicas_to_aggregate only applies with --sync_replicas.")
    if FLAGS.replicas_to_aggregate > num_workers:
        raise ClusterError(
            "--replicas_to_aggregate=%d, but %s %d worker(s); aggregate at most "
            "one gradient per worker."
            % (FLAGS.replicas_to_aggregate, where, num_workers)
        )


class Cluster:
    """This process's task of a cluster, as support/cluster.py's seam meets it.

    Built once, from the flags or TF_CONFIG; nothing else here reads them.

    Attributes:
      job_name: 'ps', 'worker', 'chief' or 'evaluator'.
      task_index: this process's index in its job.
      trains: whether this task trains: the chief and the workers do.
      is_chief: whether this is the chief: the "chief" task, or worker 0 when
        the cluster has none.
      chief: the chief's name in messages, "worker 0" or "chief 0".
      num_workers: how many tasks train: the chief and the workers.
      trainers: the tasks that train, as messages name them, in order.
      apply_fn: for cifar10.train(): None for asynchronous updates, or the
        synchronous updates' (see _SyncReplicasHook).
      timeout_secs: --cluster_timeout_secs.
    """

    shared_step = True  # every worker moves the global step

    def __init__(self, jobs, job_name, task_index, from_tf_config=False):
        self.jobs = jobs
        self.job_name = job_name
        self.task_index = task_index
        self.from_tf_config = from_tf_config
        self.trains = job_name in ("chief", "worker")
        self.chief = "chief 0" if "chief" in jobs else "worker 0"
        self.is_chief = "%s %d" % (job_name, task_index) == self.chief
        self.num_workers = len(jobs.get("chief", [])) + len(jobs.get("worker", []))
        self.address = jobs[job_name][task_index] if job_name in jobs else None
        # The tasks that train, in the order of their replica numbers.
        self.trainers = [
            "%s %d (%s)" % (job, index, address)
            for job in ("chief", "worker")
            for index, address in enumerate(jobs.get(job, []))
        ]
        self.timeout_secs = FLAGS.cluster_timeout_secs
        self.spec = tf.train.ClusterSpec(jobs)
        self._hooks = [_SameHostsHook(self), _UnansweredHook(self)]
        self.apply_fn = None
        if FLAGS.sync_replicas:
            replicas = FLAGS.replicas_to_aggregate or self.num_workers
            sync = _SyncReplicasHook(replicas, self)
            self.apply_fn = sync.apply_gradients
            self._hooks.append(sync)

    def serve(self):
        """What a task that does not train does: a parameter server serves
        until Ctrl+C; TF_CONFIG's evaluator says where evaluation runs."""
        if self.job_name == "ps":
            _serve(self)
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
                worker_device="/job:%s/task:%d" % (self.job_name, self.task_index),
                cluster=self.spec,
            )
        )

    def hooks(self):
        """Session hooks: the host-list check, and synchronous updates."""
        return list(self._hooks)

    def session_creator(self, scaffold, config, train_dir):
        """This worker's SessionCreator; the chief's restores from train_dir."""
        return SessionCreator(
            self, scaffold, session_config(self, config), train_dir.path
        )

    def describe(self):
        """The cluster, as the flags would give it."""
        return " ".join(
            "--%s_hosts=%s" % (job, ",".join(self.jobs[job]))
            for job in ("chief", "ps", "worker")
            if job in self.jobs
        )

    def same_everywhere(self):
        """What every process must be given alike."""
        if self.from_tf_config:
            return "cluster in TF_CONFIG"
        return "--ps_hosts and --worker_hosts"

    def how_to_start(self, job_name, task_index):
        """What to do about a task that does not answer."""
        if self.from_tf_config:
            return "Start TF_CONFIG's %s task %d, or correct TF_CONFIG" % (
                job_name,
                task_index,
            )
        return (
            "Start it with --job_name=%s --task_index=%d and the same host lists, "
            "or correct --%s_hosts" % (job_name, task_index, job_name)
        )

    def __str__(self):
        return "%s %d (%s)" % (self.job_name, self.task_index, self.address)


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


def start_server(cluster, config=None):
    """Starts this task's server and returns it.

    Before it, it turns on gRPC's keepalive pings for the process (see
    KEEPALIVE_MS).

    Raises:
      ClusterError: the server cannot listen on its address.
    """
    os.environ["TF_GRPC_DEFAULT_OPTIONS"] = _keepalive_options()
    try:
        return tf.distribute.Server(
            cluster.spec, cluster.job_name, cluster.task_index, config=config
        )
    except (tf.errors.OpError, ValueError) as e:
        raise ClusterError(
            "Cannot start %s: %s. Is another process using port %s? Check %s."
            % (
                cluster,
                getattr(e, "message", e),
                cluster.address.rpartition(":")[2],
                "TF_CONFIG's cluster"
                if cluster.from_tf_config
                else "--%s_hosts" % cluster.job_name,
            )
        ) from None


def session_config(cluster, config):
    """config, limited to the devices this worker talks to.

    Without the filter, a worker's session would wait for every other worker
    to be up, and a worker that died would block the others.
    """
    config.device_filters.extend(
        ["/job:ps", "/job:%s/task:%d" % (cluster.job_name, cluster.task_index)]
    )
    rewrites = config.graph_options.rewrite_options
    on = rewriter_config_pb2.RewriterConfig.ON
    if rewrites.auto_mixed_precision_onednn_bfloat16 == on:
        # On a processor with native bfloat16 the remapper fuses convolutions
        # into _FusedConv2D ops in bfloat16, which only oneDNN's layout pass
        # can run; a cluster's workers do not run that pass, and the step
        # would fail. Unfused, they run.
        rewrites.remapping = rewriter_config_pb2.RewriterConfig.OFF
    return config


def _unanswered(address):
    """None if something accepts connections at host:port; else the OSError."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), 5).close()
    except OSError as e:
        return e
    return None


def _wait_for_ps(cluster):
    """Returns once every parameter server accepts connections.

    Raises:
      ClusterError: one did not within --cluster_timeout_secs.
    """
    deadline = time.time() + cluster.timeout_secs
    for task, address in enumerate(cluster.jobs["ps"]):
        waiting = False
        while (e := _unanswered(address)) is not None:
            if time.time() > deadline:
                raise ClusterError(
                    "Cannot reach parameter server %d at %s (%s) after %d s. %s."
                    % (
                        task,
                        address,
                        e.strerror or e,
                        cluster.timeout_secs,
                        cluster.how_to_start("ps", task),
                    )
                ) from None
            if not waiting:
                print(
                    "Waiting for parameter server %d at %s ..." % (task, address),
                    flush=True,
                )
                waiting = True
            time.sleep(1)


def _wait_for_chief(session, is_set, what, cluster):
    """Returns once the chief has set a variable on parameter server 0.

    Raises:
      ClusterError: it has not within --cluster_timeout_secs.
    """
    deadline = time.time() + cluster.timeout_secs
    while not session.run(is_set):
        if time.time() > deadline:
            raise ClusterError(
                "The chief (%s) did not leave %s on parameter server 0 within "
                "%d s (--cluster_timeout_secs). Is it running?"
                % (cluster.chief, what, cluster.timeout_secs)
            )
        time.sleep(0.5)


class _UnansweredHook(tf.compat.v1.train.SessionRunHook):
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

    def __init__(self, cluster):
        self._cluster = cluster
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
            for task, address in enumerate(self._cluster.jobs["ps"]):
                e = _unanswered(address)
                if e is not None:
                    print(
                        "Parameter server %d at %s does not answer (%s); this step "
                        "waits for it. %s."
                        % (
                            task,
                            address,
                            e.strerror or e,
                            self._cluster.how_to_start("ps", task),
                        ),
                        flush=True,
                    )


class _SameHostsHook(tf.compat.v1.train.SessionRunHook):
    """Stops a worker whose host lists differ from the chief's.

    Workers with other lists would place the variables on other parameter
    servers, or count other workers, and train apart without a word. The
    chief leaves its lists on parameter server 0, in a variable that is not
    saved in checkpoints; every other worker compares its own with them.
    """

    def __init__(self, cluster):
        self._cluster = cluster
        self._own_hosts = cluster.describe()

    def begin(self):
        with tf.device("/job:ps/task:0"):
            # Not in any collection: neither saved nor initialized with the
            # model.
            self._chief_hosts = tf.compat.v1.Variable(
                self._own_hosts, trainable=False, collections=[], name="chief_hosts"
            )
            if not self._cluster.is_chief:
                self._is_set = tf.compat.v1.is_variable_initialized(self._chief_hosts)

    def after_create_session(self, session, coord):
        if self._cluster.is_chief:
            session.run(self._chief_hosts.initializer)
            return
        # The chief sets it right after initializing the model.
        _wait_for_chief(session, self._is_set, "its host lists", self._cluster)
        chief_hosts = session.run(self._chief_hosts).decode()
        if chief_hosts != self._own_hosts:
            raise ClusterError(
                "This worker's host lists differ from the chief's. The chief has "
                "%s; this worker has %s. Start every process with the same %s."
                % (chief_hosts, self._own_hosts, self._cluster.same_everywhere())
            )


class _SyncReplicasHook(tf.compat.v1.train.SessionRunHook):
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
    the steps with two gradients each at half the speed. Each worker leaves
    on parameter server 0 the step of the last gradients it computed; one
    that has sent none for WAITING_REPORT_SECS while the global step is past
    them is named by the chief, and again after each such interval.
    """

    WAITING_REPORT_SECS = 15

    def __init__(self, replicas_to_aggregate, cluster):
        self._replicas_to_aggregate = replicas_to_aggregate
        self._cluster = cluster
        self._num_workers = cluster.num_workers
        self._is_chief = cluster.is_chief
        self._optimizer = None
        self._ending = False

    def apply_gradients(self, optimizer, grads_and_vars, global_step, averages):
        """cifar10.apply_gradients(), synchronized across the workers."""
        self._optimizer = tf.compat.v1.train.SyncReplicasOptimizer(
            optimizer,
            replicas_to_aggregate=self._replicas_to_aggregate,
            total_num_replicas=self._num_workers,
            variable_averages=averages,
            variables_to_average=tf.compat.v1.trainable_variables(),
        )
        with tf.device("/job:ps/task:0"):
            # Not in any collection: neither saved nor initialized with the
            # model. -1: none yet.
            self._sent = tf.compat.v1.Variable(
                tf.fill([self._num_workers], tf.constant(-1, tf.int64)),
                trainable=False,
                collections=[],
                name="sync_gradients_sent",
            )
        # The step this run computes gradients for: the global step as it
        # starts. Recorded once they are computed (and so being sent).
        step = tf.cast(global_step.read_value(), tf.int64)
        replica = self._cluster.trainers.index(
            "%s %d (%s)" % (self._cluster.job_name, self._cluster.task_index,
                            self._cluster.address)
        )  # fmt: skip
        with tf.control_dependencies([g for g, _ in grads_and_vars if g is not None]):
            self._record_op = tf.compat.v1.scatter_update(self._sent, [replica], [step])
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
        self._release_op = opt.get_init_tokens_op(self._num_workers)
        # The session creator has already waited for the chief's
        # initialization; this op of the optimizer's is not needed.
        opt.ready_for_local_init_op.mark_used()
        if self._is_chief:
            self._local_init_op = opt.chief_init_op
            (self._update_op,) = opt.get_chief_queue_runner().enqueue_ops
        else:
            self._local_init_op = opt.local_step_init_op
        self._global_step = tf.compat.v1.train.get_global_step()
        if not self._is_chief:
            self._sent_is_set = tf.compat.v1.is_variable_initialized(self._sent)

    def after_create_session(self, session, coord):
        session.run(self._local_init_op)
        if self._is_chief:
            session.run(self._sent.initializer)
            for loop in (self._apply_updates, self._report_waiting):
                threading.Thread(
                    target=loop, args=(session, coord), daemon=True
                ).start()
        else:
            _wait_for_chief(
                session, self._sent_is_set, "its gradients' record", self._cluster
            )

    def before_run(self, run_context):
        return tf.compat.v1.train.SessionRunArgs(self._record_op)

    def _report_waiting(self, session, coord):
        changed = {}  # worker -> (its last step sent, when that changed)
        reports = {}  # worker -> lines printed since
        while not self._ending and not coord.should_stop():
            time.sleep(1)
            try:
                step, sent = session.run([self._global_step, self._sent])
            except (tf.errors.OpError, RuntimeError):
                return  # the session ended, or the cluster is lost
            now = time.time()
            for task, last in zip(self._cluster.trainers, sent, strict=True):
                if changed.get(task, (None,))[0] != last:
                    changed[task], reports[task] = (last, now), 0
                    continue
                quiet = now - changed[task][1]
                if last < step and quiet >= (reports[task] + 1) * (
                    self.WAITING_REPORT_SECS
                ):
                    print(
                        "No gradients from %s for %d s: %s, and the global step "
                        "is %d."
                        % (
                            task,
                            quiet,
                            "its last were for step %d" % last
                            if last >= 0
                            else "it has sent none yet",
                            step,
                        ),
                        flush=True,
                    )
                    reports[task] += 1

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

    Before each session it waits, for a bounded time, until the parameter
    servers answer; then (the first time) it starts this worker's server,
    which lives as long as the process: a worker that gives up on an
    unreachable cluster never held its port. The chief then
    initializes the variables or restores the newest readable checkpoint in
    checkpoint_dir (after a parameter server restarted, the one it saved
    last); the other workers wait until it has.
    """

    def __init__(self, cluster, scaffold, config, checkpoint_dir):
        self._cluster = cluster
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
            self._server = start_server(self._cluster, self._config)
        # The training loop retries on these errors without end; a cluster
        # that keeps failing to start a session for longer than the timeout
        # is an error to report instead.
        try:
            session = self._create()
        except (tf.errors.AbortedError, tf.errors.UnavailableError) as e:
            self._failing_since = self._failing_since or time.time()
            if time.time() - self._failing_since > self._cluster.timeout_secs:
                raise ClusterError(
                    "%s cannot start a session with the cluster (%s). Check "
                    "that every process got the same %s."
                    % (
                        self._cluster,
                        e.message.splitlines()[0],
                        self._cluster.same_everywhere(),
                    )
                ) from None
            raise
        self._connected = True
        self._failing_since = None
        return session

    def _create(self):
        if self._cluster.is_chief:
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
                "Waiting for the chief (%s) to initialize the model."
                % self._cluster.chief,
                flush=True,
            )
        timeout_secs = self._cluster.timeout_secs
        try:
            return manager.wait_for_session(
                self._server.target, config=self._config, max_wait_secs=timeout_secs
            )
        except tf.errors.DeadlineExceededError:
            job_name, _, task_index = self._cluster.chief.partition(" ")
            raise ClusterError(
                "The chief (%s) has not initialized the model within %d s "
                "(--cluster_timeout_secs). %s."
                % (
                    self._cluster.chief,
                    timeout_secs,
                    self._cluster.how_to_start(job_name, int(task_index)),
                )
            ) from None


def _serve(cluster):
    """Runs a parameter server until Ctrl+C or SIGTERM."""
    _server = start_server(cluster)  # it serves while this reference lives
    print(
        "Parameter server %d listening on %s. Stop it with Ctrl+C when "
        "training is done." % (cluster.task_index, cluster.address),
        flush=True,
    )
    # The server runs on its own threads. Waiting here in Python, rather than
    # in server.join(), keeps Ctrl+C and SIGTERM working (the binary's
    # start-up turns both into KeyboardInterrupt).
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)
    print("Parameter server %d stopped." % cluster.task_index)
