"""The CIFAR-10 model: inputs, network, loss and training step.

The public functions are the whole API:

    data = data_set()                        # files, counts, class names
    images, labels = distorted_inputs()      # training batches
    images, labels = inputs(eval_data=True)  # evaluation batches
    logits = inference(images, data.num_classes)       # the network
    total_loss = loss(logits, labels)        # cross-entropy + weight decay
    train_op = train(total_loss, global_step, data.num_train)
    config = session_config()                # --mixed_precision
    queued = queued_images(data, training=True)  # for memory.check()

The network's normalization layer, lrn(), comes last: TensorFlow's
tf.nn.lrn, computed as small matrix products, which oneDNN runs well on a
CPU.

The data set is described in cifar10_input.py (what it is, where it comes
from, its record format and counts), or by the data itself (packed by
cifar10_pack.py); another data set changes that, and the network below if
it likes. This file and cifar10_input.py need nothing else of the project.
"""

import os
import re

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

import cifar10_input

FLAGS = tf.compat.v1.flags.FLAGS

# The model's and the data's flags. Each binary defines its own flags, and
# names those of these it uses (startup.use_flags()); its --help lists them.
# Folders are named after this module: /tmp/<model>_data, and the binaries'
# /tmp/<model>_train and /tmp/<model>_eval.
tf.compat.v1.flags.DEFINE_integer(
    "batch_size", 128, "Images in a training batch.", lower_bound=1
)
tf.compat.v1.flags.DEFINE_string(
    "data_dir",
    "/tmp/%s_data" % __name__,
    "Folder of the data: the %s archive and its extracted %s folder, fetched "
    "there when missing, or one's own images packed there."
    % (cifar10_input.DATA_SET, cifar10_input.DATA_FOLDER),
)
tf.compat.v1.flags.DEFINE_string(
    "data_url",
    cifar10_input.DATA_URL,
    "Where to download the %s archive from: the official URL, a mirror, or a "
    "file:// URL." % cifar10_input.DATA_SET,
)
tf.compat.v1.flags.DEFINE_string(
    "data_md5",
    cifar10_input.DATA_MD5,
    "Expected MD5 of the archive at --data_url (the official archive's by "
    "default, which a mirror serves too); 'skip' to accept any archive.",
)
tf.compat.v1.flags.DEFINE_boolean(
    "use_fp16",
    False,
    "Train the model using 16-bit floats (its weights and checkpoints too).",
)
tf.compat.v1.flags.DEFINE_enum(
    "mixed_precision",
    "off",
    ["off", "bf16"],
    "bf16: compute the model in bfloat16 with TensorFlow's oneDNN rewrite: faster "
    "on processors with native bfloat16 (avx512_bf16 or amx_bf16), slower "
    "elsewhere. The weights, their moving averages and the checkpoints stay "
    "float32. Not with --use_fp16.",
)
tf.compat.v1.flags.register_multi_flags_validator(
    ["use_fp16", "mixed_precision"],
    lambda values: not (values["use_fp16"] and values["mixed_precision"] != "off"),
    message="--use_fp16 keeps float16 weights; --mixed_precision=bf16 computes "
    "float32 ones in bfloat16. Choose one.",
)
# What those two flags do in the binaries that score the checkpoints training
# made (evaluation, classification), for their startup.use_flags().
SCORING_HELPS = {
    "use_fp16": "The model in 16-bit floats, as training with --use_fp16 made "
    "its checkpoints.",
    "mixed_precision": "bf16: compute the model in bfloat16 with TensorFlow's "
    "oneDNN rewrite, faster on processors with native bfloat16 (avx512_bf16 "
    "or amx_bf16). Not with --use_fp16.",
}
tf.compat.v1.flags.DEFINE_integer(
    "min_queue_examples",
    None,
    "Images held in the shuffling queue before training starts (default: %d%% "
    "of the training images, %d of %s's). Fewer start sooner but shuffle less."
    % (
        100 * cifar10_input.MIN_FRACTION_OF_EXAMPLES_IN_QUEUE,
        int(
            cifar10_input.NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN
            * cifar10_input.MIN_FRACTION_OF_EXAMPLES_IN_QUEUE
        ),
        cifar10_input.DATA_SET,
    ),
    lower_bound=1,
)

tf.compat.v1.flags.DEFINE_integer(
    "num_preprocess_threads",
    None,
    "Threads that read and distort training images (default: one per core, "
    "at most %d): more threads than cores only contend for them."
    % cifar10_input.NUM_PREPROCESS_THREADS,
    lower_bound=1,
)

