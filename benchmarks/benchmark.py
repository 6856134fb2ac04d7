"""Training and evaluation speed, each against its compute-only ceiling.

    python benchmarks/benchmark.py                 # about 10 minutes
    python benchmarks/benchmark.py --quick         # a rough look, about 6

It writes its own data set in the official layout (so it runs offline) and
measures, in this one run:

  (a) ceiling: the training graph (model, SGD, moving averages) fed from a
      batch held in memory;
  (b) cifar10_train.py end to end, from its own log lines, after the queue
      has filled, in turns with (a): the binary stopped (SIGSTOP) while the
      ceiling runs here, resumed while this waits; (b)/(a) is the median of
      the turns' ratios;
  (c) the input pipeline alone: distorted_inputs() batches with no model;
  (d) eval: the forward pass fed by cifar10_eval.py's input pipeline vs fed
      from memory (interleaved windows in one session), the pipeline with and
      without its confusion matrix, and the rate that cifar10_eval.py
      --run_once itself reports;
  (e) the time the training queue takes to fill;
  (f) the peak resident memory of the training process (a run of its own,
      from its start);
  (g) cifar10_multi_gpu_train.py with 1 and 2 towers;
  (h) cifar10_train.py on a cluster on this machine: 1 parameter server and
      1 worker, then 2 workers, asynchronous and --sync_replicas; the rate
      is the sum of the workers' own rates;
  (i) using the model: cifar10_classify.py on 10,000 PNG files (its whole
      run, and its rate once its start-up, timed on one file, is left out),
      and the exported SavedModel's two signatures fed batches in memory,
      each beside cifar10_eval.py's rate measured right before;
  (j) --mixed_precision=bf16: the training ceiling and cifar10_train.py
      end to end, each in turns with float32 (the median of the turns'
      ratios), and cifar10_eval.py against float32 one after the other; it
      says whether the processor has native bfloat16 (where it has not,
      bf16 is emulated, and its turns are longer);
  (k) cifar10_pack.py on 60,000 small JPEG files in 10 class folders (the
      rate it reports, the rate of its whole run, and its peak memory),
      beside the rate of decoding and fitting the same files alone, from
      memory, two batches at a time as the packer does, in this process, and
      the same with TensorFlow's fast JPEG decoding (in turns); then its peak
      memory on a folder of 2 GB files and a 16000x16000 PNG.

  (n) the cluster on hosts (harness/hosts.py; needs root), on images of
      noise (the same speed; learnable ones can make three asynchronous
      workers diverge early): each task a
      network namespace of its own on a bridge, with a CPU quota (every
      worker 0.8 of a core, the parameter server 0.3; for 3 workers 0.55
      each, beside 1 worker at 0.55) and, in some settings, 1 Gbit/s links:
      the sum of the workers' rates, each setting against 1 asynchronous
      worker at the same quota and link, and the bytes each worker step moves
      over its worker's link (both ways, from the link's counters) against
      the size of the weights.

  (m) the training step on a batch in memory with TensorFlow's LRN (its
      own forward and gradient kernels) and with cifar10.lrn(), in short
      windows in turns, in float32 and (where native) bfloat16; the ratio is
      the median of the turns' ratios, so that a slow spell of a shared
      machine falls on both.

--only picks some of the groups: training (a, b, c, e, f), eval (d),
scaling (g, h), using (i), bf16 (j), packing (k), startup (l), lrn (m),
hosts (n), which is left out unless asked for.

Each rate is the median of several windows after a warm-up. The machine is
shared and noisy, so the figures that matter are the ratios of two rates
measured minutes apart in the same run: (b)/(a) and eval/forward.
A table goes to stdout, everything to --json.
"""

import concurrent.futures
import contextlib
import datetime
import json
import os
import pathlib
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from support import startup  # noqa: E402

if __name__ == "__main__":
    startup.before_tensorflow()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402
from absl.testing import flagsaver  # noqa: E402

import cifar10  # noqa: E402
import cifar10_eval  # noqa: E402
import cifar10_input  # noqa: E402
import cifar10_pack  # noqa: E402
from harness import fake_cifar, procs  # noqa: E402
from harness.sessions import queue_session  # noqa: E402
from support import bfloat16  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_boolean("quick", False, "Fewer and shorter windows.")
flags.DEFINE_string(
    "json",
    os.path.join(procs.ROOT, "benchmarks", "results", "benchmark.json"),
    "Where to write the figures.",
)
flags.DEFINE_string(
    "work_dir", None, "Folder for the data and runs (default: a temporary one)."
)
flags.DEFINE_list(
    "only",
    ["training", "eval", "scaling", "using", "bf16", "packing", "startup", "lrn"],
    "The groups to measure.",
)

LOG_RATE = re.compile(r": step (\d+), loss = \S+ \(([\d.]+) examples/sec")
LOG_STEP = re.compile(r"^(.+): step (\d+), loss = ", re.M)
SEC_PER_BATCH = re.compile(r"; ([\d.]+) sec/batch\)")
QUEUE_FILLED = re.compile(r"first step took ([\d.]+) s")
EVAL_RATE = re.compile(
    r"precision @ 1 = \S+ \(step \d+, (\d+) images, ([\d.]+) images/sec"
)


