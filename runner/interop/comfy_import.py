"""A ComfyUI workflow (API or UI format) as recipe data: the chain of latent and image nodes that ends in
each SaveImage, read from its start (EmptyLatentImage or LoadImage) to its end, becomes encode, sample,
hires, inpaint and save stages. The mapping is the inverse of comfy_export (docs/interop.md): a sampler
on an upscaled latent is a hires pass, one on a masked latent an inpaint loop, KSamplerAdvanced splits
are sample stages with start and end. A node with no sdbake equivalent is an error listing every one."""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from sdbake.runner.interop.comfy_export import hires_total, img2img_start, loop_denoises
from sdbake.runner.interop.comfy_nodes import validate_workflow
from sdbake.runner.interop.comfy_workflow import read_workflow
from sdbake.schemas.errors import RecipeError
from sdbake.schemas.names import parse_sampler, parse_scheduler

CHAIN_INPUT = {"SaveImage": "images", "PreviewImage": "images", "VAEDecode": "samples", "KSampler": "latent_image",
               "KSamplerAdvanced": "latent_image", "LatentUpscale": "samples", "LatentUpscaleBy": "samples",
               "SetLatentNoiseMask": "samples", "VAEEncode": "pixels", "VAEEncodeForInpaint": "pixels",
               "ImageScale": "image", "ImageScaleBy": "image", "ImageUpscaleWithModel": "image"}
# Nodes read while following a chain's models, prompts and masks, not as steps of the chain.
SIDE_NODES = {"CheckpointLoaderSimple", "VAELoader", "LoraLoader", "CLIPSetLastLayer", "CLIPTextEncode",
              "ConditioningCombine", "UpscaleModelLoader", "LoadImageMask", "SolidMask", "MaskComposite"}
KNOWN = set(CHAIN_INPUT) | SIDE_NODES | {"EmptyLatentImage", "LoadImage"}
LATENT_UPSCALERS = {"nearest-exact": "latent-nearest-exact", "bilinear": "latent-bilinear", "bicubic": "latent-bicubic"}
PIXEL_UPSCALERS = {"lanczos": "lanczos", "nearest-exact": "nearest"}
SAMPLING_KEYS = ("model", "seed", "steps", "sampler", "scheduler", "cfg", "loras")
TITLE_DENOISE = re.compile(r"denoise (\d+(?:\.\d+)?)")


class Unmapped(Exception):
    """A node this importer cannot express as sdbake stages (why, for the error line)."""


def nice_denoise(title: str | None, fits) -> float:
    """A denoise that gives the schedule ComfyUI runs (`fits(d)`): the one our export wrote into the node
    title, else the shortest decimal that fits (several values give the same schedule)."""
    found = TITLE_DENOISE.search(title or "")
    if found and 0 < float(found.group(1)) <= 1 and fits(float(found.group(1))):
        return float(found.group(1))
    for digits in range(1, 6):
        for k in range(10 ** digits, 0, -1):
            if fits(k / 10 ** digits):
                return k / 10 ** digits
    raise Unmapped("no denoise gives this schedule")


