"""The speed of the binaries, each figure against another measured in the
same run (a ceiling, or the same work done otherwise).

    python -m benchmarks                        # every group but hosts
    python -m benchmarks training evaluation    # some groups
    python -m benchmarks --quick                # fewer and shorter windows

Each group is a module of this package, with the rows of its table beside
the code that measures them:

  training     the training graph fed from memory (its ceiling) against
               cifar10_train.py end to end, in turns; the input pipeline
               alone; the queue's filling; the peak memory
  evaluation   the forward pass fed by the eval pipeline against the same
               fed from memory; the confusion matrix's cost; cifar10_eval.py
  scaling      cifar10_multi_gpu_train.py with 1 and 2 towers; a cluster on
               this machine with 1 and 2 workers, asynchronous and sync
  using        cifar10_classify.py on PNG files; the exported SavedModel
  bf16         --mixed_precision=bf16 against float32: the ceiling, training
               end to end and evaluation
  packing      cifar10_pack.py against decoding alone; its peak memory, on
               small files and on huge ones
  startup      cifar10_train.py --help against importing TensorFlow
  lrn          the model's LRN layers: TensorFlow's kernels and cifar10.lrn()
  hosts        the cluster on hosts of its own (harness/hosts.py), with CPU
               quotas and slower links; needs root, and runs only when named

The machine is shared and noisy, so each speed is a ratio of two rates
measured in the same run, mostly in turns (one runs while the other waits),
and each rate the median of several windows after a warm-up. A table goes to
stdout, and every figure to --json. It writes its own data sets, so it runs
offline. Importing this package loads nothing.
"""

# In the order they run; hosts only when named.
GROUPS = [
    "training",
    "evaluation",
    "scaling",
    "using",
    "bf16",
    "packing",
    "startup",
    "lrn",
    "hosts",
]
DEFAULT_GROUPS = [group for group in GROUPS if group != "hosts"]
