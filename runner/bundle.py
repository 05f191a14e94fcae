"""`sdbake pack`: a recipe (or an image's recipe) and every input file it reads, in one .tar.gz that
another machine can `sdbake run`. Models are not packed: `models.json` lists their names and hashes,
and the other machine finds them by hash in its model folders.

    recipe.toml            the canonical recipe, its input files renamed to inputs/<sha256><suffix>
    inputs/<sha256>.png    init images, masks, paste images ...
    wildcards/...          the wildcard files its prompts read, as found in its wildcard folders
    embeddings/<file>      the textual inversions its prompts name
    models.json            per [models] entry: checkpoint name and sha256, VAE, LoRAs; stage LoRAs
    resolved.json          from an image: the prompts its batch used (wildcards expanded)
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import uuid
from pathlib import Path, PurePosixPath

from sdbake.schemas.errors import InputFileError

BUNDLE_SUFFIXES = (".tar.gz", ".tgz")
MAX_BUNDLE_BYTES = 4 << 30          # unpacked size bound (inputs are images and text files)


def is_bundle(source: str) -> bool:
    return source.lower().endswith(BUNDLE_SUFFIXES)


def _set_param(stage: dict, param: str, value: str) -> None:
    parts = param.split(".")
    holder = stage
    for part in parts[:-1]:
        holder = holder[int(part)] if isinstance(holder, list) else holder[part]
    holder[parts[-1]] = value


def _relative_to_any(path: Path, folders: list[Path]) -> str:
    for folder in folders:
        if path.resolve().is_relative_to(folder.resolve()):
            return path.resolve().relative_to(folder.resolve()).as_posix()
    return path.name


def bundle_members(plan) -> tuple[dict, dict[str, Path], dict]:
    """(recipe document, archive name -> file, models manifest) of a plan."""
    from sdbake.runner.kinds.common import wildcard_dirs
    from sdbake.schemas.canonical import canonical_dict
    document = canonical_dict(plan.recipe)
    document.pop("output_dir", None)
    members: dict[str, Path] = {}
    wildcard_folders = wildcard_dirs(plan.loaded)
    for inv, stage in zip(plan.invocations, document["stages"]):
        for param, path in inv.files.items():
            if param == "upscaler":
                continue
            name = f"inputs/{inv.inputs['files'][param]}{path.suffix.lower()}"
            members[name] = path
            _set_param(stage, param, name)
        for path in inv.wildcards.values():
            members["wildcards/" + _relative_to_any(path, wildcard_folders)] = path
        for path in inv.embeddings.values():
            members[f"embeddings/{path.name}"] = path
    models = {"models": {name: {"checkpoint": plan.recipe.models[name].checkpoint, "sha256": files.checkpoint_sha256,
                                "vae": files.vae.name if files.vae else None, "vae_sha256": files.vae_sha256,
                                "loras": [{"name": l.path.name, "sha256": l.sha256} for l in files.loras]}
                         for name, files in sorted(plan.models.items())},
              "stage_loras": {inv.id: [{"name": l.path.name, "sha256": l.sha256, "weight": l.weight}
                                       for l in inv.loras] for inv in plan.invocations if inv.loras}}
    for name, record in models["models"].items():
        document["models"][name]["sha256"] = record["sha256"]
    return document, members, models


def write_bundle(plan, output: Path) -> list[str]:
    """Write the bundle; returns the archive's member names."""
    import tomli_w
    document, members, models = bundle_members(plan)
    texts = {"recipe.toml": tomli_w.dumps(document).encode(), "models.json":
             (json.dumps(models, indent=2, sort_keys=True) + "\n").encode()}
    if plan.loaded.resolved:
        texts["resolved.json"] = (json.dumps(plan.loaded.resolved, indent=2, sort_keys=True) + "\n").encode()
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".partial")
    with tarfile.open(temporary, "w:gz") as archive:
        for name, data in sorted(texts.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
        for name, path in sorted(members.items()):
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    temporary.replace(output)
    return sorted(texts) + sorted(members)


def _safe_name(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in name:
        return None
    return path


def unpack_bundle(bundle: Path, cache_root: Path) -> Path:
    """Unpack into `<cache root>/bundles/<sha256 of the bundle>/` (once) and return that folder.
    Only regular files with plain relative names are taken: no absolute paths, no `..`, no links."""
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    target = Path(cache_root) / "bundles" / digest
    if (target / "recipe.toml").is_file():
        return target
    partial = target.with_name(f"{digest}.{uuid.uuid4().hex}.partial")
    total = 0
    try:
        with tarfile.open(bundle, "r:gz") as archive:
            for member in archive.getmembers():
                name = _safe_name(member.name)
                if member.isdir():
                    continue
                if name is None or not member.isfile():
                    raise InputFileError(f"bundle member `{member.name}` is not a plain relative file: refused",
                                         file=str(bundle))
                total += member.size
                if total > MAX_BUNDLE_BYTES:
                    raise InputFileError(f"bundle unpacks to more than {MAX_BUNDLE_BYTES >> 30} GiB: refused",
                                         file=str(bundle))
                destination = partial.joinpath(*name.parts)
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(archive.extractfile(member).read())
    except (tarfile.TarError, EOFError, OSError) as err:
        raise InputFileError(f"cannot read bundle: {err}", file=str(bundle)) from None
    if not (partial / "recipe.toml").is_file():
        shutil.rmtree(partial, ignore_errors=True)
        raise InputFileError("not an sdbake bundle (no recipe.toml)", file=str(bundle))
    try:
        partial.rename(target)
    except OSError:                  # another process unpacked the same bundle first
        shutil.rmtree(partial, ignore_errors=True)
    return target


def load_bundle(bundle: Path, overrides: list[str], cache_root: Path):
    """The bundle's recipe, with its models found by hash where its paths do not lead to them."""
    from sdbake.runner.inputs import model_by_hash
    from sdbake.schemas.loader import load_recipe
    folder = unpack_bundle(bundle, cache_root)
    loaded = load_recipe(folder / "recipe.toml", overrides)
    if (folder / "resolved.json").is_file():
        try:
            loaded.resolved = json.loads((folder / "resolved.json").read_text(encoding="utf-8"))
        except ValueError as err:
            raise InputFileError(f"resolved.json is not valid JSON: {err}", file=str(bundle)) from None
    for entry in loaded.recipe.models.values():
        if entry.sha256 and entry.checkpoint:       # a merge is recomputed from its inputs
            located = model_by_hash("checkpoints", entry.checkpoint, entry.sha256, folder, bundle)
            if located is not None:
                loaded.found[entry.checkpoint] = located
    return loaded