class _Importer:
    def __init__(self, nodes: dict, model_map: dict[str, str], folder: Path):
        self.nodes, self.model_map, self.folder = nodes, model_map, folder
        self.notes: list[str] = []
        self.models: dict[str, dict] = {}
        self.stages: list[dict] = []
        self.defaults: dict = {}
        self.size = (0, 0)
        self.batch = 1
        self.init_image = None
        self.latent = None          # None (no encode yet) | "fresh" | "clean" | ("noisy", end, steps, scheduler)
        self.upscale: dict | None = None
        self.mask: dict | None = None
        self.vae_links: list = []

    def node(self, link) -> tuple[str, dict]:
        if not (isinstance(link, list) and len(link) == 2 and str(link[0]) in self.nodes):
            raise Unmapped(f"an input links to {link!r}, which is not a node of the workflow")
        return str(link[0]), self.nodes[str(link[0])]

    def name(self, value: str) -> str:
        """A model, LoRA, upscaler or image name as ComfyUI writes it, or the path the --model map gives it."""
        return self.model_map.get(value, value)

    # models, LoRAs, clip skip, prompts and masks: followed back from a sampler's inputs
    def model(self, link) -> tuple[str, list[dict]]:
        loras = []
        node_id, node = self.node(link)
        while node["class_type"] == "LoraLoader":
            inputs = node["inputs"]
            if inputs["strength_clip"] != inputs["strength_model"]:
                self.notes.append(f"node {node_id} (LoraLoader): strength_clip {inputs['strength_clip']} differs "
                                  f"from strength_model; sdbake applies one weight: {inputs['strength_model']}")
            loras.insert(0, {"name": self.name(inputs["lora_name"]), "weight": float(inputs["strength_model"])})
            node_id, node = self.node(inputs["model"])
        if node["class_type"] != "CheckpointLoaderSimple":
            raise Unmapped(f"the model comes from node {node_id} ({node['class_type']}), not a checkpoint loader")
        return self.checkpoint(node_id, node), loras

    def checkpoint(self, node_id: str, node: dict) -> str:
        ckpt = node["inputs"]["ckpt_name"]
        titled = re.fullmatch(r"Load Checkpoint: ([A-Za-z0-9_][A-Za-z0-9_.-]*)", node.get("title") or "")
        name = titled.group(1) if titled else re.sub(r"[^A-Za-z0-9_-]+", "_", PurePosixPath(ckpt).stem) or "model"
        entry = {"checkpoint": self.name(ckpt)}
        if self.models.get(name, entry) != entry:
            name = f"{name}_{node_id}"
        self.models[name] = entry
        return name

    def vae(self, model: str, link) -> None:
        node_id, node = self.node(link)
        if node["class_type"] == "VAELoader":
            self.models[model]["vae"] = self.name(node["inputs"]["vae_name"])
        elif node["class_type"] != "CheckpointLoaderSimple":
            raise Unmapped(f"the VAE comes from node {node_id} ({node['class_type']})")

    def prompt(self, link) -> tuple[str, int]:
        """(text, clip skip): ConditioningCombine joins its two sides with AND."""
        node_id, node = self.node(link)
        if node["class_type"] == "ConditioningCombine":
            first, skip = self.prompt(node["inputs"]["conditioning_1"])
            second, _ = self.prompt(node["inputs"]["conditioning_2"])
            return f"{first} AND {second}", skip
        if node["class_type"] != "CLIPTextEncode" or not isinstance(node["inputs"].get("text"), str):
            raise Unmapped(f"the conditioning comes from node {node_id} ({node['class_type']}), not a text")
        _clip_id, clip = self.node(node["inputs"]["clip"])
        skip = 1
        while clip["class_type"] in ("CLIPSetLastLayer", "LoraLoader"):
            if clip["class_type"] == "CLIPSetLastLayer":   # ComfyUI -1 = A1111 clip skip 1, -2 = 2
                skip = -int(clip["inputs"]["stop_at_clip_layer"])
            _clip_id, clip = self.node(clip["inputs"]["clip"])
        return node["inputs"]["text"], skip

    def mask_of(self, link) -> dict:
        node_id, node = self.node(link)
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "LoadImageMask":
            if inputs["channel"] == "alpha":
                raise Unmapped("an alpha-channel mask (ComfyUI inverts it): use a red-channel mask image")
            return {"mask": self.name(inputs["image"])}
        if kind == "SolidMask" and inputs["value"] == 0.0:
            return {"rects": []}
        if kind == "MaskComposite" and inputs["operation"] in ("add", "or"):
            _source_id, source = self.node(inputs["source"])
            if source["class_type"] == "SolidMask" and source["inputs"]["value"] == 1.0:
                found = self.mask_of(inputs["destination"])
                rect = [inputs["x"], inputs["y"], source["inputs"]["width"], source["inputs"]["height"]]
                return {**found, "rects": [*found.get("rects", []), rect]}
        raise Unmapped(f"the mask comes from node {node_id} ({kind}); sdbake reads a mask image or rectangles")

    # the chain, one node at a time
    def step(self, node_id: str, node: dict) -> None:
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "EmptyLatentImage":
            self.size, self.batch, self.latent = (inputs["width"], inputs["height"]), inputs["batch_size"], "fresh"
        elif kind == "LoadImage":
            self.init_image = self.name(inputs["image"])
            self.size = self.image_size(self.init_image)
        elif kind in ("ImageScale", "ImageScaleBy", "LatentUpscale", "LatentUpscaleBy"):
            self.resize(kind, inputs)
        elif kind == "ImageUpscaleWithModel":
            _loader_id, loader = self.node(inputs["upscale_model"])
            name = loader["inputs"]["model_name"]
            factor = re.search(r"(\d+)x|x(\d+)", PurePosixPath(name).stem.lower())
            scale = int(next(g for g in factor.groups() if g)) if factor else 4
            self.upscale = {"upscaler": self.name(name), "size": (self.size[0] * scale, self.size[1] * scale),
                            "model": True}
        elif kind in ("VAEEncode", "VAEEncodeForInpaint"):
            self.vae_links.append(inputs["vae"])
            if self.latent is None:
                self.latent = "fresh"
            if kind == "VAEEncodeForInpaint":
                self.mask = self.mask_of(inputs["mask"])
                if inputs.get("grow_mask_by"):
                    self.notes.append(f"node {node_id} (VAEEncodeForInpaint): grow_mask_by {inputs['grow_mask_by']} "
                                      f"left out; sdbake's inpaint uses the mask as drawn")
        elif kind == "SetLatentNoiseMask":
            self.mask = self.mask_of(inputs["mask"])
        elif kind in ("KSampler", "KSamplerAdvanced"):
            self.sampler(node_id, node)
        elif kind == "VAEDecode":
            self.vae_links.append(inputs["vae"])
        else:
            raise Unmapped("not a step of an image's chain")

    def resize(self, kind: str, inputs: dict) -> None:
        width, height = self.upscale["size"] if self.upscale else self.size
        if kind.endswith("By"):
            width, height = round(width * inputs["scale_by"] / 8) * 8, round(height * inputs["scale_by"] / 8) * 8
        else:
            width = inputs["width"] or round(width * inputs["height"] / height / 8) * 8
            height = inputs["height"] or round(height * width / self.size[0] / 8) * 8
        if self.latent is None:                 # the init image, before it is encoded
            self.size = (width, height)
            return
        method = inputs["upscale_method"]
        table = LATENT_UPSCALERS if kind.startswith("Latent") else PIXEL_UPSCALERS
        if self.upscale and self.upscale.get("model"):       # an upscaler model's output, brought to size
            self.upscale["size"] = (width, height)
            return
        if method not in table:
            raise Unmapped(f"upscale_method {method!r} (sdbake has {', '.join(table)})")
        self.upscale = {"upscaler": table[method], "size": (width, height)}

    def image_size(self, name: str) -> tuple[int, int]:
        path = Path(name) if Path(name).is_absolute() else self.folder / name
        try:
            from PIL import Image
            with Image.open(path) as image:
                return image.width // 8 * 8, image.height // 8 * 8
        except OSError:
            raise Unmapped(f"cannot read {name} for its size: map it to a file with --model {name}=PATH") from None

    def sampler(self, node_id: str, node: dict) -> None:
        inputs, title = node["inputs"], node.get("title")
        if node["class_type"] == "KSampler":
            steps, denoise = inputs["steps"], inputs["denoise"]
            total = steps if denoise > 0.9999 else int(steps / denoise)      # ComfyUI's KSampler.set_steps
            start, end, noise, leftover = total - steps, total, True, False
            title = title if TITLE_DENOISE.search(title or "") else f"denoise {denoise}"
        else:
            total, start, end = inputs["steps"], inputs["start_at_step"], min(inputs["end_at_step"], inputs["steps"])
            noise, leftover = inputs["add_noise"] == "enable", inputs["return_with_leftover_noise"] == "enable"
        for name, parse in (("sampler_name", parse_sampler), ("scheduler", parse_scheduler)):
            try:
                parse(inputs[name])
            except ValueError:
                raise Unmapped(f"{name} {inputs[name]!r} is not one sdbake has") from None
        model, loras = self.model(inputs["model"])
        prompt, clip_skip = self.prompt(inputs["positive"])
        negative, _ = self.prompt(inputs["negative"])
        settings = {"model": model, "seed": inputs.get("seed", inputs.get("noise_seed")), "steps": total,
                    "sampler": inputs["sampler_name"], "scheduler": inputs["scheduler"], "cfg": float(inputs["cfg"]),
                    "loras": loras, "prompt": prompt, "negative": negative}
        if not self.stages:
            self.start_recipe(settings, clip_skip)
        elif clip_skip != self.defaults["clip_skip"]:
            self.notes.append(f"node {node_id}: clip skip {clip_skip} differs from the first sampler's; sdbake "
                              f"encodes every prompt with {self.defaults['clip_skip']}")
        if end < total and not leftover:
            raise Unmapped(f"ends at step {end} of {total} without leftover noise")
        if self.mask is not None:
            self.inpaint(settings, start, end, total, noise, title)
        elif self.upscale is not None:
            self.hires(settings, start, end, total, noise, title)
        else:
            self.sample(settings, start, end, total, noise)

    def start_recipe(self, settings: dict, clip_skip: int) -> None:
        self.defaults = {key: settings[key] for key in SAMPLING_KEYS}
        self.defaults.update(width=self.size[0], height=self.size[1], batch_size=self.batch, clip_skip=clip_skip)
        encode = {"type": "encode", "prompt": settings["prompt"], "negative": settings["negative"]}
        if self.init_image:
            encode["image"] = self.init_image
        self.stages.append(encode)

    def own(self, settings: dict, keys=SAMPLING_KEYS) -> dict:
        """The settings a stage sets for itself: those that differ from [defaults] and the encode stage."""
        found = {k: settings[k] for k in keys if settings[k] != self.defaults[k]}
        encode = self.stages[0]
        found.update({k: settings[k] for k in ("prompt", "negative") if settings[k] != encode[k]})
        return found

    def sample(self, settings: dict, start: int, end: int, total: int, noise: bool) -> None:
        if isinstance(self.latent, tuple):
            _, at, steps, scheduler = self.latent
            if noise or start != at or total != steps or settings["scheduler"] != scheduler:
                raise Unmapped(f"continues a latent left at step {at} of {steps} ({scheduler}) but adds noise or "
                               f"starts at step {start} of {total} ({settings['scheduler']})")
        elif self.latent != "fresh" or not noise:
            raise Unmapped("a sampler on a finished image needs an upscale (hires) or a noise mask (inpaint)")
        elif start > 0 and not self.init_image:
            raise Unmapped(f"starts at step {start} on an empty latent")
        stage = {"type": "sample", **self.own(settings)}
        stage.pop("steps", None)
        if total != self.defaults["steps"]:
            stage["steps"] = total
        if (start, end) != (0, total):
            stage.update(start=start, end=end)
        self.stages.append(stage)
        self.latent = ("noisy", end, total, settings["scheduler"]) if end < total else "clean"

    def hires(self, settings: dict, start: int, end: int, total: int, noise: bool, title) -> None:
        if self.latent != "clean" or not noise or end != total:
            raise Unmapped("an upscaled latent is re-sampled from a finished image, with noise, to the end")
        steps = total - start
        denoise = nice_denoise(title, lambda d: hires_total(steps, d) == total)
        (width, height), upscaler = self.upscale["size"], self.upscale["upscaler"]
        stage = {"type": "hires", "upscaler": upscaler, "steps": steps, "denoise": denoise,
                 **self.own(settings, ("model", "seed", "sampler", "scheduler", "cfg", "loras"))}
        scale = width / self.size[0]
        if width * self.size[1] == height * self.size[0] and 1 < scale <= 8 and \
                (int(self.size[0] * scale) // 8 * 8, int(self.size[1] * scale) // 8 * 8) == (width, height):
            stage["scale"] = scale
        else:
            stage.update(width=width, height=height)
        self.stages.append(stage)
        self.size, self.upscale, self.latent = (width, height), None, "clean"

    def inpaint(self, settings: dict, start: int, end: int, total: int, noise: bool, title) -> None:
        if self.latent in ("fresh", None) and not self.init_image or not noise or end != total:
            raise Unmapped("an inpaint sampler adds noise to an image under its mask and runs to the end")
        denoise = nice_denoise(title, lambda d: img2img_start(total, d) == start)
        previous = self.stages[-1]
        own = self.own(settings, ("model", "sampler", "scheduler", "cfg", "loras"))
        if previous.get("type") == "inpaint" and previous["_same"] == (self.mask, total, own) and \
                settings["seed"] == previous["_seed"] + previous["loops"]:
            previous["loops"] += 1
            previous["_denoises"].append(denoise)
        else:
            stage = {"type": "inpaint", **self.mask, "blur": 0, "loops": 1, "steps": total, **own,
                     "_same": (self.mask, total, own), "_seed": settings["seed"], "_denoises": [denoise]}
            if settings["seed"] != self.defaults["seed"]:
                stage["seed"] = settings["seed"]
            self.stages.append(stage)
        self.mask, self.latent = None, "clean"

    def finish_inpaint(self, stage: dict) -> None:
        """Loops' denoise values as [first, last] along the A1111 curve that gives them all."""
        stage.pop("_same"), stage.pop("_seed")
        values = stage.pop("_denoises")
        if len(values) == 1 or values[0] == values[-1] and len(set(values)) == 1:
            stage["denoise"] = values[0]
            return
        for curve in ("linear", "aggressive", "lazy"):
            if all(abs(a - b) < 1e-6 for a, b in zip(loop_denoises([values[0], values[-1]], len(values), curve), values)):
                stage.update(denoise=[values[0], values[-1]], **({"curve": curve} if curve != "linear" else {}))
                return
        raise Unmapped(f"loop denoise values {values} follow none of A1111's curves")


def _chain(nodes: dict, end_id: str) -> list[str]:
    chain, node_id = [end_id], end_id
    while nodes[node_id]["class_type"] in CHAIN_INPUT:
        link = nodes[node_id]["inputs"].get(CHAIN_INPUT[nodes[node_id]["class_type"]])
        if not isinstance(link, list) or str(link[0]) not in nodes or str(link[0]) in chain:
            break
        node_id = str(link[0])
        chain.append(node_id)
    return chain[::-1]


def import_workflow(path: Path, model_map: dict[str, str]) -> tuple[dict, list[str]]:
    """(recipe data, notes): what a recipe TOML of the workflow holds, and what it could not carry."""
    path = Path(path)
    nodes = read_workflow(path)
    unknown = [f"{node_id} ({node['class_type']})" for node_id, node in nodes.items() if node["class_type"] not in KNOWN]
    if unknown:
        raise RecipeError(f"no sdbake equivalent for node(s): {', '.join(unknown)}", file=str(path))
    problems = validate_workflow(nodes)
    if problems:
        raise RecipeError(f"not a workflow ComfyUI would queue: {'; '.join(problems)}", file=str(path))
    saves = sorted((i for i, n in nodes.items() if n["class_type"] == "SaveImage"), key=lambda i: (len(i), i))
    if not saves:
        raise RecipeError("no SaveImage node: nothing to import", file=str(path))
    chains = {save: _chain(nodes, save) for save in saves}
    main = max(chains.values(), key=len)
    importer = _Importer(nodes, model_map, path.parent)
    failures = []
    anchors = {}
    for save, chain in chains.items():
        shared = [n for n in chain if n in main]
        if chain[:len(shared)] != shared or any(nodes[n]["class_type"] not in ("VAEDecode", "SaveImage")
                                                for n in chain[len(shared):]):
            failures.append(f"{save} (SaveImage): on a branch of its own")
        anchors.setdefault(shared[-1] if shared else main[-1], []).append(save)
    for node_id in main:
        node = nodes[node_id]
        try:
            if node["class_type"] != "SaveImage":
                importer.step(node_id, node)
        except Unmapped as why:
            failures.append(f"{node_id} ({node['class_type']}): {why}")
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
            failures.append(f"{node_id} ({node['class_type']}): missing or wrong input ({err})")
        for save in anchors.get(node_id, []):
            if importer.stages:
                importer.stages.append(_save_stage(nodes[save], importer.notes))
    if not importer.stages and not failures:
        failures.append(f"{main[0]} ({nodes[main[0]]['class_type']}): no sampler before the SaveImage")
    for stage in importer.stages:
        if stage["type"] == "inpaint":
            try:
                importer.finish_inpaint(stage)
            except Unmapped as why:
                failures.append(f"inpaint loops: {why}")
    for link in importer.vae_links if importer.stages else []:
        try:
            importer.vae(importer.defaults["model"], link)
        except Unmapped as why:
            failures.append(f"VAE: {why}")
    if failures:
        raise RecipeError(f"cannot import node(s): {'; '.join(failures)}", file=str(path))
    defaults = {k: v for k, v in importer.defaults.items() if not (k == "loras" and not v)}
    recipe = {"version": 1, "name": re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem) or "workflow",
              "models": importer.models, "defaults": defaults, "stages": importer.stages}
    return recipe, importer.notes


def _save_stage(node: dict, notes: list[str]) -> dict:
    prefix = str(node["inputs"].get("filename_prefix") or "ComfyUI")
    if "%" in prefix or "{" in prefix:
        notes.append(f"SaveImage prefix {prefix!r}: ComfyUI's %...% fields are not sdbake templates; left out")
        prefix = re.sub(r"%[^%]*%|[{}%]", "", prefix) or "ComfyUI"
    return {"type": "save", "path": prefix.lstrip("/") + ".png"}
