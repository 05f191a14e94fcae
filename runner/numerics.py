"""Device, dtype and thread choices, decided without importing torch (a cached run must not)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


@lru_cache(maxsize=1)
def torch_version() -> str:
    try:
        return version("torch")
    except PackageNotFoundError:
        return "none"


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
        print_threads = self.threads if self.device == "cpu" else None
        fingerprint = {"device": self.device.split(":")[0], "dtype": self.dtype, "torch": major_minor,
                       "threads": print_threads, "compile": self.compile}
        if self.vae_fp32 and self.dtype != "float32":      # only then does it change a result
            fingerprint["vae_fp32"] = True
        if self.channels_last:                              # other kernels: other rounding
            fingerprint["channels_last"] = True
        return fingerprint
