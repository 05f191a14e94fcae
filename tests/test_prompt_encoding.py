"""Prompt encoding on a tiny CLIP text model: schedules, chunks, BREAK, emphasis, clip skip, AND,
textual inversion and the cache round trip behave as A1111's conditioning does. Schedules and AND
go through stages/conditioning.py, the path the sampling stages use."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from sdbake.runner.plan import embeddings_used
from sdbake.schemas.errors import ModelError
from sdbake.stages.conditioning import encode_texts, guided_inputs, pack_memo, texts_of, unpack_memo
from sdbake.stages.prompts.encoding import TextEncoder, encode_text_pooled
from sdbake.stages.prompts.tokens import CHUNK_LENGTH, PLACEHOLDER_TOKEN, chunk_prompt
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TOKENIZER_DIR = Path(__file__).parents[1] / "runner" / "configs" / "clip_tokenizer"
BOS, EOS = 49406, 49407


def encode_text(encoder: TextEncoder, text: str) -> torch.Tensor:
    """(77 * chunks, C) conditioning of one text (the token embeddings, without the pooled output)."""
    return encode_text_pooled(encoder, text)[0]


@pytest.fixture(scope="module")
def tokenizer():
    return CLIPTokenizer(str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt"),
                         pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def text_model():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                            vocab_size=49408, max_position_embeddings=77, hidden_act="quick_gelu")
    return CLIPTextModel(config).eval()


@pytest.fixture
def encoder(tokenizer, text_model):
    return TextEncoder(tokenizer, text_model)


def token_ids(tokenizer, text):
    return tokenizer([text], truncation=False, add_special_tokens=False)["input_ids"][0]


@pytest.fixture
def clip(tokenizer, text_model):
    """What encode_texts reads of a loaded model."""
    return SimpleNamespace(tokenizer=tokenizer, text_encoder=text_model, family="sd1",
                           files=[(Path("clip.safetensors"), "0" * 64)])


def conditioning(clip, prompt: str, negative: str = "", steps: int = 20):
    """The sampling stages' per-call inputs for one image: call -> GuidedInputs."""
    memo = encode_texts(clip, texts_of([prompt], [negative], [[steps, None]]), 1, {})
    return guided_inputs([prompt], [negative], steps, None, memo, "cpu", torch.float32)


def test_prompt_edit_switches_conditioning_at_the_step_a1111_uses(encoder, clip):
    for_call = conditioning(clip, "[red:blue:10]")
    red, blue = encode_text(encoder, "red"), encode_text(encoder, "blue")
    for call in range(20):
        # A1111's denoiser takes the first entry with call <= end_at_step: "red" for calls 0..10
        expected = red if call <= 10 else blue
        (cond, weight), = for_call(call).conds[0]
        assert torch.equal(cond.context, expected) and weight == 1.0, call
    # past the schedule's end the last entry stays (a second-order sampler's extra calls)
    assert torch.equal(for_call(25).conds[0][0][0].context, blue)
    assert not torch.equal(red, blue)


def test_underscores_are_not_spaces(tokenizer, encoder):
    # "blue_eyes" and "blue eyes" are different prompts: different tokens, different conditioning.
    assert token_ids(tokenizer, "blue_eyes") != token_ids(tokenizer, "blue eyes")
    assert not torch.equal(encode_text(encoder, "blue_eyes"), encode_text(encoder, "blue eyes"))


def test_empty_prompt_is_one_chunk_of_bos_and_eos(tokenizer, encoder):
    chunks, token_count = chunk_prompt(tokenizer, "")
    assert token_count == 0
    assert chunks[0].tokens == [BOS] + [EOS] * 76
    assert encode_text(encoder, "").shape == (77, 32)


def test_chunk_is_wrapped_with_bos_and_padded_with_eos(tokenizer):
    chunks, _ = chunk_prompt(tokenizer, "a photo of a cat")
    assert chunks[0].tokens == [BOS, 320, 1125, 539, 320, 2368] + [EOS] * 71


