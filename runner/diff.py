"""Semantic recipe diff: per stage, what changed and which stages a re-run would reuse. No torch here.

Both sides are compared in their canonical form (defaults expanded into every stage), so `cfg = 7`
and an omitted cfg whose default is 7 are the same recipe. Stages are matched by id. The
consequence comes from the two plans' cache keys: a stage of B whose key is also a key of A's plan
is served from the cache after A ran; every other stage re-runs. When a plan cannot be built (a
model file or an input file that does not resolve here), keys are estimated from the recipe alone
and the diff says so.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sdbake.runner.numerics import Numerics
from sdbake.runner.plan import NOT_IN_KEY, Plan, build_plan, canonical_dict_of, key_of, wildcard_dirs
from sdbake.schemas.canonical import canonical_dict
from sdbake.schemas.errors import SdbakeError
from sdbake.schemas.loader import LoadedRecipe

# Recipe-level tables compared field by field; `defaults` is left out because it is expanded into
# every stage (its effect is reported where it lands), `stages` and `models` have their own sections.
RECIPE_FIELDS_APART = {"stages", "defaults", "models"}
# Key-document entries that are reported per stage (the rest are params, chain, or recipe-wide).
KEY_INPUTS = {"files": "input files", "loras": "LoRA files", "lora_tags": "LoRA files of prompt tags",
              "prompts": "resolved prompts",
              "negatives": "resolved negatives", "outputs": "output paths",
              "version": "stage code version"}
WILDCARD_SUFFIXES = (".txt", ".yaml", ".yml", ".json")
FIXED_TIME = datetime(2000, 1, 1)     # both plans render date templates alike


@dataclass
class Change:
    field: str
    old: Any          # None: unset on that side
    new: Any


@dataclass
class StageDiff:
    id: str
    type: str
    status: str                      # "same" | "changed" | "added" | "removed"
    old_index: int | None
    new_index: int | None
    moved: bool = False
    changes: list[Change] = field(default_factory=list)       # recipe fields
    inputs: list[Change] = field(default_factory=list)        # what else enters its key (files, prompts)
    outcome: str = ""                # "reused" | "re-run" | "removed"
    reason: str = ""                 # why an unchanged stage re-runs


@dataclass
class ModelDiff:
    name: str
    status: str                      # "same" | "changed" | "added" | "removed"
    changes: list[Change] = field(default_factory=list)       # entry fields (paths, pinned sha256)
    files: list[Change] = field(default_factory=list)         # content hashes of the resolved files
    note: str = ""                   # why hashes were not compared


@dataclass
class WildcardDiff:
    name: str
    old: str | None                  # sha256 of the file, None when it is not found on that side
    new: str | None
    old_path: str | None = None
    new_path: str | None = None


@dataclass
class RecipeDiff:
    a: str
    b: str
    recipe: list[Change]
    models: list[ModelDiff]
    stages: list[StageDiff]
    wildcards: list[WildcardDiff]
    exact: bool                      # consequence from real plan keys (False: estimated)
    note: str = ""

    @property
    def reused(self) -> list[str]:
        return [s.id for s in self.stages if s.outcome == "reused"]

    @property
    def rerun(self) -> list[str]:
        return [s.id for s in self.stages if s.outcome == "re-run"]

    @property
    def identical(self) -> bool:
        return (not self.recipe and not self.wildcards and not self.rerun
                and all(m.status == "same" for m in self.models)
                and all(s.status == "same" and not s.moved for s in self.stages))

    def to_json(self) -> dict:
        document = asdict(self)
        document.update(identical=self.identical, reused=self.reused, rerun=self.rerun,
                        consequence=consequence_line(self))
        return document


# -- field differences ------------------------------------------------------------------------------

def field_changes(old: Any, new: Any, prefix: str = "") -> list[Change]:
    """Leaf-level differences between two canonical values; lists of equal length compare item by item."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += field_changes(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and old != new:
        found = []
        for index, (a, b) in enumerate(zip(old, new)):
            found += field_changes(a, b, f"{prefix}[{index}]")
        return found
    return [] if old == new else [Change(prefix, old, new)]


def _common_in_order(old_ids: list[str], new_ids: list[str]) -> set[str]:
    """Ids of the longest common subsequence: the stages that kept their relative order."""
    rows, cols = len(old_ids), len(new_ids)
    table = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(rows - 1, -1, -1):
        for j in range(cols - 1, -1, -1):
            table[i][j] = (table[i + 1][j + 1] + 1 if old_ids[i] == new_ids[j]
                           else max(table[i + 1][j], table[i][j + 1]))
    kept, i, j = set(), 0, 0
    while i < rows and j < cols:
        if old_ids[i] == new_ids[j]:
            kept.add(old_ids[i])
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return kept


