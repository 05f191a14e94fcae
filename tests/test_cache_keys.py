"""Cache keys (docs/design.md section 5): pinned golden keys, and what does and does not enter a key.

The plan only hashes files, so these tests use a few fixed bytes as the "checkpoint" and never load
a model or import torch. As DVC pins its stage-cache keys, the golden keys below fail on any
accidental change to the key document; change them only together with `KEY_FORMAT` or a stage's
`VERSION`, knowing that every user's cache misses once.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

FAKE_CHECKPOINT = b"sdbake golden-key checkpoint: these bytes are hashed, never loaded\n" * 16
FAKE_CHECKPOINT_SHA256 = "bd1b4094a3e3c26dcbd6451a7f96fbfa04b1d0b50b264b3cf5084971757a55ee"

GOLDEN_KEYS = {
    "encode": "af2e1e936243892fe7016a26416e06d288a809b8ae02ea6d511a73bc80ef42fe",
    "sample": "c881d6146f1bb31c5c1e7cc4ef80fc5e42493314ed99902f662fc7a2fd34eeb7",
    "save": "a0c9e7a96d10c6351a5c19762cdbd0b7cb14fa71c51887c6d597bf68305a4ba5",
}

RECIPE = """version = 1
name = "golden"
[models.base]
checkpoint = "{checkpoint}"
[defaults]
model = "base"
seed = 1234
width = 512
height = 768
steps = 20
sampler = "dpmpp_2m"
scheduler = "karras"
cfg = 7.0

