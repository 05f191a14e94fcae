"""Images/s of a seed sweep: batched points vs unbatched vs A1111-style sequential (issue 21).

- sequential: every point rendered alone from scratch, one after another, nothing shared (what
  A1111's X/Y/Z plot does: each cell is a full generation).
- unbatched: the local executor over the sweep's stage graph, one sampling call per point.
- batched:   the same with --max-batch points per sampling call (each image keeps its own noise).

Each mode starts from an empty cache; models are loaded once before timing (they stay resident, as
in a worker). Prints images/s per mode, the batched/unbatched ratio, and whether the batched images
have the same pixels as the unbatched ones.

Usage: python bench/sweep.py [--model demo|tiny|PATH] [--points 16] [--steps 20] [--size 64]
                             [--max-batch 16] [--device cpu|cuda] [--threads N] [--repeats 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def model_folder(name: str, scratch: Path) -> Path:
    if name == "demo":
        return ROOT / "models" / "demo"
    if name == "tiny":
        import tiny_models
        return tiny_models.save_tiny_model_dir(scratch / "tiny-sd1")
    return Path(name).resolve()


def pixels(root: Path) -> dict[str, bytes]:
    from PIL import Image
    found = {}
    for path in sorted(root.rglob("*.png")):
        if "-grid" not in path.name:
            with Image.open(path) as image:
                found[path.relative_to(root).as_posix()] = image.convert("RGB").tobytes()
    return found


def timed(mode: str, recipe: Path, scratch: Path, args) -> tuple[float, float, Path]:
    """(wall seconds, CPU seconds of this process, output root) of one run of the sweep."""
    from sdbake.runner.api import render
    from sdbake.runner.executors import ExecutorOptions
    from sdbake.runner.sweep.matrix import load_sweep
    from sdbake.runner.sweep.run import run_sweep
    out = scratch / f"out-{mode}-{time.monotonic_ns()}"
    cache = scratch / f"cache-{mode}-{time.monotonic_ns()}"
    started, cpu_started = time.perf_counter(), time.process_time()
    if mode == "sequential":
        for point in load_sweep(recipe, [], []).points:
            render(point.loaded, output_root=out, no_cache=True, device=args.device, threads=args.threads)
    else:
        run_sweep(recipe, output_root=out, cache_dir=cache, device=args.device, threads=args.threads,
                  executor=ExecutorOptions(max_batch=args.max_batch if mode == "batched" else 1, quiet=True))
    return time.perf_counter() - started, time.process_time() - cpu_started, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo, tiny, or a diffusers folder")
    parser.add_argument("--points", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("SDBAKE_THREADS", "1")))
    parser.add_argument("--repeats", type=int, default=1, help="best of N per mode")
    args = parser.parse_args()
    from farm_helpers import write_sweep
    from sdbake.runner.sweep.run import run_sweep
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        model = model_folder(args.model, scratch)
        recipe = write_sweep(scratch, model, f'seed = "1-{args.points}"', steps=args.steps, size=args.size)
        # load the models once (they stay in the process's registry, as in a long-lived worker)
        warm = write_sweep(scratch, model, 'seed = "1"', name="warm", steps=1, size=args.size)
        run_sweep(warm, output_root=scratch / "warm", no_cache=True, device=args.device, threads=args.threads)
        print(f"{args.points} points, {args.model} model, {args.size}x{args.size}, {args.steps} euler steps, "
              f"{args.device}, {args.threads} thread(s), best of {args.repeats}")
        rates, cpu_rates, outputs = {}, {}, {}
        for mode in ("sequential", "unbatched", "batched"):
            seconds, cpu_seconds, outputs[mode] = min(timed(mode, recipe, scratch, args) for _ in range(args.repeats))
            rates[mode], cpu_rates[mode] = args.points / seconds, args.points / cpu_seconds
            # CPU time too: on a shared machine the wall clock also counts other processes' work
            print(f"{mode:<11} {seconds:8.2f} s  {rates[mode]:7.2f} images/s   "
                  f"(CPU {cpu_seconds:7.2f} s, {cpu_rates[mode]:7.2f} images per CPU-second)")
        same = pixels(outputs["batched"]) == pixels(outputs["unbatched"])
        for label, table in (("wall clock", rates), ("CPU time", cpu_rates)):
            print(f"{label}: batched / unbatched {table['batched'] / table['unbatched']:.2f}x, "
                  f"batched / sequential {table['batched'] / table['sequential']:.2f}x")
        print(f"batched images {'have the same pixels as' if same else 'DIFFER from'} the unbatched ones")
    return 0


if __name__ == "__main__":
    sys.exit(main())
