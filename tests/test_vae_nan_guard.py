"""VAE decode: latent unscaling, the fp16 NaN guard (retry in fp32), and A1111's uint8 conversion."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from sdbake.stages.images import to_pil
from sdbake.stages.vae import VaeNanWarning, decode_latents

torch.set_num_threads(1)


def tiny_vae(dtype: torch.dtype = torch.float32, **config) -> AutoencoderKL:
    """A 4-level VAE (scale factor 8, as SD1.x) with a few channels, from a fixed seed."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215, **config)
    return vae.eval().to(dtype)


def latents(batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(1))


def nan_in_half_precision(vae: AutoencoderKL) -> None:
    """Patch the decoder to emit a NaN pixel whenever it runs in fp16/bf16 (as a real fp16 SD VAE
    overflows on some latents), and compute normally in float32."""
    decoder_forward = vae.decoder.forward

    def forward(*args, **kwargs):
        sample = decoder_forward(*args, **kwargs)
        if sample.dtype in (torch.float16, torch.bfloat16):
            sample = sample.clone()
            sample[:, :, 3, 5] = float("nan")
        return sample
    vae.decoder.forward = forward


def reference_decode(vae: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        decoded = vae.decode(z / vae.config.scaling_factor).sample
    return torch.clamp((decoded.float() + 1) / 2, 0, 1)


def test_decode_unscales_latents_and_returns_images_in_0_1():
    vae, z = tiny_vae(), latents()
    images, retried = decode_latents(vae, z)
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.float32 and not retried
    assert all(torch.equal(images[i], reference_decode(vae, z[i:i + 1])[0]) for i in range(3))
    assert images.min() >= 0 and images.max() <= 1


def test_decode_applies_shift_factor_when_the_vae_has_one():
    vae, z = tiny_vae(shift_factor=0.25), latents(1)
    with torch.no_grad():
        expected = torch.clamp((vae.decode(z / 0.18215 + 0.25).sample + 1) / 2, 0, 1)
    assert torch.equal(decode_latents(vae, z)[0], expected)


def test_nan_in_fp16_decode_is_retried_in_fp32_and_yields_a_valid_image():
    vae = tiny_vae(torch.float16)
    nan_in_half_precision(vae)
    z = latents()
    with pytest.warns(VaeNanWarning) as caught:
        images, retried = decode_latents(vae, z)
    assert [str(w.message).split(" in image ")[1][:1] for w in caught] == ["0", "1", "2"]
    assert retried and torch.isfinite(images).all()
    assert next(vae.parameters()).dtype == torch.float16             # the VAE is given back in fp16
    # Each image is the float32 decode of the same (fp16-rounded) weights, as if decoded alone.
    fp32_vae = tiny_vae(torch.float16).float()
    for index in range(3):
        assert torch.equal(images[index], reference_decode(fp32_vae, z[index:index + 1])[0])
    assert to_pil(images)[1].getextrema() != ((0, 0), (0, 0), (0, 0))


def test_only_the_image_with_nan_is_redone():
    vae = tiny_vae(torch.float16)
    z = latents()
    clean, retried = decode_latents(vae, z)
    assert not retried
    decoder_forward, calls = vae.decoder.forward, []

    def nan_for_the_second_image(*args, **kwargs):
        sample = decoder_forward(*args, **kwargs)
        calls.append(sample.dtype)
        return sample * float("nan") if len(calls) == 2 else sample
    vae.decoder.forward = nan_for_the_second_image
    with pytest.warns(VaeNanWarning, match="image 1 of the batch"):
        images, retried = decode_latents(vae, z)
    assert calls == [torch.float16, torch.float16, torch.float32, torch.float16]
    assert torch.equal(images[[0, 2]], clean[[0, 2]]) and not torch.equal(images[1], clean[1])


def test_batch_size_never_changes_an_image():
    vae, z = tiny_vae(), latents()
    together = decode_latents(vae, z)[0]
    assert all(torch.equal(together[i], decode_latents(vae, z[i:i + 1])[0][0]) for i in range(3))


def test_bf16_is_guarded_too():
    vae = tiny_vae(torch.bfloat16)
    nan_in_half_precision(vae)
    with pytest.warns(VaeNanWarning):
        images, retried = decode_latents(vae, latents(1))
    assert retried and torch.isfinite(images).all()
    assert next(vae.parameters()).dtype == torch.bfloat16


def test_force_fp32_never_runs_half_precision():
    vae = tiny_vae(torch.float16)
    nan_in_half_precision(vae)
    images, retried = decode_latents(vae, latents(), force_fp32=True)
    assert not retried and torch.isfinite(images).all()
    assert next(vae.parameters()).dtype == torch.float16


def test_nan_in_float32_is_a_model_error_not_garbage_pixels():
    from sdbake.schemas.errors import ModelError
    vae = tiny_vae()
    decoder_forward = vae.decoder.forward
    vae.decoder.forward = lambda *a, **k: decoder_forward(*a, **k) * float("nan")
    with pytest.raises(ModelError, match="NaN/inf in float32"):
        decode_latents(vae, latents(1))


def test_to_pil_truncates_like_a1111():
    # A1111: (255 * x).astype(uint8) truncates: 0.5 -> 127, 0.999 -> 254, 1.0 -> 255
    values = torch.tensor([0.0, 0.5, 0.999, 1.0, 1.5, -0.2]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    image = to_pil(values)[0]
    assert image.mode == "RGB" and image.size == (6, 1)
    assert list(np.asarray(image)[0, :, 0]) == [0, 127, 254, 255, 255, 0]
