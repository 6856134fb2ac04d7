"""Training on a cluster: 1 parameter server and 2 workers as processes on
127.0.0.1, asynchronous (told their tasks by flags, stopped by signals and
restarted) and synchronous (told by TF_CONFIG); and the cluster flags'
errors."""

import contextlib
import os
import re
import signal
import socket
import sys
import threading
import time

import pytest
import tensorflow as tf
from absl.testing import flagsaver

import cifar10
import cifar10_train
import support.cluster
import support.errors
from harness.procs import free_ports
from harness.sessions import queue_session
from helpers import (
    LOG_LINE,
    PRECISION,
    TENSORFLOW_ERROR,
    LocalCluster,
    TFConfigCluster,
    checkpoint_step,
    evaluate,
    finish_cleanly,
    first_step,
    form,
    logged_steps,
    run_here,
    train_flags,
)
from support import cluster_hooks, cluster_task
from support.cluster_config import ClusterConfig, ClusterError


def precision_of(dataset, cluster, num_examples):
    scored = evaluate(
        dataset["root"],
        cluster.train_dir,
        cluster.tmp_path / "eval",
        "--run_once",
        "--num_examples=%d" % num_examples,
    )
    assert scored.returncode == 0, scored.stderr
    ((precision, step),) = [m[:2] for m in PRECISION.findall(scored.stdout)]
    return float(precision), int(step)


def local_steps(output):
    return int(re.search(r"This worker ran (\d+) steps\.", output).group(1))


@pytest.mark.slow
def test_async_workers_survive_signals_and_restarts_and_the_chief_checkpoint_scores(
    dataset, clusters, capfd
):
    # Every run has a --max_steps it cannot reach: the signals below stop
    # them, however fast the machine is. The tutorial's batch of 128: at 32,
    # two asynchronous workers with its learning rate can diverge within the
    # few dozen steps this test takes.
    cluster = clusters(
        LocalCluster,
        2,
        "--max_steps=1000000",
        "--log_frequency=2",
        "--save_checkpoint_steps=2",
        "--batch_size=128",
    )
    # All at once: the chief waits for the parameter server, the other
    # worker for the chief.
    ps = cluster.start("ps", 0)
    chief = cluster.start("worker", 0)
    # A worker whose host lists differ from the chief's (here: one more
    # worker) is turned away: in this process, while the chief starts (its
    # own server, which it starts once the parameter server answers, stays
    # here, idle, as the servers of the graph tests below do).
    extra = "127.0.0.1:%d" % free_ports(1)[0]
    capfd.readouterr()
    stranger = run_here(
        "cifar10_train.py",
        *cluster.flags,
        "--job_name=worker",
        "--task_index=2",
        cluster.worker_hosts_flag + "," + extra,
    )
    assert stranger.returncode == 1
    assert "Traceback" not in stranger.stderr, stranger.stderr
    assert stranger.stderr.splitlines()[-1].startswith(
        "Error: This worker's host lists differ from the chief's."
    ), stranger.stderr
    # Nor an error logged by TensorFlow (in C++, to this process's stderr).
    logged = capfd.readouterr()
    assert TENSORFLOW_ERROR.findall(logged.err) == [], logged.err
    assert "ERROR:tensorflow" not in logged.err + stranger.stderr
    chief.wait_until(
        lambda _: (checkpoint_step(cluster.train_dir) or 0) >= 2, "a checkpoint"
    )

    # With the parameter server frozen, the chief's step waits inside
    # TensorFlow for an answer: a second Ctrl+C ends it at once.
    ps.send_signal(signal.SIGSTOP)
    try:
        chief.send_signal(signal.SIGINT)
        chief.wait_for("^SIGINT: stopping after this step")
        chief.send_signal(signal.SIGINT)
        code, out = finish_cleanly(chief)
    finally:
        ps.send_signal(signal.SIGCONT)
    assert code == 130, out
    assert "SIGINT again: exiting now, without a checkpoint." in out
    # The first signal's line, in the form the README quotes.
    assert "signal" in [form(line) for line in out.splitlines()], out
    last = checkpoint_step(cluster.train_dir)

    # The chief comes back from its newest checkpoint, and the other worker,
    # started now, joins at the shared global step, not at 0.
    chief = cluster.start("worker", 0)
    worker = cluster.start("worker", 1)
    chief.wait_for("Resuming from .*model.ckpt-%d at step %d." % (last, last))
    seen = first_step(worker)
    assert seen > last

    # Ctrl+C on the chief saves a checkpoint.
    chief.send_signal(signal.SIGINT)
    code, out = finish_cleanly(chief)
    assert code == 0, out
    stopped = int(re.search(r"Stopped by SIGINT at step (\d+);", out).group(1))
    assert "stopped" in [form(line) for line in out.splitlines()], out
    assert stopped >= seen
    assert checkpoint_step(cluster.train_dir) == stopped
    # The other worker goes on without it, until SIGTERM.
    worker.send_signal(signal.SIGTERM)
    code, out = finish_cleanly(worker)
    assert code == 0, out
    assert re.search(r"^Stopped by SIGTERM at global step \d+\.$", out, re.M), out
    # Each worker's log line reports its own rate and the shared step.
    assert logged_steps(out)

    # It scores (how well is for the tests that train longer).
    _, step = precision_of(dataset, cluster, 32)
    assert step == stopped


