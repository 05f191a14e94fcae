"""Editing stage k re-runs k and what reads its output, nothing before it (DESIGN.md section 5).

Plan only: every field of every stage kind in one multi-stage recipe is changed alone, and the keys
of the two plans are compared. A stage whose key is unchanged is a cache hit after the first run.
The model files are a few fixed bytes (the plan hashes files, it never loads them).
"""
from __future__ import annotations

import copy
import json

import pytest
from PIL import Image

RECIPE = {
    "version": 1, "name": "every-kind",
    "models": {"m": {"checkpoint": "model.safetensors"}, "m2": {"checkpoint": "model2.safetensors"}},
    "defaults": {"model": "m", "seed": 3, "width": 64, "height": 64, "steps": 6, "sampler": "euler",
                 "scheduler": "karras", "cfg": 5.0},
    "stages": [
        {"type": "encode", "prompt": "a [red:blue:0.5] circle", "negative": "blurry"},
        {"type": "sample", "end": 4},
        {"type": "intervene", "mask": "mask.png", "ops": [{"op": "paste", "image": "paste.png", "at": [8, 8]}]},
        {"type": "sample", "start": 4},
        {"type": "save", "path": "base.png"},
        {"type": "hires", "scale": 1.5, "steps": 2},
        {"type": "inpaint", "mask": "mask.png", "steps": 4},
        {"type": "save", "path": "final.png"},
    ],
}
# A split's two halves must agree on steps, scheduler and the step where they meet: these fields
# cannot change in one stage alone (the recipe is refused, and the split test covers it); and a
# txt2img pass starts at step 0 and hires needs the last pass to finish.
TIED = {("sample-1", "start"), ("sample-1", "end"), ("sample-1", "steps"), ("sample-1", "scheduler"),
        ("sample-2", "start"), ("sample-2", "end"), ("sample-2", "steps"), ("sample-2", "scheduler"),
        # A1111 ignores a subseed without a strength and one side of a seed resize: alone they change
        # nothing, so they are no edit (subseed_strength alone is one: it draws a subseed)
        ("encode", "subseed"), ("encode", "seed_resize_from_w"), ("encode", "seed_resize_from_h")}
# region_method has one value so far and needs regions: it cannot change alone (regions can)
TIED |= {(stage, "region_method") for stage in ("sample-1", "sample-2", "hires", "inpaint")}
# tome_max_downsample without a tome_ratio merges nothing (and is dropped from the recipe): alone it
# rightly changes no key
TIED |= {(stage, "tome_max_downsample") for stage in ("sample-1", "sample-2", "hires")}
SPECIFIC = {
    "prompt": ["a green square"], "negative": ["noisy"], "model": ["m2"], "sampler": ["heun"],
    "scheduler": ["normal"], "upscaler": ["latent-bilinear"], "path": ["elsewhere.png"], "format": ["webp"],
    "image": ["paste.png"], "mask": ["mask2.png"], "curve": ["lazy"], "area": ["masked"], "on_exists": ["skip"],
    "loras": [[{"name": "lora.safetensors", "weight": 0.5}]], "rects": [[[0, 0, 16, 16]]],
    "ops": [[{"op": "blur", "radius": 3.0}]], "rect": [[0, 0, 32, 32]], "denoise": [0.4, [0.5, 0.3]],
    "width": [96], "height": [96], "tiled": [True], "start": [1], "end": [3], "sdxl": [{"crop": [8, 8]}],
    "regions": [[{"mask": "mask2.png", "prompt": "blue"}]], "tome_ratio": [0.5],
    "subseed_strength": [0.5],
    "keep_outside": [True],
    "pattern": ["[seed]-[prompt_words]"], "pattern_dir": ["[date]"], "number": [False],
}
# A save's A1111 pattern replaces its `path`: an edit of these fields is made on a pattern save.
PATTERN_FIELDS = ("pattern", "pattern_dir", "number")


def candidates(name: str, value):
    yield from SPECIFIC.get(name, [])
    if isinstance(value, bool):
        yield not value
    elif isinstance(value, int):
        yield from (value + 1, value + 8, value - 1)
    elif isinstance(value, float):
        yield from (round(value * 0.8, 3), round(value + 0.1, 3))


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SDBAKE_HASH_INDEX", str(tmp_path / "hash-index.json"))
    for name, fill in (("model.safetensors", b"m1"), ("model2.safetensors", b"m2"), ("lora.safetensors", b"l")):
        (tmp_path / name).write_bytes(fill * 64)
    for name, colour in (("mask.png", 255), ("mask2.png", 128), ("paste.png", 60)):
        Image.new("L", (64, 64), colour).save(tmp_path / name)
    return tmp_path


