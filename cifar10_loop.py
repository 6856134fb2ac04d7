"""The training loop that cifar10_train.py and cifar10_multi_gpu_train.py share.

    cifar10_loop.run(build_graph, examples_per_step=FLAGS.batch_size)

build_graph() builds the training graph in the default graph and returns
(train_op, loss, summary_op). run() then:

  - makes --train_dir ready (--fresh_start sets an old one aside) and resumes
    from the newest checkpoint there, after checking that it fits the graph;
  - runs train_op until the global step reaches --max_steps, Ctrl+C or
    SIGTERM asks it to stop (it saves a checkpoint first), or the loss is not
    a number;
  - every --log_frequency steps prints

        <date time>: step N, loss = L.LL (E.E examples/sec; S.SSS sec/batch)

    with the rates averaged since the previous line;
  - writes summaries for TensorBoard every --save_summaries_steps steps, and
    a checkpoint model.ckpt-<step> every --save_checkpoint_steps steps and
    when it stops.

Given the cluster flags, run() hands over to cifar10_cluster.py, which trains
as one process of a cluster with the same pieces. That module is imported
only then, so a copy of the single-machine files runs without it.
"""

import datetime
import os
import signal
import tempfile
import time

import numpy as np
import tensorflow as tf

import cifar10
import cifar10_checkpoint

FLAGS = tf.compat.v1.flags.FLAGS

tf.compat.v1.flags.DEFINE_string(
    "train_dir",
    "/tmp/cifar10_train",
    "Folder for event logs and checkpoints; training resumes from the newest "
    "checkpoint found there.",
)
tf.compat.v1.flags.DEFINE_integer(
    "max_steps", 1000000, "Number of batches to run.", lower_bound=1
)
tf.compat.v1.flags.DEFINE_boolean(
    "log_device_placement", False, "Whether to log device placement."
)
tf.compat.v1.flags.DEFINE_integer(
    "log_frequency", 10, "How often (in steps) to log results.", lower_bound=1
)
tf.compat.v1.flags.DEFINE_integer(
    "save_summaries_steps",
    100,
    "How often (in steps) to write summaries.",
    lower_bound=1,
)
tf.compat.v1.flags.DEFINE_integer(
    "save_checkpoint_steps",
    1000,
    "How often (in steps) to save a checkpoint; ignored when "
    "--save_checkpoint_secs is set.",
    lower_bound=1,
)
tf.compat.v1.flags.DEFINE_integer(
    "save_checkpoint_secs",
    0,
    "If above 0, save a checkpoint this often (in seconds) instead.",
    lower_bound=0,
)
tf.compat.v1.flags.DEFINE_integer(
    "keep_checkpoints",
    5,
    "How many of the newest checkpoints to keep.",
    lower_bound=1,
)
tf.compat.v1.flags.DEFINE_boolean(
    "fresh_start",
    False,
    "Start from step 0 even if --train_dir holds checkpoints. The old folder "
    "is renamed to <train_dir>.old-<date-time>, not deleted.",
)

# The cluster's flags are defined here, so that every training binary takes
# them, and read by cifar10_cluster.py, which is imported only when one of
# them is given.
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


class TrainingError(Exception):
    """Training cannot start or go on; the message says why and what to do."""


