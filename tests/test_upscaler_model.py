"""Upscaler model files: RRDBNet in its key layouts, scale detection, tiling, errors, and a hires recipe."""
from __future__ import annotations

import fractions
import os
import sys
from types import SimpleNamespace

import pytest
from stage_helpers import recipe, render_text

torch = pytest.importorskip("torch")
F = torch.nn.functional


def basicsr_weights(*, features=8, blocks=1, growth=4, in_channels=3, seed=0) -> dict:
    """Tiny random weights in the BasicSR/Real-ESRGAN layout (two upsamplings, as every BasicSR RRDBNet)."""
    shapes = {"conv_first": (features, in_channels)}
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for conv in (1, 2, 3, 4):
                shapes[f"body.{block}.rdb{rdb}.conv{conv}"] = (growth, features + (conv - 1) * growth)
            shapes[f"body.{block}.rdb{rdb}.conv5"] = (features, features + 4 * growth)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (features, features)
    shapes["conv_last"] = (3, features)
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, (out_channels, in_ch) in shapes.items():
        weights[f"{name}.weight"] = torch.randn((out_channels, in_ch, 3, 3), generator=generator) * (in_ch * 9) ** -0.5
        weights[f"{name}.bias"] = torch.randn((out_channels,), generator=generator) * 0.02
    weights["conv_last.bias"] = weights["conv_last.bias"] + 0.5     # outputs mostly inside [0, 1]
    return weights


def original_layout(weights: dict, blocks=1) -> dict:
    """The same tensors under the original ESRGAN names (one `model` Sequential, x4)."""
    top = {"conv_first": "model.0", "conv_body": f"model.1.sub.{blocks}", "conv_up1": "model.3",
           "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}
    renamed = {}
    for key, tensor in weights.items():
        layer, kind = key.rsplit(".", 1)
        if layer.startswith("body."):
            _, block, rdb, conv = layer.split(".")
            renamed[f"model.1.sub.{block}.RDB{rdb[3:]}.{conv}.0.{kind}"] = tensor
        else:
            renamed[f"{top[layer]}.{kind}"] = tensor
    return renamed


def reference_forward(w: dict, x, unshuffle=1, blocks=1):
    """RRDBNet written out with F.conv2d, independent of runner/models/rrdbnet.py."""
    def conv(name, t):
        return F.conv2d(t, w[f"{name}.weight"], w[f"{name}.bias"], padding=1)

    def lrelu(t):
        return F.leaky_relu(t, 0.2)

    def nearest_2x(t):
        return t.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)

    if unshuffle > 1:
        x = F.pixel_unshuffle(x, unshuffle)
    first = conv("conv_first", x)
    trunk = first
    for block in range(blocks):
        block_input = trunk
        for rdb in (1, 2, 3):
            dense = [trunk]
            for index in (1, 2, 3, 4):
                dense.append(lrelu(conv(f"body.{block}.rdb{rdb}.conv{index}", torch.cat(dense, 1))))
            trunk = trunk + 0.2 * conv(f"body.{block}.rdb{rdb}.conv5", torch.cat(dense, 1))
        trunk = block_input + 0.2 * trunk
    features = first + conv("conv_body", trunk)
    features = lrelu(conv("conv_up1", nearest_2x(features)))
    features = lrelu(conv("conv_up2", nearest_2x(features)))
    return conv("conv_last", lrelu(conv("conv_hr", features)))


def image16(seed=1):
    return torch.rand((1, 3, 16, 16), generator=torch.Generator().manual_seed(seed))


def pixels(picture):
    import numpy as np
    return torch.from_numpy(np.asarray(picture, dtype=np.int16).copy())


def save_safetensors(path, weights):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    return path


def upscale_file(path, images, width, height):
    """The hires path: the runner loads the file, the stage runs the model."""
    from sdbake.runner.models.upscaler import load_upscaler
    from sdbake.stages.upscale import upscale_with_model
    return upscale_with_model(load_upscaler(path, "cpu"), images, width, height)


@pytest.fixture
def no_spandrel(monkeypatch):
    from sdbake.runner.models import upscaler
    monkeypatch.setattr(upscaler, "_spandrel", lambda: None)


@pytest.mark.parametrize("in_channels,unshuffle,scale", [(3, 1, 4), (12, 2, 2), (48, 4, 1)])
def test_rrdbnet_matches_reference_forward_and_reads_its_scale(in_channels, unshuffle, scale):
    from sdbake.runner.models.rrdbnet import rrdbnet_from_state_dict
    weights = basicsr_weights(in_channels=in_channels)
    net = rrdbnet_from_state_dict(weights)
    x = image16()
    assert net.scale == scale
    with torch.no_grad():
        out = net(x)
    assert out.shape == (1, 3, 16 * scale, 16 * scale)
    # float32 convs in a different order of operations: a few ulps apart.
    torch.testing.assert_close(out, reference_forward(weights, x, unshuffle), atol=1e-5, rtol=1e-5)