# The table: (row, key of the figure, format).
ROWS = [
    ("(a) training ceiling, batch in memory", "train_ceiling", "%.0f examples/sec"),
    ("(b) cifar10_train.py end to end", "train_end_to_end", "%.0f examples/sec"),
    ("    (b)/(a)", "train_ratio", "%.3f"),
    ("(c) distorted_inputs alone", "input_pipeline", "%.0f images/sec"),
    ("(d) forward ceiling, batch in memory", "forward_ceiling", "%.0f images/sec"),
    ("(d) same graph fed by the eval pipeline", "eval_pipeline", "%.0f images/sec"),
    ("    eval/forward", "eval_ratio", "%.3f"),
    (
        "(d) the same, counting right answers only",
        "eval_without_matrix",
        "%.0f images/sec",
    ),
    ("    with/without the confusion matrix", "matrix_ratio", "%.3f"),
    ("(d) cifar10_eval.py, 10,000 images", "eval_end_to_end", "%.0f images/sec"),
    ("(e) queue filling (20,000 images)", "queue_fill_secs", "%.1f s"),
    ("(f) peak RSS, cifar10_train.py", "train_peak_rss_mb", "%.0f MB"),
    ("(g) multi-GPU binary, 1 tower", "multi_gpu_1", "%.0f examples/sec"),
    ("(g) multi-GPU binary, 2 towers", "multi_gpu_2", "%.0f examples/sec"),
    ("(h) cluster: 1 ps + 1 worker", "cluster_1", "%.0f examples/sec"),
    ("(h) cluster: 1 ps + 2 workers", "cluster_2", "%.0f examples/sec"),
    ("(h) cluster: 1 ps + 2 workers, sync", "cluster_2_sync", "%.0f examples/sec"),
    ("(i) cifar10_eval.py, beside (i)", "eval_beside_using", "%.0f images/sec"),
    ("(i) cifar10_classify.py, 10,000 files", "classify_secs", "%.1f s in all"),
    ("    its rate after start-up", "classify_rate", "%.0f images/sec"),
    ("(i) SavedModel, predict_pixels", "export_pixels", "%.0f images/sec"),
    ("(i) SavedModel, serving_default (PNG)", "export_bytes", "%.0f images/sec"),
    ("(j) native bfloat16 on this processor", "native_bf16", "%s"),
    ("(j) training ceiling, bf16", "bf16_ceiling", "%.0f examples/sec"),
    ("    bf16/float32", "bf16_ceiling_ratio", "%.3f"),
    ("(j) cifar10_train.py end to end, bf16", "bf16_end_to_end", "%.0f examples/sec"),
    ("    bf16/float32", "bf16_end_to_end_ratio", "%.3f"),
    ("(j) cifar10_eval.py, bf16", "bf16_eval", "%.0f images/sec"),
    ("    bf16/float32", "bf16_eval_ratio", "%.3f"),
    ("(k) cifar10_pack.py, 60,000 JPEG files", "pack_rate", "%.0f images/sec"),
    ("    the same, start-up included", "pack_rate_end_to_end", "%.0f images/sec"),
    ("(k) decoding and fitting alone", "decode_rate", "%.0f images/sec"),
    ("    packing/decoding", "pack_ratio", "%.3f"),
    (
        "(k) the same, TensorFlow's fast JPEG decoding",
        "decode_fast_rate",
        "%.0f images/sec",
    ),
    ("    accurate/fast", "accurate_ratio", "%.3f"),
    ("(k) peak RSS, cifar10_pack.py", "pack_peak_rss_mb", "%.0f MB"),
    (
        "(k) the same, on 2 GB files and a 16000x16000 PNG",
        "pack_hostile_peak_rss_mb",
        "%.0f MB",
    ),
    ("(l) cifar10_train.py --help", "help_secs", "%.2f s"),
    ("(l) importing TensorFlow alone", "import_tf_secs", "%.2f s"),
    ("    --help/import", "help_ratio", "%.3f"),
    (
        "(m) training step, TensorFlow's LRN",
        "lrn_float32_tensorflow",
        "%.0f examples/sec",
    ),
    ("(m) the same, cifar10.lrn()", "lrn_float32_ours", "%.0f examples/sec"),
    ("    ours/TensorFlow's, median of the turns", "lrn_float32_ratio", "%.3f"),
    (
        "(m) bf16 step, TensorFlow's LRN",
        "lrn_bf16_tensorflow",
        "%.0f examples/sec",
    ),
    ("(m) the same, cifar10.lrn()", "lrn_bf16_ours", "%.0f examples/sec"),
    ("    ours/TensorFlow's, median of the turns", "lrn_bf16_ratio", "%.3f"),
]

# (n): (key, workers, worker cores, link Mbit/s or None, flags), in the
# order they run; each key's rate, and its ratio to the rate of the first
# setting with the same cores and link.
HOST_SETTINGS = [
    ("hosts_1", 1, 0.8, None, ()),
    ("hosts_2", 2, 0.8, None, ()),
    ("hosts_2_sync", 2, 0.8, None, ("--sync_replicas",)),
    ("hosts_1_gbit", 1, 0.8, 1000, ()),
    ("hosts_2_gbit", 2, 0.8, 1000, ()),
    ("hosts_2_sync_gbit", 2, 0.8, 1000, ("--sync_replicas",)),
    ("hosts_1_small", 1, 0.55, None, ()),
    ("hosts_3_small", 3, 0.55, None, ()),
    ("hosts_3_small_sync", 3, 0.55, None, ("--sync_replicas",)),
]
HOST_NAMES = {
    "hosts_1": "1 worker",
    "hosts_2": "2 workers",
    "hosts_2_sync": "2 workers, sync",
    "hosts_1_gbit": "1 worker, 1 Gbit/s",
    "hosts_2_gbit": "2 workers, 1 Gbit/s",
    "hosts_2_sync_gbit": "2 workers, sync, 1 Gbit/s",
    "hosts_1_small": "1 worker at 0.55 core",
    "hosts_3_small": "3 workers at 0.55 core",
    "hosts_3_small_sync": "3 workers at 0.55 core, sync",
}
for _key, _name in HOST_NAMES.items():
    ROWS += [
        ("(n) hosts: " + _name, _key, "%.0f examples/sec"),
        ("    vs 1 worker (same core, link)", _key + "_speedup", "%.2f"),
        ("    bytes per worker step / weights", _key + "_bytes_ratio", "%.2f"),
        ("    a worker's sec/batch", _key + "_sec_per_batch", "%.3f"),
        ("    ps waiting for its CPU quota", _key + "_ps_throttled_ms", "%.0f ms/step"),
    ]
