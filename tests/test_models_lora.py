"""LoRAs are applied per stage and removed exactly: a later stage without them equals a fresh load."""
from __future__ import annotations

import contextlib

import pytest

torch = pytest.importorskip("torch")

from sdbake.runner.models.loading import load_model
from sdbake.runner.models.lora import apply_loras


@contextlib.contextmanager
def applied_loras(model, loras):
    """A stage with these LoRAs, then a stage without, as the runner does it: apply_loras with each
    stage's own list."""
    apply_loras(model, loras)
    try:
        yield model
    finally:
        apply_loras(model, [])


def _unet_and_text_outputs(model):
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, 8, 8, generator=generator)
    ids = torch.tensor([model.tokenizer("a photo of a cat", padding="max_length").input_ids])
    context = model.text_encoder(ids)[0]
    return context, model.unet(latent, torch.tensor([500.0]), context).sample


def test_stage_with_lora_then_stage_without_equals_stage_alone(tiny_model_dir, tiny_lora):
    fresh_context, fresh_noise = _unet_and_text_outputs(load_model(tiny_model_dir))
    model = load_model(tiny_model_dir)
    with applied_loras(model, [(tiny_lora, 0.8)]):           # stage A
        lora_context, lora_noise = _unet_and_text_outputs(model)
    context, noise = _unet_and_text_outputs(model)            # stage B, no LoRA
    assert not torch.equal(lora_noise, fresh_noise)           # the LoRA did something ...
    assert not torch.equal(lora_context, fresh_context)       # ... to the UNet and to the text encoder
    assert torch.equal(noise, fresh_noise)                    # ... and left nothing behind
    assert torch.equal(context, fresh_context)


def test_lora_weight_scales_the_effect(tiny_model_dir, tiny_lora):
    model = load_model(tiny_model_dir)
    _, base = _unet_and_text_outputs(model)
    with applied_loras(model, [(tiny_lora, 0.0)]):
        _, zero = _unet_and_text_outputs(model)
    with applied_loras(model, [(tiny_lora, 0.4)]):
        _, weak = _unet_and_text_outputs(model)
    with applied_loras(model, [(tiny_lora, 1.2)]):
        _, strong = _unet_and_text_outputs(model)
    assert torch.allclose(zero, base, atol=1e-6)
    assert (weak - base).abs().mean() < (strong - base).abs().mean()


def test_two_loras_in_one_stage_and_switching_sets(tmp_path, tiny_model_dir, tiny_lora):
    import tiny_models
    model = load_model(tiny_model_dir)
    second = tiny_models.save_tiny_lora(tmp_path / "second.safetensors", model.unet, model.text_encoder, seed=5)
    with applied_loras(model, [(second, 0.7)]):
        _, second_alone = _unet_and_text_outputs(model)
    with applied_loras(model, [(tiny_lora, 0.8), (second, 0.7)]):
        _, both = _unet_and_text_outputs(model)
    with applied_loras(model, [(second, 0.7)]):               # a different set in the next stage
        _, second_again = _unet_and_text_outputs(model)
    assert not torch.equal(both, second_alone)
    assert torch.equal(second_again, second_alone)


def test_diffusers_peft_format_lora(tmp_path, tiny_model_dir):
    """A LoRA in diffusers' own format (unet.<module>.lora_A/lora_B), as save_lora_weights writes it."""
    from safetensors.torch import save_file
    model = load_model(tiny_model_dir)
    _, base = _unet_and_text_outputs(model)
    generator = torch.Generator().manual_seed(2)
    state = {}
    for name, module in model.unet.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_v")):
            state[f"unet.{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=generator)
            state[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, 2, generator=generator)
    path = tmp_path / "peft-lora.safetensors"
    save_file(state, str(path))
    with applied_loras(model, [(path, 1.0)]):
        _, with_lora = _unet_and_text_outputs(model)
    _, after = _unet_and_text_outputs(model)
    assert not torch.equal(with_lora, base)
    assert torch.equal(after, base)


def test_each_stage_sets_its_own_lora_list(tiny_model_dir, tiny_lora):
    """The runner calls apply_loras once per stage with that stage's list; no explicit removal."""
    model = load_model(tiny_model_dir)
    _, fresh = _unet_and_text_outputs(model)
    apply_loras(model, [(tiny_lora, 0.8)])                    # stage A
    _, at_08 = _unet_and_text_outputs(model)
    apply_loras(model, [(tiny_lora, 0.3)])                    # stage B: same file, new weight
    _, at_03 = _unet_and_text_outputs(model)
    apply_loras(model, [])                                    # stage C: none
    _, none = _unet_and_text_outputs(model)
    assert torch.equal(none, fresh)
    reference = load_model(tiny_model_dir)
    apply_loras(reference, [(tiny_lora, 0.3)])
    assert torch.equal(_unet_and_text_outputs(reference)[1], at_03)   # == a fresh load with that set
    assert not torch.equal(at_03, at_08)


def test_partial_lora_warning_goes_to_the_given_callback(tmp_path, tiny_model_dir):
    import tiny_models
    model = load_model(tiny_model_dir)
    path = tiny_models.save_tiny_lora(tmp_path / "partial.safetensors", model.unet, model.text_encoder,
                                      extra_missing=1)
    messages: list[str] = []
    apply_loras(model, [(path, 1.0)], warn=messages.append)
    assert len(messages) == 1 and "of" in messages[0] and "partial.safetensors" in messages[0]
