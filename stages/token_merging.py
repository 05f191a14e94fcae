"""Token merging (ToMe for Stable Diffusion, the `tomesd` library) around one stage's sampling.

A1111 (modules/sd_models.py apply_token_merging) patches the UNet with tomesd.apply_patch(ratio,
use_rand=False, merge_attn=True, merge_crossattn=False, merge_mlp=False) and tomesd's defaults
max_downsample=1, sx=sy=2; a ratio of 0 means no patch at all. use_rand=False picks the top-left token of
every 2x2 cell as the merge destination instead of drawing it from torch's global generator, so the same
recipe gives the same bytes and nothing else's random stream moves. No torch at import: the runner reads
`settings` to key the stage.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata

from sdbake.schemas.errors import StateError

A1111_ARGS = {"sx": 2, "sy": 2, "use_rand": False, "merge_attn": True, "merge_crossattn": False, "merge_mlp": False}


def tomesd_version() -> str | None:
    try:
        return metadata.version("tomesd")
    except metadata.PackageNotFoundError:
        return None


def missing_message() -> str:
    return "tome_ratio needs the tomesd package, which is not installed: pip install tomesd"


def settings(ratio: float, max_downsample: int | None) -> dict:
    """Everything that decides what the patch does, for the stage's key (with the library's version)."""
    return {"ratio": ratio, "max_downsample": max_downsample or 1, **A1111_ARGS, "tomesd": tomesd_version()}


@contextmanager
def token_merging(unet, ratio: float | None, max_downsample: int | None, stage_id: str) -> Iterator[None]:
    """`unet` patched with tomesd for the body of the `with`; unpatched afterwards, also after an error."""
    if not ratio:
        yield
        return
    try:
        import tomesd
    except ImportError:
        raise StateError(missing_message(), stage=stage_id) from None
    tomesd.apply_patch(unet, ratio=ratio, max_downsample=max_downsample or 1, **A1111_ARGS)
    try:
        yield
    finally:
        tomesd.remove_patch(unet)
