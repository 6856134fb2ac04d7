"""The README and the pages of docs/ cannot drift: every command of their
bash blocks is run here, a page's in its order and in a folder of its own,
against the tests' own small data and with short runs, or it is in NOT_RUN
with the reason; every flag of every command is one its binary takes; and
each log line they quote (a code block with no language) has a form the
binaries print (helpers.FORMS), which the runs here print too.

A command is changed only in adapt(), in view: its absolute paths moved
under the test's folder, the tests' data set where it names none, and the
flags in SHORTER, which only shorten a run.
"""

import importlib
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver
from PIL import Image

from harness import fake_cifar
from harness.procs import ROOT, run_here
from helpers import form

README = pathlib.Path(ROOT, "README.md")
# The README first, then the pages of docs/.
PAGES = [README, *sorted(pathlib.Path(ROOT, "docs").glob("*.md"))]

# The commands that are not run here, and why (each still has its flags
# checked against its binary's).
NOT_RUN = {
    "python3 -m venv .venv": "makes a virtual environment: CI's .ci/run does",
    ". .venv/bin/activate": "a shell's own setting",
    "pip install -r requirements.txt": "installs from the internet: CI's .ci/run "
    "does, in a fresh virtual environment",
    "python -m pytest -q": "the test suite itself, which CI runs",
    'python -m pytest -q -m "not slow"': "the test suite itself",
    "python -m pytest -q -n 0 tests/test_train.py": "a part of the test suite",
    "python -m pytest -q -m hosts": "the hosts tests, which need root and change "
    "the machine's network set-up while they run",
    "CIFAR10_HOST_TESTS=1 python -m pytest -q": "the test suite itself, the "
    "hosts tests too",
    "python -m pytest -q -m benchmarks": "the benchmarks' runs, a part of the test "
    "suite that CI runs",
    "CIFAR10_BENCHMARK_TESTS=1 python -m pytest -q": "the test suite itself, the "
    "benchmarks' runs too",
    "tensorboard --logdir_spec=train:/tmp/cifar10_train,eval:/tmp/cifar10_eval": "a "
    "server that runs until stopped: tests/test_tensorboard.py starts one on "
    "training's and evaluation's folders",
    "tensorboard --logdir /train --bind_all": "a server in a cluster's pod",
    "docker run -p 8501:8501 -e MODEL_NAME=cifar10 --mount type=bind,source=/tmp/"
    "cifar10_export,target=/models/cifar10 tensorflow/serving": "needs Docker and "
    "the TensorFlow Serving image",
    'curl -d "{\\"instances\\": [{\\"image_bytes\\": {\\"b64\\": \\"$(base64 -w0 '
    'cat.jpg)\\"}}]}" http://localhost:8501/v1/models/cifar10:predict': "asks the "
    "TensorFlow Serving server above",
    "python -m benchmarks": "measures for about 10 minutes; "
    "tests/test_benchmarks.py runs each group briefly",
    "python cifar10_eval.py --checkpoint_dir=/train --eval_dir=/train/eval": "the "
    "folder of a cluster's chief in a Kubernetes pod; the same evaluation runs on "
    "/tmp/cifar10_train",
}
# And the tasks of a cluster, which run at once, on ports or hosts of their
# own: tests/test_cluster.py runs such clusters on this machine.
CLUSTER_TASK = re.compile(r"--job_name=")


def not_run(command):
    """Why a command of the README is not run here, or None."""
    if CLUSTER_TASK.search(command):
        return "a task of a cluster"
    return NOT_RUN.get(command)


# Flags that only shorten a run, added where a command does not set them.
SHORTER = {
    "cifar10_train.py": [
        "--max_steps=15", "--batch_size=16", "--min_queue_examples=100",
    ],
    "cifar10_multi_gpu_train.py": [
        "--max_steps=20", "--batch_size=8", "--min_queue_examples=100",
    ],
    "cifar10_eval.py": ["--run_once", "--batch_size=100"],
}  # fmt: skip
# And those that shorten a run on the tests' data set (2,000 test images),
# added where a command names no --data_dir: a data set of the reader's own
# may have fewer.
SHORTER_ON_TESTS_DATA = {"cifar10_eval.py": ["--num_examples=200"]}
# And a --max_steps that a command sets is divided by this: the steps to
# stop at keep their order (1000, then 2000 to resume) in a short run.
STEPS_DIVIDED_BY = 200


def code_blocks(page):
    """[(language, text)] of a page's fenced blocks, in order (those
    indented in a list item too, without the indentation)."""
    blocks, language, lines = [], None, []
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            if language is None:
                indent = len(line) - len(line.lstrip())
                language, lines = line.strip()[3:].strip(), []
            else:
                blocks.append((language, "".join(x[indent:] + "\n" for x in lines)))
                language = None
        elif language is not None:
            lines.append(line)
    return blocks


def page_commands(page):
    """[(block, command)] of a page's bash blocks, in order: lines
    continued with \\ joined, comments dropped, commands joined by && split,
    and NAME="..." settings put where $NAME stands."""
    found = []
    blocks = [text for language, text in code_blocks(page) if language == "bash"]
    for number, block in enumerate(blocks):
        settings = {}
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#[^\"]*$", "", line).strip()
            line = re.sub(r"\s+", " ", line)
            setting = re.fullmatch(r'(\w+)="([^"]*)"', line)
            if setting:
                settings[setting[1]] = setting[2]
                continue
            for name, value in settings.items():
                line = line.replace("$" + name, value)
            found += [(number, part.strip()) for part in line.split(" && ") if part]
    return found


