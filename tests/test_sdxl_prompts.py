"""SDXL prompt encoding against an independent computation (transformers calls and A1111's rules written
out here, and diffusers' own encode_prompt): two encoders side by side, penultimate layer, OpenCLIP's
zero padding, 75-token chunks and BREAK, emphasis per encoder, the first chunk's pooled output, and
embedding files with clip_l / clip_g vectors."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def xl(tiny_sdxl):
    from sdbake.runner.models.loading import load_model
    return load_model(tiny_sdxl[0])


def encode(model, text, clip_skip=1, embedding_files=None):
    from sdbake.stages.conditioning import encode_one, text_encoders
    return encode_one(text_encoders(model, clip_skip, embedding_files), text)


def chunk_ids(model, words: list[int]) -> list[int]:
    """BOS, the prompt's tokens, EOS, EOS padding to 77 (A1111's chunk before OpenCLIP's padding)."""
    tokenizer = model.tokenizer
    return [tokenizer.bos_token_id] + words + [tokenizer.eos_token_id] * (76 - len(words))


@torch.no_grad()
def reference_chunk(model, ids: list[int], weights: list[float] | None = None):
    """(77, 64) and pooled (32,) of one chunk, computed directly: ViT-L on the ids, bigG on the ids with
    everything after the first EOS set to 0 (pad "!"), both hidden_states[-2]; emphasis as A1111: scale
    each token and restore the mean, per encoder."""
    eos = model.tokenizer.eos_token_id
    ids_g = ids[:ids.index(eos) + 1] + [0] * (76 - ids.index(eos))
    out_l = model.text_encoder(torch.tensor([ids]), output_hidden_states=True)
    out_g = model.text_encoder_2(torch.tensor([ids_g]), output_hidden_states=True)
    parts = []
    for z in (out_l.hidden_states[-2][0], out_g.hidden_states[-2][0]):
        if weights is not None:
            scaled = z * torch.tensor(weights)[:, None]
            z = scaled * (z.mean() / scaled.mean())
        parts.append(z)
    return torch.cat(parts, dim=-1), out_g.text_embeds[0]


def words(model, text: str) -> list[int]:
    return model.tokenizer([text], add_special_tokens=False)["input_ids"][0]


def test_one_chunk_equals_diffusers_encode_prompt(xl, tiny_sdxl):
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl[0], local_files_only=True)
    embeds, _, pooled, _ = pipe.encode_prompt("a red circle on a blue ground", do_classifier_free_guidance=False)
    ours = encode(xl, "a red circle on a blue ground")
    assert ours.context.shape == (77, 64) and ours.pooled.shape == (32,)
    assert torch.allclose(ours.context, embeds[0], atol=1e-6)
    assert torch.allclose(ours.pooled, pooled[0], atol=1e-6)


def test_long_prompt_is_two_chunks_and_pooled_comes_from_the_first(xl):
    cat = words(xl, "cat")
    ours = encode(xl, " ".join(["cat"] * 100))
    first, pooled = reference_chunk(xl, chunk_ids(xl, cat * 75))
    second, _ = reference_chunk(xl, chunk_ids(xl, cat * 25))
    assert ours.context.shape == (154, 64)
    assert torch.allclose(ours.context[:77], first, atol=1e-6)
    assert torch.allclose(ours.context[77:], second, atol=1e-6)
    assert torch.allclose(ours.pooled, pooled, atol=1e-6)


def test_break_starts_a_new_chunk(xl):
    ours = encode(xl, "red BREAK blue")
    red, red_pooled = reference_chunk(xl, chunk_ids(xl, words(xl, "red")))
    blue, _ = reference_chunk(xl, chunk_ids(xl, words(xl, "blue")))
    assert torch.allclose(ours.context, torch.cat([red, blue]), atol=1e-6)
    assert torch.allclose(ours.pooled, red_pooled, atol=1e-6)


def test_emphasis_scales_each_encoder_and_keeps_its_mean_and_not_the_pooled_output(xl):
    ours = encode(xl, "(red:1.5) cat")
    ids = chunk_ids(xl, words(xl, "red cat"))
    weights = [1.0, 1.5] + [1.0] * 75
    expected, pooled = reference_chunk(xl, ids, weights)
    assert torch.allclose(ours.context, expected, atol=1e-5)
    assert torch.allclose(ours.pooled, pooled, atol=1e-6)            # A1111 pools before emphasis
    assert not torch.allclose(ours.context, encode(xl, "red cat").context, atol=1e-4)


def test_clip_skip_does_not_change_sdxl_conditioning_as_in_a1111(xl):
    skipped, plain = encode(xl, "a red circle", clip_skip=2), encode(xl, "a red circle")
    assert torch.equal(skipped.context, plain.context) and torch.equal(skipped.pooled, plain.pooled)


def test_sdxl_embedding_file_puts_its_clip_l_and_clip_g_vectors_in_place(xl, tmp_path):
    from safetensors.torch import save_file
    from sdbake.schemas.errors import ModelError
    red = words(xl, "red")
    path = tmp_path / "myred.safetensors"
    save_file({"clip_l": xl.text_encoder.get_input_embeddings().weight[red].clone(),
               "clip_g": xl.text_encoder_2.get_input_embeddings().weight[red].clone()}, str(path))
    with_embedding = encode(xl, "a myred cat", embedding_files={"myred": path})
    plain = encode(xl, "a red cat")
    assert torch.allclose(with_embedding.context, plain.context, atol=1e-6)
    assert torch.allclose(with_embedding.pooled, plain.pooled, atol=1e-6)
    sd1_file = tmp_path / "old.safetensors"
    save_file({"emb_params": torch.zeros(1, 32)}, str(sd1_file))
    with pytest.raises(ModelError, match="not an SDXL embedding"):
        encode(xl, "an old cat", embedding_files={"old": sd1_file})
