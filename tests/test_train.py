"""cifar10_train.py: logging, checkpoints, resume, divergence, errors. A
signal that stops training: test_eval.py (beside an evaluation) and
test_recovery.py (at awkward moments)."""

import glob
import os
import pathlib
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from PIL import Image

import cifar10
import cifar10_classify
import cifar10_eval
import cifar10_input
import cifar10_train
from helpers import (
    LOG_LINE,
    checkpoint_step,
    evaluate,
    exit_line,
    logged_steps,
    run_here,
    summaries,
    train,
)
from support import checkpoints, memory, training


@pytest.mark.slow
def test_train_logs_saves_resumes_and_starts_fresh(dataset, tmp_path, capsys):
    train_dir = tmp_path / "train"
    # Batches of 8: what is checked is the schedule, not the batch.
    first = train(
        dataset,
        train_dir,
        "--max_steps=20",
        "--log_frequency=5",
        "--save_checkpoint_steps=10",
        "--save_summaries_steps=10",
        "--batch_size=8",
    )
    assert first.returncode == 0, first.stderr
    assert logged_steps(first.stdout) == [5, 10, 15, 20]
    # Each line says the step the run stops at, and the time left.
    assert [m[6] for m in map(LOG_LINE.match, first.stdout.splitlines()) if m] == [
        "20"
    ] * 4
    assert "Filling queue with 300 CIFAR-10 images" in first.stdout
    for line in first.stdout.splitlines():
        if LOG_LINE.match(line):
            examples_per_sec, sec_per_batch = map(
                float, LOG_LINE.match(line).groups()[2:4]
            )
            assert examples_per_sec == pytest.approx(8 / sec_per_batch, rel=0.05)
    assert checkpoint_step(train_dir) == 20
    assert os.path.exists(train_dir / "model.ckpt-10.index")
    assert os.path.exists(train_dir / "graph.pbtxt")
    tags = {
        tag: sorted({step for step, _ in values})
        for tag, values in summaries(train_dir).items()
    }
    for tag in ["total_loss (raw)", "total_loss", "cross_entropy", "learning_rate",
                "conv1/conv1/sparsity", "local3/local3/activations", "conv1/weights",
                "local3/weights/gradients"]:  # fmt: skip
        assert tag in tags, sorted(tags)
    assert any(tag.startswith("data_augmentation/images") for tag in tags)
    assert tags["learning_rate"] == [1, 11]  # every 10 steps, from the first

    # Resume from step 20, on the same schedule.
    saved = {
        path: (os.stat(path).st_ino, os.stat(path).st_mtime_ns)
        for path in glob.glob(str(train_dir / "model.ckpt-20.*"))
    }
    assert len(saved) == 3  # index, data, meta
    second = train(
        dataset, train_dir, "--max_steps=30", "--log_frequency=5", "--batch_size=8"
    )
    assert second.returncode == 0, second.stderr
    assert (
        "Resuming from %s at step 20." % (train_dir / "model.ckpt-20") in second.stdout
    )
    assert logged_steps(second.stdout) == [25, 30]
    assert checkpoint_step(train_dir) == 30
    # The step it resumed from is not saved again: that would only take
    # time, and end a run at once on a disk with less room left than a
    # checkpoint.
    for path, (inode, mtime) in saved.items():
        assert (os.stat(path).st_ino, os.stat(path).st_mtime_ns) == (inode, mtime)

    # Already at max_steps: nothing to do, nothing changed.
    before = sorted(os.listdir(train_dir))
    with flagsaver.flagsaver(
        data_dir=dataset["root"], train_dir=str(train_dir), max_steps=30
    ):
        cifar10_train.main(["binary"])
    assert "already at --max_steps=30" in capsys.readouterr().out
    assert sorted(os.listdir(train_dir)) == before

    # --fresh_start sets the old run aside and starts from step 0.
    fourth = train(
        dataset, train_dir, "--max_steps=5", "--log_frequency=5", "--fresh_start",
        "--batch_size=8",
    )  # fmt: skip
    assert fourth.returncode == 0, fourth.stderr
    assert logged_steps(fourth.stdout) == [5]
    assert checkpoint_step(train_dir) == 5
    (kept,) = glob.glob(str(train_dir) + ".old-*")
    assert checkpoint_step(kept) == 30


