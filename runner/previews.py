"""Where step previews go: files under the output root (a stage's `preview_dir`) and the watch page.

Previews are not outputs: they are made only while a stage runs (a cache hit makes none), never enter
the cache, and a newer preview of the same step replaces the older file.
"""
from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from sdbake.runner.plan import Invocation, Plan


def preview_name(stage_id: str, step: int, batch_index: int, batch_size: int) -> str:
    suffix = f"-{batch_index}" if batch_size > 1 else ""
    return f"{stage_id}-step{step:03d}{suffix}.png"


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def replace_file(target: Path, data: bytes) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a preview."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".preview-", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def preview_sink(plan: Plan, inv: Invocation,
                 on_preview: Callable[[str, int, list], None] | None) -> Callable[[int, list], None]:
    """The stage context's `on_preview` for one invocation."""
    from sdbake.stages.output.names import safe_relative_path
    folder = getattr(inv.stage, "preview_dir", None)

    def sink(step: int, images: list) -> None:
        if folder:
            for batch_index, image in enumerate(images):
                name = preview_name(inv.id, step, batch_index, len(images))
                relative = safe_relative_path(f"{folder.rstrip('/')}/{name}", plan.output_root)
                replace_file(plan.output_root / relative, png_bytes(image))
        if on_preview is not None:
            on_preview(inv.id, step, images)
    return sink
