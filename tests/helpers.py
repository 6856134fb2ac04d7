"""What the tests share: the binaries' output formats, runs of the binaries on
the fake data set, and sessions with running queues."""

import contextlib
import glob
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver

import cifar10
import cifar10_input
from harness import fake_cifar
from harness.procs import PATIENCE_SECS, Process, free_ports, run_here
from support import checkpoints, startup

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: step (\d+), loss = (\d+\.\d\d) "
    r"\((\d+\.\d) examples/sec; (\d+\.\d{3}) sec/batch\)"
    # Where training stands, when --max_steps is less than a day away.
    r"(?:, (\d+:\d\d:\d\d) left to step (\d+))?$"
)
PRECISION = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: precision @ 1 = (\d\.\d{3}) "
    r"\(step (\d+), (\d+) images, [\d.]+ images/sec\)$",
    re.MULTILINE,
)

# The lines the binaries print, by what they say: what the README quotes
# must have one of these forms, and so must what the binaries print.
FORMS = {
    "step": LOG_LINE,
    "precision": PRECISION,
    "queue": re.compile(
        r"^Filling queue with \d+ [\w-]+ images before starting to train\. This "
        r"takes a few seconds\.$"
    ),
    "first step": re.compile(r"^Input queue filled; the first step took \d+\.\d s\.$"),
    "done": re.compile(r"^Done: step \d+; checkpoint saved in .+\.$"),
    "signal": re.compile(
        r"^SIG(INT|TERM): stopping after this step and saving a checkpoint \(send "
        r"it again to quit at once\)\.$"
    ),
    "stopped": re.compile(
        r"^Stopped by SIG(INT|TERM) at step \d+; checkpoint saved "
        r"in .+\.$"
    ),
    "untrained": re.compile(
        r"^Step 0 is the untrained model: chance alone gets about 1 in \d+ right\.$"
    ),
    "next look": re.compile(
        r"^(Next look for a new checkpoint at|(No checkpoint file found at .+|No "
        r"checkpoint yet|No new checkpoint); next look at) \d\d:\d\d:\d\d\.$"
    ),
    "table head": re.compile(r"^  class +images +recall$"),
    "table row": re.compile(r"^  [\w ]+? +\d+ +[01]\.\d{3}$"),
    "confused": re.compile(
        r"^  Most confused: .+ taken for .+ \(\d+\)(, .+ taken for .+ \(\d+\))*$"
    ),
    "classified": re.compile(r"^[^:]+: \w+ [01]\.\d{3}(, \w+ [01]\.\d{3})*$"),
    "packed": re.compile(
        r"^Packed \d+ training and \d+ test images of \d+ classes into .+ "
        r"\(\d+\.\d s, \d+ images/sec\)\.$"
    ),
    "skipped": re.compile(r"^Skipped \d+ (file|image|link|folder)\(s\) .+\.$"),
    "listed": re.compile(r"^Each file skipped is listed in .+\.skipped\.txt\.$"),
    "waiting": re.compile(
        r"^No gradients from \w+ \d+ \(\S+\) for \d+ s: (its last were for step "
        r"\d+|it has sent none yet), and the global step is \d+\.$"
    ),
    "unanswered": re.compile(
        r"^Parameter server \d+ at \S+ does not answer \(.+\); this step waits for "
        r"it\. Start it with .+\.$"
    ),
    "ignored": re.compile(
        r"^Ignored \d+ file\(s\) not named as images \(.+\): \d+ .+\.( Images in "
        r".+ are not read: convert them to JPEG or PNG to pack them\.)?$"
    ),
}


def form(line):
    """The name of the form of a line the binaries print, or None."""
    return next((name for name, p in FORMS.items() if p.match(line)), None)


# Small and quick settings for the binaries' end-to-end runs.
FAST_FLAGS = ["--batch_size=32", "--min_queue_examples=300"]


def logged_steps(output):
    """The steps of the training log lines in output."""
    return [int(m.group(1)) for m in map(LOG_LINE.match, output.splitlines()) if m]


def steps_after(proc, step, patience=PATIENCE_SECS):
    """Waits for a training log line of proc beyond step; returns its step."""
    return proc.wait_until(
        lambda out: max([s for s in logged_steps(out) if s > step], default=None),
        "a log line beyond step %d" % step,
        patience,
    )


