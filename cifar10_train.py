"""Trains the CIFAR-10 model on one device.

    python cifar10_train.py --train_dir=/tmp/cifar10_train

Every --log_frequency steps it prints

    <date time>: step N, loss = L.LL (E.E examples/sec; S.SSS sec/batch)

with the rates averaged since the previous line. Summaries for TensorBoard
go to --train_dir every --save_summaries_steps steps, and a checkpoint
model.ckpt-<step> every --save_checkpoint_steps steps and at the end.

A run that finds a checkpoint in --train_dir continues from it; pass
--fresh_start to begin again (the old folder is kept under a new name).
Ctrl+C or SIGTERM stops after the current step and saves a checkpoint.

To train on several processes or machines, start parameter servers and
workers with the cluster flags (--ps_hosts, --worker_hosts, --job_name,
--task_index, --sync_replicas); see cifar10_cluster.py and the README.

The training loop here is shared: cifar10_multi_gpu_train.py builds another
graph and hands it to run_main().
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # Keep TF's C++ chatter quiet.
# oneDNN's CPU kernels, which TensorFlow turns on by itself only on some CPUs,
# make the training step about 1.4x faster on plain AVX2 machines.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import datetime  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402

import cifar10  # noqa: E402
import cifar10_cluster  # noqa: E402
import cifar10_input  # noqa: E402

FLAGS = tf.compat.v1.flags.FLAGS
# --help lists the shared and cluster flags beside this binary's own.
tf.compat.v1.flags.adopt_module_key_flags(cifar10)
tf.compat.v1.flags.adopt_module_key_flags(cifar10_cluster)

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


class TrainingError(Exception):
    """Training cannot start or go on; the message says why and what to do."""


class _ProgressHook(tf.compat.v1.train.SessionRunHook):
    """Prints the log line, stops on a NaN loss and follows the global step.

    It runs before the summary and checkpoint hooks, so a diverged step is
    never saved.

    On one machine only this process moves the global step, so counting runs
    from the restored value gives the true step without reading it. On a
    cluster (shared_step) every worker moves it: the hook reads it each run,
    and logs every --log_frequency of this worker's own steps.
    """

    def __init__(self, loss, examples_per_step, num_towers, shared_step=False):
        self._loss = loss
        self._examples_per_step = examples_per_step
        self._num_towers = num_towers
        self._shared_step = shared_step
        self.step = None
        self.local_steps = 0

    def after_create_session(self, session, coord):
        self.step = int(session.run(tf.compat.v1.train.get_global_step()))
        self._last_time = time.time()
        self._last_step = None

    def before_run(self, run_context):
        fetches = {"loss": self._loss}
        if self._shared_step:
            fetches["step"] = tf.compat.v1.train.get_global_step()
        return tf.compat.v1.train.SessionRunArgs(fetches)

    def after_run(self, run_context, run_values):
        self.local_steps += 1
        if self._shared_step:
            self.step = int(run_values.results["step"]) + 1
        else:
            self.step += 1
        loss_value = run_values.results["loss"]
        now = time.time()
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
        if self._last_step is None:
            # The first step waits for the shuffling queue to fill; leave it
            # out of the rates.
            print(
                "Input queue filled; the first step took %.1f s."
                % (now - self._last_time),
                flush=True,
            )
            self._last_time, self._last_step = now, self.local_steps
        elif (self.local_steps if self._shared_step else self.step) % (
            FLAGS.log_frequency
        ) == 0:
            sec_per_step = (now - self._last_time) / (
                self.local_steps - self._last_step
            )
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
            self._last_time, self._last_step = now, self.local_steps


class _StopOnSignal:
    """Turns the first SIGINT or SIGTERM into a request to stop cleanly.

    The training loop checks `received` between steps; a second signal exits
    at once, without a checkpoint.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, saves_checkpoint=True):
        self.received = None
        self._then = " and saving a checkpoint" if saves_checkpoint else ""

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received:
            print("\n%s again: exiting now, without a checkpoint." % name, flush=True)
            os._exit(128 + signum)
        self.received = name
        print(
            "\n%s: stopping after this step%s (send it again to quit at once)."
            % (name, self._then),
            flush=True,
        )

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _prepare_train_dir():
    """Makes --train_dir ready to write to, moving it aside on --fresh_start.

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


def _checkpoint_step(checkpoint):
    """The global step stored in a checkpoint."""
    return int(tf.train.load_variable(checkpoint, "global_step"))


def _check_resumable(checkpoint):
    """Makes sure the checkpoint holds every variable of this graph.

    Raises:
      TrainingError: a variable is missing or has another shape or type, e.g.
        a checkpoint of another model, or of --use_fp16, in --train_dir.
    """
    reader = tf.train.load_checkpoint(checkpoint)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    for var in tf.compat.v1.global_variables():
        name = var.op.name
        if name not in shapes:
            problem = "is missing"
        elif list(shapes[name]) != var.shape.as_list():
            problem = "has shape %s, not %s" % (shapes[name], var.shape.as_list())
        elif dtypes[name] != var.dtype.base_dtype:
            problem = "is %s, not %s" % (dtypes[name].name, var.dtype.base_dtype.name)
        else:
            continue
        raise TrainingError(
            "The checkpoint %s does not match this model: variable %s %s. Use "
            "another --train_dir, or --fresh_start to set the old one aside."
            % (checkpoint, name, problem)
        )


def run_training(
    train_op,
    loss,
    examples_per_step,
    num_towers=1,
    summary_op=None,
    config=None,
    cluster=None,
):
    """Runs train_op until --max_steps, a signal, or divergence.

    Call it with the training graph as the default graph. It resumes from the
    newest checkpoint in --train_dir (after checking that it fits the graph),
    writes summaries and checkpoints, and saves a last checkpoint when it
    stops. On a cluster only the chief does these; the other workers train.

    Args:
      train_op: one training step; it must increment the global step.
      loss: scalar loss, logged and checked for NaN each step.
      examples_per_step: images one run of train_op trains on.
      num_towers: towers sharing a step; sec/batch is per tower's batch.
      summary_op: summaries to write; all of the graph's by default.
      config: a tf.compat.v1.ConfigProto for the session.
      cluster: a cifar10_cluster.Cluster when training on a cluster; build
        the graph under its device_setter().

    Raises:
      TrainingError: the loss diverged, or the checkpoint does not fit.
      cifar10_cluster.ClusterError: the cluster cannot be reached.
    """
    is_chief = cluster is None or cluster.is_chief
    checkpoint = tf.train.latest_checkpoint(FLAGS.train_dir) if is_chief else None
    if checkpoint:
        _check_resumable(checkpoint)

    if config is None:
        config = tf.compat.v1.ConfigProto(
            log_device_placement=FLAGS.log_device_placement
        )
    scaffold = tf.compat.v1.train.Scaffold(
        summary_op=summary_op,
        # Relative paths in the 'checkpoint' file keep a moved or renamed
        # train_dir usable. On a cluster, one shard: the chief then writes
        # the whole checkpoint itself, rather than each parameter server its
        # part on its own machine.
        saver=tf.compat.v1.train.Saver(
            max_to_keep=FLAGS.keep_checkpoints,
            sharded=cluster is None,
            save_relative_paths=True,
        ),
    )
    if FLAGS.save_checkpoint_secs:
        cadence = dict(save_secs=FLAGS.save_checkpoint_secs)
    else:
        cadence = dict(save_steps=FLAGS.save_checkpoint_steps)
    progress = _ProgressHook(
        loss, examples_per_step, num_towers, shared_step=cluster is not None
    )
    hooks = [
        progress,  # First: it stops a diverged step before anything saves it.
        tf.compat.v1.train.StopAtStepHook(last_step=FLAGS.max_steps),
    ]
    if is_chief:
        hooks += [
            tf.compat.v1.train.SummarySaverHook(
                save_steps=FLAGS.save_summaries_steps,
                output_dir=FLAGS.train_dir,
                scaffold=scaffold,
            ),
            tf.compat.v1.train.CheckpointSaverHook(
                FLAGS.train_dir, scaffold=scaffold, **cadence
            ),
        ]
    if cluster:
        hooks += cluster.hooks()
        config = cluster.session_config(config)
        session_creator = cifar10_cluster.SessionCreator(
            cluster, cluster.start_server(config), scaffold, config, FLAGS.train_dir
        )
    else:
        session_creator = tf.compat.v1.train.ChiefSessionCreator(
            scaffold=scaffold, checkpoint_dir=FLAGS.train_dir, config=config
        )
    with _StopOnSignal(saves_checkpoint=is_chief) as stop:
        # Leaving the block normally runs the hooks' end(): the checkpoint
        # hook saves the last step, and the queue runners are stopped.
        with tf.compat.v1.train.MonitoredSession(session_creator, hooks) as sess:
            while not stop.received and not sess.should_stop():
                sess.run(train_op)
    how = "Stopped by %s at" % stop.received if stop.received else "Done:"
    if is_chief:
        step = _checkpoint_step(tf.train.latest_checkpoint(FLAGS.train_dir))
        print("%s step %d; checkpoint saved in %s." % (how, step, FLAGS.train_dir))
    else:
        print("%s global step %d." % (how, progress.step))
    if cluster:
        print("This worker ran %d steps." % progress.local_steps, flush=True)


def train(cluster=None):
    """Builds the single-device training graph and runs it.

    Args:
      cluster: a cifar10_cluster.Cluster to train on, or None for this
        machine alone.
    """
    with tf.Graph().as_default(), cifar10_cluster.device_scope(cluster):
        global_step = tf.compat.v1.train.get_or_create_global_step()

        # The input pipeline stays on the CPU even on a GPU machine: its
        # queues and image ops are CPU work and would only slow a GPU.
        with tf.device("/cpu:0"):
            images, labels = cifar10.distorted_inputs()

        logits = cifar10.inference(images)
        loss = cifar10.loss(logits, labels)
        train_op = cifar10.train(
            loss, global_step, wrap_optimizer=cluster and cluster.wrap_optimizer
        )
        run_training(
            train_op, loss, examples_per_step=FLAGS.batch_size, cluster=cluster
        )


def run_main(train_fn):
    """What every training binary does around its graph.

    Reads the cluster flags (a parameter server only serves), prepares
    --train_dir, says where training resumes (or that --max_steps is already
    reached), makes sure the data is there, runs train_fn(cluster), and turns
    the errors a user can cause into one message and exit status 1.
    """
    try:
        cluster = cifar10_cluster.from_flags()
        if cluster and cluster.job_name == "ps":
            cifar10_cluster.serve(cluster)
            return
        if cluster and not cluster.is_chief:
            # Only the chief writes to --train_dir.
            cifar10.maybe_download_and_extract()
            train_fn(cluster)
            return
        _prepare_train_dir()
        checkpoint = tf.train.latest_checkpoint(FLAGS.train_dir)
        if checkpoint:
            step = _checkpoint_step(checkpoint)
            if step >= FLAGS.max_steps:
                print(
                    "%s is at step %d, already at --max_steps=%d: nothing to do."
                    % (checkpoint, step, FLAGS.max_steps)
                )
                return
            print("Resuming from %s at step %d." % (checkpoint, step), flush=True)
        cifar10.maybe_download_and_extract()
        train_fn(cluster)
    except (
        cifar10_input.DataError,
        TrainingError,
        cifar10_cluster.ClusterError,
    ) as e:
        sys.exit("Error: %s" % e)


def main(argv=None):
    del argv
    run_main(train)


if __name__ == "__main__":
    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    app.run(main)
