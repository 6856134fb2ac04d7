"""Addresses for a cluster of processes on this machine (127.0.0.1)."""

import socket


def cluster_hosts(num_workers, num_ps=1):
    """Free loopback ports for a cluster.

    Returns:
      (ps_hosts, worker_hosts): the values for --ps_hosts and --worker_hosts.
    """
    sockets = [socket.socket() for _ in range(num_ps + num_workers)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    hosts = ["127.0.0.1:%d" % s.getsockname()[1] for s in sockets]
    # The ports are free again once closed; the tasks bind them moments later.
    for s in sockets:
        s.close()
    return ",".join(hosts[:num_ps]), ",".join(hosts[num_ps:])
