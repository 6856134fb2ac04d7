"""The training loop that cifar10_train.py and cifar10_multi_gpu_train.py share.

    cifar10_loop.run(build_graph, examples_per_step=FLAGS.batch_size)

build_graph() builds the training graph in the default graph and returns
(train_op, loss, summary_op). run() then:

  - makes --train_dir ready and keeps it for itself: a second training
    process there refuses to start (evaluation beside it is welcome);
    --fresh_start moves what is there aside, never deleting anything;
  - resumes from the newest checkpoint there that reads in full and fits the
    graph; a damaged newer one is renamed aside with a warning;
  - runs train_op until the global step reaches --max_steps, Ctrl+C or
    SIGTERM asks it to stop (it saves a checkpoint first; a second signal
    ends it at once), or the loss is not a number;
  - every --log_frequency steps prints

        <date time>: step N, loss = L.LL (E.E examples/sec; S.SSS sec/batch)

    with the rates averaged since the previous line;
  - writes summaries for TensorBoard every --save_summaries_steps steps, and
    a checkpoint model.ckpt-<step> every --save_checkpoint_steps steps and
    when it stops.

Given the cluster flags, or the TF_CONFIG environment variable that
schedulers set, run() hands over to cifar10_cluster.py, which trains as one
process of a cluster with the same pieces. That module is imported only
then, so a copy of the single-machine files runs without it.
"""

import cifar10_app

import contextlib
import datetime
import errno
import fcntl
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time

import numpy as np
import tensorflow as tf

import cifar10
import cifar10_checkpoint
import cifar10_input

FLAGS = tf.compat.v1.flags.FLAGS

tf.compat.v1.flags.DEFINE_string(
    "train_dir",
    "/tmp/cifar10_train",
    "Folder for event logs and checkpoints; training resumes from the newest "
    "checkpoint found there.",
)
cifar10_checkpoint.refuse_brackets("train_dir")
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
    "Start from step 0 even if --train_dir holds checkpoints. What it holds "
    "moves to <train_dir>.old-<date-time> (into <train_dir>/old-<date-time> "
    "when the folder is a mount point); nothing is deleted.",
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


# Held by the training process in --train_dir; says which process that is.
LOCK_FILE = "training.lock"
# What an interrupted save leaves behind: TensorFlow writes each file under a
# temporary name (a sharded checkpoint in a <prefix>_temp folder) and renames
# it when complete.
TEMPORARY = re.compile(r"(\.tmp[0-9a-f]{32}|\.tempstate\d+|_temp)$")


class TrainingError(cifar10_app.Error):
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
    shuffled = FLAGS.min_queue_examples or int(
        cifar10.NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN
        * cifar10_input.MIN_FRACTION_OF_EXAMPLES_IN_QUEUE
    )
    cifar10_app.check_memory(
        cifar10_app.memory_needed(
            cifar10.inference,
            examples_per_step,
            # The shuffling queue, and the towers' prefetched batches.
            queue_images=shuffled + (3 + 2 * num_towers) * FLAGS.batch_size,
        ),
        "train",
    )
    given = any(not FLAGS[name].using_default_value for name in CLUSTER_FLAGS)
    if given or os.environ.get("TF_CONFIG", "").strip():
        try:
            import cifar10_cluster  # noqa: PLC0415  (only a cluster needs it)
        except ImportError:
            raise TrainingError(
                "Training on a cluster (the cluster flags, or TF_CONFIG) needs "
                "cifar10_cluster.py beside cifar10_loop.py."
            ) from None
        cluster = cifar10_cluster.this_task()
        if cluster:
            cifar10_cluster.run(
                cluster, build_graph, examples_per_step, num_towers, config
            )
            return
    with own_train_dir() as checkpoint:
        if reached_max_steps(checkpoint):
            return
        cifar10.maybe_download_and_extract()
        with tf.Graph().as_default():
            train_op, loss, summary_op = build_graph()
            if checkpoint:
                check_resumable(checkpoint)
            scaffold = new_scaffold(summary_op, checkpoint)
            session_creator = tf.compat.v1.train.ChiefSessionCreator(
                scaffold=scaffold,
                config=config or session_config(),
                checkpoint_filename_with_path=checkpoint,
            )
            progress = ProgressHook(loss, examples_per_step, num_towers)
            stopped_by = train(
                session_creator,
                train_op,
                progress,
                [stop_at_max_steps()] + checkpoint_hooks(scaffold, checkpoint),
                saves_checkpoint=True,
            )
        report_checkpoint(stopped_by)


