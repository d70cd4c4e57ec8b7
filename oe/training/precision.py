"""Training precision on a CPU, checked before the Trainer is built.

``bf16-mixed`` on a CPU autocasts matrix products to bfloat16 and keeps everything else fp32:
the parameters and their AdamW state (so the n-gram table rows and their updates are exact fp32),
the embeddings' lookups, layer norms, the softmax of attention (the CPU's packed attention,
``oe.models.cpu_attention``, takes scores from bf16 products and normalises them in fp32) and
the loss. It pays only on a CPU that computes bfloat16 natively
(AVX512-BF16 or AMX on x86, the BF16 extension on Arm); elsewhere oneDNN emulates it, slower than
fp32, which is said once (never a silent switch to fp32). Lightning would turn ``16-mixed`` into
bf16 on a CPU by itself; that is refused, naming the field, so a config means what it says.
"""

from __future__ import annotations

import platform
import subprocess
import warnings
from pathlib import Path

import torch

# /proc/cpuinfo flags (Linux) of native bfloat16 arithmetic: x86 AVX512-BF16 and AMX, Arm BF16.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
FLOAT16_PRECISIONS = {"16", "16-mixed"}
BF16_PRECISIONS = {"bf16", "bf16-mixed"}


class EmulatedBF16Warning(UserWarning):
    """bf16-mixed on a CPU without native bfloat16: it runs, slower than fp32."""


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags, or None where this system does not say."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags: set[str] = set()
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):  # x86, Arm
                flags.update(value.split())
        return frozenset(flags)
    if platform.system() == "Darwin":
        try:
            answer = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"],
                                    capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
        return frozenset({"bf16"}) if answer == "1" else frozenset()
    return None


def trains_on_cpu(accelerator: object) -> bool:
    """Whether a Trainer with this ``trainer.accelerator`` setting would run on the CPU."""
    if accelerator is None or accelerator == "auto":
        mps = getattr(torch.backends, "mps", None)
        return not (torch.cuda.is_available() or (mps is not None and mps.is_available()))
    if isinstance(accelerator, str):
        return accelerator == "cpu"
    from lightning.pytorch.accelerators import CPUAccelerator

    return isinstance(accelerator, CPUAccelerator)


def check_precision(precision: object, accelerator: object,
                    flags: frozenset[str] | None = None) -> None:
    """Refuse float16 on a CPU; warn once when bf16 there is emulated. ``flags``: the CPU's
    feature flags (default: read from the system)."""
    if not trains_on_cpu(accelerator):
        return
    value = str(precision)
    if value in FLOAT16_PRECISIONS:
        raise ValueError(
            f"trainer.precision is {value}, but this run trains on the CPU, where float16 "
            f"autocast is not supported (Lightning would quietly run bf16 instead); use "
            f"bf16-mixed (on a CPU with AVX512-BF16, AMX or Arm BF16) or 32-true")
    if value in BF16_PRECISIONS:
        flags = cpu_flags() if flags is None else flags
        if flags is None:
            warnings.warn(f"trainer.precision is {value}: this system does not say whether its "
                          f"CPU computes bfloat16 natively; without it bf16 runs emulated, "
                          f"slower than 32-true", EmulatedBF16Warning, stacklevel=2)
        elif not flags & NATIVE_BF16_FLAGS:
            warnings.warn(f"trainer.precision is {value}, but this CPU has no native bfloat16 "
                          f"(no AVX512-BF16, AMX or Arm BF16 flag): it runs emulated, slower "
                          f"than 32-true", EmulatedBF16Warning, stacklevel=2)
