"""cifar10_eval.py: exact precision @ 1, polling beside training (which a
second trainer, kill -9 and SIGTERM interrupt), errors."""

import glob
import io
import re
import shutil
import signal
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver
from PIL import Image

import cifar10
import cifar10_eval
from harness import fake_cifar
from helpers import (
    MOMENTS,
    PRECISION,
    checkpoint_copies,
    checkpoint_step,
    evaluate,
    exit_line,
    finish_cleanly,
    form,
    independent_logits,
    start_evaluation,
    start_training,
    summary_values,
    train,
    vanish_at,
)


@pytest.fixture(scope="module")
def noise(tmp_path_factory):
    """Unlearnable data with random labels: a trained model scores about
    chance on its test set, and every single image changes the score."""
    root = str(tmp_path_factory.mktemp("noise"))
    data = fake_cifar.write_dataset(root, records_per_file=1, test_records=1000,
                                    learnable=False, seed=1, describe=True)  # fmt: skip
    data["root"] = root
    return data


def independent_precision(checkpoint, labels, images):
    """Precision @ 1 of the checkpoint's moving-average weights, computed in
    a graph of its own fed from numpy."""
    return np.mean(np.argmax(independent_logits(checkpoint, images), axis=1) == labels)


@pytest.mark.parametrize("num_examples", [70])  # 2 batches of 32 and part of one
def test_run_once_counts_each_image_once(trained, noise, tmp_path, num_examples):
    result = evaluate(
        noise["root"], trained, tmp_path / "eval", "--run_once",
        "--num_examples=%d" % num_examples,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (match,) = PRECISION.findall(result.stdout)
    precision, step, count = float(match[0]), int(match[1]), int(match[2])
    assert step == checkpoint_step(trained) and count == num_examples

    labels, images = noise["test"]
    expected = independent_precision(
        tf.train.latest_checkpoint(trained),
        labels[:num_examples],
        images[:num_examples],
    )
    assert abs(precision - expected) <= 0.0005 + 1e-9, (precision, expected)

    # The same figure, as a summary at the checkpoint's step.
    values = summary_values(tmp_path / "eval")
    assert [(s, v.simple_value) for s, v in values["Precision @ 1"]] == [
        (step, pytest.approx(expected, abs=1e-6))
    ]

    # The confusion matrix, from the same pass: as numpy makes it from the
    # checkpoint's moving averages, its trace the images counted right, its
    # rows the images of each class.
    logits = independent_logits(
        tf.train.latest_checkpoint(trained), images[:num_examples]
    )
    numpy_matrix = np.zeros((10, 10), np.int64)
    np.add.at(numpy_matrix, (labels[:num_examples], np.argmax(logits, axis=1)), 1)
    matrix = counts_table(values["Confusion matrix (counts)"], step)
    np.testing.assert_array_equal(matrix, numpy_matrix)
    assert np.trace(matrix) / matrix.sum() == pytest.approx(expected, abs=1e-9)
    np.testing.assert_array_equal(
        matrix.sum(axis=1), np.bincount(labels[:num_examples], minlength=10)
    )
    # Each class's recall (the share of its images classified right), as a
    # scalar and in the printed table.
    assert re.search(r"^  class +images +recall$", result.stdout, re.M)
    for i, name in enumerate(fake_cifar.CLASS_NAMES):
        ((s, value),) = values["Recall/%s" % name]
        assert s == step
        assert value.simple_value == pytest.approx(matrix[i, i] / matrix[i].sum())
        assert re.search(
            r"^  %s +%d +%.3f$"
            % (name, matrix[i].sum(), matrix[i, i] / matrix[i].sum()),
            result.stdout,
            re.M,
        ), result.stdout
    # The heat map: a picture of the size it says.
    ((s, value),) = values["Confusion matrix"]
    picture = Image.open(io.BytesIO(value.image.encoded_image_string))
    assert s == step and picture.format == "PNG"
    assert picture.size == (value.image.width, value.image.height)


def counts_table(values, step):
    """The confusion matrix of the text summary at step."""
    ((s, value),) = values
    assert s == step
    rows = tf.make_ndarray(value.tensor).item().decode().splitlines()[2:]
    return np.array([[int(n) for n in row.split("|")[2:-1]] for row in rows])


def test_two_matrices_make_two_pictures():
    names = ["class %d" % i for i in range(10)]
    one = np.diag(np.arange(10) * 100)
    other = one.copy()
    other[3, 5] = 40  # one mistake more
    pictures = {}
    for key, matrix in (("one", one), ("again", one), ("other", other)):
        png, height, width = cifar10_eval.confusion_image(matrix, names, 7)
        picture = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert picture.shape == (height, width, 3)
        assert height >= 400 and width >= 400  # room for the names and counts
        pictures[key] = picture
    np.testing.assert_array_equal(pictures["one"], pictures["again"])
    changed = np.any(pictures["one"] != pictures["other"], axis=2)
    # The cell that changed, not the whole picture.
    assert 0 < changed.mean() < 0.05


def test_trained_model_scores_well_above_chance_on_either_split(
    trained, dataset, tmp_path
):
    for split in ("test", "train_eval"):
        result = evaluate(
            dataset["root"], trained, tmp_path / split, "--run_once",
            "--eval_data=%s" % split, "--num_examples=200",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        (match,) = PRECISION.findall(result.stdout)
        assert float(match[0]) > 0.5
        # The training images get the per-class table and summaries too.
        assert "  Most confused: " in result.stdout
        values = summary_values(tmp_path / split)
        assert "Confusion matrix" in values and "Recall/truck" in values


@pytest.mark.slow
def test_polling_beside_training_scores_each_checkpoint_once_through_kill_and_sigterm(
    dataset, tmp_path
):
    train_dir = tmp_path / "train"
    # Small steps and small looks: the test waits on events, and the
    # processes compute all the while.
    flags = [
        "--max_steps=1000000", "--save_checkpoint_steps=5", "--keep_checkpoints=1",
        "--batch_size=8", "--min_queue_examples=100",
    ]  # fmt: skip
    evaluator = start_evaluation(
        dataset["root"], train_dir, tmp_path / "eval", "--eval_interval_secs=1",
        "--num_examples=16", "--batch_size=16", "--per_class",
    )  # fmt: skip
    trainer = None
    try:
        # Started before training, it waits for a checkpoint.
        evaluator.wait_for(
            "^No checkpoint file found at %s" % re.escape(str(train_dir))
        )
        # A checkpoint every 5 steps, only the newest kept: each one the
        # evaluator reads may be deleted under it.
        trainer = start_training(dataset, train_dir, *flags)
        # While it starts: a checkpoint of another model (float16
        # variables), for the evaluation to meet below.
        fp16 = fp16_checkpoint(tmp_path / "fp16")
        evaluator.wait_until(lambda out: PRECISION.search(out), "a checkpoint scored")

        # A second trainer in the folder is turned away, having written nothing.
        second = train(dataset, train_dir, "--max_steps=10")
        assert second.returncode == 1
        assert "Traceback" not in second.stderr
        assert (
            "Error: --train_dir=%s is in use by another training process (pid %d on "
            % (train_dir, trainer.proc.pid)
            in second.stderr
        )
        assert len(glob.glob(str(train_dir / "events.out.tfevents.*"))) == 1
        evaluator.wait_until(
            lambda out: len(PRECISION.findall(out)) >= 3, "three checkpoints scored"
        )
        scored = int(PRECISION.findall(evaluator.output())[-1][1])

        # Killed (kill -9), the trainer leaves no lock behind: the next one
        # goes on from its newest checkpoint.
        trainer.stop()
        trainer = start_training(dataset, train_dir, *flags)
        resumed = trainer.wait_for(r"^Resuming from .*model\.ckpt-(\d+) at step \1\.$")
        assert int(resumed[1]) >= scored

        # SIGTERM, as a scheduler sends it, saves a checkpoint; once it is
        # saved, another signal changes nothing. (Ctrl+C, SIGINT, stops the
        # runs of the multi-GPU binary, of a cluster's chief, and of
        # training whose queue still fills, in other tests.)
        trainer.wait_for("^Input queue filled; the first step took")
        trainer.send_signal(signal.SIGTERM)
        trainer.wait_for("^Stopped by SIGTERM at step")
        trainer.send_signal(signal.SIGTERM)
        code, out = finish_cleanly(trainer)
        assert code == 0, out
        stopped = int(re.search(r"Stopped by SIGTERM at step (\d+)", out)[1])
        assert checkpoint_step(train_dir) == stopped
        # The evaluation goes on watching, and scores that checkpoint too.
        evaluator.wait_for(r"precision @ 1 = .* \(step %d," % stopped)

        # A newer checkpoint that cannot be read: the next look says so, and
        # does not score the one it scored already again.
        newer = train_dir / ("model.ckpt-%d" % (stopped + 1))
        (train_dir / (newer.name + ".index")).write_bytes(b"not an index")
        evaluator.wait_for(
            "^Warning: skipping %s, which cannot be read" % re.escape(str(newer))
        )
        # A newer one of another model (float16 variables): a warning too,
        # and the evaluation goes on polling.
        other = str(train_dir / ("model.ckpt-%d" % (stopped + 2)))
        # Its index last, as a save writes it.
        for path in sorted(glob.glob(fp16 + ".*"), key=lambda p: p.endswith(".index")):
            shutil.copy(path, other + path[len(fp16) :])
        evaluator.wait_for(
            "^Warning: %s does not match this model: variable .* is float16, "
            "not float32" % re.escape(other)
        )
        assert evaluator.proc.poll() is None
        # Ctrl+C ends the polling.
        evaluator.send_signal(signal.SIGINT)
        code, log = finish_cleanly(evaluator)
    finally:
        if trainer:
            trainer.stop()
        evaluator.stop()
    assert code == 130 and log.endswith("Interrupted.\n"), log
    steps = [int(m[1]) for m in PRECISION.findall(log)]
    assert steps == sorted(set(steps)) and steps[-1] == stopped, log
    # The first checkpoint of the new training, if it came in time to be
    # scored, is called what it is.
    assert ("(step 0," in log) == ("Step 0 is the untrained model" in log), log
    # --per_class, in the polling mode too: a table with each score.
    assert log.count("  Most confused: ") == len(steps)
    assert log.count("No checkpoint file found") == 1


def fp16_checkpoint(folder):
    """A checkpoint of the model with float16 variables, in folder; its path."""
    with flagsaver.flagsaver(use_fp16=True), tf.Graph().as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        images = tf.zeros([2, 24, 24, 3], tf.float16)
        total = cifar10.loss(cifar10.inference(images), tf.zeros([2], tf.int32))
        cifar10.train(total, global_step)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return tf.compat.v1.train.Saver().save(sess, str(folder / "model.ckpt"))


def test_a_warning_while_polling_reaches_a_piped_output_before_the_wait(
    tmp_path, monkeypatch
):
    # Output to a pipe or a file is buffered: a line not flushed before the
    # next wait would show up only after it, minutes later.
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        tf.Variable(1.0, name="v")
        sess.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver().save(sess, str(tmp_path / "model.ckpt"), 1)
    damaged = tmp_path / "model.ckpt-2"
    piped = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(piped))
    shown = []

    def wait(secs):
        # What the pipe's reader has seen when each wait begins.
        shown.append(piped.getvalue().decode())
        if len(shown) == 2:
            raise KeyboardInterrupt
        (tmp_path / (damaged.name + ".index")).write_bytes(b"not an index")

    monkeypatch.setattr(cifar10_eval.time, "sleep", wait)
    with flagsaver.flagsaver(checkpoint_dir=str(tmp_path), eval_interval_secs=60):
        with pytest.raises(KeyboardInterrupt):
            cifar10_eval._each_new_checkpoint(lambda checkpoint: True)
    assert "Warning: skipping %s, which cannot be read" % damaged in shown[1]


def test_polling_says_when_it_looks_next(tmp_path, monkeypatch):
    # Each look ends with one line that says when the next one is.
    monkeypatch.setattr(cifar10_eval.time, "time", lambda: 1e9)
    next_look = time.strftime("%H:%M:%S", time.localtime(1e9 + 60))
    printed = []
    monkeypatch.setattr(
        cifar10_eval, "print", lambda line, **_: printed.append(line), raising=False
    )

    def wait(secs):
        assert secs == 60
        looks.append(printed[-1])
        if len(looks) == 2:  # a checkpoint comes, to score
            with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
                tf.Variable(1.0, name="v")
                sess.run(tf.compat.v1.global_variables_initializer())
                tf.compat.v1.train.Saver().save(sess, str(tmp_path / "model.ckpt"), 5)
        if len(looks) == 4:
            raise KeyboardInterrupt

    looks = []
    monkeypatch.setattr(cifar10_eval.time, "sleep", wait)
    with flagsaver.flagsaver(checkpoint_dir=str(tmp_path), eval_interval_secs=60):
        with pytest.raises(KeyboardInterrupt):
            cifar10_eval._each_new_checkpoint(lambda checkpoint: True)
    assert looks == [
        "No checkpoint file found at %s; next look at %s." % (tmp_path, next_look),
        "No checkpoint yet; next look at %s." % next_look,
        "Next look for a new checkpoint at %s." % next_look,
        "No new checkpoint; next look at %s." % next_look,
    ]
    assert all(form(line) == "next look" for line in looks)


def test_step_0_is_called_the_untrained_model(trained, dataset, tmp_path, capsys):
    # Evaluation started beside a new training scores its first checkpoint,
    # of step 0, at once.
    (tmp_path / "ckpt").mkdir()
    newest = tf.train.latest_checkpoint(trained)
    for path in glob.glob(newest + ".*"):
        shutil.copy(path, tmp_path / "ckpt" / ("model.ckpt-0" + path[len(newest) :]))
    with flagsaver.flagsaver(
        data_dir=dataset["root"], checkpoint_dir=str(tmp_path / "ckpt"),
        eval_dir=str(tmp_path / "eval"), run_once=True, num_examples=100,
    ):  # fmt: skip
        cifar10_eval.main(["binary"])
    lines = capsys.readouterr().out.splitlines()
    assert PRECISION.match(lines[0])
    assert lines[1] == (
        "Step 0 is the untrained model: chance alone gets about 1 in 10 right."
    )
    assert form(lines[1]) == "untrained"


def test_no_checkpoint_and_too_many_examples_are_clear_errors(dataset, tmp_path):
    flags = dict(data_dir=dataset["root"], eval_dir=str(tmp_path / "eval"))
    line = exit_line(
        cifar10_eval.main, checkpoint_dir=str(tmp_path / "none"), run_once=True, **flags
    )
    assert line.startswith(
        "Error: No checkpoint file found at %s" % (tmp_path / "none")
    )
    line = exit_line(cifar10_eval.main, num_examples=2001, **flags)
    assert line == (
        "Error: --num_examples=2001 is more than the 2000 images of the test data."
    )


@pytest.mark.slow
def test_a_bad_flag_value_is_one_clear_error(dataset, tmp_path):
    result = evaluate(dataset["root"], tmp_path, tmp_path / "eval", "--eval_data=x")
    assert result.returncode == 1
    assert "--eval_data" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_fp16_checkpoint_evaluates_with_its_flag_and_only_with_it(dataset, tmp_path):
    train_dir = tmp_path / "train"
    # float16 is slow on a CPU (a step of 8 images takes about 2 s of CPU
    # here): one step of 2.
    small = ["--batch_size=2", "--min_queue_examples=10"]
    trained = train(dataset, train_dir, "--max_steps=1", "--use_fp16", *small)
    assert trained.returncode == 0, trained.stderr
    result = evaluate(
        dataset["root"], train_dir, tmp_path / "eval", "--run_once", "--use_fp16",
        "--num_examples=2", "--batch_size=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (match,) = PRECISION.findall(result.stdout)
    assert match[1] == "1" and match[2] == "2"

    # Without --use_fp16: one line.
    mismatch = "%s does not match this model: variable " % (train_dir / "model.ckpt-1")
    line = exit_line(
        cifar10_eval.main, data_dir=dataset["root"], checkpoint_dir=str(train_dir),
        eval_dir=str(tmp_path / "eval"), run_once=True, num_examples=32,
    )  # fmt: skip
    assert line.startswith("Error: " + mismatch) and "is float16, not float32" in line
    # (A polling evaluation warns and goes on polling: see the polling test
    # above.)


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_checkpoint_that_vanishes_while_read_is_skipped(
    trained, dataset, tmp_path, monkeypatch, capsys, moment
):
    older, newer = checkpoint_copies(trained, tmp_path / "ckpt", (100, 200))
    vanish_at(moment, newer, monkeypatch)
    with flagsaver.flagsaver(
        data_dir=dataset["root"], checkpoint_dir=str(tmp_path / "ckpt"),
        eval_dir=str(tmp_path / "eval"), run_once=True, num_examples=100,
    ):  # fmt: skip
        cifar10_eval.main(["binary"])
    out = capsys.readouterr().out
    assert "Warning: %s vanished while being read" % newer in out
    assert [m[1] for m in PRECISION.findall(out)] == ["100"]
