"""--mixed_precision=bf16 against float32: the training ceilings in turns
in this process, cifar10_train.py in turns with itself in float32 (the
median of the turns' ratios), and cifar10_eval.py in each, one after the
other. Where the processor has no native bfloat16 it is emulated, and its
turns are longer."""

import statistics

from benchmarks import common
from support import bfloat16

ROWS = common.rows("""
native bfloat16 on this processor | native_bf16           | %s
training ceiling, bf16            | bf16_ceiling          | %.0f examples/sec
    bf16/float32                  | bf16_ceiling_ratio    | %.3f
cifar10_train.py end to end, bf16 | bf16_end_to_end       | %.0f examples/sec
    bf16/float32                  | bf16_end_to_end_ratio | %.3f
cifar10_eval.py, bf16             | bf16_eval             | %.0f images/sec
    bf16/float32                  | bf16_eval_ratio       | %.3f
""")


def measure(run):
    native = bfloat16.native()
    print(
        "bfloat16: this processor %s native bfloat16 (avx512_bf16, amx_bf16) ..."
        % {True: "has", False: "has no", None: "may or may not have"}[native],
        flush=True,
    )
    # Emulated, a step takes several times longer: a line every step, and
    # turns long enough for a few.
    seconds, log_frequency = (1, 5) if native else (2, 1)
    seconds *= run.size.seconds
    turns = run.size.windows
    with (
        common.training_step(run.size.batch_size, "off") as float32,
        common.training_step(run.size.batch_size, "bf16") as bf16,
    ):
        ceilings = common.steps_in_turns(
            {"off": float32, "bf16": bf16},
            turns,
            lambda step: common.rate_for(step, seconds, run.size.batch_size),
        )
    rates = {"off": [], "bf16": []}
    train_dir = run.folder("train-bf16")
    with (
        common.stopped_binary(
            run, run.folder("train-float32"), "--mixed_precision=off",
            log_frequency=log_frequency,
        ) as float32,
        common.stopped_binary(
            run, train_dir, "--mixed_precision=bf16", log_frequency=log_frequency
        ) as bf16,
    ):  # fmt: skip
        for _ in range(turns):
            rates["off"].append(float32.turn(seconds))
            rates["bf16"].append(bf16.turn(seconds))
    # Its first checkpoint, which the killed bf16 run left.
    evals = {
        mixed_precision: common.evaluation(
            run, train_dir, "--mixed_precision=" + mixed_precision
        )
        for mixed_precision in ("off", "bf16")
    }
    return {
        "native_bf16": {True: "yes", False: "no: emulated", None: "unknown"}[native],
        "bf16_ceiling": statistics.median(ceilings["bf16"]),
        "bf16_ceiling_ratio": common.median_of_ratios(
            "bf16/float32, ceiling", ceilings["bf16"], ceilings["off"]
        ),
        "bf16_end_to_end": statistics.median(rates["bf16"]),
        "bf16_end_to_end_ratio": common.median_of_ratios(
            "bf16/float32, end to end", rates["bf16"], rates["off"]
        ),
        "bf16_eval": evals["bf16"],
        "bf16_eval_ratio": evals["bf16"] / evals["off"],
    }