def checkpoint_step(train_dir):
    """The step of the newest checkpoint in train_dir, or None."""
    latest = tf.train.latest_checkpoint(str(train_dir))
    return None if latest is None else int(latest.rsplit("-", 1)[1])


def train_flags(dataset, train_dir, *flags):
    """The flags of a training run on the fake data set, with FAST_FLAGS."""
    return [
        "--data_dir=%s" % dataset["root"],
        "--train_dir=%s" % train_dir,
        *FAST_FLAGS,
        *flags,
    ]


def train(dataset, train_dir, *flags, script="cifar10_train.py"):
    """Runs a training binary to its end, in this process (run_here())."""
    return run_here(script, *train_flags(dataset, train_dir, *flags))


def eval_flags(data_root, checkpoint_dir, eval_dir, *flags):
    """The flags of cifar10_eval.py on a data set, with batches of 32."""
    return [
        "--data_dir=%s" % data_root,
        "--checkpoint_dir=%s" % checkpoint_dir,
        "--eval_dir=%s" % eval_dir,
        "--batch_size=32",
        *flags,
    ]


def evaluate(data_root, checkpoint_dir, eval_dir, *flags):
    """Runs cifar10_eval.py to its end, in this process (run_here())."""
    return run_here(
        "cifar10_eval.py", *eval_flags(data_root, checkpoint_dir, eval_dir, *flags)
    )


def start_evaluation(data_root, checkpoint_dir, eval_dir, *flags):
    """Starts cifar10_eval.py in the background, logging to <eval_dir>.log.

    Returns:
      A harness.procs.Process.
    """
    return Process(
        "cifar10_eval.py",
        *eval_flags(data_root, checkpoint_dir, eval_dir, *flags),
        log_path="%s.log" % eval_dir,
    )


