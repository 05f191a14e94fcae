"""The UNet as the sampler calls it: channels_last memory and/or `torch.compile` (recipe `[performance]`).

Both change the bits of a result slightly (other kernels, other summation orders: about 1e-6 on the
tiny CPU model), never its meaning, so they belong to the numerics fingerprint, not to the recipe's
params. The compiled module is made once per UNet object and options and kept on that object, so
every stage of a process that shares the model shares its compiled module (and pays compilation
once per input shape); it goes away with the model when the registry drops it.
"""
from __future__ import annotations

import torch

# "max-autotune-no-cudagraphs" benchmarks kernel choices: several minutes of compilation on the SD1.5
# UNet. The default mode keeps compilation to about a minute and already fuses what matters.
DEFAULT_MODE = "default"

_PREPARED = "_sdbake_prepared"          # attribute on the eager UNet: options -> prepared module


def prepare_unet(unet: torch.nn.Module, *, compile: bool, channels_last: bool,
                 mode: str = DEFAULT_MODE) -> torch.nn.Module:
    """The module to call for `unet` under these options; the same object every time for the same ones.

    The result still answers `.dtype`, `.device` and `.config` (torch.compile's wrapper forwards
    unknown attributes to the wrapped module), which is all the denoiser reads.
    """
    _set_memory_format(unet, channels_last)
    if not compile:
        return unet
    prepared: dict = unet.__dict__.setdefault(_PREPARED, {})
    key = (mode, channels_last)
    if key not in prepared:
        # dynamic=False: one specialised graph per shape (batch x size); a run uses few shapes, and
        # dynamic-shape kernels are slower than specialised ones.
        prepared[key] = torch.compile(unet, mode=mode, dynamic=False)
    return prepared[key]


def _set_memory_format(unet: torch.nn.Module, channels_last: bool) -> None:
    """Put the UNet's weights in the layout asked for, converting only when it differs.

    The registry shares one UNet between runs of a process, so a run without channels_last must
    not inherit the layout (and the bits) of an earlier run with it.
    """
    probe = _first_conv_weight(unet)
    if probe is None:
        return
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if not probe.is_contiguous(memory_format=layout):
        unet.to(memory_format=layout)


def _first_conv_weight(unet: torch.nn.Module) -> torch.Tensor | None:
    for module in unet.modules():
        if isinstance(module, torch.nn.Conv2d):
            return module.weight
    return None
