"""A1111's `<lora:name:weight>` prompt tags: they load the LoRA for the stages that use the prompt, never
reach CLIP as text, key the cache, and are written to the infotext as A1111 writes them."""
from __future__ import annotations

import hashlib
import shutil

import pytest
from recipe_helpers import txt2img, write
from sdbake.runner.cli import main
from sdbake.schemas.errors import PromptError
from sdbake.stages.prompts.extra_networks import LoraTag, lora_tags, strip_tags

STEPS = 3
HIRES = '[[stages]]\ntype = "hires"\nscale = 1.5\ndenoise = 0.5\nsteps = 2\n'


@pytest.fixture
def lora_dir(tmp_path, tiny_lora, monkeypatch):
    """A LoRA folder holding tiny.safetensors, configured as the `loras` search folder."""
    folder = tmp_path / "loras"
    folder.mkdir()
    shutil.copy(tiny_lora, folder / "tiny.safetensors")
    config = tmp_path / "sdbake.toml"
    config.write_text(f'[folders]\nloras = ["{folder}"]\n', encoding="utf-8")
    monkeypatch.setenv("SDBAKE_CONFIG", str(config))
    return folder


def recipe(tmp_path, model, name, prompt, *, model_loras="", extra_stages="", stage_loras=""):
    text = txt2img(model, steps=STEPS, prompt=prompt, extra_stages=extra_stages, path=f"{name}.png", name=name)
    if model_loras:
        text = text.replace(f'checkpoint = "{model}"\n', f'checkpoint = "{model}"\nloras = [{model_loras}]\n')
    if stage_loras:
        text = text.replace('type = "sample"\n', f'type = "sample"\nloras = [{stage_loras}]\n')
    return write(tmp_path, f"{name}.toml", text)


def render_state(path, tmp_path):
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    return render(load_recipe(path), output_root=tmp_path / "out", threads=1, quiet=True, no_cache=True).final_state


def keys(path) -> dict[str, str]:
    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_recipe
    return {inv.id: inv.key for inv in make_plan(load_recipe(path), threads=1).invocations}


# ---- parsing, as A1111's extra_networks.parse_prompt -----------------------------------------------

def test_tags_are_cut_out_and_nothing_else_changes():
    assert strip_tags("a, <lora:x:1>, b") == "a, , b"                 # the commas and spaces stay
    assert strip_tags("[cat <lora:x:0.5>:dog:10] AND sky<lyco:y>") == "[cat :dog:10] AND sky"
    assert strip_tags("a <b> c <:x>") == "a <b> c <:x>"                 # not `<word:args>`: text


def test_one_weight_or_two_and_named_weights():
    assert lora_tags("<lora:x>") == [LoraTag("x", 1.0, 1.0)]
    assert lora_tags("<lora:x:0.6>") == [LoraTag("x", 0.6, 0.6)]
    assert lora_tags("<lora:x:0.6:0.2>") == [LoraTag("x", 0.6, 0.2)]
    assert lora_tags("<lyco:x:unet=0.3:te=0.1>") == [LoraTag("x", 0.1, 0.3)]


def test_a_tag_inside_prompt_editing_applies_for_the_whole_prompt():
    # A1111 takes the tags out of the whole prompt before scheduling
    from sdbake.stages.conditioning import prompt_schedules
    prompt = "[a cat <lora:x:0.5>:a dog:2]"
    assert lora_tags(prompt) == [LoraTag("x", 0.5, 0.5)]
    assert prompt_schedules(prompt, 4) == [(1.0, [(2, "a cat "), (4, "a dog")])]


def test_a_name_twice_is_applied_twice_with_the_last_weights():
    assert lora_tags("<lora:x:0.5> a <lora:y> <lora:x:0.8:0.1>") == [
        LoraTag("x", 0.8, 0.1), LoraTag("y", 1.0, 1.0), LoraTag("x", 0.8, 0.1)]