def summary_values(folder):
    """{tag: [(step, tf.compat.v1.Summary.Value), ...]} of the event files in
    folder."""
    found = {}
    for path in sorted(glob.glob(os.path.join(str(folder), "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value))
    return found


def summaries(folder):
    """{tag: [(step, value), ...]} of the summaries in the event files in
    folder; value is None but for scalars."""
    return {
        tag: [
            (step, v.simple_value if v.HasField("simple_value") else None)
            for step, v in values
        ]
        for tag, values in summary_values(folder).items()
    }


def start_training(dataset, train_dir, *flags, script="cifar10_train.py"):
    """Starts a training binary in the background, logging to <train_dir>.log.

    Returns:
      A harness.procs.Process.
    """
    return Process(
        script,
        *train_flags(dataset, train_dir, *flags),
        log_path="%s.log" % train_dir,
    )


def signal_at_step(dataset, train_dir, signum, at_step, script="cifar10_train.py"):
    """Trains until a log line reaches at_step, then sends signum.

    The run's --max_steps is far beyond reach, so the signal is what stops it.

    Returns:
      (exit status, output), which finish_cleanly() checked.
    """
    proc = start_training(
        dataset,
        train_dir,
        "--max_steps=1000000",
        "--log_frequency=5",
        script=script,
    )
    try:
        proc.wait_until(
            lambda out: max(logged_steps(out), default=-1) >= at_step,
            "a log line at step %d or later" % at_step,
        )
        proc.send_signal(signum)
        return finish_cleanly(proc)
    finally:
        proc.stop()


def exit_line(main, *args, **flags):
    """Runs a binary's main() in this process with the flags set, as its
    start-up does, and returns the line it exits with: what the binary
    prints as its last line, with exit status 1."""
    with flagsaver.flagsaver(**flags), pytest.raises(SystemExit) as e:
        startup.one_line_errors(main, cifar10_input.DataError)(["binary", *args])
    return e.value.code


def first_step(proc):
    """Waits for a training process's first log line; returns its step."""
    proc.wait_for(LOG_LINE.pattern)
    return logged_steps(proc.output())[0]


# An error-level line of TensorFlow's C++ logging, "E1129 20:33:52..." or
# "E0000 00:00:1795984...", but its "failed call to cuInit" as it loads on a
# machine without a GPU, which the README explains.
TENSORFLOW_ERROR = re.compile(r"^E\d{4} \d\d:\d\d:(?!.*failed call to cuInit).*$", re.M)


def finish_cleanly(proc):
    """Waits for a process to end; its output must not hold a traceback or an
    error logged by TensorFlow (in Python or in C++).

    Returns:
      (exit status, output).
    """
    code, out = proc.finish()
    assert "Traceback" not in out and "ERROR:tensorflow" not in out, out
    assert TENSORFLOW_ERROR.findall(out) == [], out
    return code, out


class LocalCluster:
    """1 parameter server and some workers of the training binaries, as
    processes on loopback ports, with their output in tmp_path."""

    def __init__(self, dataset, tmp_path, num_workers, *flags):
        ps_port, *worker_ports = free_ports(1 + num_workers)
        self.ps_hosts = ["127.0.0.1:%d" % ps_port]
        self.worker_hosts = ["127.0.0.1:%d" % p for p in worker_ports]
        self.tmp_path = tmp_path
        self.worker_hosts_flag = "--worker_hosts=" + ",".join(self.worker_hosts)
        self.train_dir = tmp_path / "train"
        self.flags = [
            "--ps_hosts=" + ",".join(self.ps_hosts),
            self.worker_hosts_flag,
            *train_flags(dataset, self.train_dir, *flags),
        ]
        self.tasks = []

    def start(self, job_name, task_index, *flags, script="cifar10_train.py"):
        """Starts one task; returns its harness.procs.Process."""
        log_path = self.tmp_path / (
            "%s%d-%d.log" % (job_name, task_index, len(self.tasks))
        )
        self.tasks.append(
            Process(
                script,
                *self.flags,
                "--job_name=%s" % job_name,
                "--task_index=%d" % task_index,
                *flags,
                log_path=log_path,
            )
        )
        return self.tasks[-1]

    def stop_all(self):
        for task in self.tasks:
            task.stop()


class TFConfigCluster:
    """Processes of the training binaries on loopback ports, each told its
    task by TF_CONFIG alone, with their output in tmp_path."""

    def __init__(self, dataset, tmp_path, jobs, *flags):
        """jobs: {job name: number of tasks}."""
        ports = iter(free_ports(sum(jobs.values())))
        self.cluster = {
            name: ["127.0.0.1:%d" % next(ports) for _ in range(count)]
            for name, count in jobs.items()
        }
        self.tmp_path = tmp_path
        self.train_dir = tmp_path / "train"
        self.flags = train_flags(dataset, self.train_dir, *flags)
        self.tasks = []

    def start(self, job_name, task_index, *flags, script="cifar10_train.py"):
        """Starts one task; returns its harness.procs.Process."""
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": self.cluster, "task": {"type": job_name, "index": task_index}}
        )
        log_path = self.tmp_path / ("%s%d.log" % (job_name, task_index))
        self.tasks.append(
            Process(script, *self.flags, *flags, log_path=log_path, env=env)
        )
        return self.tasks[-1]

    def stop_all(self):
        for task in self.tasks:
            task.stop()


def independent_logits(checkpoint, images):
    """The logits of a checkpoint's moving-average weights for uint8 images
    [n, 32, 32, 3], in a graph of their own fed from numpy (which does the
    evaluation's crop and standardization itself)."""
    reader = tf.train.load_checkpoint(str(checkpoint))
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 24, 24, 3])
        logits = cifar10.inference(x)
        with tf.compat.v1.Session() as sess:
            for var in tf.compat.v1.trainable_variables():
                average = reader.get_tensor(var.op.name + "/ExponentialMovingAverage")
                var.load(average, sess)
            return sess.run(logits, {x: fake_cifar.eval_images(images)})