@pytest.mark.parametrize(
    "max_steps, suffix",
    [
        (300, ", 0:02:25 left to step 300"),
        # A day or more away, the line is the tutorial's alone.
        (172800, ", 23:59:55 left to step 172800"),
        (172810, ""),
        (1000000, ""),
    ],
)
def test_the_step_line_says_where_training_stands(
    monkeypatch, capsys, max_steps, suffix
):
    now = [1000.0]
    monkeypatch.setattr(training.time, "time", lambda: now[0])
    with tf.Graph().as_default():
        hook = training.ProgressHook(
            tf.constant(2.0), 64, log_frequency=10, train_dir="/train",
            num_towers=2, last_step=max_steps,
        )  # fmt: skip
        global_step = tf.compat.v1.train.get_or_create_global_step()
        with tf.compat.v1.Session() as sess:
            sess.run(global_step.initializer)
            hook.after_create_session(sess, None)
        run = tf.compat.v1.train.SessionRunValues({"loss": 2.0}, None, None)
        now[0] += 7.0  # the first step, while the queue fills
        hook.after_run(None, run)
        for _ in range(19):  # then half a second a step
            now[0] += 0.5
            hook.after_run(None, run)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Input queue filled; the first step took 7.0 s."
    assert [m[1] for m in map(LOG_LINE.match, lines[1:])] == ["10", "20"]
    # The tutorial's fields first, as they were; then the time left at the
    # pace since the first step: 9 steps in 4.5 s, so 290 steps in 145 s.
    assert lines[1].endswith(
        ": step 10, loss = 2.00 (128.0 examples/sec; 0.250 sec/batch)" + suffix
    )


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    dataset, trained, tmp_path, monkeypatch
):
    settings = dict(
        data_dir=dataset["root"],
        train_dir=str(tmp_path / "train"),
        batch_size=8,
        min_queue_examples=100,
        save_checkpoint_steps=3,
    )
    # A good checkpoint to go on from: the shared one.
    start = copy_of_trained(trained, tmp_path / "train")

    # A learning rate this large blows the weights up within a few steps.
    monkeypatch.setattr(cifar10, "INITIAL_LEARNING_RATE", 1e9)
    message = exit_line(cifar10_train.main, max_steps=start + 1000, **settings)
    assert re.match(
        r"Error: Model diverged with loss = (NaN|inf) at step \d+\.", message
    )
    diverged_at = int(re.search(r"at step (\d+)", message).group(1))
    # Checkpoints made before the divergence stay; none holds a bad weight.
    good = checkpoint_step(tmp_path / "train")
    assert start <= good < diverged_at
    reader = tf.train.load_checkpoint(
        tf.train.latest_checkpoint(str(tmp_path / "train"))
    )
    for name in reader.get_variable_to_shape_map():
        assert np.all(np.isfinite(reader.get_tensor(name))), name


@pytest.mark.slow
@pytest.mark.parametrize(
    "flag, expected",
    [("--batch_size=0", "--batch_size")],
)
def test_bad_flag_values_are_one_clear_error(dataset, tmp_path, flag, expected):
    result = train(dataset, tmp_path / "train", flag)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "train").exists()


