"""Whether this processor computes bfloat16 itself.

    if bfloat16.native() is False:
        ...                          # emulated: slower than float32

TensorFlow's oneDNN bfloat16 rewrite runs on any x86 processor, but only
those with avx512_bf16 or amx_bf16 compute bfloat16 natively; elsewhere
oneDNN emulates it.
"""

import functools
import re

# The processor flags that mean native bfloat16.
NATIVE_FLAGS = ("avx512_bf16", "amx_bf16")


def native(cpuinfo="/proc/cpuinfo"):
    """Whether the processor computes bfloat16 itself.

    Args:
      cpuinfo: the file that lists the processor's flags (Linux's).

    Returns:
      True or False; None when the flags cannot be read.
    """
    try:
        with open(cpuinfo) as f:
            flags = set(re.findall(r"^flags\s*:(.*)$", f.read(), re.M)[0].split())
    except (OSError, IndexError):
        return None
    return not flags.isdisjoint(NATIVE_FLAGS)


@functools.cache  # once a process
def say_if_emulated(option):
    """Prints a note when bfloat16 is emulated here.

    Args:
      option: what the user chose that computes in bfloat16, for the note
        (e.g. "--mixed_precision=bf16").
    """
    if native() is False:
        print(
            "Note: this processor has no native bfloat16 (%s): %s is emulated "
            "here, and slower than float32." % (" or ".join(NATIVE_FLAGS), option),
            flush=True,
        )