ROWS += [
    ("(n) 1 Gbit/s vs unlimited, 1 worker", "hosts_gbit_ratio", "%.2f"),
]


def median_rate(run_once, examples_per_run, windows, runs_per_window, warmup):
    """Median examples/sec of run_once over windows, after warm-up runs."""
    for _ in range(warmup):
        run_once()
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(runs_per_window):
            run_once()
        rates.append(examples_per_run * runs_per_window / (time.perf_counter() - start))
    return statistics.median(rates)


@contextlib.contextmanager
def training_step(mixed_precision="off", lrn=None):
    """A function that runs one training step on one constant batch, in a
    graph and session of its own.

    Args:
      mixed_precision: as the flag.
      lrn: the local response normalization to build the model with, in
        place of cifar10.lrn().
    """
    rng = np.random.default_rng(0)
    batch = FLAGS.batch_size
    with contextlib.ExitStack() as stack:
        stack.enter_context(flagsaver.flagsaver(mixed_precision=mixed_precision))
        stack.enter_context(tf.Graph().as_default())
        # The model is built with it; the function is put back at once.
        with mock.patch.object(cifar10, "lrn", lrn or cifar10.lrn):
            global_step = tf.compat.v1.train.get_or_create_global_step()
            images = tf.constant(rng.normal(size=(batch, 24, 24, 3)), tf.float32)
            labels = tf.constant(rng.integers(0, 10, batch), tf.int32)
            loss = cifar10.loss(cifar10.inference(images), labels)
            train_op = cifar10.train(loss, global_step)
        sess = stack.enter_context(
            tf.compat.v1.Session(config=cifar10.session_config())
        )
        sess.run(tf.compat.v1.global_variables_initializer())
        yield lambda: sess.run(train_op)


def tensorflows_lrn(x, depth_radius, bias, alpha, beta, name):
    """tf.nn.lrn with TensorFlow's own kernels, as the tutorial had it."""
    return tf.nn.lrn(x, depth_radius, bias=bias, alpha=alpha, beta=beta, name=name)


def measure_lrn(windows, steps):
    """(m): the training step with TensorFlow's LRN and with cifar10.lrn(),
    in float32 and, where the processor has it natively, bfloat16: in
    turns, eight times as many windows as elsewhere, each half as long."""
    native = bfloat16.native()
    figures = {}
    for mixed_precision in ["off"] + (["bf16"] if native else []):
        print("(m) LRN, --mixed_precision=%s ..." % mixed_precision, flush=True)
        with (
            training_step(mixed_precision, tensorflows_lrn) as theirs,
            training_step(mixed_precision) as ours,
        ):
            rates = steps_in_turns(
                {"theirs": theirs, "ours": ours},
                8 * windows,
                lambda step: median_rate(
                    step, FLAGS.batch_size, 1, max(steps // 2, 5), warmup=0
                ),
            )
        key = "lrn_" + ("float32" if mixed_precision == "off" else "bf16")
        figures[key + "_tensorflow"] = statistics.median(rates["theirs"])
        figures[key + "_ours"] = statistics.median(rates["ours"])
        figures[key + "_ratio"] = median_of_ratios(
            "ours/TensorFlow's", rates["ours"], rates["theirs"]
        )
    return figures


def eval_pipeline_and_ceiling(windows, steps):
    """(d): the eval graph fed by cifar10_eval.py's pipeline, and the same
    forward pass fed from a batch in memory, in one session with their
    windows interleaved, so that the machine's drift cancels out. The
    pipeline runs as cifar10_eval.py does, counting a confusion matrix, and
    without it, counting right answers only.

    Returns:
      {figure: value}: the three rates and the medians of the window ratios.
    """
    rng = np.random.default_rng(0)
    batch = FLAGS.batch_size
    with tf.Graph().as_default():
        # The training files: 50,000 images, enough for every window.
        images, labels = cifar10.inputs(eval_data=False)
        fixed_images = tf.constant(rng.normal(size=(batch, 24, 24, 3)), tf.float32)
        fixed_labels = tf.constant(rng.integers(0, 10, batch), tf.int32)
        with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope()) as scope:
            logits = cifar10.inference(images)
            outcome = cifar10_eval.outcome(labels, logits)
            right_only = tf.nn.in_top_k(targets=labels, predictions=logits, k=1)
            scope.reuse_variables()
            fixed = tf.nn.in_top_k(
                targets=fixed_labels, predictions=cifar10.inference(fixed_images), k=1
            )
        matrix = np.zeros([cifar10.NUM_CLASSES] * 2, np.int64)
        runs = {
            "eval_pipeline": lambda: np.add.at(matrix, sess.run(outcome), 1),
            "eval_without_matrix": lambda: np.sum(sess.run(right_only)),
            "forward_ceiling": lambda: sess.run(fixed),
        }
        with queue_session() as sess:
            rates = steps_in_turns(
                runs, windows, lambda run: median_rate(run, batch, 1, steps, 1)
            )
    figures = {key: statistics.median(values) for key, values in rates.items()}
    for key, over in (
        ("eval_ratio", "forward_ceiling"),
        ("matrix_ratio", "eval_without_matrix"),
    ):
        figures[key] = median_of_ratios(
            "eval pipeline / " + over, rates["eval_pipeline"], rates[over]
        )
    return figures


