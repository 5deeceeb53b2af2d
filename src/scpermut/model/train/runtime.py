"""Where and how reproducibly TensorFlow runs: device choice, precision, seeds and op determinism."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

import keras
import tensorflow as tf

from scpermut.errors import InputError
from scpermut.options import DEVICES

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TensorFlow ops deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    # Grappler's graph rewrites run under time budgets: on a busy machine two traces of the
    # same step can be fused differently and round differently. Off, so a seed fixes every bit.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


def select_device(device: str, mixed_precision: bool) -> str:
    """Pick the device TensorFlow will use and return a description of it.

    Must run before TensorFlow touches a GPU. Mixed precision is only used on a GPU.
    """
    if device not in DEVICES:
        raise InputError(f"`device` must be one of {', '.join(DEVICES)}, not '{device}'.")
    gpus = tf.config.list_physical_devices("GPU")
    if device == "gpu" and not gpus:
        raise InputError(
            "`device=gpu`: TensorFlow sees no GPU on this machine; use `device=cpu` or `device=auto`."
        )
    if device == "cpu" or not gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # TensorFlow already started in this process (e.g. a notebook)
            log.warning("TensorFlow is already initialised: the GPU cannot be hidden any more")
        if mixed_precision:
            log.warning("mixed_precision is ignored on the CPU")
        keras.mixed_precision.set_global_policy("float32")
        return "cpu"
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    return describe_device()


def describe_device() -> str:
    """``"cpu"`` or ``"gpu (<name>)"``: where TensorFlow runs the model now."""
    gpus = tf.config.get_visible_devices("GPU")
    if not gpus:
        return "cpu"
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
    precision = (
        ", mixed precision" if keras.mixed_precision.global_policy().name == "mixed_float16" else ""
    )
    return f"gpu ({name}{precision})"


# Instruction-set extensions that change which float kernels TensorFlow and numpy's BLAS run.
_ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "asimd", "sve",
)


def _cpu_info() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return {}
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


def platform_record() -> dict:
    """What decides whether two runs can be bit-identical: CPU, instruction set, TensorFlow build.

    Same data and seed give bit-identical results on machines with the same ``cpu_kind`` and the
    same TensorFlow build; across CPU kinds the float kernels round differently, so results agree
    only within a tolerance (README, "Reproducibility").
    """
    info = _cpu_info()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    isa = [flag for flag in _ISA_FLAGS if flag in flags]
    vendor = info.get("vendor_id") or info.get("CPU implementer") or platform.processor() or "unknown"
    model = info.get("model name") or info.get("CPU part") or platform.machine()
    build = {key: value if isinstance(value, bool) else str(value) for key, value in tf.sysconfig.get_build_info().items()}
    return {
        "cpu_kind": f"{vendor} {model} [{' '.join(isa) or 'no extension listed'}]",
        "cpu_vendor": vendor,
        "cpu_model": model,
        "instruction_set": isa,
        "machine": platform.machine(),
        "os": platform.platform(),
        "cpu_count": os.cpu_count(),
        "tensorflow_build": {"version": tf.__version__, "git_version": tf.version.GIT_VERSION, **build},
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
    }