# The images the network takes: IMAGE_SIZE x IMAGE_SIZE crops.
IMAGE_SHAPE = (cifar10_input.IMAGE_SIZE, cifar10_input.IMAGE_SIZE, cifar10_input.DEPTH)
# CIFAR-10's, for data that does not say otherwise.
NUM_CLASSES = cifar10_input.NUM_CLASSES
NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN = cifar10_input.NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN

# The training recipe.
MOVING_AVERAGE_DECAY = 0.9999  # Decay of the weights' moving averages.
NUM_EPOCHS_PER_DECAY = 350.0  # Epochs between learning-rate drops.
LEARNING_RATE_DECAY_FACTOR = 0.1  # Each drop multiplies the rate by this.
INITIAL_LEARNING_RATE = 0.1

# Multi-tower graphs put each tower's ops under 'tower_<i>/'. Summaries drop
# that prefix so that every tower's curves share one name in TensorBoard.
TOWER_NAME = "tower"
TOWER_PREFIX = re.compile("%s_[0-9]*/" % TOWER_NAME)


def _scalar_summary(tag, value):
    """A scalar summary under exactly this tag.

    tf.compat.v1.summary.scalar() would prefix the enclosing name scopes and
    number a repeated name ('conv1/weights_1'); TensorBoard reads better
    without either.
    """
    summary = tf.raw_ops.ScalarSummary(tags=tag, values=value)
    tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.SUMMARIES, summary)


def _histogram_summary(tag, values):
    """A histogram summary under exactly this tag; see _scalar_summary()."""
    summary = tf.raw_ops.HistogramSummary(tag=tag, values=values)
    tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.SUMMARIES, summary)


def _activation_summary(x):
    """Histogram of x and the fraction of it that is zero (dead ReLUs)."""
    tensor_name = TOWER_PREFIX.sub("", x.op.name)
    _histogram_summary(tensor_name + "/activations", x)
    _scalar_summary(tensor_name + "/sparsity", tf.nn.zero_fraction(x))


def float_type():
    """The type of the model's images and weights: float16 with --use_fp16."""
    return tf.float16 if FLAGS.use_fp16 else tf.float32


def _variable_on_cpu(name, shape, initializer):
    """A variable kept in host memory, where every tower can reach it."""
    with tf.device("/cpu:0"):
        return tf.compat.v1.get_variable(
            name, shape, initializer=initializer, dtype=float_type()
        )


def _variable_with_weight_decay(name, shape, stddev, wd):
    """A truncated-normal variable, with an L2 penalty when wd is given.

    Args:
      name: variable name.
      shape: list of ints.
      stddev: standard deviation of the truncated normal initializer.
      wd: the penalty wd * sum(w**2) / 2 joins the 'losses' collection; None
        or 0 for none.

    Returns:
      The variable; with a penalty, its value read once for the layer and
      the penalty alike (on a cluster, each read of a variable crosses the
      network from the parameter server that holds it).
    """
    var = _variable_on_cpu(
        name,
        shape,
        tf.compat.v1.truncated_normal_initializer(stddev=stddev, dtype=float_type()),
    )
    if wd:
        var = var.read_value()
        weight_decay = tf.multiply(tf.nn.l2_loss(var), wd, name="weight_loss")
        tf.compat.v1.add_to_collection("losses", weight_decay)
    return var


def data_set():
    """What --data_dir holds: its files and their counts, and its classes.

    Returns:
      A cifar10_input.DataSet.

    Raises:
      cifar10_input.DataError: the data's description cannot be read.
    """
    return cifar10_input.data_set(
        os.path.join(FLAGS.data_dir, cifar10_input.DATA_FOLDER)
    )


def queued_images(data, training, towers=1):
    """About the most images the input pipeline holds at once, besides the
    step's: for training, the shuffling queue (--min_queue_examples, or its
    share of data's training images) and the batches ready for the towers;
    for evaluation, the batches read ahead.

    Args:
      data: what --data_dir holds, from data_set().
      training: whether it is distorted_inputs() (else inputs()).
      towers: batches a training step works on at once.
    """
    if not training:
        return 5 * FLAGS.batch_size
    shuffled = FLAGS.min_queue_examples or int(
        data.num_train * cifar10_input.MIN_FRACTION_OF_EXAMPLES_IN_QUEUE
    )
    return shuffled + (3 + 2 * towers) * FLAGS.batch_size


