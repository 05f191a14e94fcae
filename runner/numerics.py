"""Device, dtype and thread choices, and the numerics fingerprint, decided without importing torch
(a cached run must not)."""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sdbake.runner.versions import package_version

# Attention runs through diffusers' default processor, i.e. torch's scaled_dot_product_attention.
ATTENTION_BACKEND = "sdpa"
# Environment variables that cap the vector ISA of oneDNN (convolutions) and MKL (matmuls): other
# kernels, other last bits, whatever ATen's own capability is.
KERNEL_ISA_VARIABLES = {"ONEDNN_MAX_CPU_ISA": "onednn_isa", "MKL_ENABLE_INSTRUCTIONS": "mkl_isa"}


def torch_version() -> str:
    return package_version("torch")


def default_device() -> str:
    # A CPU build of torch says so in its version ("2.13.0+cpu"); a CUDA build needs the NVIDIA driver.
    if os.environ.get("SDBAKE_DEVICE"):
        return os.environ["SDBAKE_DEVICE"]
    if "+cpu" in torch_version() or not Path("/proc/driver/nvidia").exists():
        return "cpu"
    return "cuda"


def default_threads() -> int:
    env = os.environ.get("SDBAKE_THREADS")
    return int(env) if env and env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[frozenset[str], str]:
    """The CPU's feature flags and model name from /proc/cpuinfo (empty where there is none)."""
    flags: frozenset[str] = frozenset()
    model = ""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return flags, platform.processor()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and not flags:
            flags = frozenset(value.split())
        elif key == "model name" and not model:
            model = value.strip()
    return flags, model or platform.processor()


def cpu_capability() -> str:
    """The vector ISA ATen dispatches to, as torch.backends.cpu.get_cpu_capability() will report it,
    predicted without importing torch.

    torch reads ATEN_CPU_CAPABILITY first ("avx512", "avx2", "default"; exact lower-case, anything else is
    ignored), then picks AVX512 when the CPU has AVX-512 VL, BW, DQ and FMA3, AVX2 when it has AVX2 and
    FMA3, else DEFAULT (aten/src/ATen/native/DispatchStub.cpp). Other architectures: the machine name.
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return platform.machine().lower() or "unknown"
    forced = {"avx512": "AVX512", "avx2": "AVX2", "default": "DEFAULT"}.get(os.environ.get("ATEN_CPU_CAPABILITY", ""))
    if forced:
        return forced
    flags, _model = _cpuinfo()
    if {"avx512vl", "avx512bw", "avx512dq", "fma"} <= flags:
        return "AVX512"
    if {"avx2", "fma"} <= flags:
        return "AVX2"
    return "DEFAULT"


def gpu_name() -> str:
    """The NVIDIA GPU model(s) the driver lists, read from /proc (no torch, no CUDA call)."""
    names = set()
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("Model:"):
                    names.add(line.split(":", 1)[1].strip())
        except OSError:
            continue
    return " + ".join(sorted(names)) or "unknown"


@dataclass(frozen=True)
class Numerics:
    device: str
    dtype: str               # "float32" | "float16" | "bfloat16"
    threads: int
    compile: bool = False
    vae_fp32: bool = False   # --no-half-vae: every VAE encode and decode in float32 on fp16/bf16 runs
    channels_last: bool = False

    @classmethod
    def choose(cls, device: str | None = None, dtype: str | None = None, threads: int | None = None,
               compile: bool = False, vae_fp32: bool = False, channels_last: bool = False) -> Numerics:
        device = device or default_device()
        dtype = dtype or ("float16" if device.startswith("cuda") else "float32")
        aliases = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
        return cls(device, aliases.get(dtype, dtype), threads or default_threads(), compile, vae_fp32, channels_last)

    def fingerprint(self) -> dict:
        """What can change the bits of a result: enters every compute stage's cache key."""
        major_minor = ".".join(torch_version().split("+")[0].split(".")[:2])
        on_cpu = self.device == "cpu"
        fingerprint = {"device": self.device.split(":")[0], "dtype": self.dtype, "torch": major_minor,
                       "threads": self.threads if on_cpu else None, "compile": self.compile,
                       "attention": ATTENTION_BACKEND}
        if on_cpu:
            fingerprint["cpu"] = cpu_capability()
            for variable, name in KERNEL_ISA_VARIABLES.items():
                if os.environ.get(variable):
                    fingerprint[name] = os.environ[variable]
        elif self.device.startswith("cuda"):
            fingerprint["gpu"] = gpu_name()
        if self.vae_fp32 and self.dtype != "float32":      # only then does it change a result
            fingerprint["vae_fp32"] = True
        if self.channels_last:                              # other kernels: other rounding
            fingerprint["channels_last"] = True
        return fingerprint

    def machine_fingerprint(self) -> dict:
        """The cache-key fingerprint plus what names the machine exactly (CPU model, torch build): goldens
        record it, and `check` compares bit for bit only when it is equal."""
        described = {k: v for k, v in self.fingerprint().items() if v is not None}
        described["torch"] = torch_version()
        if self.device == "cpu":
            described["cpu_model"] = _cpuinfo()[1] or "unknown"
        return described