def input_pipeline(windows, steps):
    """(c): distorted_inputs() alone, after its queue has filled."""
    with tf.Graph().as_default():
        images, labels = cifar10.distorted_inputs()
        with queue_session() as sess:
            return median_rate(
                lambda: sess.run([images, labels]),
                FLAGS.batch_size,
                windows,
                steps,
                warmup=2,
            )


def run_binary(script, *args):
    """Runs a binary; returns (stdout, peak RSS in MB of that process)."""
    output, rss, _ = run_measured(script, *args)
    return output, rss


def run_measured(script, *args):
    """Runs a binary; returns (stdout, peak RSS in MB, seconds in all)."""
    result, peak, seconds = procs.run_measured(script, *args)
    if result.returncode:
        sys.exit("%s failed:\n%s" % (script, result.stderr[-3000:]))
    return result.stdout, peak / 2**20, seconds


def end_to_end(script, work_dir, name, steps, skip, *flags_, log_frequency=20):
    """(b), (e), (f): a training binary's own log lines, from a new train_dir.

    Returns:
      (median examples/sec, queue-filling seconds, peak RSS MB, train_dir).
    """
    train_dir = tempfile.mkdtemp(prefix=name + "-", dir=work_dir)
    out, rss = run_binary(
        script,
        "--data_dir=%s" % os.path.join(work_dir, "data"),
        "--train_dir=%s" % train_dir,
        "--max_steps=%d" % steps,
        "--log_frequency=%d" % log_frequency,
        "--batch_size=%d" % FLAGS.batch_size,
        *flags_,
    )
    rates = [float(m.group(2)) for m in LOG_RATE.finditer(out)][skip:]
    if not rates:
        sys.exit(
            "%s logged no rate after its first %d lines in %d steps: "
            "give it more steps." % (script, skip, steps)
        )
    fill = float(QUEUE_FILLED.search(out).group(1))
    return statistics.median(rates), fill, rss, train_dir


