"""Lock files: `sdbake lock` pins a render's inputs and outputs; `run --locked` and `verify` check them."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import tomllib
from recipe_helpers import txt2img, write

pytest.importorskip("torch")


@pytest.fixture
def project(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    """A folder with its own copy of the tiny model (the tests change its bytes) and a small recipe."""
    monkeypatch.setenv("SDBAKE_CACHE", str(tmp_path / "cache"))
    shutil.copytree(tiny_model_dir, tmp_path / "model")
    write(tmp_path, "r.toml", txt2img(Path("model"), steps=6, path="img/{{ seed }}.png", name="locked",
                                       prompt="a {red|blue} circle"))
    return tmp_path


def sdbake(capsys, project: Path, *args: str) -> tuple[int, str, str]:
    from sdbake.runner.cli import main
    capsys.readouterr()
    code = main([args[0], str(project / "r.toml"), "--out", str(project / "out"), *args[1:]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def locked(project: Path) -> dict:
    return tomllib.loads((project / "r.toml.lock").read_text(encoding="utf-8"))


def test_lock_writes_models_prompts_versions_numerics_keys_and_outputs(capsys, project):
    from importlib.metadata import version

    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_recipe
    code, out, _ = sdbake(capsys, project, "lock")
    assert code == 0 and "r.toml.lock" in out
    lock = locked(project)
    assert lock["format"] == 1 and lock["recipe"] == "locked"

    checkpoint = lock["models"]["m"]["checkpoint"]
    files = [p for p in (project / "model").rglob("*") if p.is_file()]
    assert Path(checkpoint["path"]) == project / "model"
    assert checkpoint["size"] == sum(p.stat().st_size for p in files)
    assert len(checkpoint["sha256"]) == 64 and checkpoint["short_hash"] == checkpoint["sha256"][:10]

    picked = lock["prompts"]["encode"]["prompts"]          # the wildcard pick for seed 42, resolved
    assert picked in (["a red circle"], ["a blue circle"])
    assert lock["prompts"]["encode"]["negatives"] == ["blurry"]
    assert lock["versions"] == {"sdbake": version("sdbake"), "torch": version("torch"),
                                "diffusers": version("diffusers")}
    assert lock["numerics"]["device"] == "cpu" and lock["numerics"]["dtype"] == "float32"
    assert lock["numerics"]["threads"] == 1

    plan = make_plan(load_recipe(project / "r.toml"), threads=1)
    assert lock["stages"] == {inv.id: inv.key for inv in plan.invocations}
    image = project / "out" / "img" / "42.png"
    assert lock["outputs"] == {"img/42.png": hashlib.sha256(image.read_bytes()).hexdigest()}


def test_lock_file_is_sorted_and_stable(capsys, project):
    sdbake(capsys, project, "lock")
    first = (project / "r.toml.lock").read_text(encoding="utf-8")
    sdbake(capsys, project, "lock")                         # all hits now: the same text
    assert (project / "r.toml.lock").read_text(encoding="utf-8") == first

    def assert_sorted(table: dict, where: str = "lock") -> None:
        # TOML writes a table's plain values before its sub-tables: each group is sorted.
        values = [name for name, value in table.items() if not isinstance(value, dict)]
        tables = [name for name, value in table.items() if isinstance(value, dict)]
        assert list(table) == values + tables and values == sorted(values) and tables == sorted(tables), where
        for name in tables:
            assert_sorted(table[name], f"{where}.{name}")
    assert_sorted(locked(project))


def test_run_locked_passes_when_nothing_changed(capsys, project):
    sdbake(capsys, project, "lock")
    code, out, err = sdbake(capsys, project, "run", "--locked")
    assert code == 0, err
    assert "img/42.png" in out


def test_run_locked_refuses_a_changed_model_file_with_one_line_per_difference(capsys, project):
    sdbake(capsys, project, "lock")
    shutil.rmtree(project / "out")
    config = project / "model" / "unet" / "config.json"
    config.write_text(config.read_text() + "\n", encoding="utf-8")       # the same model, other bytes
    code, out, err = sdbake(capsys, project, "run", "--locked")
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"{project / 'r.toml'}: model m.checkpoint: sha256 ")
    assert str(project / "model") in lines[0]
    assert "1 difference(s) from the lock" in lines[1]
    assert not (project / "out").exists()                   # refused before rendering anything


def test_run_locked_lists_each_difference(capsys, project):
    sdbake(capsys, project, "lock")
    (project / "model" / "model_index.json").write_text("{}", encoding="utf-8")
    recipe = project / "r.toml"
    recipe.write_text(recipe.read_text().replace("a {red|blue} circle", "a green circle"), encoding="utf-8")
    code, _, err = sdbake(capsys, project, "run", "--locked")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 3, err
    assert "model m.checkpoint" in lines[0]
    assert "stage encode: resolved prompts differ from the lock" in lines[1] and "a green circle" in lines[1]
    assert "2 difference(s) from the lock" in lines[2]


def test_run_locked_without_a_lock_file_says_so(capsys, project):
    code, _, err = sdbake(capsys, project, "run", "--locked")
    assert code == 1 and "no lock file" in err and "r.toml.lock" in err


def test_verify_passes_on_an_unchanged_recipe(capsys, project):
    sdbake(capsys, project, "lock")
    code, out, _ = sdbake(capsys, project, "verify")
    assert code == 0 and "verified: outputs match the lock" in out


def test_verify_reports_an_output_that_differs_from_the_lock(capsys, project):
    sdbake(capsys, project, "lock")
    lock_file = project / "r.toml.lock"
    digest = locked(project)["outputs"]["img/42.png"]
    lock_file.write_text(lock_file.read_text().replace(digest, "0" * 64), encoding="utf-8")
    code, out, _ = sdbake(capsys, project, "verify")
    assert code == 1
    assert f"output img/42.png: sha256 {digest[:12]} differs from the lock's 000000000000" in out


# ---- LoRAs: a recipe's `loras` and a prompt's `<lora:...>` tags are pinned alike -------------------------

def resave_with_other_bytes(path: Path) -> None:
    """The same LoRA weights in a file with other bytes (metadata added), as a re-download can give."""
    from safetensors.torch import load_file, save_file
    save_file(load_file(path), path, metadata={"note": "saved again"})


@pytest.fixture
def lora_project(tmp_path, tiny_model_dir, tiny_lora, monkeypatch) -> Path:
    """A LoRA folder (configured as `loras`) and three recipes loading tiny.safetensors: through the model
    entry's `loras` (m.toml), a stage's `loras` (s.toml) and a prompt tag (t.toml)."""
    monkeypatch.setenv("SDBAKE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "loras").mkdir()
    shutil.copy(tiny_lora, tmp_path / "loras" / "tiny.safetensors")
    (tmp_path / "sdbake.toml").write_text(f'[folders]\nloras = ["{tmp_path / "loras"}"]\n', encoding="utf-8")
    monkeypatch.setenv("SDBAKE_CONFIG", str(tmp_path / "sdbake.toml"))
    plain = txt2img(tiny_model_dir, steps=3, path="img/{{ seed }}.png", name="loras", prompt="a red circle")
    write(tmp_path, "m.toml", plain.replace(f'checkpoint = "{tiny_model_dir}"\n', f'checkpoint = "{tiny_model_dir}"\n'
                                            'loras = [{ name = "tiny", weight = 0.8 }]\n'))
    write(tmp_path, "s.toml", plain.replace('type = "sample"\n', 'type = "sample"\nloras = [{ name = "tiny", '
                                                                 'weight = 0.8 }]\n'))
    write(tmp_path, "t.toml", plain.replace("a red circle", "a red circle <lora:tiny:0.8:0.5>"))
    return tmp_path


def sdbake_recipe(capsys, folder: Path, recipe: str, *args: str) -> tuple[int, str, str]:
    from sdbake.runner.cli import main
    capsys.readouterr()
    code = main([args[0], str(folder / recipe), "--out", str(folder / "out"), *args[1:]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_lock_pins_a_tag_lora_at_the_stage_whose_prompt_names_it(capsys, lora_project):
    lora = lora_project / "loras" / "tiny.safetensors"
    code, _, err = sdbake_recipe(capsys, lora_project, "t.toml", "lock")
    assert code == 0, err
    lock = tomllib.loads((lora_project / "t.toml.lock").read_text(encoding="utf-8"))
    assert lock["loras"] == {"encode": [{"path": str(lora), "size": lora.stat().st_size,
                                         "sha256": hashlib.sha256(lora.read_bytes()).hexdigest(),
                                         "short_hash": hashlib.sha256(lora.read_bytes()).hexdigest()[:10],
                                         "tag": "tiny", "weight": 0.8, "unet_weight": 0.5}]}
    assert "loras" not in lock["models"]["m"]
    code, _, err = sdbake_recipe(capsys, lora_project, "s.toml", "lock")     # a stage's own `loras`: the same
    assert code == 0, err
    stage = tomllib.loads((lora_project / "s.toml.lock").read_text(encoding="utf-8"))["loras"]
    assert list(stage) == ["sample"] and stage["sample"][0]["sha256"] == lock["loras"]["encode"][0]["sha256"]
    assert "tag" not in stage["sample"][0]


@pytest.mark.parametrize("recipe, line", [
    ("m.toml", "model m.loras: LoRA files differ from the lock"),
    ("s.toml", "stage sample: LoRA tiny.safetensors: sha256 {old} in the lock, {new} now ({path})"),
    ("t.toml", "stage encode: LoRA <lora:tiny>: sha256 {old} in the lock, {new} now ({path})"),
])
def test_run_locked_and_verify_refuse_a_changed_lora_file_wherever_the_recipe_names_it(capsys, lora_project,
                                                                                        recipe, line):
    lora = lora_project / "loras" / "tiny.safetensors"
    old = hashlib.sha256(lora.read_bytes()).hexdigest()
    assert sdbake_recipe(capsys, lora_project, recipe, "lock")[0] == 0
    assert sdbake_recipe(capsys, lora_project, recipe, "run", "--locked")[0] == 0      # unchanged: it runs
    shutil.rmtree(lora_project / "out")
    resave_with_other_bytes(lora)
    new = hashlib.sha256(lora.read_bytes()).hexdigest()
    expected = line.format(old=old[:12], new=new[:12], path=lora)
    code, out, err = sdbake_recipe(capsys, lora_project, recipe, "run", "--locked")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [f"{lora_project / recipe}: {expected}",
                                        f"{lora_project / recipe}: 1 difference(s) from the lock file"]
    assert not (lora_project / "out").exists()                 # refused before rendering anything
    code, out, _ = sdbake_recipe(capsys, lora_project, recipe, "verify")
    assert code == 1 and expected in out.splitlines()
