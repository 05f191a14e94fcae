"""Which comparison `check` picks (exact on the goldens' fingerprint, tolerance elsewhere, flags and the
recipe's [check] table first), and the numerics fingerprint it rests on, predicted without torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sdbake.runner.check.comparison import (
    FINGERPRINT_FILE,
    choose_comparison,
    read_fingerprint,
    write_fingerprint,
)
from sdbake.runner.check.metrics import Tolerances
from sdbake.runner.numerics import Numerics
from sdbake.schemas.recipe import CheckTolerances

HERE = {"device": "cpu", "cpu": "AVX512", "torch": "2.13.0+cpu", "dtype": "float32", "threads": 1}
AVX2 = dict(HERE, cpu="AVX2")


NO_FLAGS = Tolerances()


def choose(exact_flag=False, flags=NO_FLAGS, check=None, golden=HERE, current=HERE):
    return choose_comparison(exact_flag=exact_flag, flags=flags, recipe_check=check or CheckTolerances(),
                             golden_fingerprint=golden, current_fingerprint=current)


def test_same_fingerprint_compares_exactly():
    comparison = choose()
    assert comparison.exact and "same numerics fingerprint" in comparison.reason
    assert comparison.describe().startswith("exact (equal pixels)")


def test_other_fingerprint_compares_within_the_default_tolerance_and_names_the_difference():
    comparison = choose(current=AVX2)
    assert not comparison.exact
    assert comparison.reason == "the goldens were made with other numerics: cpu AVX2 here, AVX512 in the goldens"
    assert "max abs diff <= 8, mean abs diff <= 0.5, PSNR >= 45.0 dB, SSIM >= 0.995" in comparison.describe()


def test_goldens_without_a_fingerprint_compare_within_tolerance():
    comparison = choose(golden=None)
    assert not comparison.exact and FINGERPRINT_FILE in comparison.reason


def test_exact_flag_wins_over_everything():
    comparison = choose(exact_flag=True, current=AVX2, check=CheckTolerances(min_psnr=20.0))
    assert comparison.exact and comparison.reason == "--exact was given"


def test_tolerance_flags_force_a_tolerance_comparison_on_the_same_fingerprint():
    comparison = choose(flags=Tolerances(max_abs_diff=3), check=CheckTolerances(min_psnr=20.0, max_abs_diff=1))
    assert not comparison.exact and "command line" in comparison.reason
    assert comparison.tolerances == Tolerances(max_abs_diff=3, min_psnr=20.0)


def test_recipe_sets_exact_or_its_own_tolerances():
    assert choose(check=CheckTolerances(exact=True), current=AVX2).exact
    own = choose(check=CheckTolerances(mean_abs_diff=2.0), current=AVX2)
    assert not own.exact and own.tolerances.effective().mean_abs_diff == 2.0
    assert "mean abs diff <= 2.0" in own.describe()


def test_fingerprint_file_round_trip(tmp_path):
    assert read_fingerprint(tmp_path) is None
    write_fingerprint(tmp_path / "demo", HERE)
    assert read_fingerprint(tmp_path / "demo") == HERE
    assert json.loads((tmp_path / "demo" / FINGERPRINT_FILE).read_text())["fingerprint"]["cpu"] == "AVX512"


def test_cache_key_fingerprint_names_the_cpu_isa_and_kernel_caps(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    fingerprint = Numerics.choose("cpu", "float32", 1).fingerprint()
    assert (fingerprint["cpu"], fingerprint["onednn_isa"], fingerprint["attention"]) == ("DEFAULT", "SSE41", "sdpa")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert Numerics.choose("cpu", "float32", 1).fingerprint()["cpu"] == "AVX2"
    machine = Numerics.choose("cpu", "float32", 1).machine_fingerprint()
    assert machine["torch"].count(".") >= 2 and machine["cpu_model"]


@pytest.mark.parametrize("setting", [None, "avx2", "default", "AVX2", "bogus"])
def test_predicted_cpu_capability_is_what_torch_reports(setting):
    """The prediction (env + /proc/cpuinfo, no torch) equals torch.backends.cpu.get_cpu_capability()."""
    pytest.importorskip("torch")
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if setting is not None:
        env["ATEN_CPU_CAPABILITY"] = setting
    code = ("import sys; from sdbake.runner.numerics import cpu_capability; predicted = cpu_capability(); "
            "assert 'torch' not in sys.modules; import torch; "
            "print(predicted, torch.backends.cpu.get_cpu_capability())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    predicted, actual = out.split()
    assert predicted == actual
