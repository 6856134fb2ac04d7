"""Clusters as schedulers launch them: every process told its task by the
TF_CONFIG environment variable alone, as Kubeflow's TFJob and Vertex AI do.
How TF_CONFIG is read; test_cluster.py trains a cluster told by it."""

import json
import socket
import subprocess
import sys

import pytest
from absl.testing import flagsaver

import cifar10_train
import support.cluster
from harness.procs import ROOT
from helpers import (
    exit_line,
)
from support import cluster_task
from support.cluster_config import ClusterError

CLUSTER = {
    "chief": ["127.0.0.1:2220"],
    "ps": ["127.0.0.1:2221"],
    "worker": ["127.0.0.1:2222"],
}


@pytest.mark.parametrize(
    "tf_config, expected",
    [
        ("{not json", "TF_CONFIG is not JSON (Expecting property name"),
        (
            json.dumps({"cluster": CLUSTER}),
            'TF_CONFIG has no "task" saying which task this process is: {"cluster"',
        ),
        (
            json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 1}}),
            'TF_CONFIG\'s task {"type": "worker", "index": 1} is beyond its "worker" '
            "job of 1 task(s)",
        ),
        (
            json.dumps(
                {"cluster": {**CLUSTER, "master": ["h:1"]}, "task": {"type": "ps"}}
            ),
            'TF_CONFIG names the job "master", which is none of chief, ps, worker, '
            "evaluator",
        ),
        (
            json.dumps({"cluster": CLUSTER, "task": {"type": "trainer", "index": 0}}),
            'TF_CONFIG names the job "trainer"',
        ),
        (
            json.dumps(
                {
                    "cluster": {"ps": ["h:1"], "worker": ["h:2"]},
                    "task": {"type": "chief"},
                }
            ),
            'TF_CONFIG\'s task is a "chief", but its cluster has no "chief" job',
        ),
        (
            json.dumps(
                {"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker"}}
            ),
            'TF_CONFIG\'s cluster has no "ps" job',
        ),
        (
            json.dumps(
                {"cluster": {**CLUSTER, "ps": ["nowhere"]}, "task": {"type": "ps"}}
            ),
            "TF_CONFIG's \"ps\" job: 'nowhere' is not host:port",
        ),
        # Values of the wrong kind.
        (
            json.dumps({"cluster": {**CLUSTER, "ps": 5}, "task": {"type": "ps"}}),
            'TF_CONFIG\'s "ps" job is 5, not a list of host:port',
        ),
        (
            json.dumps({"cluster": {**CLUSTER, "worker": [5]}, "task": {"type": "ps"}}),
            "TF_CONFIG's \"worker\" job: '5' is not host:port",
        ),
        (
            json.dumps(
                {"cluster": {**CLUSTER, "ps": "localhost:2300"}, "task": {"type": "ps"}}
            ),
            'TF_CONFIG\'s "ps" job is "localhost:2300", not a list of host:port: '
            'write ["localhost:2300"]',
        ),
        (
            json.dumps({"cluster": CLUSTER, "task": {"type": "ps", "index": "0"}}),
            'TF_CONFIG\'s task index is "0", not a whole number',
        ),
        (
            json.dumps({"cluster": CLUSTER, "task": {"type": "ps", "index": -1}}),
            'TF_CONFIG\'s task {"type": "ps", "index": -1} is beyond its "ps" job',
        ),
        (
            json.dumps({"cluster": CLUSTER, "task": {"type": ["ps"]}}),
            'TF_CONFIG names the job ["ps"], which is none of',
        ),
        (
            json.dumps({"cluster": [CLUSTER], "task": {"type": "ps"}}),
            'TF_CONFIG has no "cluster"',
        ),
        (json.dumps([1, 2]), 'TF_CONFIG has no "task"'),
    ],
)
def test_a_bad_tf_config_is_one_line_quoting_it(monkeypatch, tf_config, expected):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ClusterError) as e:
        support.cluster.this_task()
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_tf_config_names_the_chief_and_the_flags_win(monkeypatch, capsys):
    def task(job_name, task_index, cluster=CLUSTER):
        config = {"cluster": cluster, "task": {"type": job_name, "index": task_index}}
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
        return support.cluster.this_task()

    chief = task("chief", 0)
    assert (chief.is_chief, chief.config.num_workers, chief.config.address) == (
        True,
        2,
        "127.0.0.1:2220",
    )
    assert not task("worker", 0).is_chief
    no_chief = {"ps": CLUSTER["ps"], "worker": ["h:1", "h:2"]}
    assert task("worker", 0, no_chief).is_chief
    assert not task("worker", 1, no_chief).is_chief
    # A job of one machine: training on it alone.
    assert task("chief", 0, {"chief": ["h:1"]}) is support.cluster.LOCAL
    assert task("evaluator", 0).config.job_name == "evaluator"

    with flagsaver.flagsaver(
        ps_hosts="h:1", worker_hosts="h:2", job_name="worker", task_index=0
    ):
        from_flags = task("chief", 0)
    assert from_flags.config.job_name == "worker" and from_flags.is_chief
    assert "The cluster flags are given: ignoring TF_CONFIG." in capsys.readouterr().out


def test_the_binary_reports_a_bad_tf_config_and_idles_an_evaluator(
    dataset, tmp_path, monkeypatch, capsys
):
    config = {"cluster": CLUSTER, "task": {"type": "worker", "index": 5}}
    flags = dict(data_dir=dataset["root"], train_dir=str(tmp_path / "t"))
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert exit_line(cifar10_train.main, **flags).startswith(
        'Error: TF_CONFIG\'s task {"type": "worker", "index": 5} is beyond'
    )
    config["task"] = {"type": "evaluator", "index": 0}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    with flagsaver.flagsaver(**flags):
        assert cifar10_train.main(["binary"]) is None
    assert "evaluate with cifar10_eval.py --checkpoint_dir=" in capsys.readouterr().out
    assert not (tmp_path / "t").exists()


def test_a_port_in_use_names_tf_config_not_the_flags(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = "127.0.0.1:%d" % taken.getsockname()[1]
        cluster = {"ps": [address], "worker": ["127.0.0.1:1"]}
        monkeypatch.setenv(
            "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "ps"}})
        )
        with pytest.raises(ClusterError) as e:
            cluster_task.start_server(support.cluster.this_task())
    message = str(e.value)
    assert message.startswith("Cannot start ps 0 (%s): " % address)
    assert "Check TF_CONFIG's cluster." in message and "--ps_hosts" not in message


def test_the_cluster_is_described_without_tensorflow():
    # In a Python of its own, which has not loaded TensorFlow.
    probe = """
import json, sys
from support import cluster_config
flags = dict(ps_hosts="", worker_hosts="", job_name=None, task_index=0,
             sync_replicas=True, replicas_to_aggregate=None, cluster_timeout_secs=9)
config = cluster_config.describe(flags, ["sync_replicas"], sys.argv[1])
print(json.dumps([str(config), config.is_chief, config.replicas_to_aggregate,
                  config.timeout_secs, "tensorflow" in sys.modules]))
"""
    tf_config = {"cluster": CLUSTER, "task": {"type": "worker", "index": 0}}
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(tf_config)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["worker 0 (127.0.0.1:2222)", False, 2, 9, False]
