"""`sdbake validate | canonical | schema`: exit codes, help, version, and a validate that stays light
(no torch imported, well under a second for the example recipes)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sdbake.runner.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(str(p.relative_to(ROOT)) for ext in ("toml", "yaml", "yml") for p in (ROOT / "recipes").glob(f"*.{ext}"))
HEAVY_MODULES = ("torch", "diffusers", "transformers", "peft", "safetensors", "numpy", "PIL")


def sdbake(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdbake.runner.cli", *args], cwd=cwd, capture_output=True, text=True, check=False,
                          timeout=60)


def write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


BAD_YAML = """version: 1
name: bad
stages:
  - type: sample
    steps: 20
    denoize: 0.5
"""


def test_validate_examples_exit_0():
    result = sdbake("validate", *EXAMPLES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{name}: ok" for name in EXAMPLES]


def test_validate_invalid_recipe_exits_1_with_file_line_col(tmp_path):
    bad = write(tmp_path, "bad.yaml", BAD_YAML)
    result = sdbake("validate", bad)
    assert result.returncode == 1
    assert result.stderr == f"{bad}:6:5: stages[0].denoize: unknown key `denoize`\n"
    assert "Traceback" not in result.stderr


def test_validate_reports_every_file_and_exits_1_if_any_fails(tmp_path):
    bad = write(tmp_path, "bad.toml", 'version = 1\nname = "b"\n[[stages]]\ntype = "encode"\nwidth = 100\nseed = -2\n')
    broken = write(tmp_path, "broken.yaml", "version: [1\n")
    result = sdbake("validate", EXAMPLES[0], bad, broken)
    assert result.returncode == 1
    assert result.stdout == f"{EXAMPLES[0]}: ok\n"
    assert result.stderr.splitlines() == [
        f"{bad}:5:1: stages[0].width: must be a multiple of 8 (got 100)",
        f"{bad}:6:1: stages[0].seed: must be >= -1 (got -2)",
        f"{broken}:2:1: invalid YAML: expected ',' or ']', but got '<stream end>'",
    ]


def test_validate_accepts_comfyuis_samplers_and_kl_optimal(tmp_path):
    samplers = ["uni_pc", "UniPC", "uni_pc_bh2", "ddpm", "LCM", "lcm", "dpmpp_2m_sde_gpu", "dpmpp_sde_gpu",
                "dpmpp_3m_sde_gpu", "LCM Karras", "euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2m_cfg_pp",
                "dpmpp_2s_ancestral_cfg_pp", "DPM++ 2S a CFG++"]
    head = f'version = 1\nname = "s"\n[models.m]\ncheckpoint = "{ROOT / "models" / "demo"}"\n[defaults]\nmodel = "m"\n'
    recipes = [write(tmp_path, f"{n}.toml", f'{head}sampler = "{sampler}"\nscheduler = "{scheduler}"\n'
                     '[[stages]]\ntype = "encode"\nprompt = "a"\n[[stages]]\ntype = "sample"\n')
               for n, (sampler, scheduler) in enumerate((s, sch) for s in samplers for sch in ("kl_optimal", "KL Optimal"))]
    result = sdbake("validate", *recipes)
    assert result.returncode == 0, result.stderr
    unknown = sdbake("validate", write(tmp_path, "cfgpp.toml", f'{head}sampler = "res_multistep_cfg_pp"\n'
                                       '[[stages]]\ntype = "encode"\nprompt = "a"\n'))
    assert unknown.returncode == 1 and "unknown sampler 'res_multistep_cfg_pp'" in unknown.stderr


def test_validate_set_override(tmp_path):
    multistage = "recipes/multistage.yaml"
    assert sdbake("validate", multistage, "--set", "stages.hires.denoise=0.5").returncode == 0
    result = sdbake("validate", multistage, "--set", "stages.hires.denoise=1.5")
    assert result.returncode == 1
    assert result.stderr == f"{multistage}:32:5: stages[4].denoise: must be <= 1 (got 1.5)\n"


def test_canonical_prints_identical_json_for_twins():
    from_toml = sdbake("canonical", "recipes/multistage.toml", "--format", "json")
    from_yaml = sdbake("canonical", "recipes/multistage.yaml", "--format", "json")
    assert from_toml.returncode == from_yaml.returncode == 0
    assert from_toml.stdout == from_yaml.stdout
    assert json.loads(from_toml.stdout)["stages"][3]["start"] == 10


def test_canonical_of_invalid_recipe_exits_1(tmp_path):
    bad = write(tmp_path, "bad.yaml", BAD_YAML)
    result = sdbake("canonical", bad)
    assert result.returncode == 1 and result.stderr.startswith(f"{bad}:6:5: ")


def test_schema_prints_json_schema():
    result = sdbake("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"version", "name", "models", "defaults", "stages"} <= set(schema["properties"])


def test_version():
    result = sdbake("--version")
    assert result.returncode == 0 and result.stdout.startswith("sdbake ")


def registered_commands() -> list[str]:
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    return sorted(subparsers.choices)


def test_the_recipe_commands_are_registered():
    assert {"validate", "canonical", "schema"} <= set(registered_commands())


@pytest.mark.parametrize("command", registered_commands())
def test_help_on_every_command_exits_0(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: sdbake {command}")


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["validate"], ["canonical"],
                                  ["canonical", "recipes/txt2img.toml", "--format", "xml"], ["--no-such-flag"]])
def test_usage_errors_exit_2(args):
    result = sdbake(*args)
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    assert "usage: sdbake" in result.stderr


def test_validate_imports_no_torch_and_is_fast():
    code = ("import sys; from sdbake.runner.cli import main; "
            f"rc = main(['validate', *{EXAMPLES!r}]); "
            f"heavy = sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules); "
            "print(rc, str(heavy).replace(' ', ''), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    exit_code, heavy_imported = result.stderr.strip().splitlines()[-1].split(" ", 2)[:2]
    assert (exit_code, heavy_imported) == ("0", "[]"), result.stderr

    importtime = subprocess.run([sys.executable, "-X", "importtime", "-m", "sdbake.runner.cli", "validate", *EXAMPLES],
                                cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert importtime.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in importtime.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY_MODULES), sorted(imported & set(HEAVY_MODULES))

    start = time.perf_counter()
    timed = sdbake("validate", *EXAMPLES)
    elapsed_s = time.perf_counter() - start
    print(f"sdbake validate of {len(EXAMPLES)} example recipes: {elapsed_s:.2f} s wall (process start included)")
    assert timed.returncode == 0
    assert elapsed_s < 3.0          # generous for a loaded CI machine; the target here is < 1 s
