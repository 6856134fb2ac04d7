"""Reading checkpoints: their step, and whether they fit a graph.

Shared by the binaries that restore checkpoints: training resumes from one,
evaluation scores them.
"""

import tensorflow as tf


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
