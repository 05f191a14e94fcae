"""A1111 infotext: layout, key order, quoting, parse round trip, sampler labels."""
from __future__ import annotations

import pytest
from sdbake.schemas.names import a1111_sampler_label
from sdbake.stages.output.infotext import format_infotext, parse_infotext

PARAMS = {
    "Version": "sdbake 0.1.0",                    # given first, written last
    "Lora hashes": "detail: 0123456789ab, style: ba9876543210",
    "Steps": 20, "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": 7.0, "Seed": 1234,
    "Size": "512x768", "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly",
    "Denoising strength": 0.45, "Clip skip": 2, "Hires upscale": 2.0, "Hires steps": 12,
    "Hires upscaler": "Latent (nearest-exact)",
}


def test_layout_and_key_order_match_a1111():
    text = format_infotext("a cat, (detailed:1.2)", "lowres, blurry", PARAMS)
    assert text == (
        "a cat, (detailed:1.2)\n"
        "Negative prompt: lowres, blurry\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 1234, "
        "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, "
        "Clip skip: 2, Hires upscale: 2.0, Hires steps: 12, Hires upscaler: Latent (nearest-exact), "
        'Lora hashes: "detail: 0123456789ab, style: ba9876543210", Version: sdbake 0.1.0')


def test_variation_seed_fields_sit_where_a1111_writes_them():
    # create_infotext: ... VAE, Variation seed, Variation seed strength, Seed resize from, Denoising strength
    params = {**PARAMS, "Seed resize from": "640x512", "Variation seed strength": 0.3, "Variation seed": 99}
    assert ("Model: v1-5-pruned-emaonly, Variation seed: 99, Variation seed strength: 0.3, Seed resize from: "
            "640x512, Denoising strength: 0.45") in format_infotext("a cat", "", params)


def test_empty_negative_line_is_omitted_and_clip_skip_1_and_none_values_are_left_out():
    text = format_infotext("a cat", "", {"Steps": 4, "Sampler": "Euler a", "CFG scale": 5, "Seed": 1,
                                         "Clip skip": 1, "VAE": None})
    assert text == "a cat\nSteps: 4, Sampler: Euler a, CFG scale: 5, Seed: 1"


def test_values_with_comma_colon_or_newline_are_json_quoted():
    text = format_infotext("p", "", {"Steps": 1, "Sampler": "Euler", "Seed": 1, "Model": "a,b",
                                     "Note": "x: y", "Multi": "one\ntwo", "Umlaut": "ü, ß"})
    assert text.splitlines()[-1] == ('Steps: 1, Sampler: Euler, Seed: 1, Model: "a,b", Note: "x: y", '
                                     'Multi: "one\\ntwo", Umlaut: "ü, ß"')


def test_a_key_whose_value_is_the_key_is_written_alone():
    text = format_infotext("p", "", {"Steps": 1, "Sampler": "Euler", "Seed": 1, "Tiling": "Tiling"})
    assert text.endswith("Seed: 1, Tiling")


@pytest.mark.parametrize("prompt, negative", [
    ("a cat", "blurry"),
    ("a cat\non two lines", "bad hands\nsecond line"),
    ("unicode 🙂 prompt, (weight:1.3)", ""),
    ("", "only negative"),
])
def test_parse_round_trip(prompt, negative):
    text = format_infotext(prompt, negative, PARAMS)
    parsed_prompt, parsed_negative, params = parse_infotext(text)
    assert (parsed_prompt, parsed_negative) == (prompt, negative)
    assert params["Lora hashes"] == PARAMS["Lora hashes"]
    assert params["Seed"] == "1234" and params["Size"] == "512x768" and params["Clip skip"] == "2"
    expected = {key: str(value) for key, value in PARAMS.items()}
    assert params == expected
    assert format_infotext(parsed_prompt, parsed_negative, params) == text


def test_parse_a1111_written_text():
    text = ("girl with a beret, (eyeshadow)\nNegative prompt: ugly, [blurry]\n"
            'Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, '
            'Model hash: 45dee52b, Lora hashes: "a: 1, b: 2", Version: v1.10.1')
    prompt, negative, params = parse_infotext(text)
    assert prompt == "girl with a beret, (eyeshadow)" and negative == "ugly, [blurry]"
    assert params["Sampler"] == "Euler a" and params["Lora hashes"] == "a: 1, b: 2"
    assert params["Version"] == "v1.10.1"


def test_a_last_line_with_fewer_than_3_pairs_is_prompt_text():
    prompt, negative, params = parse_infotext("a cat\nstyle: oil, mood: calm")
    assert prompt == "a cat\nstyle: oil, mood: calm" and negative == "" and params == {}


@pytest.mark.parametrize("sampler, scheduler, labels", [
    ("dpmpp_2m", "karras", ("DPM++ 2M", "Karras")),
    ("euler_ancestral", "normal", ("Euler a", "Normal")),
    ("euler", "simple", ("Euler", "Simple")),
    ("dpmpp_2m_sde", "exponential", ("DPM++ 2M SDE", "Exponential")),
    ("dpmpp_sde", "karras", ("DPM++ SDE", "Karras")),
    ("heun", "sgm_uniform", ("Heun", "SGM Uniform")),
    ("lms", "beta", ("LMS", "Beta")),
    ("ddim", "ddim_uniform", ("DDIM", "DDIM")),
    ("dpm_2_ancestral", "karras", ("DPM2 a", "Karras")),
    ("dpmpp_2s_ancestral", "karras", ("DPM++ 2S a", "Karras")),
])
def test_sampler_ids_map_to_a1111_labels(sampler, scheduler, labels):
    assert a1111_sampler_label(sampler, scheduler) == labels


def test_unknown_sampler_is_a_bug_not_a_guess():
    with pytest.raises(ValueError, match="no A1111 label for 'my_sampler'"):
        a1111_sampler_label("my_sampler", "karras")
