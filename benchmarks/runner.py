"""Runs groups of the benchmarks (see __init__.py) and prints their tables."""

import importlib
import os
import platform
import resource
import shutil
import tempfile

import tensorflow as tf

from benchmarks import GROUPS, common
from support.errors import Error


def group_module(name):
    """The module of the group name.

    Raises:
      Error: there is no such group.
    """
    if name not in GROUPS:
        raise Error(
            "No benchmark group %r; the groups are %s." % (name, ", ".join(GROUPS))
        )
    return importlib.import_module("benchmarks." + name)


def run(names, size="full", work_dir=None):
    """Measures the groups names, one after another, printing each one's
    table when it is done.

    Args:
      names: the groups, in the order to run them.
      size: a key of common.SIZES.
      work_dir: the folder for the data and runs; by default a temporary
        one, removed at the end however the run ends (what is left in a
        given one stays).

    Returns:
      {key: value} of every figure, and of the machine.

    Raises:
      Error: a group that does not exist, or cannot run here.
    """
    modules = [group_module(name) for name in names]
    for name, module in zip(names, modules, strict=True):
        why_not = getattr(module, "why_not", lambda: None)()
        if why_not:
            raise Error("The %s group cannot run here: %s." % (name, why_not))
    results = {
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "tensorflow": tf.__version__,
        },
        "size": size,
    }
    folder = work_dir or tempfile.mkdtemp(prefix="cifar10_bench_")
    children = common.Children()
    try:
        results.update(measure(common.Run(common.SIZES[size], folder, children), names))
    finally:
        # The children first: nothing writes in the folder as it goes.
        children.stop_all()
        if not work_dir:
            shutil.rmtree(folder, ignore_errors=True)
    results["children_peak_rss_mb"] = (
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    )
    return results


def measure(run, names):
    """Measures the groups names in run (a common.Run), printing each one's
    table when it is done.

    Returns:
      {key: value} of every figure.
    """
    results = {}
    for name in names:
        module = group_module(name)
        figures = module.measure(run)
        print_table(name, module.ROWS, figures)
        results.update(figures)
    return results


def print_table(name, rows, figures):
    """Prints a group's table.

    Raises:
      AssertionError: the figures are not those of the rows, one each.
    """
    keys = [row.key for row in rows]
    assert sorted(keys) == sorted(figures), (
        "the %s group's rows and figures differ: %s"
        % (name, sorted(set(keys) ^ set(figures)))
    )
    print("\n%s\n\n| figure | value |\n|---|---|" % name)
    for row in rows:
        print("| %s | %s |" % (row.label, row.fmt % figures[row.key]))
    print(flush=True)
