"""Loading the tiny SD1.x model as a diffusers folder and as an LDM single file gives the same model."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sdbake.runner.models.loading import load_model


@pytest.fixture(scope="module")
def folder_model(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def single_file_model(tiny_single_file, tiny_model_dir):
    # The tiny model is not SD1.5-sized, so its architecture comes from the folder's configs.
    return load_model(tiny_single_file, config=tiny_model_dir)


def test_single_file_and_folder_give_identical_weights(folder_model, single_file_model):
    for part in ("unet", "vae", "text_encoder"):
        a = getattr(folder_model, part).state_dict()
        b = getattr(single_file_model, part).state_dict()
        assert a.keys() == b.keys(), part
        assert all(torch.equal(a[k], b[k]) for k in a), part


def _render(pipe, seed: int = 7):
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe("a photo of a cat", num_inference_steps=5, height=64, width=64, guidance_scale=5.0,
                generator=generator, output_type="pt").images


def _pipeline_of(model):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    return StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                   unet=model.unet, scheduler=EulerDiscreteScheduler.from_config(model.scheduler_config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def test_single_file_renders_the_same_image_as_diffusers_own_pipeline(tiny_model_dir, single_file_model):
    from diffusers import StableDiffusionPipeline
    oracle = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir), local_files_only=True,
                                                     safety_checker=None, requires_safety_checker=False)
    oracle.set_progress_bar_config(disable=True)
    ours = _pipeline_of(single_file_model)
    ours.set_progress_bar_config(disable=True)
    expected = _render(oracle)
    assert expected.shape == (1, 3, 64, 64)
    assert torch.equal(_render(ours), expected)


def test_tokenizer_gives_clip_ids(folder_model, single_file_model):
    for model in (folder_model, single_file_model):
        assert model.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
        assert model.tokenizer.model_max_length == 77


def test_loaded_model_describes_itself(folder_model, single_file_model, tiny_single_file):
    from sdbake.runner.models.hashing import sha256_uncached
    for model in (folder_model, single_file_model):
        assert model.family == "sd1"
        assert model.prediction_type == "epsilon"
        assert model.vae_scale_factor == 8
        assert model.latent_channels == 4
        assert model.in_channels == 4
        assert model.text_encoder_2 is None and model.tokenizer_2 is None
        assert model.scheduler_config["beta_schedule"] == "scaled_linear"
        assert model.scheduler_config["num_train_timesteps"] == 1000
        assert model.unet.dtype == torch.float32       # CPU default
    assert single_file_model.files == [(tiny_single_file, sha256_uncached(tiny_single_file))]
    assert [p.parent.name for p, _ in folder_model.files] == ["unet", "vae", "text_encoder"]


def test_dtype_override(tiny_single_file, tiny_model_dir):
    model = load_model(tiny_single_file, config=tiny_model_dir, dtype=torch.bfloat16)
    assert model.unet.dtype == torch.bfloat16 and model.text_encoder.dtype == torch.bfloat16


def test_inpainting_unet_detected_from_conv_in(tmp_path, tiny_model_dir):
    import tiny_models
    from safetensors.torch import save_file
    state = tiny_models.export_ldm_state_dict(tiny_models.build_tiny_pipeline())
    conv_in = state["model.diffusion_model.input_blocks.0.0.weight"]
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.cat([conv_in, conv_in, conv_in[:, :1]], dim=1)
    path = tmp_path / "tiny-inpainting.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    assert load_model(path, config=tiny_model_dir).in_channels == 9


def test_separate_vae_file_replaces_the_checkpoint_vae(tmp_path, tiny_model_dir, folder_model):
    import tiny_models
    for ldm_layout in (True, False):
        vae_path = tiny_models.save_tiny_vae_file(tmp_path / f"vae-{ldm_layout}.safetensors", seed=3,
                                                  ldm_layout=ldm_layout)
        model = load_model(tiny_model_dir, vae=vae_path)
        torch.manual_seed(3)
        from diffusers import AutoencoderKL
        expected = AutoencoderKL(**tiny_models.VAE_CONFIG).state_dict()
        got = model.vae.state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected)
        assert not torch.equal(got["decoder.conv_out.weight"], folder_model.vae.state_dict()["decoder.conv_out.weight"])
        assert model.files[-1][0] == vae_path


def test_shipped_configs_have_the_real_parameter_counts():
    # SD1.5 UNet 859.5M, SDXL UNet 2.567B, OpenCLIP bigG text encoder 694.7M (well-known sizes).
    from sdbake.runner.models import components
    from sdbake.runner.models.single_file import shipped_config_dir
    expected = {("sd1", "unet"): 859_520_964, ("sd1", "vae"): 83_653_863, ("sd1", "text_encoder"): 123_060_480,
                ("sdxl", "unet"): 2_567_463_684, ("sdxl", "text_encoder_2"): 694_659_840}
    factories = {"unet": components.unet_from_config, "vae": components.vae_from_config,
                 "text_encoder": components.text_encoder_from_config,
                 "text_encoder_2": components.text_encoder_from_config}
    for (family, part), count in expected.items():
        config = components.read_json(shipped_config_dir(family) / part / "config.json")
        with components.init_empty_weights():
            module = factories[part](config)
        assert sum(p.numel() for p in module.parameters()) == count, (family, part)


def test_sdxl_second_tokenizer_pads_with_exclamation_mark():
    from sdbake.runner.models.components import load_tokenizer
    from sdbake.runner.models.single_file import shipped_config_dir
    tokenizer_2 = load_tokenizer(shipped_config_dir("sdxl") / "tokenizer_2", 77)
    ids = tokenizer_2("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert ids[:8] == [49406, 320, 1125, 539, 320, 2368, 49407, 0] and len(ids) == 77