[[stages]]
type = "encode"
prompt = "a lighthouse at dusk, (oil painting:1.2)"
negative = "lowres, blurry"
{encode_extra}
[[stages]]
type = "sample"
{sample_extra}
[[stages]]
type = "save"
path = "{save_path}"
"""


@pytest.fixture(autouse=True)
def _fixed_environment(monkeypatch, tmp_path):
    # The numerics fingerprint holds torch's minor version: pin it so the golden keys test our code,
    # not the installed torch.
    monkeypatch.setattr("sdbake.runner.numerics.torch_version", lambda: "2.13.0+cpu")
    # ... and the CPU's vector ISA, which differs between machines
    monkeypatch.setattr("sdbake.runner.numerics.cpu_capability", lambda: "AVX2")


def numerics(device="cpu", dtype="float32", threads=1):
    from sdbake.runner.numerics import Numerics
    return Numerics(device=device, dtype=dtype, threads=threads)


def plan_of(folder: Path, *, checkpoint="model.safetensors", save_path="out/{{ seed }}.png", encode_extra="",
            sample_extra="", seed=None, num=None):
    from sdbake.runner.plan import build_plan
    from sdbake.schemas.loader import load_text
    model = folder / checkpoint
    if not model.exists():
        model.write_bytes(FAKE_CHECKPOINT)
    text = RECIPE.format(checkpoint=checkpoint, save_path=save_path, encode_extra=encode_extra,
                         sample_extra=sample_extra)
    if seed is not None:
        text = text.replace("seed = 1234", f"seed = {seed}")
    loaded = load_text(text, "toml", label=str(folder / "golden.toml"), folder=folder)
    return build_plan(loaded, num or numerics(), folder / "outputs")


def keys(plan) -> dict[str, str]:
    return {inv.id: inv.key for inv in plan.invocations}


def test_fake_checkpoint_hash_is_what_the_key_documents_hold(tmp_path):
    plan = plan_of(tmp_path)
    encode = plan.invocations[0]
    assert hashlib.sha256(FAKE_CHECKPOINT).hexdigest() == FAKE_CHECKPOINT_SHA256
    assert encode.inputs["model"] == {"checkpoint": FAKE_CHECKPOINT_SHA256, "vae": None, "loras": []}


def test_golden_keys_of_a_fixed_recipe(tmp_path):
    assert keys(plan_of(tmp_path)) == GOLDEN_KEYS


def test_key_is_sha256_of_the_canonical_key_document(tmp_path):
    for inv in plan_of(tmp_path).invocations:
        canonical = json.dumps(inv.inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert inv.key == hashlib.sha256(canonical.encode()).hexdigest()


def test_key_document_names_what_design_section_5_lists(tmp_path):
    encode, sample, save = plan_of(tmp_path).invocations
    assert encode.inputs["stage"] == "encode" and encode.inputs["version"] == 1
    assert encode.inputs["input"] is None and sample.inputs["input"] == encode.key
    assert encode.inputs["prompts"] == ["a lighthouse at dusk, (oil painting:1.2)"]
    assert sample.inputs["params"]["steps"] == 20 and sample.inputs["params"]["sampler"] == "dpmpp_2m"
    assert sample.inputs["numerics"] == {"device": "cpu", "dtype": "float32", "torch": "2.13", "threads": 1,
                                         "compile": False, "attention": "sdpa", "cpu": "AVX2"}
    assert "id" not in sample.inputs["params"]
    assert save.state_key == sample.key           # a save passes its input state through


def test_save_path_does_not_enter_compute_keys(tmp_path):
    before = keys(plan_of(tmp_path))
    after = keys(plan_of(tmp_path, save_path="elsewhere/{{ seed }}-{{ steps }}.png"))
    assert after["encode"] == before["encode"] and after["sample"] == before["sample"]
    assert after["save"] != before["save"]        # the save itself writes elsewhere


def test_stage_id_and_description_do_not_enter_keys(tmp_path):
    before = keys(plan_of(tmp_path))
    after = keys(plan_of(tmp_path, encode_extra='id = "text"\ndescription = "the words"\n',
                         sample_extra='id = "base"\ndescription = "first pass"\n'))
    assert after["text"] == before["encode"] and after["base"] == before["sample"]


def test_sampling_params_enter_keys(tmp_path):
    before = keys(plan_of(tmp_path))
    after = keys(plan_of(tmp_path, sample_extra="cfg = 6.5\n"))
    assert after["encode"] == before["encode"]
    assert after["sample"] != before["sample"]
    assert after["save"] != before["save"]        # its input state changed


def test_seed_changes_every_key(tmp_path):
    before, after = keys(plan_of(tmp_path)), keys(plan_of(tmp_path, seed=1235))
    assert all(after[stage] != before[stage] for stage in before)


@pytest.mark.parametrize("changed", [{"dtype": "float16"}, {"dtype": "bfloat16"}, {"threads": 2},
                                     {"device": "cuda", "dtype": "float32"}])
def test_numerics_enter_compute_keys(tmp_path, changed):
    before = keys(plan_of(tmp_path))
    after = keys(plan_of(tmp_path, num=numerics(**changed)))
    assert after["encode"] != before["encode"] and after["sample"] != before["sample"]


def test_thread_count_does_not_enter_keys_on_cuda(tmp_path):
    # CPU kernels round differently with the thread count; CUDA results do not depend on it.
    one = keys(plan_of(tmp_path, num=numerics("cuda", "float16", 1)))
    many = keys(plan_of(tmp_path, num=numerics("cuda:1", "float16", 16)))
    assert one == many


def test_torch_minor_version_enters_keys_but_patch_does_not(tmp_path, monkeypatch):
    before = keys(plan_of(tmp_path))
    monkeypatch.setattr("sdbake.runner.numerics.torch_version", lambda: "2.13.4+cpu")
    assert keys(plan_of(tmp_path)) == before
    monkeypatch.setattr("sdbake.runner.numerics.torch_version", lambda: "2.14.0+cpu")
    assert keys(plan_of(tmp_path))["sample"] != before["sample"]


def test_renamed_model_file_keeps_compute_keys(tmp_path):
    before = keys(plan_of(tmp_path))
    (tmp_path / "model.safetensors").rename(tmp_path / "renamed-model.safetensors")
    after = keys(plan_of(tmp_path, checkpoint="renamed-model.safetensors"))
    assert after["encode"] == before["encode"] and after["sample"] == before["sample"]


def test_changed_model_bytes_change_compute_keys(tmp_path):
    before = keys(plan_of(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(FAKE_CHECKPOINT + b"one more byte")
    after = keys(plan_of(tmp_path))
    assert after["encode"] != before["encode"] and after["sample"] != before["sample"]


def test_init_image_content_enters_the_encode_key(tmp_path):
    png_signature = b"\x89PNG\r\n\x1a\n"        # preflight reads the header; the key hashes the whole file
    (tmp_path / "init.png").write_bytes(png_signature + b"first image bytes")
    before = keys(plan_of(tmp_path, encode_extra='image = "init.png"\n'))
    (tmp_path / "init.png").write_bytes(png_signature + b"second image bytes")
    after = keys(plan_of(tmp_path, encode_extra='image = "init.png"\n'))
    assert after["encode"] != before["encode"] and after["sample"] != before["sample"]


def test_keys_do_not_depend_on_the_recipe_folder(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    assert keys(plan_of(tmp_path / "a")) == keys(plan_of(tmp_path / "b"))


def test_empty_regions_keep_the_golden_keys(tmp_path):
    # a stage without regions keys as it did before regional prompts existed, and `regions = []` is that stage
    assert keys(plan_of(tmp_path, sample_extra="regions = []")) == GOLDEN_KEYS
