"""Hosts on one machine, for a cluster measured as if it had several: each
host a network namespace with its own address, link speed and CPU quota.

    with hosts.Hosts() as lab:
        ps = lab.add("ps", cpus=0.3)
        worker = lab.add("worker0", cpus=0.8, rate_mbit=1000)
        subprocess.Popen([*worker.prefix, "python", ...])  # runs on that host
        worker.link_down(); worker.link_up()
        worker.traffic()                                  # bytes both ways

Each host is a namespace joined by a veth pair to a bridge that Hosts makes;
its address (10.231.0.N/24) is on that link alone, and the namespaces have no
route beyond the bridge, which has no address: nothing is sent anywhere
else. A link speed is a tc token bucket (tbf) on both ends of the host's veth,
one for each direction. A CPU quota is a cgroup's (v1's cpu controller at
/sys/fs/cgroup/cpu, or v2's cpu.max), which a process joins before it enters
the namespace: `ip netns exec` remounts /sys, where the cgroups are.

Everything it makes is named after the process that made it (cf<pid>-...,
cifar10-hosts-<pid>-...). Leaving the with block removes it all, on an
exception, Ctrl+C or SIGTERM too; and each Hosts() first removes what a
process that is gone left behind (after kill -9). It needs root: usable()
says why not.
"""

import contextlib
import os
import re
import signal
import subprocess
import time

from harness import procs

CGROUP_V1 = "/sys/fs/cgroup/cpu"
CGROUP_V2 = "/sys/fs/cgroup"
NETNS_PREFIX = "cifar10-hosts-"
LINK_PREFIX = "cf"  # + pid + "-": interface names have at most 15 characters
CPU_PERIOD_US = 100000


