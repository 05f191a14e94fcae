"""Which comparison `check` uses for a recipe, and why: exact on the goldens' own numerics fingerprint,
within tolerances elsewhere (another CPU ISA or GPU computes other last bits).

Goldens record the fingerprint they were rendered with in `<golden>/<recipe name>/fingerprint.json`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sdbake.runner.check.metrics import Tolerances

FINGERPRINT_FILE = "fingerprint.json"


@dataclass(frozen=True)
class Comparison:
    exact: bool
    tolerances: Tolerances           # used when not exact (stated fields; the rest are the defaults)
    reason: str

    def describe(self) -> str:
        rule = "exact (equal pixels)" if self.exact else f"tolerance ({self.tolerances.describe()})"
        return f"{rule}: {self.reason}"


def read_fingerprint(folder: Path) -> dict | None:
    """The fingerprint a recipe's goldens were made with; None when they record none (or it is unreadable)."""
    try:
        document = json.loads((folder / FINGERPRINT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document.get("fingerprint") if isinstance(document, dict) else None


def write_fingerprint(folder: Path, fingerprint: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FINGERPRINT_FILE
    document = {"fingerprint": fingerprint,
                "about": "the numerics the goldens in this folder were rendered with (sdbake check --update); "
                         "check compares exactly on the same fingerprint and within tolerances elsewhere"}
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def fingerprint_text(fingerprint: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(fingerprint.items()))


def differences(golden: dict, current: dict) -> str:
    """`cpu AVX2 here, AVX512 in the goldens; ...` for every key whose values differ."""
    keys = sorted(set(golden) | set(current))
    return "; ".join(f"{key} {current.get(key, '(none)')} here, {golden.get(key, '(none)')} in the goldens"
                     for key in keys if golden.get(key) != current.get(key))


def choose_comparison(*, exact_flag: bool, flags: Tolerances, recipe_check, golden_fingerprint: dict | None,
                      current_fingerprint: dict) -> Comparison:
    """The rules, first match wins: --exact; tolerance flags; the recipe's `exact = true`; goldens without
    a fingerprint; the same fingerprint (exact); another fingerprint (tolerance)."""
    tolerances = Tolerances.from_recipe(recipe_check).overridden(flags)
    if exact_flag:
        return Comparison(True, tolerances, "--exact was given")
    if flags.stated():
        return Comparison(False, tolerances, "tolerances were given on the command line")
    if recipe_check.exact:
        return Comparison(True, tolerances, "the recipe's [check] table sets exact = true")
    if golden_fingerprint is None:
        return Comparison(False, tolerances, f"the goldens record no numerics fingerprint ({FINGERPRINT_FILE})")
    if golden_fingerprint == current_fingerprint:
        return Comparison(True, tolerances, f"same numerics fingerprint as the goldens "
                                            f"({fingerprint_text(current_fingerprint)})")
    return Comparison(False, tolerances, f"the goldens were made with other numerics: "
                                         f"{differences(golden_fingerprint, current_fingerprint)}")