def test_long_prompt_is_split_into_chunks_of_75_and_concatenated(tokenizer, encoder):
    text = " ".join(["cat"] * 100)
    chunks, token_count = chunk_prompt(tokenizer, text)
    assert token_count == 100
    assert [chunk.length for chunk in chunks] == [75, 25]
    assert all(len(chunk.tokens) == 77 and chunk.tokens[0] == BOS and chunk.tokens[-1] == EOS for chunk in chunks)
    encoded = encode_text(encoder, text)
    assert encoded.shape == (154, 32)
    # each chunk is encoded on its own: the second half is the encoding of the last 25 words alone
    assert torch.equal(encoded[77:], encode_text(encoder, " ".join(["cat"] * 25)))


def test_full_chunk_moves_words_after_a_recent_comma_to_the_next_chunk(tokenizer):
    # 70 words, a comma, 10 words: the chunk fills at 75 with the comma 4 tokens back, so the words
    # after the comma move to chunk 2 (A1111's default word wrap of 20 tokens).
    text = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)
    chunks, _ = chunk_prompt(tokenizer, text)
    assert [chunk.length for chunk in chunks] == [71, 10]
    assert chunks[0].tokens[71] == token_ids(tokenizer, ",")[0]
    without_wrap, _ = chunk_prompt(tokenizer, text, comma_backtrack=0)
    assert [chunk.length for chunk in without_wrap] == [75, 6]


def test_break_starts_a_new_chunk(tokenizer, encoder):
    chunks, _ = chunk_prompt(tokenizer, "red BREAK blue")
    assert [chunk.length for chunk in chunks] == [1, 1]
    encoded = encode_text(encoder, "red BREAK blue")
    assert torch.equal(encoded[:77], encode_text(encoder, "red"))
    assert torch.equal(encoded[77:], encode_text(encoder, "blue"))


def test_break_inside_brackets_is_a_word(tokenizer):
    chunks, _ = chunk_prompt(tokenizer, "(red BREAK blue)")
    assert len(chunks) == 1 and chunks[0].length == 3


@pytest.fixture
def trained_like_norm(text_model):
    """A trained CLIP's final layer norm has a bias, so its outputs' mean is far from 0."""
    norm = getattr(text_model, "text_model", text_model).final_layer_norm
    saved = norm.bias.detach().clone()
    with torch.no_grad():
        norm.bias.fill_(0.3)
    yield
    with torch.no_grad():
        norm.bias.copy_(saved)


def test_emphasis_scales_outputs_then_restores_the_mean(encoder, text_model, trained_like_norm):
    weighted = encode_text(encoder, "(red:1.5) cat")
    plain = encode_text(encoder, "red cat")
    multipliers = torch.ones(77)
    multipliers[1] = 1.5
    scaled = plain * multipliers[:, None]
    expected = scaled * (plain.mean() / scaled.mean())
    torch.testing.assert_close(weighted, expected, rtol=0, atol=0)
    # the mean is restored up to float32 rounding
    torch.testing.assert_close(weighted.mean(), plain.mean(), rtol=1e-5, atol=1e-7)
    assert not torch.equal(weighted, plain)


def test_emphasis_on_outputs_with_zero_mean_skips_the_restoration_instead_of_nan(encoder):
    # an untrained CLIP (final norm bias 0): the mean is ~1e-9 and A1111's ratio would be noise or NaN
    weighted = encode_text(encoder, "a large yellow circle in the center, (blue background:1.1)")
    assert torch.isfinite(weighted).all()
    assert weighted.abs().max() < 10


def test_weight_one_leaves_the_encoding_unchanged(encoder):
    assert torch.equal(encode_text(encoder, "(red:1.0) cat"), encode_text(encoder, "red cat"))


def test_clip_skip_uses_an_earlier_layer_then_the_final_norm(tokenizer, text_model):
    skipped = encode_text(TextEncoder(tokenizer, text_model, clip_skip=2), "red cat")
    ids = torch.tensor([[BOS] + token_ids(tokenizer, "red cat") + [EOS] * 74])
    with torch.no_grad():
        hidden = text_model(input_ids=ids, output_hidden_states=True).hidden_states[-2]
        expected = text_model.final_layer_norm(hidden)[0]
    assert torch.equal(skipped, expected)
    assert not torch.equal(skipped, encode_text(TextEncoder(tokenizer, text_model), "red cat"))