def usable():
    """None when hosts can be made here; else why not, in a line."""
    if os.geteuid() != 0:
        return "making network namespaces and cgroups needs root"
    for tool in ("ip", "tc"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            return "the %s command (iproute2) is not installed" % tool
    if _cgroup_root() is None:
        return "no cgroup cpu controller at %s or %s" % (CGROUP_V1, CGROUP_V2)
    return None


def _cgroup_root():
    """(folder, version) of the cgroup cpu controller, or None."""
    if os.path.exists(os.path.join(CGROUP_V1, "cpu.cfs_quota_us")):
        return CGROUP_V1, 1
    with contextlib.suppress(OSError):
        with open(os.path.join(CGROUP_V2, "cgroup.controllers")) as f:
            if "cpu" in f.read().split():
                return CGROUP_V2, 2
    return None


def _run(*command, check=True):
    result = subprocess.run(command, capture_output=True, text=True)
    if check and result.returncode:
        raise RuntimeError("%s failed: %s" % (" ".join(command), result.stderr.strip()))
    return result.stdout


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def remove_leftovers(owner=None):
    """Removes the namespaces, links and cgroups of Hosts whose process has
    ended, or (given owner) of that process.

    Returns:
      How many things it removed.
    """

    def gone(pid):
        return int(pid) == owner if owner is not None else not _alive(int(pid))

    removed = 0
    cgroups = _cgroup_root()
    if cgroups:
        folder = cgroups[0]
        for name in sorted(os.listdir(folder)):
            match = re.match(re.escape(NETNS_PREFIX) + r"(\d+)-", name)
            if match and gone(match[1]):
                _remove_cgroup(os.path.join(folder, name))
                removed += 1
    for name in _run("ip", "netns", "list").split():
        match = re.match(re.escape(NETNS_PREFIX) + r"(\d+)-", name)
        if match and gone(match[1]):
            _run("ip", "netns", "delete", name, check=False)
            removed += 1
    # A veth goes with its namespace's end; the bridge, and a veth whose
    # namespace was never made, are left to remove here.
    for name in re.findall(r"^\d+: ([^:@]+)", _run("ip", "-o", "link"), re.M):
        match = re.match(re.escape(LINK_PREFIX) + r"(\d+)-", name)
        if match and gone(match[1]):
            _run("ip", "link", "delete", name, check=False)
            removed += 1
    return removed


def _remove_cgroup(path):
    """Kills what runs in the cgroup, then removes it."""
    for _ in range(100):
        with contextlib.suppress(FileNotFoundError):
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = [int(p) for p in f.read().split()]
            if not pids:
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(path)
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if not os.path.exists(path):
            return
        time.sleep(0.05)
    raise RuntimeError("Cannot empty the cgroup %s" % path)


class Host:
    """One host: a namespace, its link to the bridge, its CPU quota.

    Attributes:
      name: the name given to Hosts.add().
      address: its IPv4 address, on the bridge's link alone.
      link: the name of its link's end on the bridge (outside the namespace),
        whose counters are the host's traffic.
    """

    def __init__(self, name, netns, address, link, cgroup):
        self.name = name
        self.netns = netns
        self.address = address
        self.link = link
        self.cgroup = cgroup

    @property
    def prefix(self):
        """The command that runs the command after it on this host."""
        # Join the cgroup first, then enter the namespace (ip netns exec
        # remounts /sys, where the cgroup tree is).
        join = 'echo $$ > "$1" && shift && exec "$@"'
        procs_file = os.path.join(self.cgroup, "cgroup.procs")
        return ["sh", "-c", join, "sh", procs_file, "ip", "netns", "exec", self.netns]

    def link_down(self):
        """Cuts the host's link: what it sends or is sent is lost."""
        _run("ip", "link", "set", self.link, "down")

    def link_up(self):
        _run("ip", "link", "set", self.link, "up")

    def traffic(self):
        """Bytes its link has carried so far, both directions together."""
        total = 0
        for counter in ("rx_bytes", "tx_bytes"):
            with open("/sys/class/net/%s/statistics/%s" % (self.link, counter)) as f:
                total += int(f.read())
        return total

    def throttled_secs(self):
        """Seconds its processes have waited, runnable, for its CPU quota."""
        stat = os.path.join(self.cgroup, "cpu.stat")
        with open(stat) as f:
            fields = dict(line.split() for line in f if line.strip())
        if "throttled_time" in fields:  # cgroup v1: nanoseconds
            return int(fields["throttled_time"]) / 1e9
        return int(fields.get("throttled_usec", 0)) / 1e6

    def kill(self):
        """Kills every process on the host, as if it lost power.

        Its connections go too: a dead process's connections live on in the
        kernel a while, resending their last words (a lost link can bring
        them late), and a host that lost power says nothing more.
        """
        procs_file = os.path.join(self.cgroup, "cgroup.procs")
        while True:
            with open(procs_file) as f:
                pids = [int(pid) for pid in f.read().split()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        _run("ip", "netns", "exec", self.netns, "ss", "--kill", "--tcp", "state", "all")


class Hosts:
    """Makes hosts on a bridge of their own; removes them all at the end."""

    def __init__(self):
        self._pid = os.getpid()
        self._bridge = "%s%d-br" % (LINK_PREFIX, self._pid)
        self.hosts = []
        self._old_sigterm = None

    def __enter__(self):
        why_not = usable()
        if why_not:
            raise RuntimeError("Cannot make hosts: %s." % why_not)
        remove_leftovers()
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            # SIGTERM ends the with block as Ctrl+C does, so that it cleans up.
            self._old_sigterm = signal.signal(signal.SIGTERM, _interrupt)
        try:
            _run("ip", "link", "add", "name", self._bridge, "type", "bridge")
            _run("ip", "link", "set", self._bridge, "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def add(self, name, cpus=None, rate_mbit=None):
        """Makes a host.

        Args:
          name: a short name (letters and digits), unique among these hosts.
          cpus: its CPU quota in cores (0.5 is half a core), or None for
            none.
          rate_mbit: its link speed in Mbit/s each way, or None for the
            bridge's own.

        Returns:
          The Host.
        """
        number = len(self.hosts) + 1
        netns = "%s%d-%s" % (NETNS_PREFIX, self._pid, name)
        outer = "%s%d-%d" % (LINK_PREFIX, self._pid, number)
        inner = outer + "i"
        address = "10.231.0.%d" % number
        folder, version = _cgroup_root()
        cgroup = os.path.join(folder, netns)
        os.mkdir(cgroup)
        host = Host(name, netns, address, outer, cgroup)
        self.hosts.append(host)
        if cpus is not None:
            quota = int(cpus * CPU_PERIOD_US)
            if version == 1:
                _write(os.path.join(cgroup, "cpu.cfs_period_us"), CPU_PERIOD_US)
                _write(os.path.join(cgroup, "cpu.cfs_quota_us"), quota)
            else:
                _write(
                    os.path.join(cgroup, "cpu.max"), "%d %d" % (quota, CPU_PERIOD_US)
                )
        _run("ip", "netns", "add", netns)
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        _run("ip", "link", "set", inner, "netns", netns)
        _run("ip", "link", "set", outer, "master", self._bridge)
        _run("ip", "link", "set", outer, "up")
        inside = ("ip", "netns", "exec", netns)
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "addr", "add", address + "/24", "dev", inner)
        _run(*inside, "ip", "link", "set", inner, "up")
        if rate_mbit:
            # Both ends: what the host sends, and what it is sent.
            _run("tc", *_token_bucket(outer, rate_mbit))
            _run(*inside, "tc", *_token_bucket(inner, rate_mbit))
        return host

    def __exit__(self, *exc):
        remove_leftovers(owner=self._pid)
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        return False


def _token_bucket(device, rate_mbit):
    """tc's arguments for a token-bucket limit of rate_mbit on device."""
    rate_bytes = rate_mbit * 1e6 / 8
    # The bucket holds 10 ms of traffic (at least 64 KB, a whole segment of
    # the veth's segmentation offload), and the queue 50 ms more.
    burst = max(int(rate_bytes / 100), 65536)
    return (
        "qdisc", "add", "dev", device, "root", "tbf",
        "rate", "%dmbit" % rate_mbit, "burst", str(burst), "latency", "50ms",
    )  # fmt: skip


def _write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class TrainingCluster:
    """cifar10_train.py as a cluster of hosts: a parameter server and
    workers, each on a host of its own, all listening on port 2222. Several
    clusters can share a lab, each under a name of its own.

    Attributes:
      ps: the parameter server's Host.
      workers: the workers' Hosts.
      flags: the flags every task gets (the host lists, then the others).
    """

    def __init__(self, lab, num_workers, flags, log_dir, ps_cpus=None,
                 worker_cpus=None, rate_mbit=None, name=""):  # fmt: skip
        self.name = name
        self.ps = lab.add(name + "ps", ps_cpus, rate_mbit)
        self.workers = [
            lab.add("%sworker%d" % (name, i), worker_cpus, rate_mbit)
            for i in range(num_workers)
        ]
        self.flags = [
            "--ps_hosts=%s:2222" % self.ps.address,
            "--worker_hosts=" + ",".join(h.address + ":2222" for h in self.workers),
            *flags,
        ]
        self._log_dir = log_dir
        self.started = []

    def start(self, job_name, task_index, *flags):
        """Starts a task on its host.

        Returns:
          Its procs.Process.
        """
        host = self.ps if job_name == "ps" else self.workers[task_index]
        log_path = os.path.join(
            self._log_dir,
            "%s%s%d-%d.log" % (self.name, job_name, task_index, len(self.started)),
        )
        self.started.append(
            procs.Process(
                "cifar10_train.py",
                *self.flags,
                "--job_name=" + job_name,
                "--task_index=%d" % task_index,
                *flags,
                log_path=log_path,
                prefix=host.prefix,
            )
        )
        return self.started[-1]

    def stop_all(self):
        for task in self.started:
            task.stop()