def test_unwritable_train_dir_is_a_clear_error(dataset, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    line = exit_line(
        cifar10_train.main, data_dir=dataset["root"], train_dir=str(blocker / "train")
    )
    assert line.startswith(
        "Error: Cannot write to --train_dir=%s" % (blocker / "train")
    )
    assert blocker.read_text() == "keep me"


def test_truncated_data_is_a_clear_error(dataset, tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in os.listdir(dataset["dir"]):
        os.symlink(os.path.join(dataset["dir"], name), folder / name)
    bad = folder / "data_batch_2.bin"
    bad.unlink()
    bad.write_bytes((pathlib.Path(dataset["dir"]) / bad.name).read_bytes()[:5000])
    line = exit_line(
        cifar10_train.main,
        data_dir=str(folder.parent),
        train_dir=str(tmp_path / "train"),
        min_queue_examples=300,
    )
    assert line.startswith("Error: Data file %s is 5000 bytes" % bad)


def copy_of_trained(trained, folder):
    """The shared float32 checkpoint copied into folder, the newest there,
    with the class names the training binary writes beside it.

    Returns:
      Its step.
    """
    folder.mkdir(parents=True)
    newest = tf.train.latest_checkpoint(trained)
    for path in glob.glob(glob.escape(newest) + ".*"):
        shutil.copy(path, folder)
    shutil.copy(os.path.join(trained, checkpoints.CLASS_NAMES_FILE), folder)
    name = os.path.basename(newest)
    (folder / "checkpoint").write_text('model_checkpoint_path: "%s"\n' % name)
    return checkpoint_step(folder)


def test_a_checkpoint_of_another_model_is_a_clear_error(dataset, trained, tmp_path):
    # A checkpoint of the float32 model met by --use_fp16.
    train_dir = tmp_path / "train"
    step = copy_of_trained(trained, train_dir)
    line = exit_line(
        cifar10_train.main,
        data_dir=dataset["root"],
        train_dir=str(train_dir),
        min_queue_examples=300,
        max_steps=step + 2,
        use_fp16=True,
    )
    assert "does not match this model" in line and "--fresh_start" in line
    assert checkpoint_step(train_dir) == step


@pytest.mark.parametrize("name", ["train_dir", "checkpoint_dir", "checkpoint"])
def test_a_checkpoint_folder_with_brackets_is_refused_at_once(name, tmp_path):
    # TensorFlow reads a checkpoint's path as a pattern: its checkpoints in
    # runs/br[1] would be saved, then never found again.
    path = str(tmp_path / "br[1]")
    with flagsaver.flagsaver():
        # Setting a flag checks it as parsing it does.
        with pytest.raises(flags.IllegalFlagValueError) as e:
            setattr(flags.FLAGS, name, path)
        assert "flag --%s=%s: " % (name, path) in str(e.value)
        assert "[ and ]" in str(e.value)
        # Spaces, other letters, * and ? are taken as they are.
        setattr(flags.FLAGS, name, str(tmp_path / "runs 1 ünï *?"))


@pytest.mark.slow
def test_the_binary_refuses_brackets_in_one_line(dataset, tmp_path):
    result = train(dataset, tmp_path / "br[1]", "--max_steps=3")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: --train_dir=%s: " % (tmp_path / "br[1]")), line
    assert not (tmp_path / "br[1]").exists()


def test_a_folder_named_with_spaces_letters_and_wildcards_works_throughout(
    dataset, trained, tmp_path
):
    # TensorFlow reads checkpoint paths as patterns: * and ? must still find
    # this folder's checkpoints, not those of a folder they also match (a
    # checkpoint beyond step 2 there, which a run to step 2 would take for
    # its own and stop at).
    runs = tmp_path / "runs 1 ünï *?"
    decoy = tmp_path / "runs 1 ünï ab"
    decoy_step = copy_of_trained(trained, decoy)
    assert decoy_step > 2
    result = train(dataset, runs, "--max_steps=2", "--batch_size=8")
    assert result.returncode == 0, result.stderr
    assert "Resuming" not in result.stdout
    assert checkpoint_step(runs) == 2
    assert checkpoint_step(decoy) == decoy_step
    result = evaluate(
        dataset["root"], runs, runs / "eval ü*?", "--run_once", "--num_examples=100"
    )
    assert result.returncode == 0, result.stderr
    assert "(step 2, " in result.stdout
    image = tmp_path / "ünï *?.png"
    Image.fromarray(np.zeros([32, 32, 3], np.uint8)).save(image)
    result = run_here(
        "cifar10_classify.py", "--checkpoint_dir=%s" % runs,
        "--output=%s" % (runs / "out ü*?.csv"), "--export_dir=%s" % (runs / "ü*?"),
        str(image),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (runs / "out ü*?.csv").read_text().count("\n") == 2  # header, image
    assert "Exported the model of %s/model.ckpt-2 " % runs in result.stdout
    assert (runs / "ü*?" / "2" / "saved_model.pb").is_file()


def test_a_batch_too_large_for_the_memory_is_refused_before_any_work(dataset, tmp_path):
    # --batch_size=100000 grew to 22.8 GB on a 24 GB machine until the
    # kernel killed it, without a word.
    train_dir = tmp_path / "train"
    line = exit_line(
        cifar10_train.main, data_dir=dataset["root"], train_dir=str(train_dir),
        batch_size=100000,
    )  # fmt: skip
    match = re.fullmatch(
        r"Error: --batch_size=100000 needs about ([\d.]+) GB of memory to train, "
        r"more than the ([\d.]+) GB of this machine\. Lower --batch_size\.",
        line,
    )
    assert match, line
    assert float(match[1]) > 50 and float(match[2]) > 0
    assert not train_dir.exists()
    # The tutorial's batch needs about a gigabyte.
    shape = (24, 24, 3)
    needed = memory.needed(cifar10.inference, shape, images=128, queue_images=20384)
    assert 0.5e9 < needed < 1.5e9, needed


def test_the_memory_check_counts_the_queue_of_the_data_it_reads():
    # One's own 500 images fill a shuffling queue of 200, not CIFAR-10's 20,000.
    data = cifar10_input.DataSet(
        name="small", train={"a.bin": 500}, test={"b.bin": 100},
        class_names=["a", "b"], remedy="",
    )  # fmt: skip
    with flagsaver.flagsaver(batch_size=10):
        assert cifar10.queued_images(data, training=True) == 200 + 5 * 10
        assert cifar10.queued_images(data, training=True, towers=2) == 200 + 7 * 10
        assert cifar10.queued_images(data, training=False) == 5 * 10
        with flagsaver.flagsaver(min_queue_examples=30):
            assert cifar10.queued_images(data, training=True) == 30 + 5 * 10


def test_eval_and_classify_refuse_a_batch_too_large_too(dataset, trained, tmp_path):
    line = exit_line(
        cifar10_eval.main, data_dir=dataset["root"], checkpoint_dir=trained,
        eval_dir=str(tmp_path / "eval"), batch_size=100000, run_once=True,
    )  # fmt: skip
    assert line.startswith("Error: --batch_size=100000 needs about "), line
    assert "GB of memory to evaluate" in line
    assert not (tmp_path / "eval").exists()
    line = exit_line(
        cifar10_classify.main, str(tmp_path), checkpoint_dir=trained,
        batch_size=100000,
    )  # fmt: skip
    assert line.startswith("Error: --batch_size=100000 needs about "), line
    assert "GB of memory to classify" in line