def test_and_gives_one_weighted_part_per_sub_prompt(encoder, clip):
    conds = conditioning(clip, "red AND blue:0.5")(0).conds[0]
    assert [weight for _, weight in conds] == [1.0, 0.5]
    assert torch.equal(conds[0][0].context, encode_text(encoder, "red"))
    assert torch.equal(conds[1][0].context, encode_text(encoder, "blue"))


def test_and_parts_keep_their_own_length(encoder, clip):
    # The denoiser runs contexts of different lengths as separate batches, so nothing is padded.
    long_text = " ".join(["cat"] * 80)
    conds = conditioning(clip, f"red AND {long_text}")(0).conds[0]
    assert [cond.context.shape for cond, _ in conds] == [(77, 32), (154, 32)]
    assert torch.equal(conds[1][0].context, encode_text(encoder, long_text))


def test_negative_prompt_is_scheduled_but_not_split_on_and(encoder, clip):
    negative = "[blurry:lowres:5] AND ugly"
    assert texts_of([], [negative], [[20, None]]) == ["blurry AND ugly", "lowres AND ugly"]
    for_call = conditioning(clip, "cat", negative)
    assert torch.equal(for_call(5).uncond[0].context, encode_text(encoder, "blurry AND ugly"))
    assert torch.equal(for_call(6).uncond[0].context, encode_text(encoder, "lowres AND ugly"))


def test_each_distinct_text_is_encoded_once(clip, text_model):
    prompt = "x AND [a|b] AND [a|b]"
    texts = texts_of([prompt], [], [[20, None]])
    assert texts == [" a", " b", "x"]
    calls = []
    hook = text_model.get_input_embeddings().register_forward_hook(lambda *args: calls.append(1))
    try:
        memo = encode_texts(clip, texts, 1, {})
        assert encode_texts(clip, texts, 1, memo) is memo        # a full memo encodes nothing more
    finally:
        hook.remove()
    assert len(calls) == 3
    for_call = guided_inputs([prompt], ["x"], 20, None, memo, "cpu", torch.float32)   # "x" as negative too
    # alternation as A1111's denoiser picks it: calls 0 and 1 both use option 1, call 2 option 2
    assert torch.equal(for_call(0).conds[0][1][0].context, for_call(1).conds[0][2][0].context)
    assert not torch.equal(for_call(1).conds[0][1][0].context, for_call(2).conds[0][1][0].context)


def test_memo_round_trips_through_tensors_and_json(clip, tmp_path):
    memo = encode_texts(clip, texts_of(["[red:blue:0.5] (cat:1.2) AND dog:0.7"], ["ugly"], [[20, None]]), 2, {})
    tensors, meta = pack_memo(memo, clip, 2)
    save_file(tensors, str(tmp_path / "memo.safetensors"))
    (tmp_path / "memo.json").write_text(json.dumps(meta))
    packed = load_file(str(tmp_path / "memo.safetensors")), json.loads((tmp_path / "memo.json").read_text())
    loaded = unpack_memo(packed, clip, 2)
    assert sorted(loaded) == sorted(memo)
    assert all(torch.equal(loaded[text].context, memo[text].context) for text in memo)
    # a memo made with another clip skip, or for another model's encoders, is not reused
    assert unpack_memo(packed, clip, 1) == {}
    other = SimpleNamespace(**{**vars(clip), "files": [(Path("other.safetensors"), "1" * 64)]})
    assert unpack_memo(packed, other, 2) == {}


def write_embedding(folder: Path, name: str, vectors: torch.Tensor, key: str = "emb_params") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file({key: vectors}, str(path))
    return path


def test_textual_inversion_vectors_replace_the_trigger_tokens(tokenizer, text_model, tmp_path):
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    write_embedding(tmp_path / "embeddings", "mystyle", vectors)
    encoder = TextEncoder(tokenizer, text_model, embedding_files={"mystyle": tmp_path / "embeddings" / "mystyle.safetensors"})
    chunks, _ = chunk_prompt(tokenizer, "a mystyle cat", triggers=encoder.triggers(), vector_count=encoder.vector_count)
    assert chunks[0].tokens[:5] == [BOS, 320, PLACEHOLDER_TOKEN, PLACEHOLDER_TOKEN, 2368]
    assert chunks[0].embeddings == [(2, "mystyle", 2)]

    with_embedding = encode_text(encoder, "a mystyle cat")
    assert not torch.equal(with_embedding, encode_text(TextEncoder(tokenizer, text_model), "a mystyle cat"))
    assert torch.equal(encode_text(encoder, "a embedding:mystyle cat"), with_embedding)
    assert torch.equal(encode_text(encoder, "a MyStyle cat"), with_embedding)
    # the plan finds the file the prompt triggers (the recipe folder's embeddings/), for the cache key
    recipe = SimpleNamespace(folder=tmp_path)
    assert embeddings_used(recipe, ["a mystyle cat"]) == {"mystyle": tmp_path / "embeddings" / "mystyle.safetensors"}
    assert embeddings_used(recipe, ["a cat"]) == {}