def all_commands():
    """[(page, block, command)] of every page."""
    return [(page, *found) for page in PAGES for found in page_commands(page)]


def binary_of(command):
    """The project's binary a command runs, and its arguments; or None."""
    words = shlex.split(command)
    if len(words) > 1 and words[0] == "python" and words[1].startswith("cifar10"):
        return words[1], words[2:]
    return None


def adapt(args, script, folder, data):
    """A command's arguments as they run here: absolute paths under folder
    (those of the flags it leaves at their defaults too, such as
    --eval_dir=/tmp/cifar10_eval), the tests' data set where it names no
    --data_dir (and SHORTER_ON_TESTS_DATA), its --max_steps divided by
    STEPS_DIVIDED_BY, and SHORTER."""
    args = [re.sub(r"(^|=)/", lambda m: m[1] + str(folder) + "/", arg) for arg in args]
    args = [
        re.sub(
            r"^--max_steps=(\d+)$",
            lambda m: "--max_steps=%d" % max(1, int(m[1]) // STEPS_DIVIDED_BY),
            arg,
        )
        for arg in args
    ]
    named = {arg.split("=")[0] for arg in args}
    if "--data_dir" not in named and script != "cifar10_classify.py":
        args.append("--data_dir=%s" % data)
        for flag in SHORTER_ON_TESTS_DATA.get(script, []):
            if flag.split("=")[0] not in named:
                args.append(flag)
        named |= {arg.split("=")[0] for arg in args}
    module = importlib.import_module(script[: -len(".py")])
    for flag in flags.FLAGS.get_key_flags_for_module(module):
        path = flag.default
        if (
            isinstance(path, str)
            and path.startswith("/")
            and "--" + flag.name not in named
        ):
            args.append("--%s=%s%s" % (flag.name, folder, path))
    return args + [f for f in SHORTER.get(script, []) if f.split("=")[0] not in named]


def test_every_flag_of_every_command_is_its_binarys():
    for _, _, command in all_commands():
        found = binary_of(command)
        if not found:
            continue
        script, args = found
        module = importlib.import_module(script[: -len(".py")])
        own = {f.name for f in flags.FLAGS.get_key_flags_for_module(module)}
        for arg in args:
            if arg.startswith("--"):
                name = arg[2:].split("=")[0]
                assert name in own or (name[:2] == "no" and name[2:] in own), (
                    command,
                    name,
                )
        with flagsaver.flagsaver():
            flags.FLAGS([script, *args])  # every value parses


def test_the_log_lines_they_quote_have_the_binaries_forms():
    lines = [
        line
        for page in PAGES
        for language, text in code_blocks(page)
        if not language  # a folder's layout is a "text" block
        for line in text.splitlines()
        if line.strip() not in ("", "...")
    ]
    assert len(lines) > 10
    assert [line for line in lines if not form(line)] == []
    forms = {form(line) for line in lines}
    assert {"step", "precision", "signal", "stopped", "classified", "packed"} <= forms
    assert {"untrained", "next look", "table row", "done"} <= forms
    assert {"waiting", "unanswered"} <= forms


def test_what_not_run_lists_is_on_a_page():
    commands = {command for _, _, command in all_commands()}
    assert set(NOT_RUN) <= commands
    # The clusters: one in the README, two in docs/cluster.md, three tasks each.
    tasks = [c for c in commands if not_run(c) == "a task of a cluster"]
    assert len([c for _, _, c in all_commands() if c in tasks]) == 9


@pytest.mark.slow
def test_their_commands_run_as_they_give_them(dataset, tmp_path, monkeypatch):
    """Every command, the README's first, then those of docs/, in one
    folder, as a reader who reads on would run them: a command that a page
    repeats from an earlier one (the README's training in docs/serving.md)
    runs once, where it comes first. The binaries run in this process
    (run_here()), which has loaded TensorFlow already, one after another,
    in that folder."""
    folder = tmp_path / "here"
    folder.mkdir()
    # What the commands name: images to classify, and a folder to pack.
    images = dataset["test"][1]
    fake_cifar.write_png(folder / "ship.png", images[1])
    Image.fromarray(images[0]).save(folder / "cat.jpg")
    Image.fromarray(images[2]).save(folder / "new_photo.jpg")
    (folder / "photos" / "lake").mkdir(parents=True)
    Image.fromarray(images[3]).save(folder / "photos" / "lake" / "boat.jpg")
    fake_cifar.write_image_folders(str(folder / "photos"), ["cat", "dog"], 20)

    runs, seen = [], set()
    for page, number, command in all_commands():
        found = binary_of(command)
        if not_run(command) or command in seen:
            continue
        seen.add(command)
        if found:
            script, args = found
            runs.append((script, *adapt(args, script, tmp_path, dataset["root"])))
        elif command.startswith("ruff "):
            done = subprocess.run(
                [os.path.join(os.path.dirname(sys.executable), "ruff"),
                 *shlex.split(command)[1:]],
                cwd=ROOT, capture_output=True, text=True,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
        else:
            pytest.fail(
                "%s, block %d: %r is neither run nor in NOT_RUN"
                % (page.name, number, command)
            )
    monkeypatch.chdir(folder)
    printed = set()
    for run in runs:
        result = run_here(*run)
        assert result.returncode == 0, (run, result.stdout, result.stderr)
        printed |= {form(line) for line in result.stdout.splitlines()}
    assert {"step", "done", "precision", "table row", "classified", "packed"} <= printed
    for left in ["cifar10_train", "cifar10_eval", "cifar10_export", "pets_train"]:
        assert (tmp_path / "tmp" / left).is_dir(), left