def plan_keys(folder, document) -> list[str] | None:
    from sdbake.runner.numerics import Numerics
    from sdbake.runner.plan import build_plan
    from sdbake.schemas.errors import RecipeError
    from sdbake.schemas.loader import load_text
    try:
        loaded = load_text(json.dumps(document), "yaml", label=str(folder / "r.json"), folder=folder)
    except RecipeError:
        return None
    plan = build_plan(loaded, Numerics("cpu", "float32", 1), folder / "out")
    return [inv.key for inv in plan.invocations]


def test_editing_one_field_of_stage_k_misses_exactly_k_and_what_reads_it(folder):
    from sdbake.runner.kinds import KINDS
    from sdbake.runner.plan import NOT_IN_KEY
    from sdbake.runner.sources import load_any
    from sdbake.schemas.canonical import canonical_dict
    (folder / "r.yaml").write_text(json.dumps(RECIPE))
    base = canonical_dict(load_any(str(folder / "r.yaml")).recipe)
    base.pop("defaults")                     # every stage carries its values: an edit is one stage's
    before = plan_keys(folder, base)
    assert before is not None
    passes_through = [KINDS[s["type"]].passes_state_through for s in base["stages"]]
    tried, kinds = [], set()
    for k, stage in enumerate(base["stages"]):
        from sdbake.schemas.stages import STAGE_TYPES
        for name, info in STAGE_TYPES[stage["type"]].model_fields.items():
            if name in NOT_IN_KEY or name == "type" or (stage["id"], name) in TIED:
                continue
            for value in candidates(name, stage.get(name, info.default)):
                edited = copy.deepcopy(base)
                if value == stage.get(name):
                    continue
                if name in PATTERN_FIELDS:
                    edited["stages"][k].pop("path", None)
                    edited["stages"][k].setdefault("pattern", "[seed]")
                edited["stages"][k][name] = value
                after = plan_keys(folder, edited)
                if after is not None:
                    break
            else:
                pytest.fail(f"no valid edit of {stage['id']}.{name} was found")
            tried.append(f"{stage['id']}.{name}")
            kinds.add(stage["type"])
            assert after[:k] == before[:k], f"{stage['id']}.{name} = {value!r} changed an earlier stage's key"
            assert after[k] != before[k], f"{stage['id']}.{name} = {value!r} left its own stage a hit"
            for later in range(k + 1, len(before)):
                # what reads stage k's output misses; a save's output is its input, so nothing reads it
                reads_k = not passes_through[k]
                changed = after[later] != before[later]
                assert changed == reads_k, (f"{stage['id']}.{name} = {value!r}: {base['stages'][later]['id']} "
                                            f"{'missed' if changed else 'hit'}")
    assert kinds == set(KINDS)
    assert len(tried) > 50, tried


def test_an_edit_after_a_save_leaves_that_save_a_hit_and_its_file_alone(tmp_path, tiny_model_dir, capsys,
                                                                        monkeypatch):
    """Rendered: the save before an edited hires stage hits and writes no second copy; `plan` names
    the edited field, and `--set defaults.cfg=6` is reported as `cfg` alone."""
    from recipe_helpers import txt2img, write
    from sdbake.runner.cli import main
    monkeypatch.setenv("SDBAKE_THREADS", "1")
    monkeypatch.setenv("SDBAKE_CACHE", str(tmp_path / "cache"))
    hires = ('[[stages]]\ntype = "save"\npath = "base.png"\n\n'
             '[[stages]]\ntype = "hires"\nscale = 1.5\ndenoise = 0.5\nsteps = 2\n')
    recipe = write(tmp_path, "r.toml", txt2img(tiny_model_dir, steps=3, extra_stages=hires, path="final.png"))
    out = tmp_path / "out"
    assert main(["run", str(recipe), "--out", str(out), "-q"]) == 0
    capsys.readouterr()
    assert main(["plan", str(recipe), "--out", str(out), "--set", "stages.hires.denoise=0.6"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert [lines[s].split()[1] for s in ("encode", "sample", "save-1")] == ["HIT"] * 3
    assert lines["hires"].endswith("(changed: denoise)") and lines["save-2"].endswith("(its input changed)")
    assert main(["plan", str(recipe), "--out", str(out), "--set", "defaults.cfg=6"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["encode"].split()[1] == "HIT" and lines["sample"].endswith("(changed: cfg)")
    base = (out / "base.png").read_bytes()
    assert main(["run", str(recipe), "--out", str(out), "--set", "stages.hires.denoise=0.6"]) == 0
    written = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["base.png", "final-1.png", "final.png"]
    assert (out / "base.png").read_bytes() == base
    assert f"identical\t{out / 'base.png'}" in written.splitlines()       # a hit: the same file, left alone
