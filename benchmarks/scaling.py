"""More processors: cifar10_multi_gpu_train.py with 1 and 2 towers, and
cifar10_train.py on a cluster on this machine (1 parameter server and 1
worker, then 2 workers, asynchronous and --sync_replicas); a cluster's rate
is the sum of its workers' own rates."""

import os
import statistics

from benchmarks import common
from harness import procs

ROWS = common.rows("""
multi-GPU binary, 1 tower       | multi_gpu_1    | %.0f examples/sec
multi-GPU binary, 2 towers      | multi_gpu_2    | %.0f examples/sec
cluster: 1 ps + 1 worker        | cluster_1      | %.0f examples/sec
cluster: 1 ps + 2 workers       | cluster_2      | %.0f examples/sec
cluster: 1 ps + 2 workers, sync | cluster_2_sync | %.0f examples/sec
""")


def measure(run):
    figures = {}
    steps = run.size.train_steps
    print("multi-GPU binary, 1 and 2 towers on CPU ...", flush=True)
    for towers in (1, 2):
        out, _, _ = run.children.run_measured(
            "cifar10_multi_gpu_train.py",
            *run.binary_flags(
                run.folder("towers%d" % towers),
                "--max_steps=%d" % (steps // towers),
                "--log_frequency=%d" % run.size.log_frequency,
                "--num_gpus=%d" % towers,
            ),
        )
        figures["multi_gpu_%d" % towers] = statistics.median(
            common.logged_rates(out, 2, None)
        )
    print("cluster on this machine: 1 ps + 1 or 2 workers ...", flush=True)
    figures["cluster_1"] = on_cluster(run, 1)
    figures["cluster_2"] = on_cluster(run, 2)
    figures["cluster_2_sync"] = on_cluster(run, 2, "--sync_replicas")
    return figures


def on_cluster(run, num_workers, *flags):
    """1 ps and num_workers workers of cifar10_train.py, as processes, until
    each worker has logged two lines and 2 * windows more.

    Returns:
      The sum over the workers of the median of each one's logged rates,
      leaving out its first two lines.
    """
    ps_port, *worker_ports = procs.free_ports(1 + num_workers)
    folder = run.folder("cluster%d" % num_workers)
    flags = [
        "--ps_hosts=127.0.0.1:%d" % ps_port,
        "--worker_hosts=" + ",".join("127.0.0.1:%d" % p for p in worker_ports),
        *run.binary_flags(
            os.path.join(folder, "train"),
            "--max_steps=1000000",  # more than it reaches; killed when done
            "--log_frequency=%d" % run.size.log_frequency,
            *flags,
        ),
    ]
    tasks = [("ps", 0)] + [("worker", i) for i in range(num_workers)]
    processes = [
        run.children.process(
            "cifar10_train.py",
            *flags,
            "--job_name=" + job,
            "--task_index=%d" % index,
            log_path=os.path.join(folder, "%s%d.log" % (job, index)),
        )
        for job, index in tasks
    ]
    try:
        rates = [
            worker.wait_until(
                lambda out: common.logged_rates(out, 2, 2 * run.size.windows)
            )
            for worker in processes[1:]
        ]
    finally:
        for process in processes:
            process.stop()
    return sum(statistics.median(r) for r in rates)
