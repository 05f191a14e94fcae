"""ESRGAN's RRDBNet (Wang et al. 2018) and the three key layouts its weight files come in.

Facts from the paper, BasicSR's RRDBNet and spandrel's ESRGAN detection: LeakyReLU slope 0.2;
each residual dense block adds 0.2 x its output to its input, and so does each RRDB (three dense
blocks); the trunk's output is added to the first conv's features; each upsampling is a 2x
nearest-neighbour resize, a conv and a LeakyReLU; then conv_hr + LeakyReLU and conv_last.
Real-ESRGAN's x2 and x1 models pixel-unshuffle the input (by 2 or 4) and keep two upsamplings.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2
RESIDUAL_SCALE = 0.2
BSRGAN_LAYERS = {"trunk_conv": "conv_body", "HRconv": "conv_hr"}


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class DenseBlock(nn.Module):
    """Residual dense block: five 3x3 convs, each seeing the input and every earlier output."""

    def __init__(self, features: int, growth: int):
        super().__init__()
        for index in range(1, 5):
            setattr(self, f"conv{index}", _conv(features + (index - 1) * growth, growth))
        self.conv5 = _conv(features + 4 * growth, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            seen.append(F.leaky_relu(conv(torch.cat(seen, 1)), LEAKY_SLOPE))
        return x + self.conv5(torch.cat(seen, 1)) * RESIDUAL_SCALE


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks, scaled residual around them."""

    def __init__(self, features: int, growth: int):
        super().__init__()
        self.rdb1 = DenseBlock(features, growth)
        self.rdb2 = DenseBlock(features, growth)
        self.rdb3 = DenseBlock(features, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE


class RRDBNet(nn.Module):
    """The ESRGAN generator; `scale` is output size / input size."""

    def __init__(self, *, in_channels: int, out_channels: int, features: int, blocks: int, growth: int,
                 upsamplings: int, unshuffle: int):
        super().__init__()
        self.unshuffle = unshuffle
        self.scale = 2 ** upsamplings // unshuffle
        self.conv_first = _conv(in_channels, features)
        self.body = nn.Sequential(*[RRDB(features, growth) for _ in range(blocks)])
        self.conv_body = _conv(features, features)
        self.conv_up = nn.ModuleList([_conv(features, features) for _ in range(upsamplings)])
        self.conv_hr = _conv(features, features)
        self.conv_last = _conv(features, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.unshuffle > 1:
            # pixel_unshuffle needs sides divisible by the factor: pad, then crop the output back.
            pad_h, pad_w = -height % self.unshuffle, -width % self.unshuffle
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
            x = F.pixel_unshuffle(x, self.unshuffle)
        features = self.conv_first(x)
        features = features + self.conv_body(self.body(features))
        for conv in self.conv_up:
            features = F.leaky_relu(conv(F.interpolate(features, scale_factor=2, mode="nearest")), LEAKY_SLOPE)
        out = self.conv_last(F.leaky_relu(self.conv_hr(features), LEAKY_SLOPE))
        return out[..., :height * self.scale, :width * self.scale]


def is_rrdbnet(keys) -> bool:
    """Whether a state dict's keys are one of the RRDBNet layouts (spandrel's detection keys)."""
    keys = set(keys)
    return ({"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"} <= keys
            or {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_last.weight"} <= keys
            or {"conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight", "conv_last.weight"}
            <= keys)


def _basicsr_key(key: str) -> str:
    """BasicSR/Real-ESRGAN (`body.N.rdbK`, `conv_upN`) and BSRGAN (`RRDB_trunk`, `upconvN`, `HRconv`) keys."""
    key = re.sub(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.", r"body.\1.rdb\2.", key)
    key = re.sub(r"^(?:conv_up|upconv)(\d+)\.", lambda m: f"conv_up.{int(m[1]) - 1}.", key)
    layer, dot, rest = key.partition(".")
    return BSRGAN_LAYERS.get(layer, layer) + dot + rest


def _original_esrgan_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original ESRGAN layout: one `model` Sequential with the trunk at model.1.sub.

    Top level: model.0 first conv, model.1 the trunk, then per upsampling [resize, conv, act] so the
    convs sit at model.3, model.6, ...; then hr conv at +2 and last conv at +4 after the last one.
    """
    top = sorted({int(m[1]) for key in state if (m := re.match(r"model\.(\d+)\.weight$", key))})
    upsamplings, remainder = divmod(top[-1] - 4, 3)
    if remainder or upsamplings < 0:
        raise ValueError(f"layer model.{top[-1]} does not end an ESRGAN layer sequence")
    blocks = 1 + max(int(m[1]) for key in state if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", key)))
    names = {"model.0": "conv_first", f"model.1.sub.{blocks}": "conv_body",
             f"model.{3 * upsamplings + 2}": "conv_hr", f"model.{3 * upsamplings + 4}": "conv_last"}
    names.update({f"model.{3 * (i + 1)}": f"conv_up.{i}" for i in range(upsamplings)})
    renamed = {}
    for key, tensor in state.items():
        layer, _, kind = key.rpartition(".")
        block = re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0$", layer)
        if block:
            renamed[f"body.{block[1]}.rdb{block[2]}.conv{block[3]}.{kind}"] = tensor
        elif layer in names:
            renamed[f"{names[layer]}.{kind}"] = tensor
        else:
            raise ValueError(f"unexpected key {key}")
    return renamed


def rrdbnet_from_state_dict(state: dict[str, torch.Tensor]) -> RRDBNet:
    """Build and load an RRDBNet whose size, scale and unshuffle are read from the weights.

    Raises ValueError when the keys or shapes are not a plain RRDBNet (e.g. ESRGAN+'s extra convs).
    """
    if "model.0.weight" in state:
        state = _original_esrgan_keys(state)
    else:
        state = {_basicsr_key(key): tensor for key, tensor in state.items()}
    first, last = state["conv_first.weight"], state["conv_last.weight"]
    in_channels, out_channels = first.shape[1], last.shape[0]
    # Real-ESRGAN x2/x1: input pixel-unshuffled by 2 (4x channels) or 4 (16x channels).
    unshuffle = {out_channels * 4: 2, out_channels * 16: 4}.get(in_channels, 1)
    blocks = 1 + max(int(m[1]) for key in state if (m := re.match(r"body\.(\d+)\.", key)))
    upsamplings = sum(1 for key in state if re.match(r"conv_up\.\d+\.weight$", key))
    net = RRDBNet(in_channels=in_channels, out_channels=out_channels, features=first.shape[0], blocks=blocks,
                  growth=state["body.0.rdb1.conv1.weight"].shape[0], upsamplings=upsamplings, unshuffle=unshuffle)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(" ".join(str(err).split()[6:])[:300]) from err   # drop "Error(s) in loading ..."
    return net.eval()
