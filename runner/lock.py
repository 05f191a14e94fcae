"""Lock files (`RECIPE.lock`): the exact model files, prompts, versions, keys and outputs of a render.

Sorted TOML with a format version, so a lock diffs cleanly in git (DVC's dvc.lock is the anchor).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from sdbake.runner.models.hashing import short_hash
from sdbake.runner.plan import Plan
from sdbake.runner.versions import package_version
from sdbake.schemas.errors import LockError

from sdbake import __version__

LOCK_FORMAT = 1


def lock_path(recipe_path: Path) -> Path:
    return recipe_path.with_name(recipe_path.name + ".lock")


def _file_record(path: Path, sha256: str) -> dict:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return {"path": str(path), "size": size, "sha256": sha256, "short_hash": short_hash(sha256)}


def _lora_record(lora) -> dict:
    record = dict(_file_record(lora.path, lora.sha256), weight=lora.weight)
    if lora.tag is not None:                 # a prompt's `<lora:...>` tag: its name and UNet weight too
        record["tag"] = lora.tag
        if lora.unet_weight is not None:
            record["unet_weight"] = lora.unet_weight
    return record


def stage_loras(plan: Plan) -> dict[str, list[dict]]:
    """Per stage, the LoRA files it declares: its own `loras`, then those its prompt's `<lora:...>` tags
    name (a tag is pinned at the stage whose prompt has it; the stages after it apply the same files)."""
    found = {}
    for inv in plan.invocations:
        own = [lora for lora in inv.loras if lora.tag is None]
        if own or inv.lora_tags:
            found[inv.id] = [_lora_record(lora) for lora in own + inv.lora_tags]
    return found


def lock_document(plan: Plan, outputs: list[Path] | None = None) -> dict:
    models = {}
    for name, files in sorted(plan.models.items()):
        record = {"checkpoint": _file_record(files.checkpoint, files.checkpoint_sha256)}
        if files.vae:
            record["vae"] = _file_record(files.vae, files.vae_sha256)
        if files.loras:
            record["loras"] = [_lora_record(lora) for lora in files.loras]
        models[name] = record
    prompts = {}
    for inv in plan.invocations:
        if inv.prompts or inv.negatives:
            prompts[inv.id] = {"prompts": inv.prompts, "negatives": inv.negatives}
    document = {
        "format": LOCK_FORMAT, "recipe": plan.recipe.name, "recipe_hash": plan.recipe_hash,
        "versions": {"sdbake": __version__, "torch": package_version("torch"),
                     "diffusers": package_version("diffusers")},
        "numerics": {k: v for k, v in plan.numerics.fingerprint().items() if v is not None},
        "models": models, "prompts": prompts,
        "stages": {inv.id: inv.key for inv in plan.invocations},
    }
    loras = stage_loras(plan)
    if loras:
        document["loras"] = loras
    if plan.random_seed is not None:      # `seed = -1` drew it: `run --locked` uses it again
        document["random_seed"] = plan.random_seed
    if plan.random_subseed is not None:
        document["random_subseed"] = plan.random_subseed
    if outputs:
        root = plan.output_root
        document["outputs"] = {_relative(p, root): hashlib.sha256(p.read_bytes()).hexdigest() for p in outputs}
    return document


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def write_lock(path: Path, document: dict) -> None:
    import tomli_w
    text = "# Written by `sdbake lock`: the exact inputs and outputs of this recipe's last locked render.\n"
    text += tomli_w.dumps(_sorted(document))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def read_lock(path: Path) -> dict:
    import tomllib
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LockError("no lock file: run `sdbake lock` first", file=str(path)) from None
    except (OSError, ValueError) as err:
        raise LockError(f"unreadable lock file: {err}", file=str(path)) from None


def _sorted(value):
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def lock_differences(locked: dict, current: dict) -> list[str]:
    """What `run --locked` refuses: model files or resolved prompts that differ from the lock."""
    problems = []
    if locked.get("format") != LOCK_FORMAT:
        problems.append(f"lock format {locked.get('format')} is not {LOCK_FORMAT}: re-lock")
    old_models, new_models = locked.get("models", {}), current.get("models", {})
    for name in sorted(set(old_models) | set(new_models)):
        old, new = old_models.get(name), new_models.get(name)
        if old is None or new is None:
            problems.append(f"model {name}: {'added' if old is None else 'removed'} since the lock")
            continue
        for part in ("checkpoint", "vae"):
            a, b = old.get(part), new.get(part)
            if (a or {}).get("sha256") != (b or {}).get("sha256"):
                problems.append(f"model {name}.{part}: sha256 {(a or {}).get('sha256', 'none')[:12]} in the lock, "
                                f"{(b or {}).get('sha256', 'none')[:12]} now ({(b or {}).get('path', '-')})")
        if [l["sha256"] for l in old.get("loras", [])] != [l["sha256"] for l in new.get("loras", [])]:
            problems.append(f"model {name}.loras: LoRA files differ from the lock")
    problems += _lora_differences(locked.get("loras", {}), current.get("loras", {}))
    old_prompts, new_prompts = locked.get("prompts", {}), current.get("prompts", {})
    for stage in sorted(set(old_prompts) | set(new_prompts)):
        if old_prompts.get(stage) != new_prompts.get(stage):
            problems.append(f"stage {stage}: resolved prompts differ from the lock "
                            f"({old_prompts.get(stage)} -> {new_prompts.get(stage)})")
    return problems


def _lora_label(record: dict) -> str:
    return f"<lora:{record['tag']}>" if "tag" in record else Path(record.get("path", "?")).name


def _lora_differences(old: dict, new: dict) -> list[str]:
    """One line per stage LoRA or tag LoRA whose file differs from the lock (a file, not its weight: the
    weight is in the recipe or the prompt, which the lock pins as they are)."""
    problems = []
    for stage in sorted(set(old) | set(new)):
        before, now = old.get(stage, []), new.get(stage, [])
        if [r.get("sha256") for r in before] == [r.get("sha256") for r in now]:
            continue
        if len(before) != len(now):
            problems.append(f"stage {stage}: LoRAs {', '.join(map(_lora_label, before)) or 'none'} in the lock, "
                            f"{', '.join(map(_lora_label, now)) or 'none'} now")
            continue
        for a, b in zip(before, now):
            if a.get("sha256") != b.get("sha256"):
                problems.append(f"stage {stage}: LoRA {_lora_label(b)}: sha256 {str(a.get('sha256'))[:12]} in the "
                                f"lock, {b['sha256'][:12]} now ({b.get('path', '-')})")
    return problems


def check_locked(plan: Plan, recipe_path: Path, label: str = "") -> None:
    """`--locked`: refuse a plan whose model files or resolved prompts differ from RECIPE.lock."""
    import sys

    from sdbake.schemas.errors import LockError
    problems = lock_differences(read_lock(lock_path(recipe_path)), lock_document(plan))
    if problems:
        for line in problems:
            print(f"{recipe_path}{label}: {line}", file=sys.stderr)
        raise LockError(f"{len(problems)} difference(s) from the lock file", file=str(recipe_path))