def run(build_graph, examples_per_step, num_towers=1, config=None):
    """Trains the graph of build_graph() on this machine; see the docstring.

    Args:
      build_graph: a function that builds the training graph in the default
        graph and returns (train_op, loss, summary_op); train_op must
        increment the global step, summary_op may be None for all of the
        graph's summaries. It takes an optional apply_fn, which it passes to
        cifar10.train() (the cluster's synchronous updates use it).
      examples_per_step: images one run of train_op trains on.
      num_towers: towers sharing a step; sec/batch is per tower's batch.
      config: a tf.compat.v1.ConfigProto for the session.

    Raises:
      TrainingError: training cannot start or go on.
      cifar10_input.DataError: the data cannot be found or fetched.
    """
    if any(not FLAGS[name].using_default_value for name in CLUSTER_FLAGS):
        import cifar10_cluster  # noqa: PLC0415  (only a cluster needs it)

        cifar10_cluster.run(build_graph, examples_per_step, num_towers, config)
        return
    checkpoint = prepare_train_dir()
    if reached_max_steps(checkpoint):
        return
    cifar10.maybe_download_and_extract()
    with tf.Graph().as_default():
        train_op, loss, summary_op = build_graph()
        if checkpoint:
            check_resumable(checkpoint)
        scaffold = new_scaffold(summary_op)
        session_creator = tf.compat.v1.train.ChiefSessionCreator(
            scaffold=scaffold,
            config=config or session_config(),
            checkpoint_dir=FLAGS.train_dir,
        )
        progress = ProgressHook(loss, examples_per_step, num_towers)
        hooks = [progress, stop_at_max_steps()] + checkpoint_hooks(scaffold)
        stopped_by = train(session_creator, hooks, train_op, saves_checkpoint=True)
    report_checkpoint(stopped_by)


def session_config():
    """The default session config of a training binary."""
    return tf.compat.v1.ConfigProto(log_device_placement=FLAGS.log_device_placement)


def prepare_train_dir():
    """Makes --train_dir ready to write to; moves it aside on --fresh_start.

    Returns:
      The newest checkpoint in it to resume from, or None.

    Raises:
      TrainingError: the folder cannot be created or written to.
    """
    train_dir = FLAGS.train_dir
    if FLAGS.fresh_start and os.path.isdir(train_dir) and os.listdir(train_dir):
        kept = train_dir.rstrip("/") + time.strftime(".old-%Y%m%d-%H%M%S")
        os.rename(train_dir, kept)
        print("--fresh_start: the previous %s is now %s." % (train_dir, kept))
    try:
        os.makedirs(train_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=train_dir):
            pass
    except OSError as e:
        raise TrainingError(
            "Cannot write to --train_dir=%s (%s). Choose a folder you can write "
            "to." % (train_dir, e.strerror or e)
        ) from None
    return tf.train.latest_checkpoint(train_dir)


def reached_max_steps(checkpoint):
    """Says where training resumes; True if --max_steps is already reached."""
    if checkpoint is None:
        return False
    step = cifar10_checkpoint.step(checkpoint)
    if step >= FLAGS.max_steps:
        print(
            "%s is at step %d, already at --max_steps=%d: nothing to do."
            % (checkpoint, step, FLAGS.max_steps)
        )
        return True
    print("Resuming from %s at step %d." % (checkpoint, step), flush=True)
    return False


def check_resumable(checkpoint):
    """Makes sure the checkpoint holds every variable of the default graph.

    Raises:
      TrainingError: a variable is missing or has another shape or type, e.g.
        a checkpoint of another model, or of --use_fp16, in --train_dir.
    """
    variables = {v.op.name: v for v in tf.compat.v1.global_variables()}
    problem = cifar10_checkpoint.mismatch(checkpoint, variables)
    if problem:
        raise TrainingError(
            "The checkpoint %s does not match this model: %s. Use another "
            "--train_dir, or --fresh_start to set the old one aside."
            % (checkpoint, problem)
        )


def new_scaffold(summary_op=None):
    """The scaffold of a training session: its saver, summaries and init ops."""
    return tf.compat.v1.train.Scaffold(
        summary_op=summary_op,
        saver=tf.compat.v1.train.Saver(
            max_to_keep=FLAGS.keep_checkpoints,
            # One file, written by this process: on a cluster the chief then
            # writes the whole checkpoint on its own machine, rather than
            # each parameter server its part on its own.
            sharded=False,
            # Relative paths in the 'checkpoint' file keep a moved or renamed
            # train_dir usable.
            save_relative_paths=True,
        ),
    )


