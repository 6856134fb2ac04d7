"""Nothing on disk is lost, and no failure shows a traceback: a missing or
garbled checkpoint pointer, damaged checkpoints, signals at awkward moments,
folders and data files that will not do. (A second trainer in a folder, and
a trainer killed with kill -9, are in test_eval.py, beside an evaluation.)"""

import glob
import os
import re
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver

import cifar10_eval
import cifar10_input
import cifar10_train
from harness.procs import PATIENCE_SECS, Process
from helpers import (
    PRECISION,
    evaluate,
    exit_line,
    start_training,
    train,
)
from support import checkpoints, run_folder, signals, startup

# Small steps, for runs whose checkpoints matter and not what they learn.
SMALL = ["--batch_size=8", "--min_queue_examples=100"]


def steps_on_disk(train_dir):
    """The steps of the checkpoints in train_dir, by their index files."""
    return sorted(
        checkpoints.step(path) for path in checkpoints.candidates(str(train_dir))
    )


def weights(checkpoint):
    reader = tf.train.load_checkpoint(str(checkpoint))
    return {
        name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
    }


def clean(result):
    """A finished run's stderr holds no traceback; returns its stdout."""
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def ten_steps(dataset, tmp_path_factory):
    """A train_dir of a run to step 10 with a checkpoint every 5 steps (of
    steps 0, 5 and 10), for the tests to copy."""
    train_dir = tmp_path_factory.mktemp("ten_steps") / "train"
    result = train(
        dataset, train_dir, "--max_steps=10", "--save_checkpoint_steps=5", *SMALL
    )
    assert result.returncode == 0, result.stderr
    assert steps_on_disk(train_dir) == [0, 5, 10]
    return train_dir


@pytest.mark.slow
def test_training_resumes_from_the_checkpoint_files_whatever_the_pointer_says(
    dataset, ten_steps, tmp_path
):
    train_dir = tmp_path / "train"
    flags = ["--save_checkpoint_steps=5", "--keep_checkpoints=2", *SMALL]
    # The run to step 10 as --keep_checkpoints=2 leaves it: its two newest.
    shutil.copytree(ten_steps, train_dir)
    for path in glob.glob(str(train_dir / "model.ckpt-0.*")):
        os.remove(path)
    pointer = train_dir / "checkpoint"
    for max_steps, garble in (
        (15, pointer.unlink),
        (20, lambda: pointer.write_text("x")),
    ):
        start = max_steps - 5
        kept = weights(train_dir / ("model.ckpt-%d" % start))
        garble()
        result = train(dataset, train_dir, "--max_steps=%d" % max_steps, *flags)
        assert result.returncode == 0, result.stderr
        assert "Resuming from %s at step %d." % (
            train_dir / ("model.ckpt-%d" % start),
            start,
        ) in clean(result)
        # The checkpoint it resumed from holds what it held; the run's two
        # newest are kept, as if it had never stopped.
        resumed = weights(train_dir / ("model.ckpt-%d" % start))
        for name, value in kept.items():
            np.testing.assert_array_equal(resumed[name], value, err_msg=name)
        assert steps_on_disk(train_dir) == [start, max_steps]
    # A pointer at something absent: the files say where to resume.
    pointer.write_text('model_checkpoint_path: "model.ckpt-999"\n')
    with run_folder.TrainDir(str(train_dir)) as resumed:
        assert resumed.checkpoint == str(train_dir / "model.ckpt-20")


