"""Finding and reading checkpoints, for the binaries that restore them.

Training resumes from them; evaluation and classification score with the
moving averages of their weights (restorer()).

The model.ckpt-<step>.index files in a folder are the truth about which
checkpoints it holds. The 'checkpoint' file beside them only points at the
newest, and a crash or a hand can leave it missing, garbled or pointing at
something absent; so the newest checkpoint is found from the index files,
and read in full before it is trusted: a damaged one (a data file cut short
or missing, an index missing) is reported and passed over. Training deletes
all but its newest few, perhaps while another process reads one: a reader
asks vanished() when a read fails.
"""

import glob
import os

import tensorflow as tf

# Training's checkpoints are <folder>/model.ckpt-<step>; their index files end
# in this.
INDEX = ".index"
# What reading a checkpoint raises, among other things when its files go.
READ_ERRORS = (tf.errors.OpError, ValueError)
# Training writes the names of the classes beside its checkpoints, one a line
# in label order: the model's outputs mean nothing without them.
CLASS_NAMES_FILE = "class_names.txt"


def refuse_brackets(flag_name):
    """Makes the flag refuse a path with [ or ], at once, in one line.

    TensorFlow reads the path of a checkpoint as a pattern, in which [1] is
    a set of characters: checkpoints saved in runs/br[1] would never be
    found again. (Spaces, other letters, * and ? work as they are.)
    """
    tf.compat.v1.flags.register_validator(
        flag_name,
        lambda path: not path or not set("[]") & set(path),
        message="TensorFlow reads [ and ] in the path of a checkpoint as a "
        "pattern, and would not find the checkpoints again. Choose a folder "
        "without them.",
    )


def step(checkpoint):
    """The global step of a checkpoint.

    Args:
      checkpoint: a checkpoint's path prefix, such as .../model.ckpt-1000.

    Returns:
      The step in its name, or for a checkpoint named otherwise the value of
      its global_step variable.
    """
    name = checkpoint.rsplit("-", 1)[-1]
    if name.isdigit():
        return int(name)
    return int(tf.train.load_variable(checkpoint, "global_step"))


def mismatch(checkpoint, variables):
    """Why the checkpoint cannot be restored into these variables, if it can't.

    Args:
      checkpoint: a checkpoint's path prefix.
      variables: {name in the checkpoint: variable of the graph}.

    Returns:
      None when every variable is in the checkpoint with its shape and type,
      else a phrase such as "variable conv1/weights is float16, not float32".
    """
    reader = tf.train.load_checkpoint(checkpoint)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    for name, var in sorted(variables.items()):
        if name not in shapes:
            return "variable %s is missing" % name
        if list(shapes[name]) != var.shape.as_list():
            return "variable %s has shape %s, not %s" % (
                name,
                shapes[name],
                var.shape.as_list(),
            )
        if dtypes[name] != var.dtype.base_dtype:
            return "variable %s is %s, not %s" % (
                name,
                dtypes[name].name,
                var.dtype.base_dtype.name,
            )
    return None


def candidates(checkpoint_dir):
    """The checkpoints in a folder, newest first.

    Returns:
      The path prefixes of every <prefix>.index file in checkpoint_dir, and
      of the checkpoint the 'checkpoint' file names if any file of it is
      there, sorted by step, highest first.
    """
    found = {
        path[: -len(INDEX)]
        for path in glob.glob(os.path.join(glob.escape(checkpoint_dir), "*" + INDEX))
    }
    try:
        state = tf.train.get_checkpoint_state(checkpoint_dir)
    except READ_ERRORS:
        state = None  # A garbled pointer is as good as none.
    if state and state.model_checkpoint_path and _files(state.model_checkpoint_path):
        found.add(state.model_checkpoint_path)
    return sorted(found, key=_step_or_minus_one, reverse=True)


def damage(checkpoint):
    """Why a checkpoint cannot be read, or None if it can.

    Every tensor is read, so that each one's checksum is verified.
    """
    try:
        reader = tf.train.load_checkpoint(checkpoint)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as e:
        return str(e).strip().splitlines()[0][:200] or type(e).__name__
    return None


