"""Start-up: cifar10_train.py --help against the import of TensorFlow it
cannot do without, each the median of its runs, taken in turns."""

import statistics
import subprocess
import sys
import time

from benchmarks import common

ROWS = common.rows("""
cifar10_train.py --help    | help_secs      | %.2f s
importing TensorFlow alone | import_tf_secs | %.2f s
    --help/import          | help_ratio     | %.3f
""")

# As a binary imports it: with the environment defaults it sets first.
IMPORT_TENSORFLOW = (
    "from support import startup; startup.before_tensorflow(); import tensorflow"
)


def measure(run):
    print("cifar10_train.py --help and importing TensorFlow, in turns ...", flush=True)
    commands = {
        "help_secs": [sys.executable, "cifar10_train.py", "--help"],
        "import_tf_secs": [sys.executable, "-c", IMPORT_TENSORFLOW],
    }
    times = {key: [] for key in commands}
    for _ in range(run.size.windows):
        for key, command in commands.items():
            start = time.perf_counter()
            child = run.children.popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            _, err = child.communicate()
            if child.returncode:
                sys.exit("%s failed:\n%s" % (" ".join(command), err[-3000:]))
            times[key].append(time.perf_counter() - start)
    figures = {key: statistics.median(values) for key, values in times.items()}
    figures["help_ratio"] = figures["help_secs"] / figures["import_tf_secs"]
    return figures
