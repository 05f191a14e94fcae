"""The torch side of a run: models from the registry, stage contexts, state in and out of the cache."""
from __future__ import annotations

import dataclasses
import importlib
import warnings

import torch
from sdbake.runner.cache import CacheStore
from sdbake.runner.console import Console, RunOptions
from sdbake.runner.kinds import KINDS
from sdbake.runner.kinds.lora_tags import lora_hashes
from sdbake.runner.plan import Invocation, Plan
from sdbake.runner.previews import preview_sink
from sdbake.schemas.errors import CacheError, SdbakeError
from sdbake.stages.context import StageContext
from sdbake.stages.state import State, pack, unpack

from sdbake import __version__

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class Runtime:
    def __init__(self, plan: Plan, options: RunOptions, console: Console):
        self.plan = plan
        self.options = options
        self.console = console
        numerics = plan.numerics
        if numerics.device == "cpu":
            torch.set_num_threads(numerics.threads)
        elif numerics.device.startswith("cuda") and not torch.cuda.is_available():
            raise SdbakeError(f"device {numerics.device} requested but torch sees no CUDA device")
        self.device = numerics.device
        self.dtype = DTYPES[numerics.dtype]

    # -- models --
    def model(self, inv: Invocation, entry_name: str):
        from sdbake.runner.models.lora import apply_loras
        from sdbake.runner.models.registry import ModelSpec, default_registry
        files = self.plan.models.get(entry_name)
        if files is None:
            from sdbake.runner.modelfiles import resolve_model
            files = self.plan.models[entry_name] = resolve_model(
                entry_name, self.plan.recipe.models[entry_name], self.plan.loaded.folder)
        spec = ModelSpec(checkpoint=files.checkpoint, vae=files.vae, device=self.device, dtype=self.dtype,
                         allow_pickle=self.options.allow_pickle, config=files.config)
        loaded = default_registry().get(spec)
        apply_loras(loaded, [l.weights for l in files.loras + inv.loras], warn=self.console.warn)
        from sdbake.runner.compile import prepare_unet
        # Called on every lookup, options off included: that also undoes channels_last left by an earlier run.
        unet = prepare_unet(loaded.unet, compile=self.plan.numerics.compile,
                            channels_last=self.plan.numerics.channels_last)
        return loaded if unet is loaded.unet else dataclasses.replace(loaded, unet=unet)

    def upscaler_model(self, path):
        from sdbake.runner.models.registry import default_registry
        return default_registry().get_upscaler(path, self.device)

    def model_info(self, inv: Invocation) -> dict:
        name = getattr(inv.stage, "model", None) or next(iter(self.plan.models), None)
        files = self.plan.models.get(name) if name else None
        if files is None:
            return {"version": __version__}
        return {"model_name": files.model_name, "model_hash": files.model_hash,
                "vae_name": files.vae.stem if files.vae else None,
                "vae_hash": files.vae_sha256[:10] if files.vae_sha256 else None,
                "lora_hashes": lora_hashes(self.plan.invocations[:inv.index + 1]),
                "version": __version__}

    # -- stages --
    def context(self, inv: Invocation, on_file=None) -> StageContext:
        return StageContext(
            stage_id=inv.id, device=self.device, dtype=self.dtype,
            model=lambda name: self.model(inv, name), upscaler_model=self.upscaler_model,
            files=inv.files, prompts=list(inv.prompts), negatives=list(inv.negatives), outputs=inv.outputs,
            model_info=self.model_info(inv), embedded=inv.embedded,
            recipe_folder=self.plan.loaded.folder, progress=self.console.progress, warn=self.console.warn,
            vae_fp32=self.plan.numerics.vae_fp32,
            extra={"output_root": self.plan.output_root, "embedding_files": self.plan.embedding_files},
            preview_every=getattr(inv.stage, "preview_every", None) or 0,
            on_preview=preview_sink(self.plan, inv, self.options.on_preview),
            on_file=on_file or (lambda relative, data: None))

    def run_stage(self, inv: Invocation, state: State | None, on_file=None) -> tuple[State, dict[str, bytes]]:
        """Run one stage: its new state and the files it emitted (each also handed to on_file at once)."""
        module = importlib.import_module(KINDS[inv.stage.type].run_module)
        ctx = self.context(inv, on_file)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("default")
            new_state = module.run(inv.stage, state or State(), ctx)
        return new_state, ctx.side_files

    @staticmethod
    def run_batch(members: list[tuple[Runtime, Invocation, State]]) -> list[State]:
        """Sample executions (of one plan or several) that differ only in seeds, prompts and cfg, as one
        sampler call; each keeps the context of its own plan."""
        from sdbake.stages.sample import run_batch
        contexts = [runtime.context(inv) for runtime, inv, _ in members]
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("default")
            return run_batch([inv.stage for _, inv, _ in members], [state for _, _, state in members], contexts)

    # -- cache --
    def load_state(self, store: CacheStore | None, key: str | None) -> State | None:
        if key is None:
            return None
        entry = store.get(key) if store is not None else None
        if entry is None or not entry.info.get("has_tensors") and entry.meta.get("state") is None:
            raise CacheError(f"the cached state {key[:12]} vanished during the run (was the cache cleared?): "
                             "run again")
        return unpack(entry.load_tensors(), entry.meta["state"])

    def store_stage(self, store: CacheStore, inv: Invocation, state: State, side_files: dict[str, bytes]) -> None:
        stage = {"id": inv.id, "type": inv.stage.type, "recipe": self.plan.recipe.name}
        # Side files are stored by their place in the stage's outputs, not by name: a preview path is not
        # part of the key, so a hit writes the stored bytes wherever the recipe now says.
        side_files = {str(inv.outputs.index(rel)): data for rel, data in side_files.items()}
        if inv.passes_state_through:
            store.put(inv.key, stage=stage, files=side_files, inputs=inv.inputs)
            return
        tensors, meta = pack(state)
        store.put(inv.key, stage=stage, tensors=tensors, meta={"state": meta}, files=side_files, inputs=inv.inputs)