def distorted_inputs():
    """Distorted training batches from --data_dir, --batch_size at a time.

    Returns:
      images: [batch_size, *IMAGE_SHAPE], float16 with --use_fp16.
      labels: int32 [batch_size].

    Raises:
      cifar10_input.DataError: a data file is missing, short or corrupt.
    """
    images, labels = cifar10_input.distorted_inputs(
        data_dir=os.path.join(FLAGS.data_dir, cifar10_input.DATA_FOLDER),
        batch_size=FLAGS.batch_size,
        min_queue_examples=FLAGS.min_queue_examples,
        num_threads=FLAGS.num_preprocess_threads,
    )
    return tf.cast(images, float_type()), labels


def inputs(eval_data):
    """Evaluation batches from --data_dir, each image once, in order.

    Args:
      eval_data: True for the test set, False for the training set.

    Returns:
      images: [<=batch_size, *IMAGE_SHAPE], float16 with --use_fp16.
      labels: int32 [<=batch_size].

    Raises:
      cifar10_input.DataError: a data file is missing, short or corrupt.
    """
    images, labels = cifar10_input.inputs(
        eval_data=eval_data,
        data_dir=os.path.join(FLAGS.data_dir, cifar10_input.DATA_FOLDER),
        batch_size=FLAGS.batch_size,
    )
    return tf.cast(images, float_type()), labels


def inference(images, num_classes=NUM_CLASSES):
    """The network: two convolution blocks, two hidden layers, linear output.

    Args:
      images: [batch, *IMAGE_SHAPE], from distorted_inputs() or inputs().
        Any batch size works.
      num_classes: the classes to tell apart (the data's, data_set()).

    Returns:
      Logits, [batch, num_classes]. The softmax is left to the loss, which
      computes it in a numerically stable way.
    """
    # get_variable() rather than Variable() everywhere, so that a second tower
    # of cifar10_multi_gpu_train.py can reuse these variables.
    with tf.compat.v1.variable_scope("conv1") as scope:
        kernel = _variable_with_weight_decay(
            "weights", shape=[5, 5, cifar10_input.DEPTH, 64], stddev=5e-2, wd=None
        )
        conv = tf.nn.conv2d(images, kernel, [1, 1, 1, 1], padding="SAME")
        biases = _variable_on_cpu("biases", [64], tf.constant_initializer(0.0))
        conv1 = tf.nn.relu(tf.nn.bias_add(conv, biases), name=scope.name)
        _activation_summary(conv1)

    pool1 = tf.nn.max_pool2d(
        conv1, ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], padding="SAME", name="pool1"
    )
    norm1 = lrn(pool1, 4, bias=1.0, alpha=0.001 / 9.0, beta=0.75, name="norm1")

    with tf.compat.v1.variable_scope("conv2") as scope:
        kernel = _variable_with_weight_decay(
            "weights", shape=[5, 5, 64, 64], stddev=5e-2, wd=None
        )
        conv = tf.nn.conv2d(norm1, kernel, [1, 1, 1, 1], padding="SAME")
        biases = _variable_on_cpu("biases", [64], tf.constant_initializer(0.1))
        conv2 = tf.nn.relu(tf.nn.bias_add(conv, biases), name=scope.name)
        _activation_summary(conv2)

    # Here the normalization comes before the pooling.
    norm2 = lrn(conv2, 4, bias=1.0, alpha=0.001 / 9.0, beta=0.75, name="norm2")
    pool2 = tf.nn.max_pool2d(
        norm2, ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1], padding="SAME", name="pool2"
    )

    with tf.compat.v1.variable_scope("local3") as scope:
        # Flatten from the static feature size, not the batch size, so that
        # evaluation can feed a smaller last batch.
        dim = pool2.shape[1] * pool2.shape[2] * pool2.shape[3]
        reshape = tf.reshape(pool2, [-1, dim])
        weights = _variable_with_weight_decay(
            "weights", shape=[dim, 384], stddev=0.04, wd=0.004
        )
        biases = _variable_on_cpu("biases", [384], tf.constant_initializer(0.1))
        local3 = tf.nn.relu(tf.matmul(reshape, weights) + biases, name=scope.name)
        _activation_summary(local3)

    with tf.compat.v1.variable_scope("local4") as scope:
        weights = _variable_with_weight_decay(
            "weights", shape=[384, 192], stddev=0.04, wd=0.004
        )
        biases = _variable_on_cpu("biases", [192], tf.constant_initializer(0.1))
        local4 = tf.nn.relu(tf.matmul(local3, weights) + biases, name=scope.name)
        _activation_summary(local4)

    with tf.compat.v1.variable_scope("softmax_linear") as scope:
        weights = _variable_with_weight_decay(
            "weights", [192, num_classes], stddev=1 / 192.0, wd=None
        )
        biases = _variable_on_cpu("biases", [num_classes], tf.constant_initializer(0.0))
        softmax_linear = tf.add(tf.matmul(local4, weights), biases, name=scope.name)
        _activation_summary(softmax_linear)

    return softmax_linear