@pytest.mark.slow
def test_sync_workers_told_by_tf_config_step_together_and_all_stop(dataset, clusters):
    # Each process told its task by TF_CONFIG alone, as schedulers launch
    # them (how TF_CONFIG is read is tested in-process in test_tf_config.py):
    # a chief, which is the first worker, and one more worker.
    max_steps, batch_size = 20, 32
    cluster = clusters(
        TFConfigCluster,
        {"chief": 1, "ps": 1, "worker": 1},
        "--max_steps=%d" % max_steps,
        "--batch_size=%d" % batch_size,
        "--sync_replicas",
    )
    cluster.start("ps", 0)
    # The multi-GPU binary takes the same flags: the worker runs two towers.
    workers = [
        cluster.start("chief", 0),
        cluster.start("worker", 0, "--num_gpus=2", script="cifar10_multi_gpu_train.py"),
    ]
    outputs = []
    for worker in workers:
        code, out = finish_cleanly(worker)
        assert code == 0, out
        outputs.append(out)
    assert "Done: step %d; checkpoint saved" % max_steps in outputs[0]
    assert re.search(r"^Done: global step \d+\.$", outputs[1], re.M), outputs[1]
    assert "Waiting for the chief (chief 0)" in outputs[1]
    assert checkpoint_step(cluster.train_dir) == max_steps
    # Every global step averages one gradient from each of the 2 workers:
    # they ran about 2 x max_steps runs between them (asynchronous workers
    # would have run about max_steps).
    total = sum(local_steps(out) for out in outputs)
    assert 2 * max_steps - 2 <= total <= 2 * max_steps + 6, total
    assert "Running 2 tower(s) on /cpu:0, /cpu:1" in outputs[1]
    # 2 towers of batch_size a step, reported per tower.
    match = next(filter(None, map(LOG_LINE.match, outputs[1].splitlines())))
    assert float(match[3]) == pytest.approx(
        2 * batch_size / (2 * float(match[4])), rel=0.05
    )

    # Chance is 0.1; untrained moving averages score about that. Twice
    # chance, not more: at the tutorial's learning rate a step now and then
    # throws the weights off, and after 20 steps the averages follow them
    # closely (a run scored 0.29).
    precision, step = precision_of(dataset, cluster, 300)
    assert step == max_steps and precision > 0.2


def test_unreachable_parameter_server_is_a_clear_error(dataset, tmp_path):
    # In this process: a worker starts its own server only once the
    # parameter servers answer, so one that gives up leaves none behind.
    ps, worker = free_ports(2)
    result = run_here(
        "cifar10_train.py",
        *train_flags(dataset, tmp_path / "train"),
        "--ps_hosts=127.0.0.1:%d" % ps,  # nothing listens there
        "--worker_hosts=127.0.0.1:%d" % worker,
        "--job_name=worker",
        "--cluster_timeout_secs=3",
    )
    assert result.returncode == 1
    assert "Waiting for parameter server 0 at 127.0.0.1:%d" % ps in result.stdout
    # Bounded by the timeout, not a hang; the error says what to start.
    assert result.stderr.splitlines()[-1] == (
        "Error: Cannot reach parameter server 0 at 127.0.0.1:%d (Connection "
        "refused) after 3 s. Start it with --job_name=ps --task_index=0 and the "
        "same host lists, or correct --ps_hosts." % ps
    ), result.stderr
    # Nothing was written for a run that never started, and no server was.
    assert checkpoint_step(tmp_path / "train") is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", worker))


HOSTS = dict(ps_hosts="127.0.0.1:2222", worker_hosts="127.0.0.1:2223,127.0.0.1:2224")


