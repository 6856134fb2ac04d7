"""python -m benchmarks [group ...] [--quick | --tiny] [--json=FILE]

Measures the groups named, in this order: training, evaluation, scaling,
using, bf16, packing, startup, lrn, and hosts (root only, and only when
named); all but hosts by default, about 10 minutes (benchmarks/__init__.py
says what each measures). Prints each group's table as it is done, and
writes every figure to --json.
"""

import os
import sys

# Run as `python -m benchmarks` from the project's folder, or as
# `python benchmarks` from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from support import startup  # noqa: E402

if __name__ == "__main__":
    startup.before_tensorflow()

import json  # noqa: E402

from absl import flags  # noqa: E402

from benchmarks import DEFAULT_GROUPS, runner  # noqa: E402
from harness import procs  # noqa: E402

flags.DEFINE_boolean("quick", False, "Fewer and shorter windows: a rough look.")
flags.DEFINE_boolean(
    "tiny",
    False,
    "Every figure once, on tiny data, in seconds: a test that the groups run; "
    "its figures mean nothing.",
)
flags.DEFINE_string(
    "json",
    os.path.join(procs.ROOT, "benchmarks", "results", "benchmark.json"),
    "Where to write the figures.",
)
flags.DEFINE_string(
    "work_dir",
    None,
    "Folder for the data and runs, kept (default: a temporary one, removed).",
)
FLAGS = flags.FLAGS


def main(argv):
    size = "tiny" if FLAGS.tiny else "quick" if FLAGS.quick else "full"
    results = runner.run(argv[1:] or DEFAULT_GROUPS, size, FLAGS.work_dir)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.json)), exist_ok=True)
    with open(FLAGS.json, "w") as f:
        json.dump(results, f, indent=2)
    print("Wrote %s" % FLAGS.json)


if __name__ == "__main__":
    startup.run(main)