def _losses_in_scope(name_scope):
    """The 'losses' terms made under name_scope ('' for all of them).

    In a multi-tower graph each tower's terms sit under its own name scope,
    so a tower sums its own cross-entropy and weight decay only.
    """
    return tf.compat.v1.get_collection(
        "losses", name_scope + "/" if name_scope else None
    )


def loss(logits, labels):
    """Mean cross-entropy plus the weight-decay terms.

    Args:
      logits: from inference().
      labels: int32 [batch] class indices, from distorted_inputs() or inputs().

    Returns:
      total_loss, a float32 scalar; each term is also in the 'losses'
      collection, for summaries.
    """
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int64),
        logits=tf.cast(logits, tf.float32),
        name="cross_entropy_per_example",
    )
    cross_entropy_mean = tf.reduce_mean(cross_entropy, name="cross_entropy")
    tf.compat.v1.add_to_collection("losses", cross_entropy_mean)

    terms = _losses_in_scope(tf.compat.v1.get_default_graph().get_name_scope())
    terms = [tf.cast(t, tf.float32) for t in terms]
    return tf.add_n(terms, name="total_loss")


def _add_loss_summaries(total_loss):
    """Smoothed curves of each loss term and of the total, beside the raw ones.

    A single batch's loss is noisy; its exponential moving average (decay
    0.9) shows the trend.

    Args:
      total_loss: from loss().

    Returns:
      The op that updates the moving averages; run it every step.
    """
    tower_scope = total_loss.op.name.rpartition("/")[0]
    loss_averages = tf.compat.v1.train.ExponentialMovingAverage(0.9, name="avg")
    # Named without the tower prefix, so that checkpoints of one tower, of
    # several and of the single-device binary hold the same variables.
    with tf.name_scope("loss_averages"):
        terms = {
            TOWER_PREFIX.sub("", t.op.name): t
            for t in _losses_in_scope(tower_scope) + [total_loss]
        }
        averaged = {name: tf.identity(t, name=name) for name, t in terms.items()}
    loss_averages_op = loss_averages.apply(list(averaged.values()))
    for name, term in terms.items():
        _scalar_summary(name + " (raw)", term)
        _scalar_summary(name, loss_averages.average(averaged[name]))
    return loss_averages_op


def train(
    total_loss,
    global_step,
    num_examples_per_epoch=NUM_EXAMPLES_PER_EPOCH_FOR_TRAIN,
    grads_and_vars=None,
    apply_fn=None,
):
    """One step of plain gradient descent, then the weights' moving averages.

    Args:
      total_loss: from loss().
      global_step: the step counter, incremented by each run of the op.
      num_examples_per_epoch: the training images, for the learning-rate
        schedule.
      grads_and_vars: (gradient, variable) pairs to apply instead of the
        gradients of total_loss; cifar10_multi_gpu_train.py passes the
        average of its towers' gradients.
      apply_fn: a function to use instead of apply_gradients() below, with
        the same arguments and result; support/cluster_hooks.py passes one that
        synchronizes the update across the workers of a cluster.

    Returns:
      The training op.
    """
    # The rate drops tenfold every NUM_EPOCHS_PER_DECAY epochs.
    num_batches_per_epoch = num_examples_per_epoch / FLAGS.batch_size
    decay_steps = int(num_batches_per_epoch * NUM_EPOCHS_PER_DECAY)
    lr = tf.compat.v1.train.exponential_decay(
        INITIAL_LEARNING_RATE,
        global_step,
        decay_steps,
        LEARNING_RATE_DECAY_FACTOR,
        staircase=True,
    )
    _scalar_summary("learning_rate", lr)

    loss_averages_op = _add_loss_summaries(total_loss)

    opt = tf.compat.v1.train.GradientDescentOptimizer(lr)
    # Evaluation uses these averages rather than the raw weights: they smooth
    # out the noise of the last few steps. num_updates makes the decay small
    # early on, so the averages catch up with fast-changing young weights.
    variable_averages = _AveragesBesideTheWeights(MOVING_AVERAGE_DECAY, global_step)
    with tf.control_dependencies([loss_averages_op]):
        if grads_and_vars is None:
            grads_and_vars = opt.compute_gradients(total_loss)
        train_op = (apply_fn or apply_gradients)(
            opt, grads_and_vars, global_step, variable_averages
        )

    for var in tf.compat.v1.trainable_variables():
        _histogram_summary(var.op.name, var)
    for grad, var in grads_and_vars:
        if grad is not None:
            _histogram_summary(var.op.name + "/gradients", grad)
    return train_op