@pytest.mark.parametrize(
    "flags, expected",
    [
        (dict(ps_hosts="h:1", job_name="worker"), "--worker_hosts missing"),
        (dict(worker_hosts="h:1"), "--ps_hosts and --job_name missing"),
        (dict(HOSTS, job_name="worker", task_index=2), "--task_index=2 is out of"),
        (dict(HOSTS, job_name="ps", task_index=1), "--ps_hosts lists 1 ps task"),
        (
            dict(ps_hosts="h:1", worker_hosts="h:2,h:1", job_name="ps"),
            "h:1 is listed twice",
        ),
        (dict(HOSTS, ps_hosts="h", job_name="ps"), "--ps_hosts: 'h' is not host:port"),
        (dict(HOSTS, ps_hosts=" , ", job_name="ps"), "--ps_hosts lists no host"),
        (dict(sync_replicas=True), "--sync_replicas only applies to training on a"),
        (dict(task_index=1), "--task_index only applies"),
        (
            dict(HOSTS, job_name="worker", replicas_to_aggregate=2),
            "only applies with --sync_replicas",
        ),
        (
            dict(HOSTS, job_name="worker", sync_replicas=True, replicas_to_aggregate=3),
            "--replicas_to_aggregate=3, but --worker_hosts lists 2",
        ),
    ],
)
def test_inconsistent_cluster_flags_are_one_clear_error(flags, expected):
    with flagsaver.flagsaver(**flags):
        with pytest.raises(ClusterError) as e:
            support.cluster.this_task()
    assert expected in str(e.value)


def test_cluster_flags_describe_this_task():
    with flagsaver.flagsaver(**HOSTS, job_name="worker", task_index=1):
        task = support.cluster.this_task()
    assert (task.is_chief, task.config.num_workers) == (False, 2)
    assert task.config.address == "127.0.0.1:2224"
    with flagsaver.flagsaver(**HOSTS, job_name="worker"):
        assert support.cluster.this_task().is_chief
    assert support.cluster.this_task() is support.cluster.LOCAL


def test_a_copy_without_the_clusters_modules_says_what_a_cluster_needs(monkeypatch):
    # As in a copy for one machine (test_template.py), which has none of them.
    monkeypatch.delattr(support, "cluster_task")
    monkeypatch.setitem(sys.modules, "support.cluster_task", None)
    with flagsaver.flagsaver(**HOSTS, job_name="worker"):
        with pytest.raises(support.errors.Error) as e:
            support.cluster.this_task()
    assert str(e.value) == (
        "Training on a cluster (the cluster flags, or TF_CONFIG) needs "
        "support/cluster_task.py."
    )


def test_each_task_turns_on_keepalive_pings_and_keeps_the_users_grpc_options(
    monkeypatch,
):
    ours = "grpc.keepalive_time_ms=%d,grpc.keepalive_timeout_ms=%d" % (
        cluster_task.KEEPALIVE_MS,
        cluster_task.KEEPALIVE_TIMEOUT_MS,
    )
    monkeypatch.delenv("TF_GRPC_DEFAULT_OPTIONS", raising=False)
    assert cluster_task._keepalive_options() == ours
    # The user's own options stay, their keepalive time too.
    users = "grpc.keepalive_time_ms=60000,grpc.max_reconnect_backoff_ms=500"
    monkeypatch.setenv("TF_GRPC_DEFAULT_OPTIONS", users)
    assert cluster_task._keepalive_options() == users + (
        ",grpc.keepalive_timeout_ms=%d" % cluster_task.KEEPALIVE_TIMEOUT_MS
    )


def test_a_wait_after_the_step_names_the_parameter_server_that_does_not_answer(
    capsys, monkeypatch
):
    # What runs after a step's own hooks can wait on a parameter server that
    # died as long as a step: a checkpoint's save (the saver's hook comes
    # after the cluster's), then the closing of the session it broke.
    address = "127.0.0.1:%d" % free_ports(1)[0]  # nothing listens there
    cluster = ClusterConfig({"ps": [address], "worker": ["127.0.0.1:1"]}, "worker", 0)
    monkeypatch.setattr(cluster_hooks.UnansweredHook, "STALL_SECS", 1)
    hook = cluster_hooks.UnansweredHook(cluster)
    hook.after_create_session(None, None)
    hook.before_run(None)
    hook.after_run(None, None)  # the step is done; what follows it waits
    expected = (
        "Parameter server 0 at %s does not answer (Connection refused); this "
        "step waits for it. Start it with --job_name=ps --task_index=0 and the "
        "same host lists, or correct --ps_hosts.\n" % address
    )
    printed = ""
    deadline = time.time() + 30
    while expected not in printed and time.time() < deadline:
        time.sleep(0.2)
        printed += capsys.readouterr().out
    assert printed == expected


