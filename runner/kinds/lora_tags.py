"""LoRAs named by `<lora:...>` / `<lyco:...>` tags in a prompt, in the plan (A1111's extra networks).

A stage that sets a prompt (encode; a sample, hires or inpaint stage with its own `prompt`) sets the
LoRA tags of what follows, as A1111's hires prompt replaces the first pass's networks; every stage
with a model (encode for the text encoders, the sampling stages and intervene for the UNet) applies
the tags of the prompt it uses, after the model entry's and its own `loras`. The tag text is in the
key through the prompt; the files' content hashes go in as `lora_tags`. No torch here.
"""
from __future__ import annotations

from pathlib import Path

from sdbake.runner.inputs import found_key
from sdbake.runner.kinds.common import PlanContext
from sdbake.runner.modelfiles import LoraFile, path_sha256
from sdbake.schemas.errors import ModelError, PromptError, SdbakeError
from sdbake.stages.prompts.extra_networks import LoraTag, lora_tags


def plan_lora_tags(stage, inv, document: dict, ctx: PlanContext) -> None:
    if inv.prompts:
        inv.lora_tags = ctx.carried["lora_tags"] = _tag_files(inv.prompts, ctx)
    tags = ctx.carried.get("lora_tags") or []
    if getattr(stage, "model", None) and tags:
        inv.loras = inv.loras + tags
        document["lora_tags"] = [[l.sha256, l.weight, l.unet_weight] for l in tags]


def _tag_files(prompts: list[str], ctx: PlanContext) -> list[LoraFile]:
    where = f"stages[{ctx.index}].prompt"
    try:
        per_image = [lora_tags(prompt) for prompt in prompts]
    except PromptError as err:
        raise ctx.error(("prompt",), f"{where}: {err.message}", PromptError) from None
    if any(tags != per_image[0] for tags in per_image):
        raise ctx.error(("prompt",), f"{where}: the images of this stage name different LoRA tags (through "
                        "wildcards); the images of a stage share one model, so their tags must be the same",
                        PromptError)
    return [_tag_file(tag, ctx, where) for tag in per_image[0]]


def lora_aliases() -> dict[str, list[Path]]:
    """A1111's other name for a LoRA: the `ss_output_name` its trainer wrote into a .safetensors file's
    metadata (A1111 inserts that alias in the tags it writes, by default)."""
    from sdbake.runner.models.hashing import safetensors_metadata
    from sdbake.runner.models.search import list_folder, load_search_config
    found: dict[str, list[Path]] = {}
    for folder in load_search_config().folders["loras"]:
        for path in list_folder(folder, "loras"):
            if path.suffix.lower() == ".safetensors":
                try:
                    alias = safetensors_metadata(path).get("ss_output_name")
                except SdbakeError:
                    continue                 # not readable: the name lookup reports it if it is meant
                if isinstance(alias, str) and alias and path not in found.setdefault(alias, []):
                    found[alias].append(path)
    return found


def resolve_tag_name(name: str, recipe_dir: Path) -> Path:
    """The file a tag names: a path or file name as `loras` resolves it, else a unique A1111 alias."""
    from sdbake.runner.models.search import resolve_model_file
    try:
        return resolve_model_file(name, "loras", recipe_dir)
    except ModelError:
        by_alias = lora_aliases().get(name, [])
        if len(by_alias) == 1:
            return by_alias[0]
        raise


def _tag_file(tag: LoraTag, ctx: PlanContext, where: str) -> LoraFile:
    try:
        # `run IMAGE`: the file with the hash the image recorded, when the name leads elsewhere
        path = ctx.loaded.found.get(found_key("loras", tag.name)) or resolve_tag_name(tag.name, ctx.loaded.folder)
    except SdbakeError as err:
        raise ctx.error(("prompt",), f"{where}: <lora:{tag.name}>: {err.message}", ModelError) from None
    if not path.is_file():
        raise ctx.error(("prompt",), f"{where}: <lora:{tag.name}> is not a file: {path}", ModelError)
    return LoraFile(path, tag.te_weight, path_sha256(path), unet_weight=tag.unet_weight, tag=tag.name)


def lora_hashes(invocations: list) -> str | None:
    """A1111's `Lora hashes` for what these stages applied: `name: hash12, ...`, each name once (a later
    stage's entry replaces an earlier one in place, as A1111's hires pass adds to the first pass's)."""
    from sdbake.runner.models.hashing import lora_short_hash
    found: dict[str, str] = {}
    for inv in invocations:
        if inv.model is None:
            continue
        for lora in inv.model.loras + inv.loras:
            label = (lora.tag or lora.name).replace(":", "").replace(",", "")
            found[label] = lora_short_hash(lora.path)
    return ", ".join(f"{name}: {short}" for name, short in found.items()) or None
