"""Inference precision: float32, or bfloat16 (Keras' ``mixed_bfloat16`` policy) where the hardware has it.

``auto`` picks bfloat16 where the device that runs the model computes it natively, float32 elsewhere:

- a GPU that TensorFlow uses (looked for only where an NVIDIA driver is loaded, as TensorFlow's import costs
  seconds): bfloat16 from compute capability 8.0 (Ampere) on;
- otherwise the CPU: its ``amx_bf16`` or ``avx512_bf16`` flag (``/proc/cpuinfo``), with oneDNN on (TensorFlow's
  default on x86; ``TF_ENABLE_ONEDNN_OPTS=0`` turns it off, and bfloat16 then runs emulated, slower than float32).

bfloat16 runs the convolutions and fully connected layers on bfloat16 activations (weights kept in float32, cast
per call; oneDNN accumulates in float32); LRN, pooling and the L2 normalisation stay float32, and vectors come out
float32. They agree with float32 ones to cosine >= 0.9999, so datasets of either precision are compatible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from extractor.errors import AlexfeatError

PRECISIONS = ("auto", "float32", "bfloat16")
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
"""Keras dtype policy of the network's convolution and fully connected layers per precision."""
PRECISION_HELP = (
    "Inference precision. auto: bfloat16 where the processor computes it natively (CPU flag avx512_bf16 or amx_bf16, "
    "or a GPU from compute capability 8.0), else float32. Both give compatible vectors (cosine >= 0.9999)."
)
"""The ``--precision`` help of every command that runs the network."""
CPU_FLAGS = ("amx_bf16", "avx512_bf16")
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


@dataclass(frozen=True)
class Precision:
    """A resolved precision (``float32`` or ``bfloat16``) and why it was chosen, for the job summary."""

    name: str
    reason: str

    @property
    def policy(self) -> str:
        return POLICIES[self.name]

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def cpu_bfloat16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The CPU's native bfloat16 flags among ``CPU_FLAGS`` (none where the file is missing: not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [flag for flag in CPU_FLAGS if flag in flags]


def onednn_enabled() -> bool:
    """Whether TensorFlow runs CPU ops through oneDNN (unless ``TF_ENABLE_ONEDNN_OPTS`` turns it off)."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false", "off", "no")


def gpu_bfloat16() -> tuple[bool, str] | None:
    """``(has bfloat16, description)`` of the GPU TensorFlow would run the model on; ``None`` without one.

    Imports TensorFlow only where an NVIDIA driver is loaded."""
    if not NVIDIA_GPUS.is_dir() or not any(NVIDIA_GPUS.iterdir()):
        return None
    from extractor.network.tf_runtime import import_tensorflow

    tf = import_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = tuple(details.get("compute_capability") or (0, 0))
    name = f"{details.get('device_name', 'GPU')} (compute capability {'.'.join(map(str, capability))})"
    return capability >= (8, 0), name


def native_bfloat16(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[bool, str]:
    """Whether the device that runs the model computes bfloat16 natively, and a short description of why."""
    gpu = gpu_bfloat16()
    if gpu is not None:
        has, name = gpu
        return has, f"GPU {name}" + ("" if has else " has no bfloat16")
    flags = cpu_bfloat16_flags(cpuinfo)
    if not flags:
        return False, "no bfloat16 on this CPU"
    if not onednn_enabled():
        return False, f"CPU has {'/'.join(flags)} but TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off"
    return True, f"CPU has {'/'.join(flags)}"


def resolve_precision(precision: str = "auto", cpuinfo: str | Path = "/proc/cpuinfo") -> Precision:
    """``auto``, ``float32`` or ``bfloat16`` → the precision to run, with the reason (``auto``: the hardware)."""
    if precision not in PRECISIONS:
        raise AlexfeatError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return Precision(precision, "asked for")
    has, why = native_bfloat16(cpuinfo)
    if precision == "bfloat16":
        return Precision(precision, "asked for" if has else f"asked for; {why}: emulated, slower than float32")
    return Precision("bfloat16" if has else "float32", f"auto: {why}")
