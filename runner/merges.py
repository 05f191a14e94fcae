"""[models] entries that merge other entries: the merged checkpoint is computed once and kept in the stage
cache, keyed by the inputs' content hashes and the merge settings (docs/merging.md). No torch here until a
merge has to be computed: a cached merge costs one entry.json read and the hash index."""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from sdbake.runner.modelfiles import ModelFiles, folder_sha256, resolve_loras
from sdbake.runner.models.hashing import sha256_file
from sdbake.runner.models.search import resolve_model_file
from sdbake.schemas.recipe import MERGE_BLOCKS, MergeSpec, ModelEntry

MERGE_FORMAT = "sdbake-merge-1"
log = logging.getLogger(__name__)


def block_alphas(spec_alphas: dict[str, float] | list[float] | None) -> dict[str, float]:
    """Block weights as {block name: alpha}, whichever way the recipe spelled them."""
    if isinstance(spec_alphas, list):
        return dict(zip(MERGE_BLOCKS, spec_alphas, strict=True))
    return dict(sorted((spec_alphas or {}).items()))


def merge_recipe(method: str, alpha: float, alphas, fp16: bool, a_sha256: str, b_sha256: str,
                 c_sha256: str | None) -> dict:
    """What a merged file is, by content: it keys the cache and is written into the file's metadata."""
    return {"type": MERGE_FORMAT, "method": method, "alpha": float(alpha), "alphas": block_alphas(alphas),
            "fp16": fp16, "a_sha256": a_sha256, "b_sha256": b_sha256, "c_sha256": c_sha256}


def merge_key(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def cached_merge(store, recipe: dict, inputs: tuple[Path, Path, Path | None], *, label: str,
                 names: tuple[str, str, str], allow_pickle: bool = False) -> Path:
    """The merged checkpoint file in `store` for `recipe`, computed and stored when absent."""
    key = merge_key(recipe)
    # Checked against the hash index rather than by re-reading gigabytes on every plan (the index
    # re-hashes a file whose size or mtime changed).
    entry = store.get(key, verify=False)
    if entry is not None:
        path = entry.folder / "state.safetensors"
        if entry.info.get("has_tensors") and path.is_file() and sha256_file(path) == entry.info.get("tensors_sha256"):
            log.info("merge %s: cache hit %s", label, key[:12])
            return path
        store.evict_corrupt(key, "the merged checkpoint does not match its checksum")
    log.info("merge %s: computing %s", label, key[:12])
    from sdbake.runner.models.merge import file_metadata, merge_files
    tensors = merge_files(recipe, *inputs, names=names, allow_pickle=allow_pickle)
    entry = store.put(key, stage={"type": "merge", "id": label, "recipe": "models"}, tensors=tensors,
                      meta={"merge": recipe}, tensors_metadata=file_metadata(recipe))
    return entry.folder / "state.safetensors"


def resolve_merge(name: str, entry: ModelEntry, resolve_input: Callable[[str], ModelFiles], store,
                  recipe_dir: Path) -> ModelFiles:
    """A merge entry's files: the cached merged checkpoint, read with the configs of its model `a`."""
    spec: MergeSpec = entry.merge
    a, b = resolve_input(spec.a), resolve_input(spec.b)
    c = resolve_input(spec.c) if spec.c else None
    recipe = merge_recipe(spec.method, spec.alpha, spec.alphas, spec.fp16, a.checkpoint_sha256,
                          b.checkpoint_sha256, c.checkpoint_sha256 if c else None)
    path = cached_merge(store, recipe, (a.checkpoint, b.checkpoint, c.checkpoint if c else None), label=name,
                        names=(spec.a, spec.b, spec.c or "c"))
    # A merged file is in the single-file layout; the configs that describe it are those of `a`.
    config = Path(recipe_dir / entry.config) if entry.config else (a.checkpoint if a.checkpoint.is_dir() else a.config)
    vae = resolve_model_file(entry.vae, "vae", recipe_dir) if entry.vae else None
    return ModelFiles(entry_name=name, checkpoint=path, checkpoint_sha256=sha256_file(path), vae=vae,
                      vae_sha256=(folder_sha256(vae) if vae.is_dir() else sha256_file(vae)) if vae else None,
                      loras=resolve_loras(entry.loras, recipe_dir), config=config,
                      config_sha256=folder_sha256(config) if config is not None else None, display_name=name)
