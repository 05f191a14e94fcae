"""Each bad model input gives one clear ModelError line that names the file."""
from __future__ import annotations

import os
import warnings

import pytest

torch = pytest.importorskip("torch")

from sdbake.runner.models.loading import load_model
from sdbake.schemas.errors import ModelError


def _one_line_error(excinfo, *words: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(ModelError) as excinfo:
        load_model(tmp_path / "nowhere.safetensors")
    _one_line_error(excinfo, "nowhere.safetensors", "not found")


class _Evil:
    """Unpickling it would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_checkpoint(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": _Evil(marker)}, path)
    return path, marker


def test_pickle_refused_without_flag_and_never_executed(tmp_path):
    path, marker = _evil_checkpoint(tmp_path)
    with pytest.raises(ModelError) as excinfo:
        load_model(path)
    _one_line_error(excinfo, "pickle", "--allow-pickle", "evil.ckpt")
    assert not marker.exists()


def test_evil_pickle_refused_even_with_flag(tmp_path):
    path, marker = _evil_checkpoint(tmp_path)
    with pytest.raises(ModelError) as excinfo:
        load_model(path, allow_pickle=True)
    _one_line_error(excinfo, "pickle", "evil.ckpt")
    assert not marker.exists()


def test_plain_tensor_pickle_loads_with_flag(tmp_path, tiny_single_file, tiny_model_dir):
    from safetensors.torch import load_file
    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(str(tiny_single_file))}, path)
    model = load_model(path, allow_pickle=True, config=tiny_model_dir)
    assert model.family == "sd1"


def test_unknown_family(tmp_path):
    from safetensors.torch import save_file
    vae_only = tmp_path / "just-a-vae.safetensors"
    save_file({"encoder.down.0.block.0.conv1.weight": torch.zeros(1)}, str(vae_only))
    with pytest.raises(ModelError) as excinfo:
        load_model(vae_only)
    _one_line_error(excinfo, "unknown model family", "just-a-vae.safetensors", "VAE")
    sd2 = tmp_path / "sd2.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1),
               "cond_stage_model.model.token_embedding.weight": torch.zeros(1)}, str(sd2))
    with pytest.raises(ModelError) as excinfo:
        load_model(sd2)
    _one_line_error(excinfo, "unknown model family", "sd2.safetensors", "SD2")


def test_truncated_safetensors(tmp_path, tiny_single_file):
    data = tiny_single_file.read_bytes()
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as excinfo:
        load_model(truncated)
    _one_line_error(excinfo, "cut.safetensors", "safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError) as excinfo:
        load_model(garbage)
    _one_line_error(excinfo, "garbage.safetensors")


def test_single_file_that_does_not_fit_the_shipped_config(tiny_single_file):
    # The tiny model is detected as SD1 but is not SD1.5-sized: a clear error, not a random model.
    with pytest.raises(ModelError) as excinfo:
        load_model(tiny_single_file)
    _one_line_error(excinfo, "tiny-sd1.safetensors", "wrong shape")


def test_vae_of_wrong_shape(tmp_path, tiny_model_dir):
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file
    wrong = AutoencoderKL(block_out_channels=(16, 16), layers_per_block=1, latent_channels=4,
                          down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                          norm_num_groups=8)
    path = tmp_path / "wrong-vae.safetensors"
    save_file(wrong.state_dict(), str(path))
    with pytest.raises(ModelError) as excinfo:
        load_model(tiny_model_dir, vae=path)
    _one_line_error(excinfo, "wrong-vae.safetensors", "VAE")


def test_missing_vae_file(tmp_path, tiny_model_dir):
    with pytest.raises(ModelError) as excinfo:
        load_model(tiny_model_dir, vae=tmp_path / "no-vae.safetensors")
    _one_line_error(excinfo, "no-vae.safetensors", "not found")


def test_folder_without_model_index(tmp_path):
    with pytest.raises(ModelError) as excinfo:
        load_model(tmp_path)
    _one_line_error(excinfo, "model_index.json")


def test_lora_matching_no_layer_is_an_error(tmp_path, tiny_model_dir):
    from safetensors.torch import save_file
    from sdbake.runner.models.lora import apply_loras
    model = load_model(tiny_model_dir)
    path = tmp_path / "other-model-lora.safetensors"
    name = "lora_unet_down_blocks_3_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{name}.lora_down.weight": torch.ones(4, 320), f"{name}.lora_up.weight": torch.ones(320, 4),
               f"{name}.alpha": torch.tensor(4.0)}, str(path))
    with pytest.raises(ModelError) as excinfo:
        apply_loras(model, [(path, 1.0)])
    _one_line_error(excinfo, "other-model-lora.safetensors", "matches none")


def test_partial_lora_warns_with_the_matched_count(tmp_path, tiny_model_dir):
    import tiny_models
    from sdbake.runner.models.lora import LoraWarning, apply_loras, remove_loras
    model = load_model(tiny_model_dir)
    path = tiny_models.save_tiny_lora(tmp_path / "partial.safetensors", model.unet, model.text_encoder,
                                      extra_missing=2)
    matched = len(tiny_models.tiny_lora_state_dict(model.unet, model.text_encoder)) // 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_loras(model, [(path, 0.5)])
    remove_loras(model)
    messages = [str(w.message) for w in caught if issubclass(w.category, LoraWarning)]
    assert messages == [f"{path}: LoRA matched {matched} of {matched + 2} layers; the rest are ignored"]
