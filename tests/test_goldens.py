"""The repo's own regression renders: every example recipe, on the demo model, equals its golden image."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"

pytest.importorskip("torch")


@pytest.mark.slow
def test_example_recipes_match_their_goldens(tmp_path, monkeypatch):
    from sdbake.runner.check.run import CheckOptions, run_check
    monkeypatch.delenv("SDBAKE_THREADS", raising=False)           # check pins one thread
    result = run_check([str(ROOT / "recipes")], CheckOptions(golden=GOLDEN, cache_dir=tmp_path / "cache"))
    assert len(result.cases) >= 5
    assert not result.failed, "\n".join(f"{c.name}: {c.message}" for c in result.failed)
    assert not result.stale