class _AveragesBesideTheWeights(tf.compat.v1.train.ExponentialMovingAverage):
    """Moving averages whose updates run on the device of their weights.

    Each average is kept beside its weight, but its update would run where
    the training step runs. On a cluster the weights and averages live on a
    parameter server: the update would bring both over the network to the
    worker and send the change back, three times the model's size a step.
    """

    def apply(self, var_list):
        updates = []
        for var in var_list:
            with tf.compat.v1.colocate_with(var):
                updates.append(super().apply([var]))
        return tf.group(*updates)


def apply_gradients(optimizer, grads_and_vars, global_step, variable_averages):
    """The update of train(): apply the gradients, then the moving averages.

    Args:
      optimizer: the optimizer that applies the gradients.
      grads_and_vars: (gradient, variable) pairs.
      global_step: incremented by the update.
      variable_averages: the ExponentialMovingAverage of the weights.

    Returns:
      The op that runs the whole update.
    """
    apply_gradient_op = optimizer.apply_gradients(
        grads_and_vars, global_step=global_step
    )
    with tf.control_dependencies([apply_gradient_op]):
        return variable_averages.apply(tf.compat.v1.trainable_variables())


def session_config(**kwargs):
    """The session config to run the model's graph with.

    With --mixed_precision=bf16 it turns on TensorFlow's oneDNN bfloat16
    rewrite, which computes the graph's convolutions and matrix products
    in bfloat16 while the variables, and so the checkpoints, stay float32.

    Args:
      **kwargs: other fields of the tf.compat.v1.ConfigProto.
    """
    config = tf.compat.v1.ConfigProto(**kwargs)
    if FLAGS.mixed_precision == "bf16":
        config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = (
            rewriter_config_pb2.RewriterConfig.ON
        )
    return config


# The network's normalization layer, used by inference() above: TensorFlow's
# tf.nn.lrn, its window sums computed as small matrix products.
def lrn(x, depth_radius, bias, alpha, beta, name):
    """tf.nn.lrn (local response normalization across channels), with its
    window sums as small matrix products and its gradient written out.

    y = x * n**-beta, where n = bias + alpha * (the sum of x**2 over the
    window of channels within depth_radius of each), and the gradient is

        dx = dy * n**-beta - 2 * alpha * beta * x * window(dy * y / n).

    A sum over a window of channels is a product with a band matrix of ones:
    a small matrix product, which oneDNN runs well, where TensorFlow's own
    kernels loop over the window for every value. The gradient reuses n and
    n**-beta from the forward pass. Values and gradient equal TensorFlow's
    to float32 rounding; under --mixed_precision=bf16 all of it runs in
    bfloat16, where TensorFlow's LRN stays float32.
    """
    depth = x.shape[-1]
    near = np.abs(np.arange(depth)[:, None] - np.arange(depth)) <= depth_radius

    def window(t, scale):  # scale * the sum of t over each channel's window
        band = tf.constant(scale * near, t.dtype)
        return tf.reshape(tf.matmul(tf.reshape(t, [-1, depth]), band), tf.shape(t))

    @tf.custom_gradient
    def normalize(x):
        n = bias + window(tf.square(x), alpha)
        if beta == 0.75:  # the tutorial's: two square roots, not a pow
            inverse = tf.math.rsqrt(n)
            n_beta = inverse * tf.sqrt(inverse)
        else:
            n_beta = tf.pow(n, -beta)
        y = tf.multiply(x, n_beta, name=name)

        def gradient(dy):
            return dy * n_beta - x * window(dy * y / n, 2 * alpha * beta)

        return y, gradient

    return normalize(x)
