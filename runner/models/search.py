"""Model search folders (from sdbake.toml) and resolving a recipe's model name to a file. No torch here.

An existing `stable-diffusion-webui/models/...` or `ComfyUI/models/...` tree is used as is:

    [folders]
    checkpoints = ["~/stable-diffusion-webui/models/Stable-diffusion"]
    loras = ["~/ComfyUI/models/loras"]
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from sdbake.runner.locations import user_config_dir
from sdbake.schemas.errors import ModelError

try:
    import tomllib
except ModuleNotFoundError:         # Python 3.10
    import tomli as tomllib

FOLDER_KINDS = ("checkpoints", "vae", "loras", "embeddings", "upscalers", "wildcards")
CONFIG_ENV = "SDBAKE_CONFIG"

# Extensions tried when a recipe names a model without one, in order of preference.
KIND_EXTENSIONS = {
    "checkpoints": (".safetensors", ".ckpt", ".pt", ".pth", ".bin"),
    "vae": (".safetensors", ".pt", ".ckpt", ".bin"),
    "loras": (".safetensors", ".pt", ".ckpt"),
    "embeddings": (".safetensors", ".pt", ".bin"),
    "upscalers": (".safetensors", ".pth", ".pt"),
    "wildcards": (".txt", ".yaml", ".yml", ".json"),
}


@dataclass
class SearchConfig:
    """The folders to search per kind, in order, and the config files they came from."""
    folders: dict[str, list[Path]] = field(default_factory=lambda: {k: [] for k in FOLDER_KINDS})
    sources: list[Path] = field(default_factory=list)


def config_files(cwd: Path | None = None) -> list[Path]:
    """Existing config files in search order: ./sdbake.toml, the user's config.toml, $SDBAKE_CONFIG."""
    candidates = [(cwd or Path.cwd()) / "sdbake.toml", user_config_dir() / "config.toml"]
    if os.environ.get(CONFIG_ENV):
        candidates.append(Path(os.environ[CONFIG_ENV]).expanduser())
    unique: list[Path] = []
    for path in candidates:
        if path.is_file() and path.resolve() not in [u.resolve() for u in unique]:
            unique.append(path)
    return unique


def _folders_from(config_file: Path) -> dict[str, list[Path]]:
    try:
        table = tomllib.loads(config_file.read_text(encoding="utf-8")).get("folders", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ModelError(f"cannot read the config file: {err}", file=str(config_file)) from err
    if not isinstance(table, dict):
        raise ModelError("[folders] must be a table", file=str(config_file))
    unknown = sorted(set(table) - set(FOLDER_KINDS))
    if unknown:
        raise ModelError(f"unknown [folders] key {unknown[0]!r} (known: {', '.join(FOLDER_KINDS)})",
                         file=str(config_file))
    folders: dict[str, list[Path]] = {}
    for kind, entries in table.items():
        if isinstance(entries, str):
            entries = [entries]
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ModelError(f"[folders] {kind} must be a list of folder paths", file=str(config_file))
        # Relative folders are relative to the config file, like paths in a recipe.
        folders[kind] = [(config_file.parent / Path(e).expanduser()).resolve() for e in entries]
    return folders


def load_search_config(cwd: Path | None = None) -> SearchConfig:
    """All configured folders: every config file found contributes, earlier files searched first."""
    config = SearchConfig()
    for config_file in config_files(cwd):
        logging.getLogger(__name__).info("model folders from %s", config_file)
        config.sources.append(config_file)
        for kind, folders in _folders_from(config_file).items():
            config.folders[kind] += [f for f in folders if f not in config.folders[kind]]
    return config


def _is_model_entry(path: Path, kind: str) -> bool:
    if path.is_dir():   # a diffusers folder counts as one checkpoint
        return kind == "checkpoints" and (path / "model_index.json").is_file()
    return path.suffix.lower() in KIND_EXTENSIONS[kind]


def list_folder(folder: Path, kind: str) -> list[Path]:
    """The model files (and diffusers folders) under one search folder, subfolders included, sorted."""
    if not folder.is_dir():
        return []
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        for d in list(dirs):
            if _is_model_entry(root_path / d, kind):
                found.append(root_path / d)
                dirs.remove(d)          # do not list the folder's own weight files as checkpoints
        found += [root_path / f for f in files if _is_model_entry(root_path / f, kind)]
    return sorted(found)


def _matches(entry: Path, folder: Path, name: str) -> bool:
    relative = entry.relative_to(folder).as_posix()
    wanted = name.replace("\\", "/")
    if relative == wanted or entry.name == wanted:
        return True
    # Without an extension: "v1-5-pruned-emaonly" finds v1-5-pruned-emaonly.safetensors.
    return entry.is_file() and (relative[: -len(entry.suffix)] == wanted or entry.stem == wanted)


def resolve_model_file(name_or_path: str, kind: str, recipe_dir: Path | None = None,
                       search: SearchConfig | None = None) -> Path:
    """The file a recipe means by `name_or_path`: a path (absolute or relative to the recipe's folder),
    else a file name, with or without extension, found in the configured folders for `kind`."""
    if kind not in FOLDER_KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    recipe_dir = Path(recipe_dir) if recipe_dir is not None else Path.cwd()
    as_path = Path(name_or_path).expanduser()
    direct = as_path if as_path.is_absolute() else recipe_dir / as_path
    if direct.exists():
        return direct
    search = search if search is not None else load_search_config()
    folders = search.folders[kind]
    candidates: list[Path] = []
    for folder in folders:
        for entry in list_folder(folder, kind):
            if _matches(entry, folder, name_or_path) and entry.resolve() not in [c.resolve() for c in candidates]:
                candidates.append(entry)
    exact = [c for c in candidates if c.name == Path(name_or_path).name]
    if len(exact) == 1:     # "x.safetensors" beats "x.ckpt" when the recipe spells the extension
        return exact[0]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        listed = ", ".join(str(c) for c in candidates)
        raise ModelError(f"{kind} name '{name_or_path}' is ambiguous: it matches {listed}; name the file with "
                         "its extension or give a path")
    searched = ", ".join(str(f) for f in [recipe_dir, *folders])
    hint = "" if folders else f" (add folders under [folders] {kind} in sdbake.toml)"
    raise ModelError(f"{kind} model '{name_or_path}' not found; searched: {searched}{hint}")


def upscaler_file_name(upscaler: str, recipe_dir: Path | None = None) -> str:
    """The model name hires `upscaler` looks up: itself, or for A1111's built-in Real-ESRGAN labels
    ("R-ESRGAN 4x+") the stem of the file A1111 downloads for it, when no file has the label's name."""
    from sdbake.schemas.stages import A1111_UPSCALER_FILES
    stem = A1111_UPSCALER_FILES.get(" ".join(upscaler.split()))
    if stem is None:
        return upscaler
    try:
        resolve_model_file(upscaler, "upscalers", recipe_dir)
    except ModelError:
        return stem
    return upscaler
