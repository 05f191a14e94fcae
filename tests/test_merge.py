"""Checkpoint merging ([models.x] merge = {...} and `sdbake models merge`): A1111's Checkpoint Merger
semantics, block weights, the merged file as a checkpoint, and a merge computed once across runs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from recipe_helpers import write
from stage_helpers import render_text

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo"


def perturbed_copy(folder: Path, out: Path, seed: int = 7, scale: float = 0.05) -> Path:
    """A copy of a diffusers folder whose UNet and VAE weights carry some noise."""
    import torch
    from safetensors.torch import load_file, save_file
    shutil.copytree(folder, out)
    generator = torch.Generator().manual_seed(seed)
    for part in ("unet", "vae"):
        path = out / part / "diffusion_pytorch_model.safetensors"
        weights = load_file(str(path))
        save_file({k: (v + scale * torch.randn(v.shape, generator=generator)).to(v.dtype).contiguous()
                   for k, v in weights.items()}, str(path))
    return out


@pytest.fixture(scope="module")
def demo_pair(tmp_path_factory) -> tuple[Path, Path]:
    return DEMO, perturbed_copy(DEMO, tmp_path_factory.mktemp("merge") / "demo-perturbed")


def merged(method, a, b, c=None, alpha=0.5, alphas=None, fp16=False):
    from sdbake.runner.merges import merge_recipe
    from sdbake.runner.models.merge import merge_files
    recipe = merge_recipe(method, alpha, alphas, fp16, "a", "b", "c" if c else None)
    return merge_files(recipe, a, b, c)


def assert_same_tensors(left: dict, right: dict) -> None:
    import torch
    assert set(left) == set(right)
    different = [k for k in left if left[k].dtype != right[k].dtype or not torch.equal(left[k], right[k])]
    assert different == []


def test_weighted_sum_at_alpha_0_and_1_equals_each_input_bit_for_bit(demo_pair):
    from sdbake.runner.models.merge import read_for_merge
    a, b = demo_pair
    assert_same_tensors(merged("weighted_sum", a, b, alpha=0.0), read_for_merge(a)[1])
    assert_same_tensors(merged("weighted_sum", a, b, alpha=1.0), read_for_merge(b)[1])
    halfway = merged("weighted_sum", a, b, alpha=0.5)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    expected = 0.5 * read_for_merge(a)[1][key] + 0.5 * read_for_merge(b)[1][key]
    assert np.array_equal(halfway[key].numpy(), expected.numpy())


def test_add_difference_of_b_minus_b_is_a(demo_pair):
    from sdbake.runner.models.merge import read_for_merge
    a, b = demo_pair
    assert_same_tensors(merged("add_difference", a, b, b, alpha=0.7), read_for_merge(a)[1])


def test_block_weights_follow_merge_block_weighted(demo_pair):
    """IN00..OUT11 weight their UNet blocks (time_embed with IN00, out.* with OUT11); the text encoder
    and the VAE take the base alpha."""
    import torch
    from sdbake.runner.models.merge import block_of, read_for_merge
    a, b = demo_pair
    sd_a, sd_b = read_for_merge(a)[1], read_for_merge(b)[1]
    result = merged("weighted_sum", a, b, alpha=0.0, alphas={"IN01": 1.0, "OUT11": 1.0})
    assert block_of("model.diffusion_model.time_embed.0.weight") == "IN00"
    assert block_of("model.diffusion_model.out.2.bias") == "OUT11"
    assert block_of("model.diffusion_model.middle_block.1.proj_in.weight") == "M00"
    for key in sd_a:
        source = sd_b if block_of(key) in ("IN01", "OUT11") else sd_a
        assert torch.equal(result[key], source[key]), key
    assert any(block_of(k) == "IN01" and not torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_merging_different_architectures_is_one_clear_error(demo_pair, tiny_model_dir):
    from sdbake.schemas.errors import ModelError
    with pytest.raises(ModelError, match="different architectures: model.diffusion_model"):
        merged("weighted_sum", demo_pair[0], tiny_model_dir)


def test_fp16_stores_half_tensors(tiny_model_dir):
    import torch
    result = merged("weighted_sum", tiny_model_dir, tiny_model_dir, alpha=0.25, fp16=True)
    assert {v.dtype for k, v in result.items() if k.startswith("model.diffusion_model.")} == {torch.float16}


MERGE_RECIPE = '''version = 1
name = "mix"
[models.a]
checkpoint = "{a}"
[models.b]
checkpoint = "{b}"
[models.mix]
merge = {{ method = "weighted_sum", a = "a", b = "b", alpha = {alpha} }}
[defaults]
model = "{model}"
seed = 5
width = 64
height = 64
steps = 4
sampler = "euler"
[[stages]]
type = "encode"
prompt = "a red circle"
[[stages]]
type = "sample"
[[stages]]
type = "save"
path = "{model}.png"
'''


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_merged_demo_at_alpha_0_and_1_renders_each_input(demo_pair, tmp_path):
    a, b = demo_pair
    renders = {}
    for alpha, model in ((0.0, "a"), (1.0, "b"), (0.0, "mix"), (1.0, "mix")):
        folder = tmp_path / f"{model}-{alpha}"
        folder.mkdir()
        result = render_text(folder, MERGE_RECIPE.format(a=a, b=b, alpha=alpha, model=model),
                             cache_dir=tmp_path / "cache")
        renders[model, alpha] = pixels(result.outputs[0])
    assert np.array_equal(renders["mix", 0.0], renders["a", 0.0])
    assert np.array_equal(renders["mix", 1.0], renders["b", 1.0])
    assert not np.array_equal(renders["a", 0.0], renders["b", 1.0])


def sdbake(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdbake.runner.cli", *map(str, args)], check=False, cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_models_merge_writes_a_file_that_loads_as_a_checkpoint(tiny_model_dir, tmp_path):
    """`sdbake models merge` writes the recipe into the file's metadata, never overwrites, and the file
    renders as `checkpoint = ...` (with the configs of its first model), with the same bytes and model
    hash as the same merge made inside a recipe."""
    import json

    from safetensors import safe_open
    b = perturbed_copy(tiny_model_dir, tmp_path / "b")
    out = tmp_path / "mix.safetensors"
    done = sdbake("models", "merge", tiny_model_dir, b, "--alpha", "0.3", "-o", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sha = done.stdout.split()[0]
    with safe_open(str(out), "pt") as f:
        recipe = json.loads(f.metadata()["sd_merge_recipe"])
    assert recipe["method"] == "weighted_sum" and recipe["alpha"] == 0.3 and recipe["c_sha256"] is None
    before = out.read_bytes()
    again = sdbake("models", "merge", tiny_model_dir, b, "--alpha", "0.5", "-o", out, cwd=tmp_path)
    assert again.returncode == 1 and "never overwrites" in again.stderr and out.read_bytes() == before

    text = f'''version = 1
name = "file"
[models.a]
checkpoint = "{tiny_model_dir}"
[models.b]
checkpoint = "{b}"
[models.inline]
merge = {{ method = "weighted_sum", a = "a", b = "b", alpha = 0.3 }}
[models.file]
checkpoint = "{out}"
config = "{tiny_model_dir}"
[defaults]
seed = 5
width = 64
height = 64
steps = 3
[[stages]]
type = "encode"
prompt = "a red circle"
model = "MODEL"
[[stages]]
type = "sample"
model = "MODEL"
[[stages]]
type = "save"
path = "MODEL.png"
'''
    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_recipe
    results = {}
    for model in ("file", "inline"):
        result = render_text(tmp_path, text.replace("MODEL", model), name=f"{model}.toml",
                             cache_dir=tmp_path / "cache")
        info = Image.open(result.outputs[0]).info["parameters"]
        results[model] = pixels(result.outputs[0]), info
        plan = make_plan(load_recipe(tmp_path / f"{model}.toml"), cache_dir=tmp_path / "cache")
        assert plan.models[model].checkpoint_sha256 == sha, model
    assert np.array_equal(results["file"][0], results["inline"][0])
    assert f"Model hash: {sha[:10]}" in results["file"][1] and f"Model hash: {sha[:10]}" in results["inline"][1]
    assert "Model: inline" in results["inline"][1]


@pytest.mark.slow
def test_a_merge_is_computed_once_across_runs(tiny_model_dir, tmp_path):
    b = perturbed_copy(tiny_model_dir, tmp_path / "b")
    path = write(tmp_path, "mix.toml", MERGE_RECIPE.format(a=tiny_model_dir, b=b, alpha=0.4, model="mix"))
    env = {"SDBAKE_CACHE": str(tmp_path / "cache")}
    first = sdbake("run", path, "-v", "--out", tmp_path / "out", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert "merge mix: computing" in first.stderr
    [entry] = [p for p in (tmp_path / "cache").rglob("entry.json") if '"type": "merge"' in p.read_text()]
    merged_file = entry.parent / "state.safetensors"
    stamp = merged_file.stat().st_mtime_ns
    second = sdbake("run", path, "-v", "--out", tmp_path / "out2", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stderr
    assert "merge mix: cache hit" in second.stderr and "computing" not in second.stderr
    assert merged_file.stat().st_mtime_ns == stamp
    assert pixels(tmp_path / "out" / "mix.png").tolist() == pixels(tmp_path / "out2" / "mix.png").tolist()


VALIDATE = '''version = 1
name = "v"
[models.a]
checkpoint = "a.safetensors"
[models.b]
checkpoint = "b.safetensors"
{extra}
[defaults]
model = "a"
[[stages]]
type = "encode"
prompt = "x"
'''


@pytest.mark.parametrize("extra, expected", [
    ('[models.m]\nmerge = { method = "weighted_sum", a = "a", b = "nope", alpha = 0.5 }',
     "models.m.merge.b: model `nope` is not defined in [models] (defined: a, b, m)"),
    ('[models.m]\nmerge = { method = "weighted_sum", a = "a", b = "b", alpha = 1.5 }',
     "models.m.merge.alpha: a weighted sum's alpha is between 0 and 1 (got 1.5)"),
    ('[models.m]\nmerge = { method = "add_difference", a = "a", b = "b", alpha = 0.5 }',
     "models.m.merge: add_difference needs a third model `c`"),
    (('[models.m]\nmerge = { method = "weighted_sum", a = "a", b = "n", alpha = 0.5 }\n'
     '[models.n]\nmerge = { method = "weighted_sum", a = "m", b = "b", alpha = 0.5 }'),
     "models.m.merge: merge cycle: m -> n -> m"),
    ('[models.m]\nmerge = { method = "weighted_sum", a = "a", b = "b", alpha = 0.5, alphas = { IN12 = 1.0 } }',
     "models.m.merge.alphas.IN12"),
    ('[models.m]\ncheckpoint = "x.safetensors"\nmerge = { method = "weighted_sum", a = "a", b = "b", alpha = 0.5 }',
     "set exactly one of `checkpoint` and `merge`"),
])
def test_merge_entries_are_validated(tmp_path, extra, expected):
    from sdbake.schemas.errors import RecipeError
    from sdbake.schemas.loader import load_recipe
    with pytest.raises(RecipeError) as caught:
        load_recipe(write(tmp_path, "r.toml", VALIDATE.format(extra=extra)))
    message = str(caught.value)
    assert expected in message and len(message.splitlines()) == 1
    assert re.search(r"r\.toml:\d+:\d+: ", message), message


def test_a_stored_merge_is_reused_and_a_damaged_one_recomputed(tiny_model_dir, tmp_path, monkeypatch):
    from sdbake.runner.cache import CacheStore
    from sdbake.runner.merges import cached_merge, merge_recipe
    from sdbake.runner.models import merge
    calls = []
    real = merge.merge_files
    monkeypatch.setattr(merge, "merge_files", lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    warnings = []
    store = CacheStore(tmp_path / "cache", warn=warnings.append)
    recipe = merge_recipe("weighted_sum", 0.5, None, False, "a" * 64, "b" * 64, None)
    inputs = (tiny_model_dir, tiny_model_dir, None)
    first = cached_merge(store, recipe, inputs, label="mix", names=("a", "b", "c"))
    good = first.read_bytes()
    assert cached_merge(store, recipe, inputs, label="mix", names=("a", "b", "c")) == first and len(calls) == 1
    damaged = bytearray(good)
    damaged[-1] ^= 0xFF
    first.write_bytes(bytes(damaged))
    again = cached_merge(store, recipe, inputs, label="mix", names=("a", "b", "c"))
    assert len(calls) == 2 and again.read_bytes() == good
    assert any("does not match its checksum" in w for w in warnings)


def test_a_block_weight_for_a_missing_block_is_an_error_unless_it_changes_nothing(tiny_model_dir):
    """The tiny UNet has input blocks 0-4 only: IN07 = 0.9 would be silently ignored, so it is refused;
    IN07 at the base alpha changes nothing and passes."""
    from sdbake.schemas.errors import ModelError
    with pytest.raises(ModelError, match="block weights for IN07: the models have no such UNet block"):
        merged("weighted_sum", tiny_model_dir, tiny_model_dir, alpha=0.5, alphas={"IN07": 0.9})
    merged("weighted_sum", tiny_model_dir, tiny_model_dir, alpha=0.5, alphas={"IN07": 0.5})


def test_a_merge_entry_exports_to_comfyui_as_a_named_checkpoint_with_a_warning(tmp_path, capsys):
    import json

    from sdbake.runner.cli import main
    path = write(tmp_path, "mix.toml", MERGE_RECIPE.format(a=DEMO, b=DEMO, alpha=0.3, model="mix"))
    out = tmp_path / "workflow.json"
    assert main(["export", str(path), "--to", "comfyui", "-o", str(out), "--out", str(tmp_path / "o")]) == 0
    loaders = [n for n in json.loads(out.read_text()).values() if n["class_type"] == "CheckpointLoaderSimple"]
    assert [n["inputs"]["ckpt_name"] for n in loaders] == ["mix.safetensors"]
    assert "model mix: a checkpoint merge; write it with `sdbake models merge`" in capsys.readouterr().err


def test_an_inpainting_a_takes_a_normal_b_in_its_first_four_channels_and_not_the_other_way():
    """A1111: conv_in of a 9-channel A merges its first 4 input channels with B's 4; the mask and
    masked-image channels stay A's. A normal A with an inpainting B is refused."""
    import torch
    from sdbake.runner.models.merge import merge_state_dicts
    from sdbake.schemas.errors import ModelError
    key = "model.diffusion_model.input_blocks.0.0.weight"
    a = {key: torch.ones(8, 9, 3, 3)}
    b = {key: torch.zeros(8, 4, 3, 3)}
    out = merge_state_dicts(dict(a), b, None, method="weighted_sum", alpha=0.25)[key]
    assert torch.equal(out[:, :4], torch.full((8, 4, 3, 3), 0.75)) and torch.equal(out[:, 4:], a[key][:, 4:])
    with pytest.raises(ModelError, match="the inpainting model must be `a`"):
        merge_state_dicts(dict(b), a, None, method="weighted_sum", alpha=0.25)
