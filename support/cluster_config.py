"""The cluster's description, from the cluster flags or TF_CONFIG: plain
Python, which reads nothing but what it is handed.

    config = cluster_config.describe(flags, given, os.environ["TF_CONFIG"])

A cluster trains one model across several processes, on one machine or on
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
--job_name and --task_index; or the TF_CONFIG environment variable that
schedulers set says the same. support/cluster.py defines the flags and
hands their values here; cluster_task.py runs the task described.
"""

import json
import socket
from typing import NamedTuple

from support.errors import Error


class ClusterError(Error):
    """The cluster flags do not fit together, or the cluster cannot be reached."""


# The flags that say which task this process is; TF_CONFIG says it instead.
# The others (--sync_replicas, ...) go with either.
TASK_FLAGS = ("ps_hosts", "worker_hosts", "job_name", "task_index")
# The flags that only a cluster uses, whose defaults are all false.
CLUSTER_ONLY = ("sync_replicas", "replicas_to_aggregate", "task_index")
# The jobs a TF_CONFIG cluster may have; an evaluator runs nothing here.
TF_CONFIG_JOBS = ("chief", "ps", "worker", "evaluator")


def describe(flags, given, tf_config):
    """This process's task: from the cluster flags, else from TF_CONFIG.

    --sync_replicas, --replicas_to_aggregate and --cluster_timeout_secs apply
    to either.

    Args:
      flags: the values of the cluster flags (support/cluster.py's), by name.
      given: the names of the cluster flags that the command line gave.
      tf_config: the TF_CONFIG environment variable, or "".

    Returns:
      The ClusterConfig, or None when TF_CONFIG describes a cluster of this
      one task (as a scheduler may for a job of one machine): training then
      runs on this machine alone.

    Raises:
      ClusterError: the flags or TF_CONFIG are wrong; the message quotes them.
    """
    tf_config = tf_config.strip()
    placed_by_flags = any(name in given for name in TASK_FLAGS)
    if placed_by_flags and tf_config:
        print("The cluster flags are given: ignoring TF_CONFIG.", flush=True)
    if placed_by_flags or not tf_config:
        return from_flags(flags)
    return from_tf_config(tf_config, flags)


def from_flags(flags):
    """This process's task, from the cluster flags' values.

    Raises:
      ClusterError: the cluster flags are incomplete or contradict each
        other; the message names the flag.
    """
    host_flags = ("ps_hosts", "worker_hosts", "job_name")
    given = [name for name in host_flags if flags[name]]
    if not given:
        for name in CLUSTER_ONLY:
            if flags[name]:
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
    jobs = {
        job: _checked_hosts(flags[job + "_hosts"].split(","), "--%s_hosts" % job)
        for job in ("ps", "worker")
    }
    _check_distinct(jobs, "--ps_hosts and --worker_hosts")
    job_name, task_index = flags["job_name"], flags["task_index"]
    if task_index >= len(jobs[job_name]):
        count = len(jobs[job_name])
        raise ClusterError(
            "--task_index=%d is out of range: --%s_hosts lists %d %s task(s), "
            "numbered from 0 to %d."
            % (task_index, job_name, count, job_name, count - 1)
        )
    return ClusterConfig(
        jobs, job_name, task_index, **_options(flags, jobs, "--worker_hosts lists")
    )


def from_tf_config(text, flags):
    """This process's task, from TF_CONFIG: the JSON that schedulers
    (Kubeflow's TFJob, Vertex AI, ...) set in every process of a job, e.g.

        {"cluster": {"chief": ["host0:2222"], "ps": ["host1:2222"],
                     "worker": ["host2:2222"]},
         "task": {"type": "worker", "index": 0}}

    The chief is the "chief" task, or worker 0 when there is no "chief" job.

    Args:
      text: TF_CONFIG.
      flags: the values of the cluster flags, for the options that go with
        TF_CONFIG (--sync_replicas, ...).

    Returns:
      The ClusterConfig, or None for a cluster of one chief or worker alone.

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
        return ClusterConfig({}, job_name, task_index, from_tf_config=True)
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
            % (json.dumps(task), json.dumps(job_name), len(jobs[job_name]),
               _quote(config))
        )  # fmt: skip
    return _tf_config_cluster(jobs, job_name, task_index, config, flags)


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


def _tf_config_cluster(jobs, job_name, task_index, config, flags):
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
    options = _options(flags, jobs, "TF_CONFIG's cluster has")
    return ClusterConfig(jobs, job_name, task_index, from_tf_config=True, **options)


def unanswered(address):
    """None if something accepts connections at host:port; else the OSError."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), 5).close()
    except OSError as e:
        return e
    return None


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


def _options(flags, jobs, where):
    """The ClusterConfig's options from the flags that go with either way of
    placing the task, checked against the jobs (where says which)."""
    num_workers = len(jobs.get("chief", [])) + len(jobs.get("worker", []))
    replicas = flags["replicas_to_aggregate"]
    if replicas is not None and not flags["sync_replicas"]:
        raise ClusterError("--replicas_to_aggregate only applies with --sync_replicas.")
    if replicas is not None and replicas > num_workers:
        raise ClusterError(
            "--replicas_to_aggregate=%d, but %s %d worker(s); aggregate at most "
            "one gradient per worker." % (replicas, where, num_workers)
        )
    if flags["sync_replicas"]:
        replicas = replicas or num_workers
    return dict(
        replicas_to_aggregate=replicas, timeout_secs=flags["cluster_timeout_secs"]
    )


class ClusterConfig(NamedTuple):
    """This process's task of a cluster, and the cluster it is part of.

    Attributes:
      jobs: {job name: [host:port, ...]}.
      job_name: 'ps', 'worker', 'chief' or 'evaluator'.
      task_index: this process's index in its job.
      from_tf_config: whether TF_CONFIG said all this, not the flags.
      replicas_to_aggregate: the gradients of a synchronous step, or None
        for asynchronous updates.
      timeout_secs: --cluster_timeout_secs.
      address: its host:port (None for TF_CONFIG's evaluator).
      trains: whether this task trains: the chief and the workers do.
      is_chief: whether this is the chief: the "chief" task, or worker 0 when
        the cluster has none.
      chief: the chief's name in messages, "worker 0" or "chief 0".
      num_workers: how many tasks train: the chief and the workers.
      trainers: the tasks that train, as messages name them, in the order
        of their replica numbers.
    """

    jobs: dict
    job_name: str
    task_index: int
    from_tf_config: bool = False
    replicas_to_aggregate: int = None
    timeout_secs: int = None

    @property
    def address(self):
        if self.job_name not in self.jobs:  # TF_CONFIG's evaluator
            return None
        return self.jobs[self.job_name][self.task_index]

    @property
    def trains(self):
        return self.job_name in ("chief", "worker")

    @property
    def is_chief(self):
        return "%s %d" % (self.job_name, self.task_index) == self.chief

    @property
    def chief(self):
        return "chief 0" if "chief" in self.jobs else "worker 0"

    @property
    def num_workers(self):
        return len(self.trainers)

    @property
    def trainers(self):
        return [
            "%s %d (%s)" % (job, index, address)
            for job in ("chief", "worker")
            for index, address in enumerate(self.jobs.get(job, []))
        ]

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

    def where_hosts_are(self):
        """Where this task's address comes from, for a message."""
        if self.from_tf_config:
            return "TF_CONFIG's cluster"
        return "--%s_hosts" % self.job_name

    def __str__(self):
        return "%s %d (%s)" % (self.job_name, self.task_index, self.address)