def test_textual_inversion_vectors_enter_the_transformer(tokenizer, text_model, tmp_path):
    vectors = torch.randn(1, 32, generator=torch.Generator().manual_seed(2))
    path = write_embedding(tmp_path, "onevec", vectors, key="string_to_param.*")
    encoder = TextEncoder(tokenizer, text_model, embedding_files={"onevec": path})
    captured = {}

    def capture(module, args, kwargs):
        captured["hidden"] = (args[0] if args else kwargs["inputs_embeds"]).clone()

    hook = text_model.encoder.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        encode_text(encoder, "a onevec")
    finally:
        hook.remove()
    positions = text_model.embeddings.position_embedding.weight[2]
    torch.testing.assert_close(captured["hidden"][0, 2], vectors[0] + positions)


def test_embedding_of_the_wrong_width_is_a_model_error(tokenizer, text_model, tmp_path):
    path = write_embedding(tmp_path, "wide", torch.zeros(1, 768))
    encoder = TextEncoder(tokenizer, text_model, embedding_files={"wide": path})
    with pytest.raises(ModelError, match="wide.safetensors"):
        encode_text(encoder, "a wide cat")
    assert encode_text(encoder, "a cat").shape == (77, 32)    # unused files are never opened


def test_pickle_embedding_is_refused(tokenizer, text_model, tmp_path):
    (tmp_path / "old.pt").write_bytes(b"not read")
    encoder = TextEncoder(tokenizer, text_model, embedding_files={"old": tmp_path / "old.pt"})
    with pytest.raises(ModelError, match="pickle"):
        encode_text(encoder, "old")


def test_embedding_that_does_not_fit_moves_to_the_next_chunk(tokenizer, text_model, tmp_path):
    path = write_embedding(tmp_path, "fourvec", torch.zeros(4, 32))
    encoder = TextEncoder(tokenizer, text_model, embedding_files={"fourvec": path})
    text = " ".join(["cat"] * 73) + " fourvec"
    chunks, _ = chunk_prompt(tokenizer, text, triggers=encoder.triggers(), vector_count=encoder.vector_count)
    assert [chunk.length for chunk in chunks] == [73, 4]
    assert chunks[1].embeddings == [(1, "fourvec", 4)]
    assert CHUNK_LENGTH == 75


def test_a_sampling_stage_encodes_and_keeps_the_scheduled_texts_encode_could_not_know(clip, encoder):
    """Encode's key holds no step count, so its memo has the texts of a 150-step schedule; a stage
    whose schedule switches later encodes the missing text itself and its output state keeps it."""
    from sdbake.stages.conditioning import known_texts
    from sdbake.stages.sampler_run import Guidance, with_memo
    prompt = "[red:blue:200]"                    # switches at step 200: never within 150 steps
    assert known_texts([prompt], [""]) == ["", "red"]
    encoded = pack_memo(encode_texts(clip, known_texts([prompt], [""]), 1, {}), clip, 1)
    g = Guidance([prompt], [""], encoded, 1, 5.0, schedule_steps=300)
    ctx = SimpleNamespace(extra={})
    memo = unpack_memo(with_memo(g, clip, "euler", ctx).embeddings, clip, 1)
    assert sorted(memo) == ["", "blue", "red"]
    assert torch.equal(memo["blue"].context, encode_text(encoder, "blue"))
    assert torch.equal(memo["red"].context, unpack_memo(encoded, clip, 1)["red"].context)   # encode's, kept
    for_call = guided_inputs([prompt], [""], 300, None, memo, "cpu", torch.float32)
    assert torch.equal(for_call(250).conds[0][0][0].context, memo["blue"].context)
