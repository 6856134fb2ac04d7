"""Importing any module of the project changes nothing in the process: no
signal handler, no environment variable, no thread, no entry of sys.modules
but the imported modules' own."""

import json
import os
import subprocess
import sys

from harness.procs import ROOT

MODULES = [
    "cifar10",
    "cifar10_input",
    "cifar10_train",
    "cifar10_multi_gpu_train",
    "cifar10_eval",
    "cifar10_classify",
    "cifar10_pack",
    "support.startup",
    "support.folders",
    "support.memory",
    "support.run_folder",
    "support.signals",
    "support.progress",
    "support.checkpoints",
    "support.training",
    "support.download",
    "support.cluster",
    "support.distributed",
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
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps([before, state()]))
"""


def test_importing_a_module_changes_nothing_in_the_process():
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *MODULES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    before, after = json.loads(result.stdout.splitlines()[-1])
    assert after == before
