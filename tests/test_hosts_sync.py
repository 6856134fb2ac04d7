"""The cluster on hosts of its own under --sync_replicas (harness/hosts.py):
what a chief and a worker do when a peer is lost. Beside test_hosts.py, in
a file of its own so that the test processes run the two files' long waits
side by side.

They run when asked for (-m hosts, or CIFAR10_HOST_TESTS=1 beside the
others) and need root; elsewhere they skip (a failure under
CIFAR10_NO_SKIPS=1).
"""

import re
import signal
import time

import pytest

from helpers import form, steps_after

pytestmark = [pytest.mark.hosts, pytest.mark.usefixtures("needs_hosts")]


@pytest.mark.slow
def test_sync_chief_says_which_worker_it_waits_for(on_hosts):
    cluster = on_hosts(2, "--log_frequency=1", "--sync_replicas")
    chief = cluster.start("worker", 0)
    worker = cluster.start("worker", 1)
    steps_after(worker, 0)
    cluster.workers[1].kill()  # it never comes back
    waiting = chief.wait_for(
        r"^No gradients from worker 1 \(%s:2222\) for (\d+) s: its last were for "
        r"step (\d+), and the global step is (\d+)\.$"
        % re.escape(cluster.workers[1].address)
    )
    assert int(waiting[2]) < int(waiting[3])
    assert form(waiting[0]) == "waiting"
    # And again, at an interval.
    again = chief.wait_until(
        lambda out: [
            int(quiet)
            for quiet in re.findall(
                r"^No gradients from worker 1 .* for (\d+) s", out, re.M
            )
            if int(quiet) > int(waiting[1])
        ],
        "a second report",
    )
    assert again[0] >= 2 * int(waiting[1]) - 2


@pytest.mark.slow
def test_the_parameter_server_restarts_while_a_waiting_workers_link_is_down(
    on_hosts,
):
    # Under --sync_replicas a worker whose chief is gone waits for its next
    # step, with nothing to send. If meanwhile its link goes down and the
    # parameter server restarts, the connection it waits on is dead without
    # a word: the old server's goodbye was lost, and the new one knows
    # nothing of it. Only the keepalive pings that each task turns on find
    # that out; without them it waits for good.
    cluster = on_hosts(2, "--log_frequency=1", "--sync_replicas")
    chief, worker = cluster.start("worker", 0), cluster.start("worker", 1)
    steps_after(chief, 0)
    step = steps_after(worker, 0)
    cluster.workers[0].kill()
    worker_host = cluster.workers[1]

    def quiet(_):
        carried = worker_host.traffic()
        time.sleep(2)
        return worker_host.traffic() == carried

    worker.wait_until(quiet, "worker 1 waiting with nothing to send")
    worker_host.link_down()
    cluster.ps.kill()
    cluster.start("ps", 0).wait_for("^Parameter server 0 listening")
    chief = cluster.start("worker", 0)
    chief.wait_for("^Resuming from|^Filling queue")
    worker_host.link_up()

    worker.wait_for("^Lost the connection to the cluster; reconnecting.")
    steps_after(worker, step)
    steps_after(chief, step)
    for task in (chief, worker):
        task.send_signal(signal.SIGTERM)
        code, out = task.finish()
        assert code == 0 and "Traceback" not in out, out