def on_cluster(work_dir, name, num_workers, steps, *flags_):
    """(h): 1 ps and num_workers workers of cifar10_train.py, as processes.

    Returns:
      The sum over the workers of the median of each one's logged rates,
      leaving out its first two lines.
    """
    ps_port, *worker_ports = procs.free_ports(1 + num_workers)
    common = procs.command(
        "cifar10_train.py",
        "--ps_hosts=127.0.0.1:%d" % ps_port,
        "--worker_hosts=" + ",".join("127.0.0.1:%d" % p for p in worker_ports),
        "--data_dir=%s" % os.path.join(work_dir, "data"),
        "--train_dir=%s" % tempfile.mkdtemp(prefix=name + "-", dir=work_dir),
        "--max_steps=%d" % steps,
        "--log_frequency=20",
        "--batch_size=%d" % FLAGS.batch_size,
        *flags_,
    )
    run = dict(stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ps = subprocess.Popen([*common, "--job_name=ps"], **run)
    try:
        workers = [
            subprocess.Popen(
                [*common, "--job_name=worker", "--task_index=%d" % i], **run
            )
            for i in range(num_workers)
        ]
        outputs = [w.communicate()[0] for w in workers]
    finally:
        ps.terminate()
        ps.wait()
    total = 0.0
    for worker, out in zip(workers, outputs, strict=True):
        if worker.returncode:
            sys.exit("%s: a worker failed:\n%s" % (name, out[-3000:]))
        total += statistics.median(
            [float(m.group(2)) for m in LOG_RATE.finditer(out)][2:]
        )
    return total


def evaluation(work_dir, train_dir, *flags_):
    out, _ = run_binary(
        "cifar10_eval.py",
        "--data_dir=%s" % os.path.join(work_dir, "data"),
        "--checkpoint_dir=%s" % train_dir,
        "--eval_dir=%s" % tempfile.mkdtemp(prefix="eval-", dir=work_dir),
        "--run_once",
        "--batch_size=%d" % FLAGS.batch_size,
        *flags_,
    )
    m = EVAL_RATE.search(out)
    assert int(m.group(1)) == 10000
    return float(m.group(2))


def measure_using(work_dir, train_dir, windows, steps):
    """(i)."""
    print("(i) cifar10_eval.py, then the classifier and the export ...", flush=True)
    figures = {"eval_beside_using": evaluation(work_dir, train_dir)}
    labels, images = fake_cifar.write_dataset(
        os.path.join(work_dir, "pngs-data"), records_per_file=1, test_records=10000
    )["test"]
    pngs = os.path.join(work_dir, "pngs")
    os.makedirs(pngs, exist_ok=True)
    for i, image in enumerate(images):
        fake_cifar.write_png(os.path.join(pngs, "%05d.png" % i), image)
    times = {}
    for name, paths in (("one", [os.path.join(pngs, "00000.png")]), ("all", [pngs])):
        start = time.perf_counter()
        run_binary(
            "cifar10_classify.py", "--checkpoint_dir=%s" % train_dir, *paths,
            "--batch_size=%d" % FLAGS.batch_size,
        )  # fmt: skip
        times[name] = time.perf_counter() - start
    figures["classify_secs"] = times["all"]
    figures["classify_rate"] = (len(images) - 1) / (times["all"] - times["one"])
    export_dir = tempfile.mkdtemp(prefix="export-", dir=work_dir)
    run_binary(
        "cifar10_classify.py",
        "--checkpoint_dir=%s" % train_dir,
        "--export_dir=%s" % export_dir,
    )
    (version,) = os.listdir(export_dir)
    encoded = [pathlib.Path(pngs, n).read_bytes() for n in sorted(os.listdir(pngs))]
    figures.update(
        saved_model_rates(
            os.path.join(export_dir, version), images, encoded, windows, steps
        )
    )
    return figures


def saved_model_rates(path, images, encoded, windows, steps):
    """Images/sec of the SavedModel's signatures, fed batches from memory."""
    batch = FLAGS.batch_size
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        signatures = tf.compat.v1.saved_model.load(sess, ["serve"], path).signature_def
        rates = {}
        for key, name, data in (
            ("export_pixels", "predict_pixels", images),
            ("export_bytes", "serving_default", encoded),
        ):
            signature = signatures[name]
            (feed,) = [t.name for t in signature.inputs.values()]
            fetch = signature.outputs["probabilities"].name
            position = [0]

            def run_once(fetch=fetch, feed=feed, data=data, position=position):
                start = position[0] % (len(data) - batch)
                position[0] += batch
                sess.run(fetch, {feed: data[start : start + batch]})

            rates[key] = median_rate(run_once, batch, windows, steps, warmup=2)
    return rates


def measure_bf16(work_dir, turns):
    """(j): --mixed_precision=bf16 against float32: the ceilings in turns in
    this process, then cifar10_train.py in turns with itself in float32,
    then cifar10_eval.py in each, one after the other."""
    native = bfloat16.native()
    print(
        "(j) bfloat16: this processor %s native bfloat16 (avx512_bf16, amx_bf16) ..."
        % {True: "has", False: "has no", None: "may or may not have"}[native],
        flush=True,
    )
    # Emulated, a step takes several times longer: a line every step, and
    # turns long enough for a few.
    seconds, log_frequency = (6, 5) if native else (12, 1)
    with (
        training_step("off") as float32,
        training_step("bf16") as bf16,
    ):
        ceilings = steps_in_turns(
            {"off": float32, "bf16": bf16},
            turns,
            lambda step: rate_for(step, seconds),
        )
    rates = {"off": [], "bf16": []}
    train_dir = tempfile.mkdtemp(prefix="train-bf16-", dir=work_dir)
    with (
        stopped_binary(
            work_dir, tempfile.mkdtemp(dir=work_dir), "--mixed_precision=off",
            log_frequency=log_frequency,
        ) as float32,
        stopped_binary(
            work_dir, train_dir, "--mixed_precision=bf16", log_frequency=log_frequency
        ) as bf16,
    ):  # fmt: skip
        for _ in range(turns):
            rates["off"].append(float32(seconds))
            rates["bf16"].append(bf16(seconds))
    figures = {
        "native_bf16": {True: "yes", False: "no: emulated", None: "unknown"}[native],
        "bf16_ceiling": statistics.median(ceilings["bf16"]),
        "bf16_ceiling_ratio": median_of_ratios(
            "bf16/float32, ceiling", ceilings["bf16"], ceilings["off"]
        ),
        "bf16_end_to_end": statistics.median(rates["bf16"]),
        "bf16_end_to_end_ratio": median_of_ratios(
            "bf16/float32, end to end", rates["bf16"], rates["off"]
        ),
    }
    # Its first checkpoint, which the killed bf16 run left.
    evals = {
        mixed_precision: evaluation(
            work_dir, train_dir, "--mixed_precision=" + mixed_precision
        )
        for mixed_precision in ("off", "bf16")
    }
    figures["bf16_eval"] = evals["bf16"]
    figures["bf16_eval_ratio"] = evals["bf16"] / evals["off"]
    return figures


def measure_training(work_dir, windows, steps, train_steps):
    """(a), (b), (c), (e), (f). Returns (figures, the train_dir of (e))."""
    print("(a), (b) training ceiling and cifar10_train.py, in turns ...", flush=True)
    ceiling, rate, ratio = train_in_turns(work_dir, turns=2 * windows, seconds=6)
    print("(e), (f) cifar10_train.py from its start ...", flush=True)
    _, fill, rss, train_dir = end_to_end(
        "cifar10_train.py", work_dir, "train", train_steps, skip=2
    )
    print("(c) input pipeline alone ...", flush=True)
    figures = dict(
        train_ceiling=ceiling,
        train_end_to_end=rate,
        train_ratio=ratio,
        queue_fill_secs=fill,
        train_peak_rss_mb=rss,
        input_pipeline=input_pipeline(windows, steps),
    )
    return figures, train_dir


def train_in_turns(work_dir, turns, seconds):
    """(a) and (b) in turns: cifar10_train.py runs for some seconds, then is
    stopped (SIGSTOP) while the ceiling runs in this process for as long.
    The machine's speed drifts by a fifth within minutes; in turns, a slow
    spell falls on both.

    Returns:
      (median ceiling, median end-to-end rate, median of the turns' ratios).
    """
    ceilings, rates = [], []
    with training_step() as step:
        step()  # its warm-up
        with stopped_binary(work_dir, tempfile.mkdtemp(dir=work_dir)) as binary:
            for _ in range(turns):
                rates.append(binary(seconds))
                step()  # the caches the binary had
                ceilings.append(rate_for(step, seconds))
    median = statistics.median
    return median(ceilings), median(rates), median_of_ratios("(b)/(a)", rates, ceilings)


@contextlib.contextmanager
def stopped_binary(work_dir, train_dir, *flags_, log_frequency=5):
    """cifar10_train.py in a child process, run past its first steps (its
    queue filled, its graph warm) and stopped (SIGSTOP).

    Yields:
      A function that resumes it (SIGCONT) for about this many seconds,
      stops it again, and returns its examples/sec within that turn, from
      its own log lines (their times and steps): the pauses never count.
    """
    binary = procs.Process(
        "cifar10_train.py",
        "--data_dir=%s" % os.path.join(work_dir, "data"),
        "--train_dir=%s" % train_dir,
        "--max_steps=100000",  # more than the turns reach; killed when done
        "--log_frequency=%d" % log_frequency,
        "--batch_size=%d" % FLAGS.batch_size,
        *flags_,
        log_path=train_dir + ".log",
        # Killed with this process, even stopped, whatever ends it.
        prefix=("setpriv", "--pdeathsig", "KILL") if shutil.which("setpriv") else (),
    )

    def turn(seconds):
        binary.send_signal(signal.SIGCONT)
        start = datetime.datetime.now()
        time.sleep(seconds)
        (t0, n0), *_, (t1, n1) = binary.wait_until(
            lambda out: _two_or_more_lines(out, start)
        )
        binary.send_signal(signal.SIGSTOP)
        return (n1 - n0) * FLAGS.batch_size / (t1 - t0).total_seconds()

    try:
        binary.wait_until(lambda out: len(LOG_STEP.findall(out)) >= 4)
        binary.send_signal(signal.SIGSTOP)
        yield turn
    finally:
        binary.stop()  # SIGKILL, stopped or not


def _two_or_more_lines(out, start):
    """(time, step) of the log lines in out logged after start, if two or
    more; None if fewer."""
    lines = [
        (datetime.datetime.fromisoformat(when), int(step))
        for when, step in LOG_STEP.findall(out)
    ]
    lines = [(when, step) for when, step in lines if when > start]
    return lines if len(lines) >= 2 else None


def steps_in_turns(steps, turns, rate):
    """Each named step function measured by rate(step) (examples/sec), in
    turns: a slow spell of a shared machine falls on all of them.

    Returns:
      {name: [its rate in each turn]}.
    """
    rates = {name: [] for name in steps}
    for _ in range(turns):
        for name, step in steps.items():
            step()  # the caches the one before had
            rates[name].append(rate(step))
    return rates


def median_of_ratios(name, numerators, denominators):
    """The median of the turns' ratios, which it prints."""
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    print(
        "    turns' %s: %s" % (name, " ".join("%.3f" % r for r in ratios)), flush=True
    )
    return statistics.median(ratios)


def rate_for(step, seconds):
    """Examples/sec of step() run for about this many seconds."""
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        runs += 1
    return runs * FLAGS.batch_size / (time.perf_counter() - start)


def measure_eval(work_dir, train_dir, windows, steps):
    """(d)."""
    print("(d) eval pipeline beside the forward ceiling ...", flush=True)
    figures = eval_pipeline_and_ceiling(2 * windows, steps)
    print("(d) cifar10_eval.py ...", flush=True)
    figures["eval_end_to_end"] = evaluation(work_dir, train_dir)
    return figures


def measure_scaling(work_dir, train_steps):
    """(g) and (h)."""
    figures = {}
    print("(g) multi-GPU binary, 1 and 2 towers on CPU ...", flush=True)
    for towers in (1, 2):
        rate, _, _, _ = end_to_end(
            "cifar10_multi_gpu_train.py", work_dir, "towers%d" % towers,
            train_steps // towers, 2, "--num_gpus=%d" % towers,
        )  # fmt: skip
        figures["multi_gpu_%d" % towers] = rate
    print("(h) cluster on this machine: 1 ps + 1 or 2 workers ...", flush=True)
    figures["cluster_1"] = on_cluster(work_dir, "cluster1", 1, train_steps)
    figures["cluster_2"] = on_cluster(work_dir, "cluster2", 2, train_steps)
    figures["cluster_2_sync"] = on_cluster(
        work_dir, "cluster2sync", 2, train_steps // 2, "--sync_replicas"
    )
    return figures


def measure_hosts(work_dir, train_steps):
    """(n): the settings of HOST_SETTINGS, one after another."""
    from harness import hosts  # noqa: PLC0415  (the other groups run without root)

    why_not = hosts.usable()
    if why_not:
        print("(n) skipped: %s." % why_not, flush=True)
        return {}
    # The weights' size, from the model itself.
    with tf.Graph().as_default():
        cifar10.inference(tf.zeros([1, 24, 24, 3]))
        weights = sum(
            v.shape.num_elements() * v.dtype.size
            for v in tf.compat.v1.trainable_variables()
        )
    figures = {"weights_bytes": weights}
    # Noise rather than the learnable data: speed is the same, and three
    # asynchronous workers at the tutorial's learning rate can diverge on the
    # learnable colours within their first 100 steps (a run did, at step 53).
    noise = os.path.join(work_dir, "noise")
    if not os.path.exists(noise):
        fake_cifar.write_dataset(
            noise, records_per_file=10000, test_records=10000, learnable=False
        )
    first = {}
    for key, num_workers, cores, rate_mbit, flags_ in HOST_SETTINGS:
        print("(n) hosts: %s ..." % HOST_NAMES[key], flush=True)
        figures.update(
            on_hosts(work_dir, key, num_workers, cores, rate_mbit, train_steps, *flags_)
        )
        figures[key + "_bytes_ratio"] = figures[key + "_bytes_per_step"] / weights
        base = first.setdefault((cores, rate_mbit), figures[key])
        figures[key + "_speedup"] = figures[key] / base
    figures["hosts_gbit_ratio"] = figures["hosts_1_gbit"] / figures["hosts_1"]
    return figures


def on_hosts(work_dir, name, num_workers, cores, rate_mbit, steps, *flags_):
    """One setting of (n): 1 ps (0.3 core) and num_workers workers.

    Returns:
      Figures under keys that begin with name: the sum over the workers of
      the median of each one's logged rates after its first two lines; the
      mean of their median sec/batch; the mean bytes over a worker's link per
      step of that worker; the parameter server's wait for its CPU quota per
      global step.
    """
    from harness import hosts  # noqa: PLC0415

    log_dir = tempfile.mkdtemp(prefix=name + "-", dir=work_dir)
    with hosts.Hosts() as lab:
        cluster = hosts.TrainingCluster(
            lab,
            num_workers,
            [
                "--data_dir=%s" % os.path.join(work_dir, "noise"),
                "--train_dir=%s" % os.path.join(log_dir, "train"),
                "--max_steps=%d" % steps,
                "--log_frequency=20",
                "--batch_size=%d" % FLAGS.batch_size,
                *flags_,
            ],
            log_dir,
            ps_cpus=0.3,
            worker_cpus=cores,
            rate_mbit=rate_mbit,
        )
        try:
            cluster.start("ps", 0)
            workers = [cluster.start("worker", i) for i in range(num_workers)]
            before = [host.traffic() for host in cluster.workers]
            throttled = cluster.ps.throttled_secs()
            outputs = []
            for worker in workers:
                code, out = worker.finish(patience=3600)
                if code:
                    sys.exit("%s: a worker failed:\n%s" % (name, out[-3000:]))
                outputs.append(out)
            moved = [
                h.traffic() - b for h, b in zip(cluster.workers, before, strict=True)
            ]
            throttled = cluster.ps.throttled_secs() - throttled
        finally:
            cluster.stop_all()
    total, per_step, sec_per_batch = 0.0, [], []
    for out, moved_bytes in zip(outputs, moved, strict=True):
        total += statistics.median(
            [float(m.group(2)) for m in LOG_RATE.finditer(out)][2:]
        )
        sec_per_batch.append(
            statistics.median([float(t) for t in SEC_PER_BATCH.findall(out)][2:])
        )
        own_steps = int(re.search(r"This worker ran (\d+) steps", out).group(1))
        per_step.append(moved_bytes / own_steps)
    last_step = int(re.search(r"Done: step (\d+)", outputs[0]).group(1))
    return {
        name: total,
        name + "_bytes_per_step": statistics.mean(per_step),
        name + "_sec_per_batch": statistics.mean(sec_per_batch),
        # How long the parameter server waited for its CPU quota, per step.
        name + "_ps_throttled_ms": 1000 * throttled / last_step,
    }


def measure_packing(work_dir, windows):
    """(k)."""
    print("(k) writing 60,000 JPEG files, then packing them ...", flush=True)
    image_dir = os.path.join(work_dir, "images")
    files = sorted(
        fake_cifar.write_image_folders(
            image_dir, ["class%d" % i for i in range(10)], 6000, varied=False
        )
    )
    out, rss, seconds = run_measured(
        "cifar10_pack.py",
        "--image_dir=%s" % image_dir,
        "--data_dir=%s" % os.path.join(work_dir, "packed"),
    )
    rate = float(re.search(r"([\d.]+) images/sec\)", out).group(1))
    contents = []
    for path in files[:: len(files) // 5000]:
        with open(path, "rb") as f:
            contents.append(f.read())
    with (
        tf.Graph().as_default(),
        tf.compat.v1.Session() as sess,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        decoders = {
            "decode_rate": cifar10_pack._decoder(sess),
            "decode_fast_rate": _fast_decoder(sess),
        }
        batch = cifar10_pack.BATCH_FILES
        position = [0]

        def run_once(decode):
            # Two batches at once, as the packer decodes them.
            starts = [(position[0] + i * batch) % (len(contents) - batch)
                      for i in range(2)]  # fmt: skip
            list(pool.map(lambda s: decode(contents[s : s + batch]), starts))
            position[0] += 2 * batch

        rates = {key: [] for key in decoders}
        for _ in range(windows):  # interleaved: the machine's speed drifts
            for key, decode in decoders.items():
                rates[key].append(
                    median_rate(lambda d=decode: run_once(d), 2 * batch, 1, 4, 1)
                )
    figures = {key: statistics.median(values) for key, values in rates.items()}
    return {
        "pack_rate": rate,
        "pack_rate_end_to_end": len(files) / seconds,
        **figures,
        "pack_ratio": rate / figures["decode_rate"],
        "accurate_ratio": figures["decode_rate"] / figures["decode_fast_rate"],
        "pack_peak_rss_mb": rss,
        "pack_hostile_peak_rss_mb": _pack_hostile(work_dir),
    }


def _fast_decoder(sess):
    """Decoding and fitting as the packer did before it decoded accurately
    and read EXIF: TensorFlow's default, faster JPEG transform."""
    contents = tf.compat.v1.placeholder(tf.string, [None])

    def decode(data):
        image = tf.io.decode_image(data, 3, expand_animations=False)
        return cifar10_input.fit_images(image[None])[0]

    shape = tf.TensorSpec(cifar10_pack.SHAPE, tf.uint8)
    images = tf.map_fn(decode, contents, fn_output_signature=shape)
    return lambda data: sess.run(images, {contents: data})


def _pack_hostile(work_dir):
    """The packer's peak RSS in MB on a folder of 200 images beside what
    would take memory: a 2 GB video, a 2 GB file named .jpg, a PNG of
    16000x16000 pixels (768 MB decoded) and one of 6000x6000 (108 MB)."""
    print("(k) packing a folder of huge files ...", flush=True)
    image_dir = os.path.join(work_dir, "hostile")
    fake_cifar.write_image_folders(image_dir, ["a", "b"], 100)
    for name in ("a/holiday.mov", "b/huge.jpg"):
        with open(os.path.join(image_dir, name), "wb") as f:
            f.truncate(2 * 2**30)  # sparse
    for name, side in (("a/bomb.png", 16000), ("b/screen.png", 6000)):
        with open(os.path.join(image_dir, name), "wb") as f:
            f.write(fake_cifar.png_of_one_colour(side, side))
    _, rss, _ = run_measured(
        "cifar10_pack.py",
        "--image_dir=%s" % image_dir,
        "--data_dir=%s" % os.path.join(work_dir, "hostile_packed"),
    )
    return rss


# As a binary imports it: with the environment defaults it sets first.
IMPORT_TENSORFLOW = (
    "from support import startup; startup.before_tensorflow(); import tensorflow"
)


def measure_startup(windows):
    """(l): --help against the import of TensorFlow it cannot do without,
    each the median of `windows` runs, taken in turns."""
    commands = {
        "help_secs": [sys.executable, "cifar10_train.py", "--help"],
        "import_tf_secs": [sys.executable, "-c", IMPORT_TENSORFLOW],
    }
    times = {key: [] for key in commands}
    for _ in range(windows):
        for key, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, cwd=procs.ROOT, capture_output=True, check=True)
            times[key].append(time.perf_counter() - start)
    results = {key: statistics.median(values) for key, values in times.items()}
    results["help_ratio"] = results["help_secs"] / results["import_tf_secs"]
    return results


def print_table(results):
    print()
    print("| figure | value |")
    print("|---|---|")
    for name, key, fmt in ROWS:
        value = results.get(key)
        print("| %s | %s |" % (name, "n/a" if value is None else fmt % value))


def main(argv):
    del argv
    windows, steps = (3, 10) if FLAGS.quick else (5, 20)
    train_steps = 200 if FLAGS.quick else 400

    # Removed however the run ends: startup.run() turns Ctrl+C and SIGTERM
    # into a KeyboardInterrupt, which passes through the `finally`.
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="cifar10_bench_")
    try:
        results = measure(work_dir, windows, steps, train_steps)
    finally:
        if not FLAGS.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)  # 400 MB and more
    print_table(results)
    os.makedirs(os.path.dirname(FLAGS.json), exist_ok=True)
    with open(FLAGS.json, "w") as f:
        json.dump(results, f, indent=2)
    print("\nWrote %s" % FLAGS.json)