def stage_diffs(old_stages: list[dict], new_stages: list[dict]) -> list[StageDiff]:
    """Stages of B in order (changed, same or added), then the stages only A had (removed)."""
    old_by_id = {s["id"]: (i, s) for i, s in enumerate(old_stages)}
    new_ids = [s["id"] for s in new_stages]
    in_order = _common_in_order([s["id"] for s in old_stages], new_ids)
    found = []
    for index, stage in enumerate(new_stages):
        if stage["id"] not in old_by_id:
            found.append(StageDiff(stage["id"], stage["type"], "added", None, index))
            continue
        old_index, old = old_by_id[stage["id"]]
        changes = field_changes(old, stage)
        found.append(StageDiff(stage["id"], stage["type"], "changed" if changes else "same", old_index, index,
                               moved=stage["id"] not in in_order, changes=changes))
    for old_index, stage in enumerate(old_stages):
        if stage["id"] not in new_ids:
            found.append(StageDiff(stage["id"], stage["type"], "removed", old_index, None, outcome="removed"))
    return found


# -- models and wildcard files ----------------------------------------------------------------------

def _resolved_models(loaded: LoadedRecipe) -> dict[str, Any]:
    """Each [models] entry resolved to its files and hashes, or the error message when it does not resolve."""
    from sdbake.runner.modelfiles import resolve_model
    resolved: dict[str, Any] = {}
    for name, entry in loaded.recipe.models.items():
        if entry.merge is not None:
            resolved[name] = "a merge, made from its inputs"
            continue
        try:
            resolved[name] = resolve_model(name, entry, loaded.folder)
        except SdbakeError as err:
            resolved[name] = err.message
    return resolved


def model_diffs(a: LoadedRecipe, b: LoadedRecipe) -> list[ModelDiff]:
    old_entries, new_entries = canonical_dict(a.recipe)["models"], canonical_dict(b.recipe)["models"]
    old_files, new_files = _resolved_models(a), _resolved_models(b)
    found = []
    for name in sorted(set(old_entries) | set(new_entries)):
        if name not in new_entries or name not in old_entries:
            found.append(ModelDiff(name, "removed" if name not in new_entries else "added"))
            continue
        diff = ModelDiff(name, "same", changes=field_changes(old_entries[name], new_entries[name]))
        old, new = old_files[name], new_files[name]
        if isinstance(old, str) or isinstance(new, str):
            reason = old if isinstance(old, str) else new
            diff.note = f"model files not resolved ({reason}): compared paths only"
        else:
            diff.files = field_changes(old.identity(), new.identity())
        diff.status = "changed" if diff.changes or diff.files else "same"
        found.append(diff)
    return found


def wildcard_names(loaded: LoadedRecipe) -> set[str]:
    """`__name__` wildcards used by any prompt of the recipe (the files they read)."""
    import re
    names = set()
    for stage in loaded.recipe.stages:
        for text in (getattr(stage, "prompt", None), getattr(stage, "negative", None)):
            names.update(re.findall(r"__([^_\s][^\s]*?)__", text or ""))
    return names


def wildcard_file(name: str, loaded: LoadedRecipe) -> Path | None:
    for folder in wildcard_dirs(loaded):
        for suffix in WILDCARD_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def wildcard_diffs(a: LoadedRecipe, b: LoadedRecipe) -> list[WildcardDiff]:
    from sdbake.runner.models.hashing import sha256_file
    found = []
    for name in sorted(wildcard_names(a) | wildcard_names(b)):
        old_path, new_path = wildcard_file(name, a), wildcard_file(name, b)
        old = sha256_file(old_path) if old_path else None
        new = sha256_file(new_path) if new_path else None
        if old != new:
            found.append(WildcardDiff(name, old, new, str(old_path) if old_path else None,
                                      str(new_path) if new_path else None))
    return found


# -- consequence: which stages a re-run reuses ------------------------------------------------------

def estimated_keys(loaded: LoadedRecipe) -> list[tuple[str, str]]:
    """(stage id, key) from the recipe alone, chained like real keys (model paths stand in for hashes);
    a save's key holds the stages before it (its prefix), not the stages after it."""
    recipe = loaded.recipe
    models = canonical_dict(recipe)["models"]
    keys, state_key, prefix = [], None, []
    for stage in recipe.stages:
        params = {k: v for k, v in canonical_dict_of(stage).items() if k not in NOT_IN_KEY}
        document = {"stage": stage.type, "params": params, "input": state_key,
                    "model": models.get(getattr(stage, "model", None) or "")}
        if stage.type == "save":
            document["recipe"] = key_of({"name": recipe.name, "stages": prefix + [params]})
        else:
            prefix.append(params)
        key = key_of(document)
        keys.append((stage.id, key))
        state_key = state_key if stage.type == "save" and state_key else key
    return keys


