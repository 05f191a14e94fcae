"""Timing for the speed benchmarks: a table row, a meter that times calls side by side, the printed table."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch


@dataclass
class Row:
    name: str
    batch: int
    size: int
    steps: int
    seconds: float                # median wall time of one call (one batch)
    ratio: float | None = None    # against diffusers' pipeline + PNG files at the same batch
    tflops: float | None = None   # UNet FLOPs of the run / seconds
    peak_gb: float | None = None
    note: str = ""

    @property
    def per_image_s(self) -> float:
        return self.seconds / self.batch

    @property
    def it_per_s(self) -> float:
        return self.steps / self.seconds


class Meter:
    """Wall time with the device synchronised, median over repeats, peak memory of the timed calls."""

    def __init__(self, settings):
        """settings: the benchmark's, for its device and number of repeats."""
        self.cuda = settings.device.startswith("cuda")
        self.repeats = settings.repeats

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def once(self, fn) -> tuple[float, object]:
        self.sync()
        started = time.perf_counter()
        result = fn()
        self.sync()
        return time.perf_counter() - started, result

    def measure(self, fn) -> tuple[float, float, float | None]:
        """(first call s, median s of the next `repeats`, peak GB of those); the first pays warm-up."""
        first_s, _ = self.once(fn)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        times = [self.once(fn)[0] for _ in range(self.repeats)]
        peak = torch.cuda.max_memory_allocated() / 2 ** 30 if self.cuda else None
        return first_s, statistics.median(times), peak

    def side_by_side(self, calls: dict) -> dict[str, tuple[float, float, float | None, float]]:
        """measure() for several calls at once, interleaved: each repeat times every call once, so a change
        in the machine's load (other processes, clock) weighs on all of them alike. Also the median CPU time
        of this process per call (all its threads), the steadier figure on a shared machine."""
        first = {name: self.once(fn)[0] for name, fn in calls.items()}
        times: dict[str, list[float]] = {name: [] for name in calls}
        cpu: dict[str, list[float]] = {name: [] for name in calls}
        peaks: dict[str, float | None] = dict.fromkeys(calls)
        names = list(calls)
        for repeat in range(self.repeats):
            # The order turns every repeat: the call that runs after another pays for what that one left
            # (freed memory handed back, a garbage collection), so no call always follows the same one.
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                fn = calls[name]
                if self.cuda:
                    torch.cuda.reset_peak_memory_stats()
                started_cpu = time.process_time()
                times[name].append(self.once(fn)[0])
                cpu[name].append(time.process_time() - started_cpu)
                if self.cuda:
                    peaks[name] = max(peaks[name] or 0.0, torch.cuda.max_memory_allocated() / 2 ** 30)
        return {name: (first[name], statistics.median(times[name]), peaks[name], statistics.median(cpu[name]))
                for name in calls}


def print_table(rows: list[Row], header: str, notes: list[str]) -> None:
    print(header)
    print(f"{'':44} {'batch':>5} {'px':>5} {'s/image':>8} {'it/s':>7} {'ratio':>6} {'TFLOP/s':>8} {'peak GB':>8}  note")
    for r in rows:
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else "-"
        tflops = f"{r.tflops:.3g}" if r.tflops is not None else "-"
        peak = f"{r.peak_gb:.2f}" if r.peak_gb is not None else "-"
        it_s = f"{r.it_per_s:.2f}" if r.steps else "-"
        print(f"{r.name:44} {r.batch:5} {r.size:5} {r.per_image_s:8.4f} {it_s:>7} {ratio:>6} {tflops:>8} {peak:>8}  "
              f"{r.note}")
    print("ratio: time against diffusers' pipeline writing the same PNG files, same batch (target <= 1.02; "
          "compiled: <= 0.67)")
    print("TFLOP/s: UNet FLOPs only (torch.utils.flop_counter, one CFG step x steps) / wall time; "
          "peak GB: torch.cuda.max_memory_allocated of the timed calls (all resident models included)")
    for note in notes:
        print(f"note: {note}")