@pytest.mark.slow
def test_damaged_checkpoints_are_skipped_and_kept(dataset, ten_steps, tmp_path):
    train_dir = tmp_path / "train"
    shutil.copytree(ten_steps, train_dir)
    # The newest cut short, the one before it without its index.
    data_10 = train_dir / "model.ckpt-10.data-00000-of-00001"
    with open(data_10, "r+b") as f:
        f.truncate(os.path.getsize(data_10) // 2)
    damaged_bytes = data_10.read_bytes()
    (train_dir / "model.ckpt-5.index").unlink()
    (train_dir / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-5"\n')

    # Evaluation warns about each and scores the newest it can read.
    scored = evaluate(
        dataset["root"], train_dir, tmp_path / "eval", "--run_once",
        "--num_examples=32",
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    out = clean(scored)
    for step in (10, 5):
        assert (
            "Warning: skipping %s, which cannot be read ("
            % (train_dir / ("model.ckpt-%d" % step))
            in out
        )
    assert [m[1] for m in PRECISION.findall(out)] == ["0"]

    # Training says which are damaged, sets their files aside and resumes
    # from the newest it can read.
    result = train(
        dataset, train_dir, "--max_steps=15", "--save_checkpoint_steps=5", *SMALL
    )
    assert result.returncode == 0, result.stderr
    out = clean(result)
    for step in (10, 5):
        assert (
            "Warning: %s is damaged (" % (train_dir / ("model.ckpt-%d" % step)) in out
        )
    assert "Resuming from %s at step 0." % (train_dir / "model.ckpt-0") in out
    assert (train_dir / "model.ckpt-10.data-00000-of-00001.damaged").read_bytes() == (
        damaged_bytes
    )
    assert os.path.exists(train_dir / "model.ckpt-5.data-00000-of-00001.damaged")
    assert steps_on_disk(train_dir) == [0, 5, 10, 15]

    # With no readable checkpoint, neither starts over nor scores.
    for path in glob.glob(str(train_dir / "model.ckpt-*.index")):
        os.remove(path)
    (train_dir / "checkpoint").write_text("")
    (train_dir / "model.ckpt-15.index").write_bytes(b"not an index")
    before = sorted(os.listdir(train_dir))
    with pytest.raises(startup.Error) as e:
        with run_folder.TrainDir(str(train_dir)):
            pass
    assert re.match(
        r"No checkpoint in --train_dir=%s can be read: .*model.ckpt-15: "
        % re.escape(str(train_dir)),
        str(e.value),
    )
    assert sorted(os.listdir(train_dir)) == before
    with flagsaver.flagsaver(checkpoint_dir=str(train_dir), run_once=True):
        with pytest.raises(cifar10_eval.EvalError) as e:
            cifar10_eval._each_new_checkpoint(lambda checkpoint: None)
    assert str(e.value).startswith("No checkpoint in %s can be read" % train_dir)


@pytest.mark.slow
def test_sigint_while_the_queue_fills_stops_at_once(dataset, tmp_path):
    train_dir = tmp_path / "train"
    # A shuffling queue that takes minutes to fill, from one thread.
    proc = start_training(
        dataset,
        train_dir,
        "--max_steps=1000000",
        "--min_queue_examples=1000000",
        "--num_preprocess_threads=1",
    )
    try:
        # The checkpoint of step 0 comes right before the wait for the queue.
        proc.wait_until(
            lambda out: os.path.exists(train_dir / "model.ckpt-0.index"),
            "the checkpoint of step 0",
        )
        proc.send_signal(signal.SIGINT)
        code, out = proc.finish()
    finally:
        proc.stop()
    assert code == 0, out
    assert "Stopped by SIGINT at step 0; checkpoint saved in %s." % train_dir in out
    assert "Input queue filled" not in out and "Traceback" not in out


def test_sigint_while_tensorflow_loads_says_interrupted(dataset, tmp_path):
    proc = Process(
        "cifar10_eval.py",
        "--data_dir=%s" % dataset["root"],
        "--checkpoint_dir=%s" % tmp_path,
        "--run_once",
        log_path=tmp_path / "eval.log",
    )
    maps = "/proc/%d/maps" % proc.proc.pid
    try:

        def loading(_):
            try:
                with open(maps) as f:
                    return "libtensorflow" in f.read()
            except OSError:
                return False

        proc.wait_until(loading, "TensorFlow loading")
        proc.send_signal(signal.SIGINT)
        code, out = proc.finish()
    finally:
        proc.stop()
    assert code == 130, out
    assert out.endswith("Interrupted.\n") and "Traceback" not in out, out


def test_folders_and_data_that_will_not_do_are_one_line_each(dataset, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    # A label byte of 252 in the test file; the rest of the data as it is.
    bad = tmp_path / "bad" / "cifar-10-batches-bin"
    bad.mkdir(parents=True)
    for name in os.listdir(dataset["dir"]):
        os.symlink(os.path.join(dataset["dir"], name), bad / name)
    (bad / "test_batch.bin").unlink()
    shutil.copy(os.path.join(dataset["dir"], "test_batch.bin"), bad / "test_batch.bin")
    with open(bad / "test_batch.bin", "r+b") as f:
        f.seek(3 * cifar10_input.RECORD_BYTES)
        f.write(bytes([252]))

    line = exit_line(
        cifar10_train.main, data_dir=str(a_file), train_dir=str(tmp_path / "train")
    )
    assert line.startswith("Error: Cannot create --data_dir=%s (" % a_file)
    evaluation = dict(
        checkpoint_dir=str(tmp_path), eval_dir=str(tmp_path / "eval"), run_once=True
    )
    line = exit_line(
        cifar10_eval.main, **{**evaluation, "data_dir": str(a_file / "data")}
    )
    assert line.startswith("Error: Cannot create --data_dir=%s (" % (a_file / "data"))
    line = exit_line(
        cifar10_eval.main,
        **{**evaluation, "data_dir": dataset["root"], "eval_dir": str(a_file)},
    )
    assert line.startswith("Error: Cannot write to --eval_dir=%s (" % a_file)
    line = exit_line(cifar10_eval.main, **{**evaluation, "data_dir": str(bad.parent)})
    assert line.startswith(
        "Error: Data file %s holds a label of 252 at record 3, but labels go "
        "from 0 to 9" % (bad / "test_batch.bin")
    )
    assert a_file.read_text() == "keep me"


def test_the_signal_context_takes_signals_and_puts_everything_back():
    def state():
        wakeup = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(wakeup)
        return (
            signal.getsignal(signal.SIGINT),
            signal.getsignal(signal.SIGTERM),
            wakeup,
            threading.active_count(),
            sorted(os.listdir("/proc/self/fd")),
        )

    before = state()
    with signals.StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.time() + PATIENCE_SECS
        while stop.received is None and time.time() < deadline:
            time.sleep(0.01)
    assert stop.received == "SIGTERM"
    assert state() == before