@pytest.mark.parametrize("prompt, message", [
    ("<hypernet:h:1>", "hypernetworks are not supported"),
    ("<foo:h>", "unknown extra network `foo`"),
    ("<lora:x:strong>", "is not a number"),
    ("<lora:x:1:1:8>", "`dyn` dimension) is not supported"),
])
def test_tags_sdbake_cannot_apply_are_errors(prompt, message):
    with pytest.raises(PromptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        lora_tags(prompt)


# ---- rendering ---------------------------------------------------------------------------------------

def test_a_tag_renders_exactly_as_the_same_lora_in_loras(tmp_path, tiny_model_dir, lora_dir):
    import torch
    tagged = render_state(recipe(tmp_path, tiny_model_dir, "tag", "a red circle <lora:tiny:0.8>"), tmp_path)
    on_model = render_state(recipe(tmp_path, tiny_model_dir, "model", "a red circle",
                                   model_loras='{ name = "tiny", weight = 0.8 }'), tmp_path)
    on_stage = render_state(recipe(tmp_path, tiny_model_dir, "stage", "a red circle",
                                   stage_loras='{ name = "tiny", weight = 0.8 }'), tmp_path)
    plain = render_state(recipe(tmp_path, tiny_model_dir, "plain", "a red circle"), tmp_path)
    lyco = render_state(recipe(tmp_path, tiny_model_dir, "lyco", "a red circle <lyco:tiny:0.8>"), tmp_path)
    assert not torch.equal(tagged.latent, plain.latent)
    assert torch.equal(tagged.latent, on_model.latent)
    assert torch.equal(tagged.latent, on_stage.latent)       # the stage's `loras` reach its text encoder too
    assert torch.equal(lyco.latent, tagged.latent)


def test_the_tag_text_never_reaches_clip(tmp_path, tiny_model_dir, lora_dir):
    import torch
    # weight 0: the LoRA changes nothing, so only the text decides; A1111 leaves `a, , b`
    tagged = render_state(recipe(tmp_path, tiny_model_dir, "tag", "a, <lora:tiny:0>, b"), tmp_path)
    as_a1111 = render_state(recipe(tmp_path, tiny_model_dir, "gap", "a, , b"), tmp_path)
    tidied = render_state(recipe(tmp_path, tiny_model_dir, "tidy", "a, b"), tmp_path)
    assert torch.equal(tagged.latent, as_a1111.latent)
    assert not torch.equal(tagged.latent, tidied.latent)
    assert tagged.prompts == ("a, <lora:tiny:0>, b",)          # the recorded prompt keeps its tag
    encoded = {text for memo in tagged.embeddings[1]["memos"] for text in memo["texts"]}
    assert "a, , b" in encoded and not any("lora" in text for text in encoded)


def test_text_encoder_and_unet_weights_apply_separately(tiny_model_dir, tiny_lora):
    import torch
    from sdbake.runner.models.loading import load_model
    from sdbake.runner.models.lora import apply_loras
    model = load_model(tiny_model_dir)
    ids = torch.tensor([model.tokenizer("a photo of a cat", padding="max_length").input_ids])
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        context = model.text_encoder(ids)[0]

        def outputs(loras):                     # (text encoder output, UNet output for a fixed context)
            apply_loras(model, loras)
            return model.text_encoder(ids)[0], model.unet(latent, torch.tensor([500.0]), context).sample
        split = outputs([(tiny_lora, 0.5, 0.8)])             # <lora:tiny:0.5:0.8>
        at_05, at_08 = outputs([(tiny_lora, 0.5)]), outputs([(tiny_lora, 0.8)])
    assert torch.equal(split[0], at_05[0]) and not torch.equal(split[0], at_08[0])
    assert torch.equal(split[1], at_08[1]) and not torch.equal(split[1], at_05[1])


def test_a_hires_prompt_with_its_own_tag_changes_hires_only(tmp_path, tiny_model_dir, lora_dir):
    import torch

    def hires(prompt_line, loras=""):
        return HIRES + prompt_line + (f"loras = [{loras}]\n" if loras else "")
    tag = recipe(tmp_path, tiny_model_dir, "tag", "a red circle",
                 extra_stages=hires('prompt = "a red circle <lora:tiny:0.8>"\n'))
    plain = recipe(tmp_path, tiny_model_dir, "plain", "a red circle", extra_stages=hires('prompt = "a red circle"\n'))
    declared = recipe(tmp_path, tiny_model_dir, "declared", "a red circle",
                      extra_stages=hires('prompt = "a red circle"\n', '{ name = "tiny", weight = 0.8 }'))
    tag_keys, plain_keys = keys(tag), keys(plain)
    assert tag_keys["encode"] == plain_keys["encode"] and tag_keys["sample"] == plain_keys["sample"]
    assert tag_keys["hires"] != plain_keys["hires"]
    tagged = render_state(tag, tmp_path)
    assert not torch.equal(tagged.latent, render_state(plain, tmp_path).latent)
    assert torch.equal(tagged.latent, render_state(declared, tmp_path).latent)


def test_keys_follow_the_tag_weight_and_the_file_content(tmp_path, tiny_model_dir, lora_dir):
    import tiny_models
    at_08 = keys(recipe(tmp_path, tiny_model_dir, "a", "a red circle <lora:tiny:0.8>"))
    assert keys(recipe(tmp_path, tiny_model_dir, "a", "a red circle <lora:tiny:0.8>")) == at_08
    at_05 = keys(recipe(tmp_path, tiny_model_dir, "a", "a red circle <lora:tiny:0.5>"))
    assert at_05["encode"] != at_08["encode"] and at_05["sample"] != at_08["sample"]
    tiny_models.save_tiny_lora(lora_dir / "tiny.safetensors", seed=9)          # same name, other weights
    retrained = keys(recipe(tmp_path, tiny_model_dir, "a", "a red circle <lora:tiny:0.8>"))
    assert retrained["encode"] != at_08["encode"] and retrained["sample"] != at_08["sample"]
    shutil.copy(lora_dir / "tiny.safetensors", lora_dir / "other.safetensors")
    renamed = keys(recipe(tmp_path, tiny_model_dir, "a", "a red circle <lora:other:0.8>"))
    assert renamed["sample"] != retrained["sample"]            # the name is in the prompt, so in the key


def addnet_hash(path) -> str:
    """kohya's addnet hash, computed here on its own: sha256 of what follows the safetensors header."""
    data = path.read_bytes()
    return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()


def test_infotext_keeps_the_tag_and_lists_lora_hashes(tmp_path, tiny_model_dir, lora_dir):
    from sdbake.stages.output.metadata import read_metadata
    shutil.copy(lora_dir / "tiny.safetensors", lora_dir / "style.safetensors")
    path = recipe(tmp_path, tiny_model_dir, "info", "a red circle <lora:tiny:0.8>",
                  extra_stages=HIRES + 'prompt = "a red circle <lora:style:0.3:0.5>"\n')
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet", "--no-cache"]) == 0
    infotext, _ = read_metadata(tmp_path / "out" / "info.png")
    expected = addnet_hash(lora_dir / "tiny.safetensors")[:12]
    assert expected != hashlib.sha256((lora_dir / "tiny.safetensors").read_bytes()).hexdigest()[:12]
    assert f'Lora hashes: "tiny: {expected}, style: {expected}"' in infotext
    # as A1111 lays out a hires image: the first pass's prompt, the hires pass's own as `Hires prompt`
    assert infotext.startswith("a red circle <lora:tiny:0.8>\n")
    assert 'Hires prompt: "a red circle <lora:style:0.3:0.5>"' in infotext


def test_validate_names_an_unknown_lora_with_a_near_name(tmp_path, tiny_model_dir, lora_dir, capsys):
    path = recipe(tmp_path, tiny_model_dir, "bad", "a red circle <lora:tinny:0.8>")
    assert main(["validate", str(path), "--out", str(tmp_path / "out")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{path}:")
    assert "stages[0].prompt: <lora:tinny:0.8>:" in line and "(did you mean `tiny`?)" in line


def test_validate_refuses_hypernetworks(tmp_path, tiny_model_dir, lora_dir, capsys):
    path = recipe(tmp_path, tiny_model_dir, "hyper", "a red circle <hypernet:tiny:0.8>")
    assert main(["validate", str(path), "--out", str(tmp_path / "out")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"{path}:") and "hypernetworks are not supported" in line


def test_tags_on_sdxl_reach_both_text_encoders_and_split_weights(tmp_path, tiny_sdxl, monkeypatch):
    import torch
    from safetensors.torch import save_file
    from sdbake.runner.models.loading import load_model
    from sdbake.runner.models.lora import apply_loras
    from sdbake.stages.conditioning import encode_one, text_encoders
    from test_sdxl_lora import sdxl_lora
    folder = tmp_path / "loras"
    folder.mkdir()
    save_file(sdxl_lora("kohya"), str(folder / "xl.safetensors"))
    (tmp_path / "sdbake.toml").write_text(f'[folders]\nloras = ["{folder}"]\n', encoding="utf-8")
    monkeypatch.setenv("SDBAKE_CONFIG", str(tmp_path / "sdbake.toml"))
    model_dir = tiny_sdxl[0]
    tagged = render_state(recipe(tmp_path, model_dir, "tag", "a red circle <lora:xl:0.8>"), tmp_path)
    declared = render_state(recipe(tmp_path, model_dir, "declared", "a red circle",
                                   model_loras='{ name = "xl", weight = 0.8 }'), tmp_path)
    plain = render_state(recipe(tmp_path, model_dir, "plain", "a red circle"), tmp_path)
    assert torch.equal(tagged.latent, declared.latent) and not torch.equal(tagged.latent, plain.latent)
    model = load_model(model_dir)
    apply_loras(model, [(folder / "xl.safetensors", 0.5, 0.8)])
    split = encode_one(text_encoders(model, 1), "a red circle")
    apply_loras(model, [(folder / "xl.safetensors", 0.5)])
    te_only = encode_one(text_encoders(model, 1), "a red circle")
    assert torch.equal(split.context, te_only.context) and torch.equal(split.pooled, te_only.pooled)


def test_prompt_schedule_shows_the_text_without_tags(capsys):
    assert main(["prompt", "schedule", "a, <lora:x:1>, [cat:dog:2]", "--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "'a, , cat'" in out and "'a, , dog'" in out and "lora" not in out


def test_a_tag_may_use_the_alias_a1111_reads_from_the_file(tmp_path, tiny_model_dir, lora_dir):
    import torch
    from safetensors.torch import load_file, save_file
    from sdbake.runner.models.hashing import lora_short_hash
    save_file(load_file(str(lora_dir / "tiny.safetensors")), str(lora_dir / "renamed.safetensors"),
              metadata={"ss_output_name": "my_style"})
    by_alias = render_state(recipe(tmp_path, tiny_model_dir, "alias", "a red circle <lora:my_style:0.8>"), tmp_path)
    by_name = render_state(recipe(tmp_path, tiny_model_dir, "name", "a red circle <lora:tiny:0.8>"), tmp_path)
    assert torch.equal(by_alias.latent, by_name.latent)
    save_file({"x": torch.zeros(1)}, str(lora_dir / "hashed.safetensors"), metadata={"sshs_model_hash": "ab" * 32})
    assert lora_short_hash(lora_dir / "hashed.safetensors") == "ab" * 6      # A1111 takes the stored hash


def test_images_of_one_stage_must_name_the_same_tags(tmp_path, tiny_model_dir, lora_dir):
    from sdbake.runner.api import make_plan
    from sdbake.schemas.loader import load_recipe
    text = txt2img(tiny_model_dir, steps=STEPS, batch_size=4,
                   prompt="a {red <lora:tiny:0.5>|blue <lora:tiny:0.9>} circle")
    with pytest.raises(PromptError, match="the images of this stage name different LoRA tags"):
        make_plan(load_recipe(write(tmp_path, "mixed.toml", text)), threads=1)


def test_a_tag_in_a_region_prompt_is_a_validate_error(tmp_path, tiny_model_dir, lora_dir, capsys):
    region = 'regions = [{ rect = [0, 0, 32, 64], prompt = "red <lora:tiny:0.8>" }]\n'
    path = write(tmp_path, "region.toml", txt2img(tiny_model_dir, steps=STEPS).replace(
        'type = "sample"\n', f'type = "sample"\n{region}'))
    assert main(["validate", str(path), "--out", str(tmp_path / "out")]) == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "regions[0].prompt: LoRA tags are not read in region prompts" in line


# ---- run IMAGE: the LoRA file the image recorded, found by its hash ------------------------------------

def render_image(tmp_path, model, **recipe_args):
    path = recipe(tmp_path, model, "img", "a red circle <lora:tiny:0.8>", **recipe_args) if "prompt" not in \
        recipe_args else recipe(tmp_path, model, "img", **recipe_args)
    assert main(["run", str(path), "--out", str(tmp_path / "first"), "--cache-dir", str(tmp_path / "cache"),
                 "--quiet"]) == 0
    return tmp_path / "first" / "img.png"


def rerender(capsys, image, out, cache):
    """`sdbake run IMAGE` with a cache of its own, so the LoRA is loaded again: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(["run", str(image), "--out", str(out), "--cache-dir", str(cache)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def pixels(path) -> bytes:
    from PIL import Image
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("how", ["tag", "model loras", "stage loras"])
def test_run_image_finds_a_renamed_lora_by_the_hash_it_recorded(tmp_path, tiny_model_dir, lora_dir, capsys, how):
    ref = '{ name = "tiny", weight = 0.8 }'
    args = {"tag": {}, "model loras": {"prompt": "a red circle", "model_loras": ref},
            "stage loras": {"prompt": "a red circle", "stage_loras": ref}}[how]
    image = render_image(tmp_path, tiny_model_dir, **args)
    sha = digest(lora_dir / "tiny.safetensors")
    (lora_dir / "tiny.safetensors").rename(lora_dir / "renamed.safetensors")
    code, out, err = rerender(capsys, image, tmp_path / "again", tmp_path / "fresh-cache")
    assert code == 0, err
    assert "reproduced" in out and pixels(tmp_path / "again" / "img.png") == pixels(image)
    assert f"note: {image}: LoRA `tiny` (sha256 {sha[:12]}) found by its hash: {lora_dir / 'renamed.safetensors'} " \
           "(no file is named `tiny`)" in err.splitlines()


def test_run_image_refuses_a_tag_lora_whose_file_changed_and_takes_the_recorded_one_where_it_is(
        tmp_path, tiny_model_dir, lora_dir, capsys):
    from safetensors.torch import load_file, save_file
    image = render_image(tmp_path, tiny_model_dir)
    lora = lora_dir / "tiny.safetensors"
    original, sha = lora.read_bytes(), digest(lora)
    save_file({name: tensor * 2 for name, tensor in load_file(lora).items()}, lora)   # another LoRA, same name
    changed = digest(lora)
    code, out, err = rerender(capsys, image, tmp_path / "refused", tmp_path / "fresh-cache")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [(f"{image}: LoRA `tiny` (sha256 {sha[:12]}) is in no LoRA folder "
                                        f"(`tiny` is {lora}, sha256 {changed[:12]})")]
    assert not (tmp_path / "refused").exists()                 # never a silent different image
    (lora_dir / "kept.safetensors").write_bytes(original)      # the recorded file, under another name
    code, out, err = rerender(capsys, image, tmp_path / "again", tmp_path / "fresh-cache")
    assert code == 0, err
    assert "reproduced" in out and pixels(tmp_path / "again" / "img.png") == pixels(image)
    assert [line for line in err.splitlines() if line.startswith("note:")] == [
        (f"note: {image}: LoRA `tiny` (sha256 {sha[:12]}) found by its hash: {lora_dir / 'kept.safetensors'} "
         f"(`tiny` is {lora}, sha256 {changed[:12]})")]
