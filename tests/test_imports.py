"""Importing any module of the project changes nothing in the process: no
signal handler, no environment variable, no thread, no entry of sys.modules
but the imported modules' own. And the project uses TensorFlow's public API
alone."""

import ast
import glob
import json
import os
import subprocess
import sys

import tensorflow as tf

from harness.procs import ROOT

MODULES = [
    "cifar10",
    "cifar10_input",
    "cifar10_train",
    "cifar10_multi_gpu_train",
    "cifar10_eval",
    "cifar10_classify",
    "cifar10_pack",
    "support.errors",
    "support.startup",
    "support.folders",
    "support.memory",
    "support.run_folder",
    "support.signals",
    "support.progress",
    "support.checkpoints",
    "support.training",
    "support.download",
    "support.images",
    "support.image_folders",
    "support.loading",
    "support.cluster",
    "support.cluster_config",
    "support.cluster_task",
    "support.cluster_hooks",
]

# Run by a Python of its own: TensorFlow first, so that what it does as it
# loads is not counted, then the project's modules.
PROBE = """
import importlib, json, os, signal, sys, threading
import tensorflow

def state():
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    return {
        "handlers": [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)],
        "wakeup_fd": wakeup,
        "environ": dict(os.environ),
        "threads": threading.active_count(),
        "blocked_modules": sorted(k for k, v in sys.modules.items() if v is None),
    }

before = state()
# The modules before "--" first; sys.modules once they are imported.
first = sys.argv[1:].index("--")
for name in sys.argv[1 : first + 1]:
    importlib.import_module(name)
imported = list(sys.modules)
for name in sys.argv[first + 2 :]:
    importlib.import_module(name)
print(json.dumps([before, state(), imported]))
"""
# What only a cluster needs.
CLUSTER_MODULES = ["support.cluster_config", "support.cluster_task",
                   "support.cluster_hooks"]  # fmt: skip


def test_importing_a_module_changes_nothing_and_a_cluster_stays_behind_the_seam():
    """Imported, the modules change nothing in the process. And the
    binaries, and support/ but for the cluster's modules, import none of
    those: a copy for one machine runs without them (test_template.py). One
    Python of its own imports them all, the cluster's last."""
    one_machine = [name for name in MODULES if name not in CLUSTER_MODULES]
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *one_machine, "--", *CLUSTER_MODULES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    before, after, imported = json.loads(result.stdout.splitlines()[-1])
    assert after == before
    assert set(one_machine) <= set(imported)
    assert [name for name in CLUSTER_MODULES if name in imported] == []


def private_uses(source):
    """The places in Python source that reach into TensorFlow's private
    parts: an attribute of tf (or tensorflow) beginning with _, a module
    under tensorflow.python, or a method beginning with _ that a subclass of
    a TensorFlow class defines where that class has one (an override of its
    private method).

    Returns:
      ["line N: what", ...].
    """

    def dotted(node):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            return ".".join([node.id, *reversed(parts)])
        return None

    def private(name):
        parts = name.split(".")
        return any(p.startswith("_") and not p.startswith("__") for p in parts)

    def tensorflow_class(node):
        name = dotted(node) or ""
        if name.split(".")[0] not in ("tf", "tensorflow"):
            return None
        found = tf
        for part in name.split(".")[1:]:
            found = getattr(found, part, None)
        return found

    found = []
    for node in ast.walk(ast.parse(source)):
        name = dotted(node) if isinstance(node, ast.Attribute) else None
        if name and name.split(".")[0] in ("tf", "tensorflow") and private(name):
            found.append("line %d: %s" % (node.lineno, name))
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = (
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            )
            if isinstance(node, ast.ImportFrom):
                modules.append(node.module or "")
            for module in modules:
                if module.startswith("tensorflow.python") or (
                    module.startswith("tensorflow") and private(module)
                ):
                    found.append("line %d: import %s" % (node.lineno, module))
        if isinstance(node, ast.ClassDef):
            bases = [tensorflow_class(base) for base in node.bases]
            for item in node.body:
                if (
                    isinstance(item, ast.FunctionDef)
                    and private(item.name)
                    and any(hasattr(base, item.name) for base in bases if base)
                ):
                    found.append(
                        "line %d: %s overrides %s" % (item.lineno, node.name, item.name)
                    )
    return sorted(found, key=lambda line: int(line.split()[1].rstrip(":")))


def test_the_project_uses_only_tensorflows_public_api():
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True)):
        if os.sep + "." in os.path.relpath(path, ROOT):
            continue  # virtual environments
        with open(path) as f:
            uses = private_uses(f.read())
        if uses:
            found[os.path.relpath(path, ROOT)] = uses
    assert found == {}
    # What it finds.
    assert private_uses(
        "import tensorflow as tf\n"
        "from tensorflow.python.ops import gen_nn_ops\n"
        "x = tf.compat.v1.train._private\n"
        "class Hook(tf.compat.v1.train.CheckpointSaverHook):\n"
        "    def _save(self, session, step):\n"
        "        pass\n"
        "    def _mine(self):\n"
        "        pass\n"
        "    def __init__(self):\n"
        "        self._mine = tf.constant(1)\n"
    ) == [
        "line 2: import tensorflow.python.ops",
        "line 3: tf.compat.v1.train._private",
        "line 5: Hook overrides _save",
    ]