def measure(work_dir, windows, steps, train_steps):
    """The groups of --only, measured in work_dir."""
    if set(FLAGS.only) - {"packing", "startup", "lrn", "hosts"}:
        print("Writing a full-size fake data set to %s ..." % work_dir, flush=True)
        fake_cifar.write_dataset(
            os.path.join(work_dir, "data"), records_per_file=10000, test_records=10000
        )
    FLAGS.data_dir = os.path.join(work_dir, "data")

    results = {"machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                           "tensorflow": tf.__version__},
               "batch_size": FLAGS.batch_size}  # fmt: skip
    train_dir = None
    if "training" in FLAGS.only:
        figures, train_dir = measure_training(work_dir, windows, steps, train_steps)
        results.update(figures)
    if train_dir is None and {"eval", "using"} & set(FLAGS.only):
        _, _, _, train_dir = end_to_end(
            "cifar10_train.py", work_dir, "train", 50, skip=0
        )
    if "eval" in FLAGS.only:
        results.update(measure_eval(work_dir, train_dir, windows, steps))
    if "scaling" in FLAGS.only:
        results.update(measure_scaling(work_dir, train_steps))
    if "using" in FLAGS.only:
        results.update(measure_using(work_dir, train_dir, windows, steps))
    if "bf16" in FLAGS.only:
        results.update(measure_bf16(work_dir, turns=windows))
    if "packing" in FLAGS.only:
        results.update(measure_packing(work_dir, windows))
    if "startup" in FLAGS.only:
        results.update(measure_startup(windows))
    if "lrn" in FLAGS.only:
        results.update(measure_lrn(windows, steps))
    if "hosts" in FLAGS.only:
        results.update(measure_hosts(work_dir, train_steps))
    results["children_peak_rss_mb"] = (
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    )
    return results


if __name__ == "__main__":
    startup.run(main)
