"""LoRA on SDXL: kohya files (lora_unet_, lora_te1_ for CLIP ViT-L, lora_te2_ for bigG) and PEFT files
(unet., text_encoder., text_encoder_2.) reach every layer they name, change the picture, and come off
exactly."""
from __future__ import annotations

import pytest
from recipe_helpers import txt2img, write

torch = pytest.importorskip("torch")

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _pairs(module, targets):
    return [(name, layer) for name, layer in module.named_modules() if name.endswith(targets)]


def sdxl_lora(layout: str, seed: int = 3, rank: int = 4) -> dict[str, torch.Tensor]:
    import tiny_models
    pipe = tiny_models.build_tiny_sdxl_pipeline(seed=0)
    generator = torch.Generator().manual_seed(seed)
    parts = [("unet", "lora_unet_", pipe.unet, UNET_TARGETS, 0.3),
             ("text_encoder", "lora_te1_", pipe.text_encoder, TEXT_TARGETS, 0.05),
             ("text_encoder_2", "lora_te2_", pipe.text_encoder_2, TEXT_TARGETS, 0.05)]
    state_dict = {}
    for part, kohya_prefix, module, targets, scale in parts:
        for name, layer in _pairs(module, targets):
            down = torch.randn(rank, layer.in_features, generator=generator) * scale
            up = torch.randn(layer.out_features, rank, generator=generator) * scale
            if layout == "kohya":
                # kohya names text encoder layers from CLIPTextModel's `text_model.` level
                full = name if part == "unet" or name.startswith("text_model.") else "text_model." + name
                key = kohya_prefix + full.replace(".", "_")
                state_dict.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                                   f"{key}.alpha": torch.tensor(float(rank))})
            else:
                state_dict.update({f"{part}.{name}.lora_A.weight": down, f"{part}.{name}.lora_B.weight": up})
    return state_dict


@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_sdxl_lora_reaches_both_text_encoders_and_the_unet(tmp_path, tiny_sdxl, layout):
    from safetensors.torch import save_file
    from sdbake.runner.models.loading import load_model
    from sdbake.runner.models.lora import apply_loras
    from sdbake.stages.conditioning import encode_one, text_encoders
    path = tmp_path / f"{layout}.safetensors"
    save_file(sdxl_lora(layout), str(path))
    model = load_model(tiny_sdxl[0])
    plain = encode_one(text_encoders(model, 1), "a red circle")
    warnings = []
    apply_loras(model, [(path, 1.0)], warn=warnings.append)
    assert warnings == []                                   # every layer of the file matched
    with_lora = encode_one(text_encoders(model, 1), "a red circle")
    width = model.text_encoder.config.hidden_size
    assert not torch.equal(plain.context[:, :width], with_lora.context[:, :width])     # ViT-L changed
    assert not torch.equal(plain.context[:, width:], with_lora.context[:, width:])     # bigG changed
    assert not torch.equal(plain.pooled, with_lora.pooled)
    apply_loras(model, [])
    after = encode_one(text_encoders(model, 1), "a red circle")
    assert torch.equal(after.context, plain.context) and torch.equal(after.pooled, plain.pooled)


def test_sdxl_render_with_a_kohya_lora_differs_and_a_stage_without_it_is_unchanged(tmp_path, tiny_sdxl):
    from safetensors.torch import save_file
    from sdbake.runner.api import render
    from sdbake.schemas.loader import load_recipe
    lora = tmp_path / "style.safetensors"
    save_file(sdxl_lora("kohya"), str(lora))

    def latent(name, extra=""):
        text = txt2img(tiny_sdxl[0], steps=3).replace('[[stages]]\ntype = "sample"\n',
                                                      f'[[stages]]\ntype = "sample"\n{extra}')
        return render(load_recipe(write(tmp_path, name, text)), output_root=tmp_path / "out", threads=1,
                      quiet=True, no_cache=True).final_state.latent
    plain = latent("a.toml")
    styled = latent("b.toml", f'loras = [{{ name = "{lora}", weight = 0.8 }}]\n')
    again = latent("c.toml")
    assert not torch.equal(plain, styled)
    assert torch.equal(plain, again)