def stop_at_max_steps():
    return tf.compat.v1.train.StopAtStepHook(last_step=FLAGS.max_steps)


def checkpoint_hooks(scaffold):
    """The hooks that write summaries and checkpoints to --train_dir."""
    if FLAGS.save_checkpoint_secs:
        every = dict(save_secs=FLAGS.save_checkpoint_secs)
    else:
        every = dict(save_steps=FLAGS.save_checkpoint_steps)
    return [
        tf.compat.v1.train.SummarySaverHook(
            save_steps=FLAGS.save_summaries_steps,
            output_dir=FLAGS.train_dir,
            scaffold=scaffold,
        ),
        tf.compat.v1.train.CheckpointSaverHook(
            FLAGS.train_dir, scaffold=scaffold, **every
        ),
    ]


class ProgressHook(tf.compat.v1.train.SessionRunHook):
    """Prints the log line, stops on a NaN loss and follows the global step.

    Put it first among the hooks: it stops a diverged step before the summary
    and checkpoint hooks can save it.

    When only this process moves the global step, counting runs from the
    restored value gives the true step without reading it. When other
    processes move it too (shared_step), the hook reads it each run.
    """

    def __init__(self, loss, examples_per_step, num_towers=1, shared_step=False):
        self._loss = loss
        self._examples_per_step = examples_per_step
        self._num_towers = num_towers
        self._shared_step = shared_step
        self.step = None
        self.own_steps = 0

    def after_create_session(self, session, coord):
        self.step = int(session.run(tf.compat.v1.train.get_global_step()))
        self._started = time.time()
        self._logged_at = None  # (own steps, time) of the last line

    def before_run(self, run_context):
        fetches = {"loss": self._loss}
        if self._shared_step:
            fetches["step"] = tf.compat.v1.train.get_global_step()
        return tf.compat.v1.train.SessionRunArgs(fetches)

    def after_run(self, run_context, run_values):
        self.own_steps += 1
        if self._shared_step:
            self.step = int(run_values.results["step"]) + 1
        else:
            self.step += 1
        loss_value = run_values.results["loss"]
        if not np.isfinite(loss_value):
            raise TrainingError(
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
        elif (self.own_steps if self._shared_step else self.step) % (
            FLAGS.log_frequency
        ) == 0:
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


class _StopOnSignal:
    """Turns the first SIGINT or SIGTERM into a request to stop cleanly.

    The training loop checks `received` between steps; a second signal exits
    at once, without a checkpoint.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, saves_checkpoint=True):
        self.received = None
        self._saving = " and saving a checkpoint" if saves_checkpoint else ""

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received:
            print("\n%s again: exiting now, without a checkpoint." % name, flush=True)
            os._exit(128 + signum)
        self.received = name
        print(
            "\n%s: stopping after this step%s (send it again to quit at once)."
            % (name, self._saving),
            flush=True,
        )

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def train(session_creator, hooks, train_op, saves_checkpoint):
    """Runs train_op until a hook or a signal stops it.

    Leaving the session normally runs the hooks' end(): the checkpoint hook
    saves the last step, and the queue runners are stopped.

    Returns:
      The name of the signal that stopped training, or None.
    """
    with _StopOnSignal(saves_checkpoint) as stop:
        with tf.compat.v1.train.MonitoredSession(session_creator, hooks) as sess:
            while not stop.received and not sess.should_stop():
                sess.run(train_op)
    return stop.received


def report_checkpoint(stopped_by):
    """The last line of a run that saved checkpoints to --train_dir."""
    step = cifar10_checkpoint.step(tf.train.latest_checkpoint(FLAGS.train_dir))
    print(
        "%s step %d; checkpoint saved in %s."
        % (stopped_phrase(stopped_by), step, FLAGS.train_dir),
        flush=True,
    )


def stopped_phrase(stopped_by):
    """How the last line of a run begins."""
    return "Stopped by %s at" % stopped_by if stopped_by else "Done:"
