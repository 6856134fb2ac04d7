"""TensorBoard, pointed at a short training run and its evaluation, serves
every curve, histogram, image and graph the README tells users to look at."""

import io
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from PIL import Image

from harness import fake_cifar
from harness.procs import PATIENCE_SECS, free_ports
from helpers import evaluate, summary_values, train

SCALARS = [
    "total_loss",
    "total_loss (raw)",
    "cross_entropy",
    "cross_entropy (raw)",
    "local3/weight_loss",
    "local4/weight_loss (raw)",
    "learning_rate",
    "conv1/conv1/sparsity",
    "softmax_linear/softmax_linear/sparsity",
]
HISTOGRAMS = [
    "conv1/conv1/activations",
    "local4/local4/activations",
    "conv1/weights",
    "softmax_linear/biases",
    "conv2/weights/gradients",
    "local3/weights/gradients",
]


# The training run's steps; it writes summaries every 5.
STEPS = 12


def _get(base, path, **query):
    return json.loads(_get_bytes(base, path, **query))


def _get_bytes(base, path, **query):
    url = base + path + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture(scope="module")
def board(dataset, tmp_path_factory):
    """TensorBoard on a short training run and its evaluation, once it has
    read both: (its address, the log folder)."""
    logdir = tmp_path_factory.mktemp("logs")
    trained = train(
        dataset, logdir / "train", "--max_steps=%d" % STEPS,
        "--save_summaries_steps=5", "--batch_size=8",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    scored = evaluate(
        dataset["root"], logdir / "train", logdir / "eval", "--run_once",
        "--num_examples=100",
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr

    (port,) = free_ports(1)
    base = "http://127.0.0.1:%d" % port
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
         "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false",
         "--reload_interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + PATIENCE_SECS
        while True:
            assert process.poll() is None, process.stderr.read()
            try:
                tags = _get(base, "/data/plugin/scalars/tags")
            except OSError:
                tags = {}
            if "Precision @ 1" in tags.get("eval", {}) and tags.get("train"):
                break
            assert time.time() < deadline, "TensorBoard did not load the runs"
            time.sleep(1)
        yield base, logdir
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stderr.close()


@pytest.mark.slow
def test_tensorboard_serves_the_curves_histograms_images_and_graphs(board):
    base, _ = board
    scalar_tags = _get(base, "/data/plugin/scalars/tags")
    assert set(SCALARS) <= set(scalar_tags["train"]), sorted(scalar_tags["train"])
    precision = _get(
        base, "/data/plugin/scalars/scalars", run="eval", tag="Precision @ 1"
    )
    assert [step for _, step, _ in precision] == [STEPS]
    learning_rate = _get(
        base, "/data/plugin/scalars/scalars", run="train", tag="learning_rate"
    )
    assert [step for _, step, _ in learning_rate] == [1, 6, 11]
    assert all(value == pytest.approx(0.1) for _, _, value in learning_rate)

    histograms = _get(base, "/data/plugin/histograms/tags")["train"]
    assert set(HISTOGRAMS) <= set(histograms), sorted(histograms)
    images = _get(base, "/data/plugin/images/tags")
    assert any("images" in tag for tag in images["train"])
    assert any("images" in tag for tag in images["eval"])
    graphs = _get(base, "/data/plugin/graphs/info")
    assert graphs["train"]["run_graph"] and graphs["eval"]["run_graph"]


@pytest.mark.slow
def test_tensorboard_serves_each_class_and_the_confusion_matrix(board):
    base, logdir = board
    # Each class's recall, and the confusion matrix as a picture, at the
    # checkpoint's step.
    for name in fake_cifar.CLASS_NAMES:
        per_class = _get(
            base, "/data/plugin/scalars/scalars", run="eval",
            tag="Recall/%s" % name,
        )  # fmt: skip
        assert [step for _, step, _ in per_class] == [STEPS]
    assert "Confusion matrix" in _get(base, "/data/plugin/images/tags")["eval"]
    (entry,) = _get(
        base, "/data/plugin/images/images", run="eval", tag="Confusion matrix"
    )
    assert entry["step"] == STEPS
    png = _get_bytes(base, "/data/plugin/images/individualImage?" + entry["query"])
    ((_, value),) = summary_values(logdir / "eval")["Confusion matrix"]
    assert png == value.image.encoded_image_string
    picture = Image.open(io.BytesIO(png))
    assert picture.size == (value.image.width, value.image.height)
    assert min(picture.size) >= 400
    texts = _get(base, "/data/plugin/text/tags")
    assert "Confusion matrix (counts)" in texts["eval"]
