"""Where a cluster enters training: the seam, which is the identity on one
machine.

    task = cluster.this_task()
    if not task.trains:
        return task.serve()        # a parameter server, or TF_CONFIG's evaluator
    with task.device():            # where the variables go
        ...                        # the graph; cifar10.train(apply_fn=task.apply_fn)
    creator = task.session_creator(scaffold, config, train_dir)
    ... MonitoredSession(creator, [..., *task.hooks()]) ...

On one machine this_task() is LOCAL: the graph stays where it is placed,
there is nothing to add to the step or the hooks, and the session is the
chief's, restored from the checkpoint training resumes from. Given the
cluster flags below, or the TF_CONFIG environment variable that schedulers
set, it is this process's task of a cluster: cluster_config.py reads the
cluster from the values of these flags, or from TF_CONFIG, and
cluster_task.py and cluster_hooks.py train it. A copy of the project for
one machine runs without those three files.
"""

import contextlib
import os

import tensorflow as tf

from support.errors import Error

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
CLUSTER_FLAGS = (
    "ps_hosts",
    "worker_hosts",
    "job_name",
    "task_index",
    "sync_replicas",
    "replicas_to_aggregate",
    "cluster_timeout_secs",
)


class Local:
    """Training on this machine alone: the seam changes nothing."""

    trains = True
    is_chief = True
    shared_step = False  # only this process moves the global step
    apply_fn = None  # cifar10.train() applies the gradients itself

    def device(self):
        return contextlib.nullcontext()

    def hooks(self):
        return []

    def session_creator(self, scaffold, config, train_dir, bf16=False):
        """The chief's session, restored from train_dir.checkpoint or new.
        (bf16, whether config turns on the oneDNN bfloat16 rewrite, changes
        nothing here.)"""
        return tf.compat.v1.train.ChiefSessionCreator(
            scaffold=scaffold,
            config=config,
            checkpoint_filename_with_path=train_dir.checkpoint,
        )


LOCAL = Local()


def this_task():
    """This process's task: LOCAL, or its task of a cluster.

    Raises:
      Error: the cluster flags or TF_CONFIG are wrong; the message quotes
        them.
    """
    given = [name for name in CLUSTER_FLAGS if not FLAGS[name].using_default_value]
    tf_config = os.environ.get("TF_CONFIG", "")
    if not given and not tf_config.strip():
        return LOCAL
    try:  # a cluster's alone
        from support import cluster_config, cluster_task  # noqa: PLC0415
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("support.cluster_"):
            raise
        raise Error(
            "Training on a cluster (the cluster flags, or TF_CONFIG) needs "
            "support/%s.py." % e.name.rpartition(".")[2]
        ) from None
    flags = {name: FLAGS[name].value for name in CLUSTER_FLAGS}
    config = cluster_config.describe(flags, given, tf_config)
    return cluster_task.Task(config) if config else LOCAL
