"""The numeric precision a model computes in: float32, or bfloat16 with float32 outputs and losses.

`precision="auto"` picks bfloat16 only where it is native and measured faster: on a CPU with AMX or
AVX-512 bfloat16 instructions, or GPUs of compute capability 8.0 and later, for the VGG-style CNN
(FACTS.md: 4x faster training, 9x faster prediction on this machine's CPU; EfficientNetB0 predicts
slower in it). Building a model never changes Keras' global dtype policy for the rest of the process.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path

import zoobot._tf  # noqa: F401  (first: TensorFlow without its start-up lines)
import keras

FEATURES_LAYER = "features"  # the trunk's last layer (zoobot.model.network): its dtype is the model's precision
PRECISIONS = ("auto", "float32", "bfloat16")
# CPU flags (as /proc/cpuinfo spells them) of instructions that run bfloat16 natively; oneDNN uses
# them at run time. Without them bfloat16 is emulated, and slower than float32.
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
BF16_GPU_MIN_COMPUTE_CAPABILITY = (8, 0)  # Ampere and later
# Where "auto" picks bfloat16: measured faster (FACTS.md: the VGG-style CNN trains 4x and predicts 9x
# faster on an AMX CPU; EfficientNetB0 predicts slower, its depthwise convolutions do not gain).
BF16_FAST_ARCHITECTURES = ("vgg",)
KERAS_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def resolve_precision(precision: str, architecture: str, flags=frozenset(),
                      gpu_compute_capabilities=()) -> str:
    """What `precision` ("auto", "float32" or "bfloat16") means on this hardware: "float32" or "bfloat16".

    "auto" is bfloat16 only when the device that will run the model does bfloat16 natively and the
    architecture is measured faster in it. With a GPU visible, TensorFlow runs there, so the GPUs'
    compute capabilities decide; otherwise the CPU's `flags` (see cpu_flags) do.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}; found {precision!r}.")
    if precision != "auto":
        return precision
    return "bfloat16" if architecture in BF16_FAST_ARCHITECTURES and _native_bf16(
        flags, gpu_compute_capabilities) else "float32"


def _native_bf16(flags, gpu_compute_capabilities) -> bool:
    if gpu_compute_capabilities:
        return all(tuple(cc) >= BF16_GPU_MIN_COMPUTE_CAPABILITY for cc in gpu_compute_capabilities)
    return bool(BF16_CPU_FLAGS & set(flags))


def cpu_flags(cpuinfo: str) -> frozenset:
    """The instruction-set flags of /proc/cpuinfo's text (its "flags : ..." lines)."""
    return frozenset(word for line in cpuinfo.splitlines() if line.split(":")[0].strip() == "flags"
                     for word in line.partition(":")[2].split())


@functools.lru_cache(maxsize=1)
def detect_hardware() -> tuple[frozenset, tuple]:
    """(the CPU's flags from /proc/cpuinfo, empty where there is none; the compute capability of each
    visible GPU) -- what resolve_precision decides by."""
    try:
        flags = cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        flags = frozenset()
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        capabilities.append(tuple(capability) if capability else (0, 0))
    return flags, tuple(capabilities)


def config_precision(config) -> str:
    """`config`: a ModelConfig."""
    # the precision a model of `config` is built in on this machine: "float32" or "bfloat16"
    return resolve_precision(config.precision, config.architecture, *detect_hardware())


def model_precision(model: keras.Model) -> str:
    """The precision a built or loaded model's trunk computes in: "float32" or "bfloat16"."""
    compute = model.get_layer(FEATURES_LAYER).dtype_policy.compute_dtype
    return "bfloat16" if compute == "bfloat16" else "float32"


@contextlib.contextmanager
def global_policy(policy: str):
    """Keras' global dtype policy set to `policy` inside the block only (for keras.applications models,
    which take no dtype argument). Keras keeps the policy per thread, so other threads are unaffected."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def checked_precision(config) -> str:
    """config_precision, warning when bfloat16 was asked for on hardware that only emulates it."""
    precision = config_precision(config)
    if precision == "bfloat16" and not _native_bf16(*detect_hardware()):
        warnings.warn(
            "precision='bfloat16' on hardware without native bfloat16 (no amx_bf16/avx512_bf16 CPU flag, no GPU "
            "of compute capability >= 8.0): TensorFlow emulates it, usually slower than float32. Use "
            "precision='auto' to choose by the hardware.", stacklevel=3)
    return precision