def test_rrdbnet_reads_blocks_features_and_growth_from_the_weights():
    from sdbake.runner.models.rrdbnet import rrdbnet_from_state_dict
    weights = basicsr_weights(features=6, blocks=2, growth=5)
    net = rrdbnet_from_state_dict(weights)
    assert len(net.body) == 2 and net.conv_first.out_channels == 6 and net.body[0].rdb1.conv1.out_channels == 5
    torch.testing.assert_close(net(image16()).detach(), reference_forward(weights, image16(), blocks=2),
                               atol=1e-5, rtol=1e-5)


def test_original_and_basicsr_layouts_upscale_identically(tmp_path, no_spandrel):
    from sdbake.stages.images import to_pil
    weights = basicsr_weights()
    new = save_safetensors(tmp_path / "new.safetensors", weights)
    old = tmp_path / "old.pth"
    torch.save(original_layout(weights), old)
    x = image16()
    from_new = upscale_file(new, x, 64, 64)
    from_old = upscale_file(old, x, 64, 64)
    assert from_new[0].size == (64, 64)
    assert torch.equal(pixels(from_new[0]), pixels(from_old[0]))
    # One 16x16 tile: the picture is the reference forward, truncated to 8 bits (off by one at most
    # where float rounding crosses an integer).
    expected = pixels(to_pil(reference_forward(weights, x))[0])
    assert (pixels(from_new[0]) - expected).abs().max() <= 1


def test_wrapped_pickle_and_pixel_unshuffle_model_upscale_to_requested_size(tmp_path, no_spandrel):
    from PIL import Image
    from sdbake.stages.images import to_pil
    weights = basicsr_weights(in_channels=12)                # Real-ESRGAN x2 layout
    path = tmp_path / "x2.pth"
    torch.save({"params_ema": weights}, path)
    x = torch.cat([image16(1), image16(2)])
    pictures = upscale_file(path, x, 24, 20)
    expected = to_pil(reference_forward(weights, x[1:], unshuffle=2).clamp(0, 1))[0]
    assert expected.size == (32, 32)
    expected = expected.resize((24, 20), Image.LANCZOS)      # the model's x2 overshoots: Lanczos down
    assert [p.size for p in pictures] == [(24, 20), (24, 20)]
    assert (pixels(pictures[1]) - pixels(expected)).abs().max() <= 1


def test_model_runs_again_until_the_target_is_reached(tmp_path, no_spandrel):
    from sdbake.runner.models.upscaler import load_upscaler
    from sdbake.stages.images import to_pil
    from sdbake.stages.upscale import upscale_tiled
    path = save_safetensors(tmp_path / "x2.safetensors", basicsr_weights(in_channels=12))
    model = load_upscaler(path, "cpu")
    x = image16()
    twice = to_pil(upscale_tiled(model, upscale_tiled(model, x)))[0]      # 16 -> 32 -> 64
    picture = upscale_file(path, x, 64, 64)[0]
    assert torch.equal(pixels(picture), pixels(twice))


def test_tiles_are_placed_and_overlaps_averaged():
    from sdbake.runner.models.upscaler import UpscalerModel
    from sdbake.stages.upscale import tile_starts, upscale_tiled
    calls = []

    def nearest_2x(t):
        calls.append(tuple(t.shape[-2:]))
        return t.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
    model = UpscalerModel(name="nearest", scale=2, dtype=torch.float32, device=torch.device("cpu"),
                          forward=nearest_2x)
    x = torch.rand((1, 3, 20, 27), generator=torch.Generator().manual_seed(0))
    tiled = upscale_tiled(model, x, tile=8, overlap=3)
    assert tile_starts(20, 8, 3) == [0, 5, 10, 12]
    assert len(calls) == len(tile_starts(20, 8, 3)) * len(tile_starts(27, 8, 3)) and set(calls) == {(8, 8)}
    torch.testing.assert_close(tiled, nearest_2x(x), atol=1e-6, rtol=0)   # averaging equal values


def test_unknown_state_dict_is_a_model_error_naming_the_file(tmp_path, no_spandrel):
    from sdbake.schemas.errors import ModelError
    path = save_safetensors(tmp_path / "mystery.safetensors", {"encoder.weight": torch.zeros(4, 4)})
    with pytest.raises(ModelError, match=r"unknown upscaler architecture; supported here: ESRGAN") as err:
        upscale_file(path, image16(), 64, 64)
    assert "mystery.safetensors" in str(err.value) and "\n" not in str(err.value)


