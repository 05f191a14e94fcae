"""Model loading and hashing speed: tiny single file cold vs warm registry, hash GB/s cold vs warm index.

Usage: python bench/model_load.py [--hash-mb 256]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_registry(work: Path) -> None:
    import tiny_models
    from sdbake.runner.models.registry import ModelRegistry, ModelSpec
    model_dir = tiny_models.save_tiny_model_dir(work / "tiny")
    single = tiny_models.save_tiny_single_file(work / "tiny.safetensors")
    registry = ModelRegistry()
    spec = ModelSpec(single, config=model_dir)
    registry.get(ModelSpec(model_dir))                 # pays the one-time diffusers/transformers imports
    _, cold_s = timed(lambda: registry.get(spec))
    _, warm_s = timed(lambda: registry.get(spec))
    print(f"tiny single file load: cold {cold_s * 1000:.1f} ms, warm registry {warm_s * 1000:.3f} ms")


def bench_hashing(work: Path, size_mb: int) -> None:
    from sdbake.runner.models import hashing
    path = work / "big.bin"
    chunk = os.urandom(1024 * 1024)
    with open(path, "wb") as f:
        f.writelines(chunk for _ in range(size_mb))
    gigabytes = size_mb / 1024
    _, cold_s = timed(lambda: hashing.sha256_file(path))
    _, warm_s = timed(lambda: hashing.sha256_file(path))
    print(f"hash {size_mb} MB: index cold {cold_s / gigabytes:.2f} s/GB ({gigabytes / cold_s:.2f} GB/s), "
          f"index warm {warm_s * 1000:.2f} ms (size-independent)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hash-mb", type=int, default=256)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["SDBAKE_HASH_INDEX"] = str(work / "hash-index.json")
        bench_registry(work)
        bench_hashing(work, args.hash_mb)


if __name__ == "__main__":
    main()
