"""Why a stage misses the cache: compare its key inputs with the last run's record for its id."""
from __future__ import annotations

from typing import Any

from sdbake.runner.cache import CacheStore
from sdbake.runner.plan import Invocation


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _differences(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return found
    if old != new:
        return [path or "value"]
    return []


# Key-document entries derived from others: a save's embedded prefix (from the earlier stages and its
# own params) and its rendered paths (from its path template). Named only when nothing else changed.
DERIVED = {"recipe", "outputs"}


def explain_miss(store: CacheStore, recipe_name: str, inv: Invocation) -> str:
    """"changed: cfg", "its input changed", both, or "never ran": against the last run of this recipe's
    stage with the same id."""
    record = store.read_record(recipe_name, inv.id)
    if record is None:
        return "never ran"
    if record.get("key") == inv.key:
        return "entry evicted"
    changed = _differences(record.get("inputs", {}), inv.inputs)
    upstream = "input" in changed
    own = [c.removeprefix("params.") for c in changed if c not in DERIVED and c != "input"]
    if not own and not upstream:
        own = [c for c in changed if c in DERIVED]
    parts = []
    if own:
        parts.append("changed: " + ", ".join(own[:6]) + (" ..." if len(own) > 6 else ""))
    if upstream:
        parts.append("its input changed")
    return "; ".join(parts) or "inputs changed"