def test_esrgan_plus_extra_layers_are_refused_without_spandrel(tmp_path, no_spandrel):
    from sdbake.runner.models.upscaler import load_upscaler
    from sdbake.schemas.errors import ModelError
    weights = original_layout(basicsr_weights())
    weights["model.1.sub.0.RDB1.conv1x1.weight"] = torch.zeros(4, 8, 1, 1)     # ESRGAN+ residual path
    path = save_safetensors(tmp_path / "plus.safetensors", weights)
    with pytest.raises(ModelError, match=r"plus\.safetensors.*unexpected layers"):
        load_upscaler(path, "cpu")


def test_pickle_needing_more_than_tensors_is_refused(tmp_path):
    from sdbake.runner.models.upscaler import load_upscaler
    from sdbake.schemas.errors import ModelError
    path = tmp_path / "evil.pth"
    torch.save({"conv_first.weight": torch.zeros(1), "note": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ModelError, match=r"evil\.pth.*pickle upscaler refused"):
        load_upscaler(path, "cpu")


def test_loaded_models_are_kept_in_the_registry_until_the_file_changes(tmp_path, no_spandrel):
    from sdbake.runner.models.registry import ModelRegistry
    registry = ModelRegistry()
    path = save_safetensors(tmp_path / "m.safetensors", basicsr_weights())
    first = registry.get_upscaler(path, "cpu")
    assert registry.get_upscaler(path, "cpu") is first and registry.loads == 1
    save_safetensors(path, basicsr_weights(seed=5))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = registry.get_upscaler(path, "cpu")
    assert again is not first and not torch.equal(again.forward.conv_first.weight, first.forward.conv_first.weight)


def test_other_architectures_go_to_spandrel_when_it_imports(tmp_path, monkeypatch):
    from sdbake.runner.models import upscaler
    loaded = []

    class Descriptor:
        scale, input_channels, output_channels = 2, 3, 3
        supports_half = supports_bfloat16 = True

        def to(self, device, dtype):
            loaded.append((device, dtype))

        def __call__(self, image):
            return image.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)

    class Loader:
        def __init__(self, device):
            pass

        def load_from_state_dict(self, state):
            assert set(state) == {"swin.weight"}
            return Descriptor()
    fake = SimpleNamespace(ModelLoader=Loader, ImageModelDescriptor=Descriptor, UnsupportedModelError=KeyError)
    monkeypatch.setattr(upscaler, "_spandrel", lambda: fake)
    path = save_safetensors(tmp_path / "swin.safetensors", {"swin.weight": torch.zeros(2, 2)})
    pictures = upscale_file(path, image16(), 32, 32)
    assert pictures[0].size == (32, 32) and loaded == [(torch.device("cpu"), torch.float32)]


def test_hires_recipe_with_an_upscaler_file_next_to_it(tmp_path, tiny_model_dir):
    from PIL import Image
    save_safetensors(tmp_path / "tiny-esrgan.safetensors", basicsr_weights())
    stages = ('[[stages]]\ntype = "sample"\n\n[[stages]]\ntype = "hires"\nscale = 2.0\nsteps = 2\ndenoise = 0.5\n'
              'upscaler = "tiny-esrgan.safetensors"\n\n[[stages]]\ntype = "save"\npath = "h.png"\n')
    result = render_text(tmp_path, recipe(tiny_model_dir, stages, steps=4))
    assert Image.open(result.outputs[0]).size == (128, 128)
    assert result.final_state.latent.shape[-2:] == (16, 16)
    hires_record = next(r for r in result.final_state.provenance if r["type"] == "hires")
    assert hires_record["Hires upscaler"] == "tiny-esrgan.safetensors"


def test_a_spandrel_that_fails_to_import_counts_as_absent(tmp_path, monkeypatch):
    # A torchvision built for another torch breaks inside spandrel's import with a RuntimeError, not an
    # ImportError: the user must still get the one-line "unknown architecture" error, not a traceback.
    from sdbake.schemas.errors import ModelError
    broken = tmp_path / "site" / "spandrel"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "spandrel", raising=False)
    path = save_safetensors(tmp_path / "mystery.safetensors", {"encoder.weight": torch.zeros(4, 4)})
    with pytest.raises(ModelError, match=r"mystery\.safetensors.*unknown upscaler architecture; supported here"):
        upscale_file(path, image16(), 64, 64)
