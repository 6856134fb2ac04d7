"""Training: the training graph fed from a batch in memory (its ceiling)
against cifar10_train.py end to end, in turns; the time the binary's queue
took to fill, and its peak memory; the input pipeline alone.

In turns: cifar10_train.py runs for some seconds, then is stopped (SIGSTOP)
while the ceiling runs in this process for as long. The machine's speed
drifts by a fifth within minutes; in turns, a slow spell falls on both, and
the ratio is the median of the turns' ratios.
"""

import statistics

import tensorflow as tf

import cifar10_input
from benchmarks import common
from harness.sessions import queue_session

ROWS = common.rows("""
training ceiling, batch in memory      | train_ceiling     | %.0f examples/sec
cifar10_train.py end to end            | train_end_to_end  | %.0f examples/sec
    end to end / ceiling               | train_ratio       | %.3f
queue filling, from the binary's start | queue_fill_secs   | %.1f s
peak RSS, cifar10_train.py             | train_peak_rss_mb | %.0f MB
distorted_inputs alone                 | input_pipeline    | %.0f images/sec
""")


def measure(run):
    print("training ceiling and cifar10_train.py, in turns ...", flush=True)
    train_dir = run.folder("train")
    figures = in_turns(run, train_dir, 2 * run.size.windows)
    run.checkpoint_dir = train_dir  # its first checkpoint, for other groups
    print("the input pipeline alone ...", flush=True)
    figures["input_pipeline"] = input_pipeline(run)
    return figures


def in_turns(run, train_dir, turns):
    """The ceiling and cifar10_train.py in turns: their median rates, the
    median of the turns' ratios, and the binary's queue filling and peak
    memory."""
    ceilings, rates = [], []
    seconds = run.size.seconds
    with common.training_step(run.size.batch_size) as step:
        step()  # its warm-up
        with common.stopped_binary(run, train_dir) as binary:
            for _ in range(turns):
                rates.append(binary.turn(seconds))
                step()  # the caches the binary had
                ceilings.append(common.rate_for(step, seconds, run.size.batch_size))
            filled = common.QUEUE_FILLED.search(binary.output()).group(1)
            peak = common.peak_rss_mb(binary.proc.pid)
    return {
        "train_ceiling": statistics.median(ceilings),
        "train_end_to_end": statistics.median(rates),
        "train_ratio": common.median_of_ratios("end to end / ceiling", rates, ceilings),
        "queue_fill_secs": float(filled),
        "train_peak_rss_mb": peak,
    }


def input_pipeline(run):
    """distorted_inputs() batches with no model, after its queue has filled."""
    with tf.Graph().as_default():
        images, labels = cifar10_input.distorted_inputs(
            run.data_folder(), run.size.batch_size
        )
        with queue_session() as sess:
            return common.median_rate(
                lambda: sess.run([images, labels]),
                run.size.batch_size,
                run.size.windows,
                run.size.steps,
                warmup=2,
            )
