"""The folder a training run keeps for itself (--train_dir), resumes from
and saves to.

    with run_folder.TrainDir(path) as train_dir:     # locked, ready, resumable
        if train_dir.reached(max_steps):
            return
        ...                                          # build the graph
        scaffold = train_dir.scaffold()              # the checkpoint fits it
        hooks = [..., *train_dir.saving_hooks(scaffold)]
        ...                                          # train
    train_dir.report(progress, stopped_by)

Entering it makes the folder if need be and locks it: a second training
process there refuses to start, naming this one (evaluation beside it is
welcome). --fresh_start moves what it holds aside, never deleting anything;
what saves cut short left there is removed; and the newest checkpoint that
reads in full is the one to resume from (a damaged newer one is renamed
aside with a warning). Leaving it on a full disk ends in one line that says
which checkpoint is intact. On a cluster only the chief keeps the folder;
for the other workers TrainDir(path, chief=False) does none of this.

The flags here are this module's own: how often to save and how many
checkpoints to keep, and --fresh_start.
"""

import contextlib
import errno
import os
import re
import sys
import time

import tensorflow as tf

from support import checkpoints, folders
from support.errors import Error

FLAGS = tf.compat.v1.flags.FLAGS

tf.compat.v1.flags.DEFINE_boolean(
    "fresh_start",
    False,
    "Start from step 0 even if --train_dir holds checkpoints. What it holds "
    "moves to <train_dir>.old-<date-time> (into <train_dir>/old-<date-time> "
    "when the folder is a mount point); nothing is deleted.",
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

# Held by the training process in --train_dir; says which process that is.
LOCK_FILE = "training.lock"
# What an interrupted save leaves behind: TensorFlow writes each file under a
# temporary name (a sharded checkpoint in a <prefix>_temp folder) and renames
# it when complete.
TEMPORARY = re.compile(r"(\.tmp[0-9a-f]{32}|\.tempstate\d+|_temp)$")


class TrainDir:
    """The training folder, made ready and kept for this process; see the
    docstring.

    Args:
      path: the folder (--train_dir).
      chief: whether this process keeps it (False: a worker of a cluster
        other than the chief, which does nothing here).

    Attributes:
      path: the folder.
      checkpoint: the checkpoint to resume from, or None.
    """

    def __init__(self, path, chief=True):
        self.path = path
        self.checkpoint = None
        self._chief = chief
        self._held = contextlib.ExitStack()
        self._saving = None

    def __enter__(self):
        if self._chief:
            with contextlib.ExitStack() as held:  # the lock, until __exit__
                folders.writable(self.path, "train_dir")
                held.enter_context(_locked(self.path))
                if FLAGS.fresh_start:
                    _set_aside(self.path)
                _remove_temporaries(self.path)
                self.checkpoint = _resume_point(self.path)
                self._held = held.pop_all()
        return self

    def __exit__(self, kind, error, traceback):
        with self._held:  # the lock goes last
            if self._chief and _disk_full(error):
                _remove_temporaries(self.path)  # the half-written save
                saving = self._saving.step if self._saving else None
                raise _disk_full_error(self.path, saving) from None

    def reached(self, max_steps):
        """Says where training resumes; True if max_steps is reached already."""
        step = checkpoints.step(self.checkpoint) if self.checkpoint else 0
        if self.checkpoint and step >= max_steps:
            print("%s is at step %d, already at --max_steps=%d: nothing to do."
                  % (self.checkpoint, step, max_steps))  # fmt: skip
        elif self.checkpoint:
            print("Resuming from %s at step %d." % (self.checkpoint, step), flush=True)
        return step >= max_steps

    def keep_class_names(self, names):
        """Writes the data's class names beside the checkpoints, for the
        classifier; a run that resumes checks they are its checkpoints'.

        Raises:
          Error: they are not.
        """
        if self._chief:
            _keep_class_names(self.path, names)

    def scaffold(self, summary_op=None):
        """The training session's scaffold, for the graph just built: its
        saver, summaries and init ops.

        Args:
          summary_op: the summaries to write; None for all of the graph's.

        Raises:
          Error: the checkpoint to resume from does not fit the graph.
        """
        if self.checkpoint:
            _check_resumable(self.checkpoint)
        saver = _Saver(self.path, self.checkpoint)
        return tf.compat.v1.train.Scaffold(summary_op=summary_op, saver=saver)

    def saving_hooks(self, scaffold):
        """The hooks that write summaries and checkpoints here (the chief's)."""
        if not self._chief:
            return []
        self._saving = _Saving()
        saver = tf.compat.v1.train.CheckpointSaverHook(
            self.path, scaffold=scaffold, listeners=[self._saving], **_every()
        )
        summaries = tf.compat.v1.train.SummarySaverHook(
            save_steps=FLAGS.save_summaries_steps, output_dir=self.path,
            scaffold=scaffold,
        )  # fmt: skip
        return [summaries, saver]

    def report(self, progress, stopped_by):
        """The last lines of a run: where it stopped, and what was saved."""
        how = "Stopped by %s at" % stopped_by if stopped_by else "Done:"
        if self._chief:
            saved = checkpoints.step(checkpoints.newest(self.path)[0])
            print("%s step %d; checkpoint saved in %s." % (how, saved, self.path))
        else:
            print("%s global step %d." % (how, progress.step))
        if progress.shared_step:
            print("This worker ran %d steps." % progress.own_steps)
        sys.stdout.flush()


def _every():
    """How often to save a checkpoint: --save_checkpoint_secs if set, else
    --save_checkpoint_steps."""
    if FLAGS.save_checkpoint_secs:
        return dict(save_secs=FLAGS.save_checkpoint_secs)
    return dict(save_steps=FLAGS.save_checkpoint_steps)


def _keep_class_names(train_dir, names):
    kept = checkpoints.class_names(train_dir)
    if kept is None:
        checkpoints.write_class_names(train_dir, names)
    elif kept != names:
        raise Error(
            "The checkpoints in --train_dir=%s were trained on the classes %s; "
            "--data_dir holds %s. Train on the data they were trained on, or pass "
            "--fresh_start (or another --train_dir) to begin anew."
            % (
                train_dir,
                checkpoints.describe_classes(kept),
                checkpoints.describe_classes(names),
            )
        )


@contextlib.contextmanager
def _locked(train_dir):
    """Holds the lock of train_dir: one training process at a time."""
    try:
        with folders.locked(os.path.join(train_dir, LOCK_FILE)):
            yield
    except folders.Taken as e:
        raise Error(
            "--train_dir=%s is in use by another training process (%s). Wait for "
            "it to end or stop it, or train in another --train_dir." % (train_dir, e)
        ) from None


def _remove_temporaries(train_dir):
    """Removes what saves that a crash or a full disk cut short left; the
    lock makes sure that no save of another process is under way."""
    removed = folders.remove_leftovers(train_dir, TEMPORARY)
    if removed:
        print(
            "Removed what interrupted saves left in %s: %s."
            % (train_dir, ", ".join(removed))
        )


def _check_resumable(checkpoint):
    """Makes sure the checkpoint holds every variable of the default graph.

    Raises:
      Error: a variable is missing or has another shape or type, e.g. a
        checkpoint of another model, or of --use_fp16, in --train_dir.
    """
    variables = {v.op.name: v for v in tf.compat.v1.global_variables()}
    problem = checkpoints.mismatch(checkpoint, variables)
    if problem:
        raise Error(
            "The checkpoint %s does not match this model: %s. Use another "
            "--train_dir, or --fresh_start to set the old one aside."
            % (checkpoint, problem)
        )


class _Saver(tf.compat.v1.train.Saver):
    """The saver of a run that resumes from checkpoint (or None).

    It counts the run's earlier checkpoints among the --keep_checkpoints it
    keeps, as if the run had never stopped. And it does not save again the
    step the run resumes from: CheckpointSaverHook saves the starting step
    as soon as the session is made, and when that step is on disk already,
    saving it again would only take time, and end the run at once on a disk
    with less room than a checkpoint.
    """

    def __init__(self, train_dir, checkpoint):
        super().__init__(
            max_to_keep=FLAGS.keep_checkpoints,
            # One file, written by this process: on a cluster the chief then
            # writes the whole checkpoint on its own machine, rather than
            # each parameter server its part on its own.
            sharded=False,
            # Relative paths in the 'checkpoint' file keep a moved or renamed
            # train_dir usable.
            save_relative_paths=True,
        )
        # The step on disk that a save need not write again.
        self._resumed = checkpoints.step(checkpoint) if checkpoint else None
        if checkpoint:
            earlier = [
                path
                for path in checkpoints.candidates(train_dir)
                if checkpoints.step(path) <= self._resumed
            ]
            self.recover_last_checkpoints(earlier[::-1])

    def save(self, sess, save_path, global_step=None, **kwargs):
        if global_step is not None and global_step == self._resumed:
            return "%s-%d" % (save_path, global_step)  # there already
        return super().save(sess, save_path, global_step=global_step, **kwargs)


class _Saving(tf.compat.v1.train.CheckpointSaverListener):
    """Knows which step is being saved, while it is (for the message of a
    full disk)."""

    def __init__(self):
        self.step = None

    def before_save(self, session, global_step_value):
        self.step = global_step_value

    def after_save(self, session, global_step_value):
        self.step = None


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
        raise Error(
            "--fresh_start: cannot move the contents of %s to %s (%s); nothing "
            "was deleted. Move them yourself, or train in another --train_dir."
            % (train_dir, kept, e.strerror or e)
        ) from None
    print(
        "--fresh_start: the previous contents of %s are now in %s." % (train_dir, kept)
    )


def _resume_point(train_dir):
    """The newest checkpoint in train_dir that reads in full, or None.

    Newer damaged ones are renamed aside, so that this run neither writes
    over them nor counts them among its own.

    Raises:
      Error: there are checkpoints, and none of them can be read.
    """
    checkpoint, damaged = checkpoints.newest(train_dir)
    if damaged and checkpoint is None:
        raise Error(
            "No checkpoint in --train_dir=%s can be read: %s. Starting from step "
            "0 would write over them; move them away, or pass --fresh_start to "
            "have them moved." % (train_dir, "; ".join("%s: %s" % d for d in damaged))
        )
    for path, reason in damaged:
        checkpoints.set_aside(path)
        print(
            "Warning: %s is damaged (%s); its files are kept as %s.*.damaged."
            % (path, reason, os.path.basename(path)),
            flush=True,
        )
    return checkpoint


def _disk_full(error):
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    if isinstance(error, tf.errors.ResourceExhaustedError):
        return "No space left on device" in error.message
    return False


def _disk_full_error(train_dir, saving):
    checkpoint, _ = checkpoints.newest(train_dir)
    if checkpoint:
        intact = "the checkpoint of step %d is intact" % checkpoints.step(checkpoint)
    else:
        intact = "no checkpoint was saved"
    return Error(
        "No space left on the device of --train_dir=%s while saving%s; %s. Free "
        "some space and run again to resume."
        % (train_dir, "" if saving is None else " step %d" % saving, intact)
    )
