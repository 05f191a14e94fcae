"""The repo's own regression renders: every example recipe, on the demo model, matches its golden image:
exactly on the machine that made them, within the stated tolerance with other CPU kernels."""
from __future__ import annotations

import os
import subprocess
import sys
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
    assert all(case.comparison for case in result.cases)


@pytest.mark.slow
def test_goldens_pass_with_avx2_kernels_through_the_tolerance(tmp_path):
    """Another machine's kernels, simulated by capping ATen, oneDNN and MKL at AVX2: the fingerprint differs
    from the goldens', so check compares within tolerance, says why, and passes."""
    env = {k: v for k, v in os.environ.items() if k != "SDBAKE_THREADS"}
    env.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2",
               SDBAKE_CACHE=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "sdbake", "check", str(ROOT / "recipes"), "--golden", str(GOLDEN)],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "comparison: tolerance (max abs diff <= 8" in done.stdout
    assert "cpu AVX2 here" in done.stdout and "onednn_isa AVX2 here, (none) in the goldens" in done.stdout