def newest(checkpoint_dir, trusted=()):
    """The newest readable checkpoint in a folder.

    Args:
      checkpoint_dir: the folder.
      trusted: checkpoints read in full before, which need no second read.

    Returns:
      (checkpoint, damaged): the path prefix of the newest checkpoint that
      reads in full, or None; and a (path prefix, reason) pair for each
      newer one that does not. A checkpoint deleted meanwhile (training
      keeps only the newest few) is left out of both.
    """
    damaged = []
    for checkpoint in candidates(checkpoint_dir):
        if checkpoint in trusted:
            return checkpoint, damaged
        reason = damage(checkpoint)
        if reason is None:
            return checkpoint, damaged
        if _files(checkpoint):
            damaged.append((checkpoint, reason))
    return None, damaged


def vanished(checkpoint):
    """Whether a checkpoint's index or data file is gone: training deletes all
    but its newest few, perhaps while another process reads one."""
    return not (
        os.path.exists(checkpoint + INDEX)
        and glob.glob(glob.escape(checkpoint) + ".data-*")
    )


def set_aside(checkpoint):
    """Renames every file of a checkpoint to <file>.damaged, so that nothing
    writes over it and nothing takes it for a checkpoint.

    Returns:
      The new names.
    """
    renamed = []
    for path in _files(checkpoint):
        target = path + ".damaged"
        number = 1
        while os.path.exists(target):
            number += 1
            target = "%s.damaged-%d" % (path, number)
        os.rename(path, target)
        renamed.append(target)
    return renamed


def _files(checkpoint):
    """The files of a checkpoint: its index, data and meta files."""
    return [
        path
        for path in glob.glob(glob.escape(checkpoint) + ".*")
        if ".damaged" not in path[len(checkpoint) :]
    ]


def _step_or_minus_one(checkpoint):
    try:
        return step(checkpoint)
    except READ_ERRORS:
        return -1


def class_names(checkpoint_dir):
    """The class names written beside the checkpoints in a folder, or None
    when there are none (checkpoints of an earlier version, say)."""
    try:
        with open(
            os.path.join(checkpoint_dir, CLASS_NAMES_FILE), encoding="utf-8"
        ) as f:
            return [line.rstrip("\n") for line in f]
    except (OSError, UnicodeDecodeError):
        return None


def write_class_names(checkpoint_dir, names):
    """Writes the class names beside the checkpoints, through a temporary
    file renamed into place."""
    path = os.path.join(checkpoint_dir, CLASS_NAMES_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("".join(name + "\n" for name in names))
    os.replace(path + ".tmp", path)


def describe_classes(names):
    """The class names, in a message: a few of them and how many there are."""
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return "%s (%d classes)" % (shown, len(names))


def restorer():
    """How the weights to score with are loaded from a checkpoint.

    Call it with the model built in the default graph. The moving averages'
    names in a checkpoint are the same whatever their decay, so it needs
    none.

    Returns:
      (restore, variables): restore(session, checkpoint) loads each weight
      from its moving average, which scores better than the raw weight, or
      the raw weights of a checkpoint saved without moving averages;
      variables(checkpoint) is the {name in the checkpoint: variable} that
      restore() loads from it.
    """
    # The decay does not change the averages' names, all that is used here.
    averages = tf.compat.v1.train.ExponentialMovingAverage(0.0).variables_to_restore()
    raw = {v.op.name: v for v in tf.compat.v1.global_variables()}
    average_saver = tf.compat.v1.train.Saver(averages)
    raw_saver = tf.compat.v1.train.Saver(raw)

    def variables(checkpoint):
        stored = {name for name, _ in tf.train.list_variables(checkpoint)}
        return averages if set(averages) <= stored else raw

    def restore(session, checkpoint):
        if variables(checkpoint) is averages:
            average_saver.restore(session, checkpoint)
        else:
            print("%s has no moving averages; scoring its raw weights." % checkpoint)
            raw_saver.restore(session, checkpoint)

    return restore, variables
