"""The cluster on hosts (harness/hosts.py; needs root), on images of noise
(the same speed; learnable ones can make three asynchronous workers diverge
early): each task a network namespace of its own on a bridge, with a CPU
quota (every worker 0.8 of a core, the parameter server 0.3; for 3 workers
0.55 each, beside 1 worker at 0.55) and, in some settings, 1 Gbit/s links.
For each setting: the sum of the workers' rates, against 1 asynchronous
worker at the same quota and link, and the bytes each worker step moves over
its worker's link (both ways, from the link's counters) against the size of
the weights."""

import os
import re
import statistics

import tensorflow as tf

import cifar10
from benchmarks import common
from benchmarks.common import Row
from harness import fake_cifar

# (key, name, workers, worker cores, link Mbit/s or None, flags), in the
# order they run; each key's rate is compared with the rate of the first
# setting with the same cores and link.
SETTINGS = [
    ("hosts_1", "1 worker", 1, 0.8, None, ()),
    ("hosts_2", "2 workers", 2, 0.8, None, ()),
    ("hosts_2_sync", "2 workers, sync", 2, 0.8, None, ("--sync_replicas",)),
    ("hosts_1_gbit", "1 worker, 1 Gbit/s", 1, 0.8, 1000, ()),
    ("hosts_2_gbit", "2 workers, 1 Gbit/s", 2, 0.8, 1000, ()),
    ("hosts_2_sync_gbit", "2 workers, sync, 1 Gbit/s", 2, 0.8, 1000,
     ("--sync_replicas",)),
    ("hosts_1_small", "1 worker at 0.55 core", 1, 0.55, None, ()),
    ("hosts_3_small", "3 workers at 0.55 core", 3, 0.55, None, ()),
    ("hosts_3_small_sync", "3 workers at 0.55 core, sync", 3, 0.55, None,
     ("--sync_replicas",)),
]  # fmt: skip
ROWS = [
    row
    for key, name, *_ in SETTINGS
    for row in (
        Row("hosts: " + name, key, "%.0f examples/sec"),
        Row("    vs 1 worker (same core, link)", key + "_speedup", "%.2f"),
        Row("    bytes per worker step / weights", key + "_bytes_ratio", "%.2f"),
        Row("    a worker's sec/batch", key + "_sec_per_batch", "%.3f"),
        Row(
            "    ps waiting for its CPU quota", key + "_ps_throttled_ms", "%.0f ms/step"
        ),
    )
] + [Row("1 Gbit/s vs unlimited, 1 worker", "hosts_gbit_ratio", "%.2f")]


def why_not():
    """Why the hosts cannot be made here (they need root), or None."""
    from harness import hosts  # noqa: PLC0415  (the other groups run without root)

    return hosts.usable()


def measure(run):
    # Noise rather than the learnable data: speed is the same, and three
    # asynchronous workers at the tutorial's learning rate can diverge on the
    # learnable colours within their first 100 steps (a run did, at step 53).
    noise = os.path.join(run.work_dir, "noise")
    fake_cifar.write_dataset(
        noise, run.size.records, run.size.test_records, learnable=False, describe=True
    )
    weights = weights_bytes()
    figures, first = {}, {}
    for key, name, num_workers, cores, rate_mbit, flags in SETTINGS:
        print("hosts: %s ..." % name, flush=True)
        outputs, moved, throttled = on_hosts(
            run, noise, num_workers, cores, rate_mbit, *flags
        )
        figures.update(setting_figures(key, outputs, moved, throttled))
        figures[key + "_bytes_ratio"] = figures.pop(key + "_bytes_per_step") / weights
        base = first.setdefault((cores, rate_mbit), figures[key])
        figures[key + "_speedup"] = figures[key] / base
    figures["hosts_gbit_ratio"] = figures["hosts_1_gbit"] / figures["hosts_1"]
    return figures


def weights_bytes():
    """The size of the model's weights, from the model itself."""
    with tf.Graph().as_default():
        cifar10.inference(tf.zeros([1, 24, 24, 3]))
        return sum(
            v.shape.num_elements() * v.dtype.size
            for v in tf.compat.v1.trainable_variables()
        )


def on_hosts(run, data_dir, num_workers, cores, rate_mbit, *flags):
    """1 ps (0.3 core) and num_workers workers, each on a host, run to
    their --max_steps (the run's worker_steps for each worker).

    Returns:
      (the workers' outputs, the bytes over each worker's link, the seconds
      the parameter server waited for its CPU quota).
    """
    from harness import hosts  # noqa: PLC0415

    log_dir = run.folder("hosts")
    with hosts.Hosts() as lab:
        cluster = hosts.TrainingCluster(
            lab,
            num_workers,
            [
                "--data_dir=%s" % data_dir,
                "--train_dir=%s" % os.path.join(log_dir, "train"),
                "--max_steps=%d" % (run.size.worker_steps * num_workers),
                "--log_frequency=%d" % run.size.log_frequency,
                "--batch_size=%d" % run.size.batch_size,
                *flags,
            ],
            log_dir,
            ps_cpus=0.3,
            worker_cpus=cores,
            rate_mbit=rate_mbit,
        )
        try:
            cluster.start("ps", 0)
            workers = start_workers(cluster, num_workers)
            before = [host.traffic() for host in cluster.workers]
            throttled = cluster.ps.throttled_secs()
            outputs = [finished(worker) for worker in workers]
            moved = [
                h.traffic() - b for h, b in zip(cluster.workers, before, strict=True)
            ]
            return outputs, moved, cluster.ps.throttled_secs() - throttled
        finally:
            cluster.stop_all()


def start_workers(cluster, num_workers):
    """Starts the workers, the chief last, once the others have built their
    graphs: they then join as soon as it has made the variables, and each
    runs its share of the steps. Returns them in the order of their index."""
    others = [cluster.start("worker", i) for i in range(1, num_workers)]
    for worker in others:
        worker.wait_for("^Filling queue with ")
    return [cluster.start("worker", 0), *others]


def finished(worker):
    """The output of a worker run to its end; exits if it failed."""
    code, out = worker.finish(patience=3600)
    if code:
        raise SystemExit("A worker failed:\n%s" % out[-3000:])
    return out


def setting_figures(key, outputs, moved, throttled):
    """A setting's figures, under keys that begin with key: the sum over the
    workers of the median of each one's logged rates after its first two
    lines (common.settled()); the mean of their median sec/batch; the mean bytes over a
    worker's link per step of that worker; the parameter server's wait for
    its CPU quota per global step."""
    total, per_step, sec_per_batch = 0.0, [], []
    for out, moved_bytes in zip(outputs, moved, strict=True):
        total += statistics.median(common.settled(common.logged_rates(out, 0, None)))
        seconds = [float(t) for t in common.SEC_PER_BATCH.findall(out)]
        sec_per_batch.append(statistics.median(common.settled(seconds)))
        own_steps = int(re.search(r"This worker ran (\d+) steps", out).group(1))
        per_step.append(moved_bytes / own_steps)
    last_step = int(re.search(r"Done: step (\d+)", outputs[0]).group(1))
    return {
        key: total,
        key + "_bytes_per_step": statistics.mean(per_step),
        key + "_sec_per_batch": statistics.mean(sec_per_batch),
        key + "_ps_throttled_ms": 1000 * throttled / last_step,
    }
