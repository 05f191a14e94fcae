"""Per-stage LoRAs (kohya and diffusers/PEFT files, through diffusers + peft), applied and removed exactly.

LoRAs are injected as peft adapters, never fused into the weights: deleting the adapters restores
the original forward pass bit for bit, so "stage A with lora x, then stage B without" gives the same
tensors as "stage B alone" on a fresh load.
"""
from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from sdbake.runner.models.checkpoint_files import read_state_dict
from sdbake.runner.models.loading import LoadedModel
from sdbake.schemas.errors import ModelError

ADAPTER_PREFIX = "sdbake_lora_"
# One LoRA'd layer = one "down" matrix, whatever the file's naming scheme (kohya, old diffusers, PEFT).
LORA_DOWN_KEY = re.compile(r"(lora[._]down|lora_A)(\.[^.]+)?\.weight$")


class LoraWarning(UserWarning):
    """A LoRA file that only partly matches the model's layers."""


def _lora_holder(model: LoadedModel):
    """An object with the attribute names diffusers' LoRA loader mixins expect from a pipeline."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin
    mixin = StableDiffusionXLLoraLoaderMixin if model.family == "sdxl" else StableDiffusionLoraLoaderMixin

    class Holder(mixin):
        hf_device_map = None                 # no accelerate offloading here
        components: ClassVar[dict] = {}

    holder = Holder()
    holder.unet, holder.text_encoder = model.unet, model.text_encoder
    if model.family == "sdxl":
        holder.text_encoder_2 = model.text_encoder_2
    return holder


def _modules_with_adapter(model: LoadedModel, adapter: str) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer
    parts = [m for m in (model.unet, model.text_encoder, model.text_encoder_2) if m is not None]
    return sum(1 for part in parts for _, layer in part.named_modules()
               if isinstance(layer, BaseTunerLayer) and adapter in getattr(layer, "lora_A", {}))


@contextlib.contextmanager
def _quiet_library_logs() -> Iterator[None]:
    # diffusers/transformers log key reports meant for training code; we count matches ourselves.
    from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers", "peft")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _load_one(holder, model: LoadedModel, path: Path, adapter: str) -> tuple[int, int]:
    """Inject one LoRA file as `adapter`; returns (layers matched, layers in the file)."""
    file_state = read_state_dict(path, device="cpu")
    try:
        # diffusers pops keys while converting: give it a copy each time
        state_dict, _alphas = holder.lora_state_dict(dict(file_state), unet_config=model.unet.config)
    except (ValueError, KeyError) as err:
        raise ModelError(f"not a LoRA file diffusers can read: {str(err).splitlines()[0]}", file=str(path)) from err
    layers_in_file = sum(1 for k in state_dict if LORA_DOWN_KEY.search(k))
    if layers_in_file == 0:
        raise ModelError("no LoRA layers in the file (is it a LoRA?)", file=str(path))
    try:
        with _quiet_library_logs():
            holder.load_lora_weights(dict(file_state), adapter_name=adapter)
    except ValueError as err:
        # peft raises when no target module exists in the model (an all-miss LoRA)
        if _modules_with_adapter(model, adapter) == 0:
            raise ModelError(f"LoRA matches none of the model's {model.family} layers "
                             f"(0 of {layers_in_file} matched): wrong base model?", file=str(path)) from err
        raise
    matched = _modules_with_adapter(model, adapter)
    if matched == 0:
        raise ModelError(f"LoRA matches none of the model's layers (0 of {layers_in_file})", file=str(path))
    return matched, layers_in_file


def _adapter_names(count: int) -> list[str]:
    return [f"{ADAPTER_PREFIX}{n}" for n in range(count)]


def _component_weights(model: LoadedModel, te: float, unet: float) -> float | dict[str, float]:
    """diffusers' per-adapter weight: one number when text encoders and UNet share it (A1111's
    `<lora:name:w>`), else one per component (`<lora:name:te:unet>`)."""
    if te == unet:
        return te
    weights = {"unet": unet, "text_encoder": te}
    if model.family == "sdxl":
        weights["text_encoder_2"] = te
    return weights


def _normalise(lora: tuple) -> tuple[str, float, float]:
    if len(lora) == 2:
        path, weight = lora
        return str(Path(path)), float(weight), float(weight)
    path, te, unet = lora
    return str(Path(path)), float(te), float(unet)


def apply_loras(model: LoadedModel, loras: Sequence[tuple], *,
                warn: Callable[[str], None] | None = None) -> list[str]:
    """Make exactly these LoRAs active on the model, replacing the previous stage's set: (file, weight)
    for text encoders and UNet alike, or (file, te_weight, unet_weight).

    An empty list removes all. Returns the adapter names. A LoRA that matches only some layers is
    reported through `warn` (default: a LoraWarning); one that matches none is a ModelError.
    """
    wanted = tuple(_normalise(lora) for lora in loras)
    if wanted == model.active_loras:
        return _adapter_names(len(wanted))
    holder = _lora_holder(model)
    weights = [_component_weights(model, te, unet) for _, te, unet in wanted]
    if wanted and [w[0] for w in wanted] == [a[0] for a in model.active_loras]:
        adapters = _adapter_names(len(wanted))        # same files, new weights: rescale only
        with _quiet_library_logs():
            holder.set_adapters(adapters, adapter_weights=weights)
        model.active_loras = wanted
        return adapters
    remove_loras(model)
    adapters: list[str] = []
    try:
        for adapter, (path, _te, _unet) in zip(_adapter_names(len(wanted)), wanted):
            matched, in_file = _load_one(holder, model, Path(path), adapter)
            adapters.append(adapter)
            if matched < in_file:
                message = f"{path}: LoRA matched {matched} of {in_file} layers; the rest are ignored"
                if warn is not None:
                    warn(message)
                else:
                    warnings.warn(message, LoraWarning, stacklevel=2)
        if adapters:
            with _quiet_library_logs():
                holder.set_adapters(adapters, adapter_weights=weights)
    except BaseException:
        remove_loras(model)
        raise
    model.active_loras = wanted
    return adapters


def remove_loras(model: LoadedModel) -> None:
    """Delete every LoRA this module injected: the model computes exactly what it did before."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    parts = [m for m in (model.unet, model.text_encoder, model.text_encoder_2) if m is not None]
    present = sorted({name for part in parts for _, layer in part.named_modules()
                      if isinstance(layer, BaseTunerLayer)
                      for name in getattr(layer, "lora_A", {}) if name.startswith(ADAPTER_PREFIX)})
    if present:
        with _quiet_library_logs():
            _lora_holder(model).delete_adapters(present)
    model.active_loras = ()