def _plan(loaded: LoadedRecipe, numerics: Numerics) -> Plan:
    return build_plan(loaded, numerics, Path("outputs"), now=FIXED_TIME)


def _input_changes(old_document: dict, new_document: dict, field_changes_seen: list[Change]) -> list[Change]:
    """What else changed in a stage's key; resolved prompts only when the prompt text itself did not."""
    edited = {change.field for change in field_changes_seen}
    skip = {name for name, source in (("prompts", "prompt"), ("negatives", "negative")) if source in edited}
    found = []
    for name, label in KEY_INPUTS.items():
        if name not in skip:
            found += field_changes(old_document.get(name), new_document.get(name), label)
    return found


def apply_consequence(diff: RecipeDiff, a: LoadedRecipe, b: LoadedRecipe, numerics: Numerics) -> None:
    try:
        old_plan, new_plan = _plan(a, numerics), _plan(b, numerics)
    except SdbakeError as err:
        diff.exact = False
        diff.note = f"estimated from the recipes: a plan cannot be built here ({err.message})"
        old_keys, new_keys = dict(estimated_keys(a)), dict(estimated_keys(b))
        old_documents = new_documents = {}
    else:
        diff.exact = True
        old_keys = {inv.id: inv.key for inv in old_plan.invocations}
        new_keys = {inv.id: inv.key for inv in new_plan.invocations}
        old_documents = {inv.id: inv.inputs for inv in old_plan.invocations}
        new_documents = {inv.id: inv.inputs for inv in new_plan.invocations}
    cached = set(old_keys.values())
    upstream_reruns = False          # a compute stage before this one re-runs: its input state is new
    for stage in sorted((s for s in diff.stages if s.status != "removed"), key=lambda s: s.new_index):
        stage.outcome = "reused" if new_keys[stage.id] in cached else "re-run"
        if stage.id in old_documents and stage.id in new_documents:
            stage.inputs = _input_changes(old_documents[stage.id], new_documents[stage.id], stage.changes)
            if stage.inputs and stage.status == "same":
                stage.status = "changed"
        if stage.outcome == "re-run" and stage.status == "same":
            stage.reason = ("its input changed" if upstream_reruns else "the embedded recipe changed"
                            if stage.type == "save" else "its model or numerics changed")
        if stage.type != "save":    # a save passes its input state through unchanged
            upstream_reruns = upstream_reruns or stage.outcome == "re-run"


def diff_loaded(a: LoadedRecipe, b: LoadedRecipe, *, numerics: Numerics | None = None,
                labels: tuple[str, str] | None = None) -> RecipeDiff:
    old, new = canonical_dict(a.recipe), canonical_dict(b.recipe)
    recipe_changes = field_changes({k: v for k, v in old.items() if k not in RECIPE_FIELDS_APART},
                                   {k: v for k, v in new.items() if k not in RECIPE_FIELDS_APART})
    diff = RecipeDiff(a=labels[0] if labels else str(a.path), b=labels[1] if labels else str(b.path),
                      recipe=recipe_changes, models=model_diffs(a, b),
                      stages=stage_diffs(old["stages"], new["stages"]), wildcards=wildcard_diffs(a, b),
                      exact=False)
    apply_consequence(diff, a, b, numerics or Numerics.choose())
    return diff


def diff_sources(a: str, b: str, overrides: list[str] = ()) -> RecipeDiff:
    """Diff two recipe sources: recipe files, images made by sdbake, or `REV:path` git revisions."""
    from sdbake.runner.sources import load_any
    return diff_loaded(load_any(a, list(overrides)), load_any(b, list(overrides)), labels=(a, b))


# -- the consequence, in words (also in the JSON form) ----------------------------------------

def _span(ids: list[str]) -> str:
    """Stage ids in order, a run of three or more written `first .. last`."""
    return ids[0] if len(ids) == 1 else ", ".join(ids) if len(ids) == 2 else f"{ids[0]} .. {ids[-1]}"


def _runs(stages: list[StageDiff], outcome: str) -> list[str]:
    runs, current = [], []
    for stage in (s for s in stages if s.outcome != "removed"):
        if stage.outcome == outcome:
            current.append(stage.id)
        elif current:
            runs.append(_span(current))
            current = []
    if current:
        runs.append(_span(current))
    return runs


def consequence_line(diff: RecipeDiff) -> str:
    if not diff.rerun:
        return "all stages reused from cache"
    reused, rerun = _runs(diff.stages, "reused"), _runs(diff.stages, "re-run")
    parts = [f"stages {', '.join(reused)} reused from cache" if reused else "no stage reused from cache",
             f"{', '.join(rerun)} re-run"]
    removed = [s.id for s in diff.stages if s.status == "removed"]
    if removed:
        parts.append(f"{', '.join(removed)} no longer run")
    return "; ".join(parts)