def test_binary_reports_a_bad_job_name(dataset, tmp_path):
    result = run_here(
        "cifar10_train.py",
        "--train_dir=%s" % (tmp_path / "train"),
        "--data_dir=%s" % dataset["root"],
        "--ps_hosts=127.0.0.1:2222",
        "--worker_hosts=127.0.0.1:2223",
        "--job_name=chief",
    )
    assert result.returncode == 1
    assert "--job_name=chief: value should be one of <ps|worker>" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "train")


def crossing_bytes(partition_graphs, graph):
    """Bytes that one run's partition graphs send from one job to another,
    by (from job, to job), and the tensors sent, largest first."""
    sent, tensors = {}, []
    for partition in partition_graphs:
        for node in partition.node:
            if node.op not in ("_Send", "_HostSend"):
                continue
            jobs = [
                node.attr[end].s.decode().split("/")[1]
                for end in ("send_device", "recv_device")
            ]
            if jobs[0] == jobs[1]:
                continue
            try:
                tensor = graph.get_tensor_by_name(
                    node.input[0] if ":" in node.input[0] else node.input[0] + ":0"
                )
                size = tensor.shape.num_elements() * tensor.dtype.size
            except (KeyError, ValueError):  # the runtime's own control edges
                size = 0
            sent[tuple(jobs)] = sent.get(tuple(jobs), 0) + size
            tensors.append((size, node.input[0]))
    return sent, sorted(tensors, reverse=True)


@contextlib.contextmanager
def training_graph_on_servers(dataset, **flags):
    """The graph of cifar10_train.train() for worker 0 of a cluster of one
    parameter server and that worker, both servers in this process.

    Yields:
      (its cluster task, the worker server's target, global step, train op),
      with the graph the default one.
    """
    ps_port, worker_port = free_ports(2)
    with flagsaver.flagsaver(
        ps_hosts="127.0.0.1:%d" % ps_port,
        worker_hosts="127.0.0.1:%d" % worker_port,
        job_name="worker",
        data_dir=dataset["root"],
        batch_size=32,
        min_queue_examples=100,
        **flags,
    ):
        task = support.cluster.this_task()
        servers = [tf.distribute.Server(task.spec, job, 0) for job in ("ps", "worker")]
        with tf.Graph().as_default():
            _, train_op, _ = cifar10_train.one_device(task, cifar10.data_set())
            global_step = tf.compat.v1.train.get_global_step()
            yield task, servers[1].target, global_step, train_op


def test_a_worker_step_moves_the_weights_once_each_way(dataset):
    """Between a worker and the parameter server, a step carries the weights
    to the worker and their gradients back, and little else: no weight read
    twice, no moving average computed on the worker's side of the wire."""
    with training_graph_on_servers(dataset) as (_, target, _, train_op):
        graph = tf.compat.v1.get_default_graph()
        weights = sum(
            v.shape.num_elements() * v.dtype.size
            for v in tf.compat.v1.trainable_variables()
        )
        with queue_session(target) as sess:
            sess.run(train_op)
            metadata = tf.compat.v1.RunMetadata()
            sess.run(
                train_op,
                options=tf.compat.v1.RunOptions(output_partition_graphs=True),
                run_metadata=metadata,
            )
    sent, tensors = crossing_bytes(metadata.partition_graphs, graph)
    largest = tensors[:12]
    # Each way, the weights' size and a few scalars (the step, the loss).
    assert weights <= sent["job:ps", "job:worker"] < 1.01 * weights, largest
    assert weights <= sent["job:worker", "job:ps"] < 1.01 * weights, largest


def test_the_chiefs_synchronous_update_moves_no_weights(dataset):
    """Under --sync_replicas the chief applies each step's averaged gradients
    on the parameter server: its update run computes nothing of the model
    (no forward pass of its own) and brings no weight over."""
    with training_graph_on_servers(dataset, sync_replicas=True) as (
        task,
        target,
        global_step,
        train_op,
    ):
        graph = tf.compat.v1.get_default_graph()
        (sync,) = [h for h in task.hooks() if hasattr(h, "apply_gradients")]
        sync.begin()
        with queue_session(target) as sess:
            sess.run([sync._local_init_op, sync._sent.variable.initializer])
            # The worker's step waits for the chief's update, run here.
            step = threading.Thread(target=sess.run, args=(train_op,))
            step.start()
            metadata = tf.compat.v1.RunMetadata()
            sess.run(
                sync._update_op,
                options=tf.compat.v1.RunOptions(output_partition_graphs=True),
                run_metadata=metadata,
            )
            step.join()
            assert sess.run(global_step) == 1
    sent, tensors = crossing_bytes(metadata.partition_graphs, graph)
    assert sum(sent.values()) < 1000, tensors[:8]
