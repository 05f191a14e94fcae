"""SDXL: a tiny SGM-layout single file loads with the same weights as its diffusers folder."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sdbake.runner.models.loading import load_model


def test_sdxl_single_file_matches_folder(tiny_sdxl):
    folder, single = tiny_sdxl
    from_folder = load_model(folder)
    from_file = load_model(single, config=folder)
    for model in (from_folder, from_file):
        assert model.family == "sdxl"
        assert model.tokenizer_2.pad_token == "!"
        assert model.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a = getattr(from_folder, part).state_dict()
        b = getattr(from_file, part).state_dict()
        assert a.keys() == b.keys(), part
        assert all(torch.equal(a[k], b[k]) for k in a), part


def test_sdxl_single_file_uses_shipped_sdxl_config_by_default(tiny_sdxl):
    from sdbake.schemas.errors import ModelError
    _, single = tiny_sdxl
    with pytest.raises(ModelError, match="tiny-sdxl.safetensors.*wrong shape"):
        load_model(single)            # detected as SDXL, checked against the real SDXL sizes


def test_sdxl_refiner_single_file_matches_its_folder(tiny_sdxl_refiner):
    folder, single = tiny_sdxl_refiner
    from_folder, from_file = load_model(folder), load_model(single, config=folder)
    for model in (from_folder, from_file):
        assert model.family == "sdxl" and model.text_encoder is None and model.aesthetic_score
    for part in ("unet", "vae", "text_encoder_2"):
        a, b = getattr(from_folder, part).state_dict(), getattr(from_file, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


def test_sdxl_refiner_single_file_is_checked_against_the_shipped_refiner_config(tiny_sdxl_refiner):
    from sdbake.schemas.errors import ModelError
    _, single = tiny_sdxl_refiner
    with pytest.raises(ModelError, match="tiny-refiner.safetensors.*wrong shape"):
        load_model(single)            # detected as a refiner, checked against the real refiner's sizes