@contextlib.contextmanager
def training_from_memory(images, labels, batch_size, seed=0):
    """cifar10.train() fed from memory, in a session of its own run with
    cifar10.session_config(). Fixed seeds make its steps the same each time.

    Args:
      images, labels: uint8 images [n, 32, 32, 3] and their labels.
      batch_size: images a step.
      seed: of the weights' start and of the batches.

    Yields:
      (run, save, session): run(steps) trains and returns the steps' losses;
      save(prefix, step=None) saves a checkpoint and returns its path.
    """
    inputs = fake_cifar.eval_images(images).astype(np.float32)
    rng = np.random.default_rng(seed)
    with flagsaver.flagsaver(batch_size=batch_size), tf.Graph().as_default():
        tf.compat.v1.set_random_seed(seed)
        global_step = tf.compat.v1.train.get_or_create_global_step()
        x = tf.compat.v1.placeholder(tf.float32, [None, 24, 24, 3])
        y = tf.compat.v1.placeholder(tf.int32, [None])
        loss = cifar10.loss(cifar10.inference(x), y)
        train_op = cifar10.train(loss, global_step)
        saver = tf.compat.v1.train.Saver(save_relative_paths=True)
        with tf.compat.v1.Session(config=cifar10.session_config()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())

            def run(steps):
                losses = []
                for _ in range(steps):
                    batch = rng.choice(len(labels), batch_size, replace=False)
                    feed = {x: inputs[batch], y: labels[batch]}
                    losses.append(float(sess.run([train_op, loss], feed)[1]))
                return losses

            def save(prefix, step=None):
                return saver.save(sess, str(prefix), global_step=step)

            yield run, save, sess


def train_until_learned(train_dir, dataset, least_precision=0.9, max_steps=600):
    """Trains the model in this process until its moving averages score
    least_precision on 1000 test images (looked at every 20 steps), and saves
    that checkpoint, model.ckpt-<step>, in train_dir, with the loss of each
    step (losses.json) and local3's first weights (local3_initial.npy).

    It is fed from memory with fixed seeds (training_from_memory()), so it
    takes about the same number of steps on any machine; quicker than the
    training binary, whose threaded input makes each run differ. The fake
    images score 0.9 after 20 steps, by which the loss of the last five steps
    is about 0.9 below that of the first five (test_model.py asks for 0.5).

    Returns:
      The checkpoint's path prefix.
    """
    labels, images = (a[:10000] for a in dataset["train"])
    test_labels, test_images = (a[:1000] for a in dataset["test"])
    losses = []
    # As the training binary does, the class names beside the checkpoints.
    checkpoints.write_class_names(str(train_dir), fake_cifar.CLASS_NAMES)
    with training_from_memory(images, labels, batch_size=128) as (run, save, sess):
        np.save(
            os.path.join(str(train_dir), "local3_initial.npy"),
            sess.run(tf.compat.v1.global_variables("local3/weights:")[0]),
        )
        for step in range(20, max_steps + 1, 20):
            losses += run(20)
            checkpoint = save(os.path.join(str(train_dir), "model.ckpt"), step)
            logits = independent_logits(checkpoint, test_images)
            if np.mean(np.argmax(logits, axis=1) == test_labels) >= least_precision:
                with open(os.path.join(str(train_dir), "losses.json"), "w") as f:
                    json.dump(losses, f)
                return checkpoint
    raise AssertionError("not learned in %d steps" % max_steps)


def checkpoint_copies(trained, folder, steps):
    """The shared checkpoint copied to folder as model.ckpt-<step> for each
    of steps; their path prefixes."""
    folder.mkdir()
    newest = tf.train.latest_checkpoint(trained)
    for step in steps:
        for path in glob.glob(newest + ".*"):
            suffix = path[len(newest) :]
            shutil.copy(path, folder / ("model.ckpt-%d%s" % (step, suffix)))
    return [str(folder / ("model.ckpt-%d" % step)) for step in steps]


def vanish_at(moment, checkpoint, monkeypatch):
    """Deletes the checkpoint's files, as training retires an old one, the
    first time that moment comes for it: right after it is chosen as the
    newest, after its variables were compared with the model's, or as its
    weights are being restored."""

    def delete():
        for path in glob.glob(checkpoint + ".*"):
            os.remove(path)

    def after(function):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            if moment != "restoring" and os.path.exists(checkpoint + ".index"):
                delete()
            return result

        return wrapper

    if moment == "chosen":
        monkeypatch.setattr(checkpoints, "newest", after(checkpoints.newest))
    elif moment == "compared":
        monkeypatch.setattr(checkpoints, "mismatch", after(checkpoints.mismatch))
    else:
        restore = tf.compat.v1.train.Saver.restore

        def restoring(self, sess, save_path):
            if save_path == checkpoint:
                delete()
            return restore(self, sess, save_path)

        monkeypatch.setattr(tf.compat.v1.train.Saver, "restore", restoring)


MOMENTS = ["chosen", "compared", "restoring"]
