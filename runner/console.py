"""What a run shows and how it was asked to run: the progress console and the command-line run options.

Both execute.py (the cache walk) and runtime.py (the torch side) use them; neither imports the other's
module for them.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RunOptions:
    no_cache: bool = False
    refresh: set[str] = field(default_factory=set)
    until: str | None = None
    allow_pickle: bool = False
    quiet: bool = False
    on_preview: Callable[[str, int, list], None] | None = None   # (stage id, step, PIL images): watch page


class Console:
    """Progress on stderr: stage, step and it/s, redrawn in place on a terminal."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()
        self.stage = ""

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    def begin(self, stage_id: str) -> None:
        self.stage, self.started = stage_id, time.perf_counter()

    def progress(self, done: int, total: int) -> None:
        if self.quiet or not self.tty:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        bar = "#" * int(20 * done / max(total, 1))
        print(f"\r{self.stage}: [{bar:<20}] {done}/{total} {done / elapsed:.2f} it/s", end="", file=sys.stderr)
        if done >= total:
            print(file=sys.stderr)

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr)