def session_config():
    """The default session config of a training binary."""
    return cifar10.session_config(log_device_placement=FLAGS.log_device_placement)


@contextlib.contextmanager
def own_train_dir():
    """Makes --train_dir ready, and keeps it for this process meanwhile.

    Creates it if need be, locks it, moves its contents aside on
    --fresh_start, removes what interrupted saves left there, and finds the
    checkpoint to resume from.

    Yields:
      The newest checkpoint in it that reads in full, or None.

    Raises:
      TrainingError: the folder cannot be written to, another process trains
        there, or it holds checkpoints of which none can be read.
    """
    train_dir = FLAGS.train_dir
    cifar10_app.writable_folder(train_dir, "train_dir")
    with _lock(train_dir):
        if FLAGS.fresh_start:
            _set_aside(train_dir)
        _remove_temporaries(train_dir)
        yield _resume_point(train_dir)


@contextlib.contextmanager
def _lock(train_dir):
    """Holds an OS lock on <train_dir>/training.lock.

    A second training process in the folder would write the same checkpoint
    and event files; it finds the lock taken and stops, naming this one. The
    kernel releases the lock when this process ends, however it ends.
    """
    fd = os.open(os.path.join(train_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 1000, 0).decode(errors="replace").strip()
            raise TrainingError(
                "--train_dir=%s is in use by another training process (%s). Wait "
                "for it to end or stop it, or train in another --train_dir."
                % (train_dir, holder or "it has not said which")
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            (
                "pid %d on %s since %s: %s\n"
                % (
                    os.getpid(),
                    socket.gethostname(),
                    time.strftime("%Y-%m-%d %H:%M:%S"),
                    " ".join(sys.argv),
                )
            ).encode(),
            0,
        )
        yield
    finally:
        os.close(fd)


def _set_aside(train_dir):
    """--fresh_start: moves what train_dir holds to a new folder beside it, or
    into one inside it when it is a mount point (whose contents cannot leave
    its file system)."""
    names = sorted(set(os.listdir(train_dir)) - {LOCK_FILE})
    if not names:
        return
    stamp = time.strftime("old-%Y%m%d-%H%M%S")
    if os.path.ismount(train_dir):
        kept = os.path.join(train_dir, stamp)
    else:
        kept = train_dir.rstrip("/") + "." + stamp
    try:
        os.makedirs(kept)
        for name in names:
            os.rename(os.path.join(train_dir, name), os.path.join(kept, name))
    except OSError as e:
        raise TrainingError(
            "--fresh_start: cannot move the contents of %s to %s (%s); nothing "
            "was deleted. Move them yourself, or train in another --train_dir."
            % (train_dir, kept, e.strerror or e)
        ) from None
    print(
        "--fresh_start: the previous contents of %s are now in %s." % (train_dir, kept)
    )


def _remove_temporaries(train_dir):
    """Removes the temporary files of saves that a crash or a full disk cut
    short; the lock makes sure no save of another process is under way."""
    leftovers = sorted(n for n in os.listdir(train_dir) if TEMPORARY.search(n))
    for name in leftovers:
        path = os.path.join(train_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    if leftovers:
        print(
            "Removed what interrupted saves left in %s: %s."
            % (train_dir, ", ".join(leftovers))
        )


def _resume_point(train_dir):
    """The newest checkpoint in train_dir that reads in full, or None.

    Newer damaged ones are renamed aside, so that this run neither writes
    over them nor counts them among its own.

    Raises:
      TrainingError: there are checkpoints, and none of them can be read.
    """
    checkpoint, damaged = cifar10_checkpoint.newest(train_dir)
    if damaged and checkpoint is None:
        raise TrainingError(
            "No checkpoint in --train_dir=%s can be read: %s. Starting from step "
            "0 would write over them; move them away, or pass --fresh_start to "
            "have them moved." % (train_dir, "; ".join("%s: %s" % d for d in damaged))
        )
    for path, reason in damaged:
        cifar10_checkpoint.set_aside(path)
        print(
            "Warning: %s is damaged (%s); its files are kept as %s.*.damaged."
            % (path, reason, os.path.basename(path)),
            flush=True,
        )
    return checkpoint


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


def new_scaffold(summary_op=None, checkpoint=None):
    """The scaffold of a training session: its saver, summaries and init ops.

    Args:
      summary_op: the summaries to write; None for all of the graph's.
      checkpoint: the checkpoint training resumes from, or None. Its saver
        then counts the run's earlier checkpoints among the --keep_checkpoints
        it keeps, as if the run had never stopped.
    """
    saver = tf.compat.v1.train.Saver(
        max_to_keep=FLAGS.keep_checkpoints,
        # One file, written by this process: on a cluster the chief then
        # writes the whole checkpoint on its own machine, rather than each
        # parameter server its part on its own.
        sharded=False,
        # Relative paths in the 'checkpoint' file keep a moved or renamed
        # train_dir usable.
        save_relative_paths=True,
    )
    if checkpoint:
        step = cifar10_checkpoint.step(checkpoint)
        earlier = [
            path
            for path in cifar10_checkpoint.candidates(os.path.dirname(checkpoint))
            if cifar10_checkpoint.step(path) <= step
        ]
        saver.recover_last_checkpoints(earlier[::-1])
    return tf.compat.v1.train.Scaffold(summary_op=summary_op, saver=saver)


def stop_at_max_steps():
    return tf.compat.v1.train.StopAtStepHook(last_step=FLAGS.max_steps)


def checkpoint_hooks(scaffold, checkpoint=None):
    """The hooks that write summaries and checkpoints to --train_dir.

    Args:
      scaffold: the session's scaffold, with its saver.
      checkpoint: the checkpoint training resumes from, or None.
    """
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
        _SaverHook(
            FLAGS.train_dir,
            on_disk=cifar10_checkpoint.step(checkpoint) if checkpoint else None,
            scaffold=scaffold,
            **every,
        ),
    ]


class _SaverHook(tf.compat.v1.train.CheckpointSaverHook):
    """CheckpointSaverHook, but for the step a run resumes from.

    CheckpointSaverHook saves the starting step as soon as the session is
    made. When that step is already on disk, saving it again would only take
    time, and end the run at once on a disk with less room than a
    checkpoint.
    """

    def __init__(self, checkpoint_dir, on_disk, **kwargs):
        super().__init__(checkpoint_dir, **kwargs)
        self._on_disk = on_disk

    def _save(self, session, step):
        if step == self._on_disk:
            return False  # no reason to stop
        return super()._save(session, step)


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


class _StopOnSignal(tf.compat.v1.train.SessionRunHook):
    """Turns SIGINT and SIGTERM into a clean stop.

    The first signal asks training to stop after the current step; the loop
    then ends the session, which saves a checkpoint. While the input queues
    fill before the first step, which can take minutes, training stops at
    once instead: this hook waits for them in Python, where the signal can
    end the wait. A second signal ends the process at once, without a
    checkpoint. A signal after training ended changes nothing: the
    checkpoint is saved, and the process about to end.

    Python runs signal handlers only in the main thread, between two steps,
    and merges two signals that come during one step into one. So a thread
    of this hook reads them instead, as they come, from the file descriptor
    to which Python writes each signal's number (signal.set_wakeup_fd).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, saves_checkpoint=True):
        self.received = None
        self.finished = False
        self._saving = " and saving a checkpoint" if saves_checkpoint else ""

    def listen(self):
        """Starts taking the signals; call it from the main thread."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        for signum in self.SIGNALS:
            # The handler itself does nothing; the thread below acts.
            signal.signal(signum, lambda signum, frame: None)
        signal.set_wakeup_fd(write_fd)
        threading.Thread(target=self._watch, args=(read_fd,), daemon=True).start()

    def _watch(self, read_fd):
        while True:
            for signum in os.read(read_fd, 16):
                self._on_signal(signal.Signals(signum).name, signum)

    def _on_signal(self, name, signum):
        if self.finished:
            return  # The checkpoint is saved and the process about to end.
        if self.received:
            print("\n%s again: exiting now, without a checkpoint." % name, flush=True)
            os._exit(128 + signum)
        self.received = name
        print(
            "\n%s: stopping after this step%s (send it again to quit at once)."
            % (name, self._saving),
            flush=True,
        )

    def begin(self):
        # The shuffling queues, and how full each must be before the first
        # batch can leave it.
        self._fill = [
            (
                runner.queue.size(),
                runner.queue.queue_ref.op.get_attr("min_after_dequeue"),
            )
            for runner in tf.compat.v1.get_collection(
                tf.compat.v1.GraphKeys.QUEUE_RUNNERS
            )
            if runner.queue.queue_ref.op.type.startswith("RandomShuffleQueue")
        ]

    def after_create_session(self, session, coord):
        # Last among the hooks: the queue runners run, the checkpoint of the
        # starting step is saved.
        while not self.received and not coord.should_stop():
            sizes = session.run([size for size, _ in self._fill])
            if all(
                size > least for size, (_, least) in zip(sizes, self._fill, strict=True)
            ):
                return
            time.sleep(0.1)


def train(session_creator, train_op, progress, hooks, saves_checkpoint):
    """Runs train_op until a hook or a signal stops it.

    Leaving the session normally runs the hooks' end(): the checkpoint hook
    saves the last step, and the queue runners are stopped.

    Args:
      session_creator: makes the session, restoring or initializing the model.
      train_op: one training step.
      progress: the ProgressHook; it goes first among the hooks.
      hooks: the other hooks.
      saves_checkpoint: whether the hooks save a checkpoint at the end.

    Returns:
      The name of the signal that stopped training, or None.

    Raises:
      TrainingError: the disk filled up while saving.
    """
    stop = _StopOnSignal(saves_checkpoint)
    stop.listen()
    try:
        with tf.compat.v1.train.MonitoredSession(
            session_creator, [progress, *hooks, stop]
        ) as sess:
            while not stop.received and not sess.should_stop():
                sess.run(train_op)
    except (tf.errors.ResourceExhaustedError, OSError) as e:
        if _disk_full(e):
            _remove_temporaries(FLAGS.train_dir)  # the half-written save
            raise _disk_full_error(progress.step) from None
        raise
    finally:
        stop.finished = True
    return stop.received


def _disk_full(error):
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    return "No space left on device" in error.message


def _disk_full_error(step):
    checkpoint, _ = cifar10_checkpoint.newest(FLAGS.train_dir)
    if checkpoint:
        intact = "the checkpoint of step %d is intact" % cifar10_checkpoint.step(
            checkpoint
        )
    else:
        intact = "no checkpoint was saved"
    return TrainingError(
        "No space left on the device of --train_dir=%s while saving step %s; %s. "
        "Free some space and run again to resume." % (FLAGS.train_dir, step, intact)
    )


def report_checkpoint(stopped_by):
    """The last line of a run that saved checkpoints to --train_dir."""
    checkpoint, _ = cifar10_checkpoint.newest(FLAGS.train_dir)
    print(
        "%s step %d; checkpoint saved in %s."
        % (
            stopped_phrase(stopped_by),
            cifar10_checkpoint.step(checkpoint),
            FLAGS.train_dir,
        ),
        flush=True,
    )


def stopped_phrase(stopped_by):
    """How the last line of a run begins."""
    return "Stopped by %s at" % stopped_by if stopped_by else "Done:"
