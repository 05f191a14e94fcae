"""Model names from a foreign file -> names or paths a recipe can use. No torch here.

A1111 and ComfyUI name checkpoints, VAEs, LoRAs and upscalers by the file names on the machine that made
the image. An importer asks, in order: the user's `--model NAME=PATH` map (an original name, its stem or
its hash -> a local file), a file of that name in sdbake's model folders (or next to the recipe), then a
file in those folders whose sha256 starts with the recorded short hash. What none of them finds is kept
as written, so the recipe says what it needs, and listed in `unresolved`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from sdbake.schemas.errors import SdbakeError

log = logging.getLogger(__name__)
KIND_WORDS = {"checkpoints": "checkpoint", "vae": "VAE", "loras": "LoRA", "upscalers": "upscaler",
              "embeddings": "embedding"}


def name_forms(name: str) -> list[str]:
    """The spellings a user may give in --model for one original name: as written, the file name without
    its folders (A1111 on Windows writes backslashes), and that without its extension."""
    base = PureWindowsPath(name).name if "\\" in name else PurePosixPath(name).name
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return list(dict.fromkeys([name, base, stem]))


@dataclass
class ModelResolver:
    """Resolves names for one import; `recipe_dir` is the folder the written recipe will be in."""
    model_map: dict[str, str] = field(default_factory=dict)
    recipe_dir: Path = field(default_factory=Path.cwd)
    unresolved: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)

    def resolve(self, kind: str, name: str, short_hash: str | None = None) -> str:
        """What the recipe should write for the file `name` (with A1111's short hash, when known)."""
        for form in [*name_forms(name), *([short_hash] if short_hash else [])]:
            if form in self.model_map:
                return self.model_map[form]
        found = self._by_name(kind, name) or (self._by_hash(kind, short_hash) if short_hash else None)
        if found is not None:
            if found != name:
                self.resolved.append(f"{KIND_WORDS[kind]} '{name}' -> {found}")
            return found
        self.unresolved.append(f"{KIND_WORDS[kind]} '{name}'" + (f" ({short_hash})" if short_hash else ""))
        return name

    def unresolved_line(self) -> str | None:
        """The one line that says what a user must provide, or None."""
        if not self.unresolved:
            return None
        return (f"unresolved: {', '.join(self.unresolved)}: not in the model folders (sdbake models ls); "
                "map each with --model NAME=PATH")

    def _by_name(self, kind: str, name: str) -> str | None:
        from sdbake.runner.models.search import resolve_model_file
        for form in name_forms(name)[::-1][:2]:     # the stem first: A1111 writes checkpoint names without one
            try:
                resolve_model_file(form, kind, self.recipe_dir)
            except SdbakeError:
                continue
            return form
        return None

    def _by_hash(self, kind: str, short_hash: str) -> str | None:
        from sdbake.runner.modelfiles import path_sha256
        from sdbake.runner.models import hashing
        from sdbake.runner.models.search import list_folder, load_search_config
        wanted = short_hash.strip().lower()
        if len(wanted) < 10:         # A1111's pre-2023 8-digit hashes are of another algorithm
            return None
        # A1111 hashes a LoRA its own way (kohya's addnet hash) where sdbake knows how.
        lora_hash = getattr(hashing, "lora_short_hash", None) if kind == "loras" else None
        for folder in load_search_config().folders[kind]:
            for candidate in list_folder(folder, kind):
                log.info("hashing %s to find %s %s", candidate, KIND_WORDS[kind], wanted)
                if path_sha256(candidate).startswith(wanted) or (
                        lora_hash is not None and candidate.is_file() and lora_hash(candidate).startswith(wanted)):
                    return candidate.relative_to(folder).as_posix()
        return None
