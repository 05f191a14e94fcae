"""`sdbake new`: write a commented starting recipe, on the demo model or on the settings of an image."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from sdbake.runner.commands import add_command

TEMPLATES = ("txt2img", "split", "intervene", "hires", "inpaint", "sweep", "sdxl")
TITLES = {
    "txt2img": "Text to image: encode, sample, save.",
    "split": "A split run: sample half the schedule, then continue it exactly.",
    "intervene": "Paint into the half-made image, then finish sampling (nothing outside the edit changes).",
    "hires": "Hires fix: a base image, upscaled and re-denoised (A1111's hires fix).",
    "inpaint": "Inpainting loopback over a rectangle of the image.",
    "sweep": "A sweep: every combination of two seeds and two CFG scales, and a labelled grid.",
    "sdxl": "Text to image on an SDXL checkpoint.",
}
EXAMPLES = [
    'sdbake new portrait                          portrait.toml: txt2img on the demo model',
    'sdbake new tune --template hires             a base image and a hires pass',
    'sdbake new again.toml --from out/1-cat.png   the prompt, seed, sampler, size ... of an image',
]
DEMO_SETTINGS = {"prompt": "a large red circle in the center, blue background", "negative": "", "seed": 1,
                 "steps": 12, "sampler": "dpmpp_2m", "scheduler": "karras", "cfg": 6.0, "width": 64,
                 "height": 64}
SDXL_SETTINGS = dict(DEMO_SETTINGS, prompt="a lighthouse on a cliff at dusk, detailed", steps=30,
                     width=1024, height=1024)
SDXL_CHECKPOINT = "sd_xl_base_1.0.safetensors"
FALLBACK_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"

DESCRIPTION = ("Write NAME (.toml added when missing): a commented recipe that validates and renders as it is, "
               "on the demo model in models/demo (SDXL: a checkpoint name to find in your model folders), or "
               "with the prompt, seed, steps, sampler, CFG, size and model of --from IMAGE (its sdbake recipe, "
               "else its A1111 infotext). Refuses to overwrite a file.")


def register(subparsers: argparse._SubParsersAction) -> None:
    new = add_command(
        subparsers, "new", new_command,
        "write a commented starting recipe (txt2img, split, intervene, hires, inpaint, sweep, sdxl)",
        EXAMPLES, description=DESCRIPTION)
    new.add_argument("name", metavar="NAME", help="the recipe file to write (its stem is the recipe's name)")
    new.add_argument("--template", "-t", choices=TEMPLATES, default="txt2img", help="what the recipe does "
                                                                                      "(default txt2img)")
    new.add_argument("--from", dest="from_image", metavar="IMAGE", help="take the settings and model of this "
                                                                        "image (made by sdbake or A1111)")


def new_command(args) -> int:
    from sdbake.schemas.errors import OutputError

    target = Path(args.name)
    if target.suffix.lower() not in (".toml",):
        target = target.with_name(target.name + ".toml")
    if target.exists():
        raise OutputError("already exists: not overwriting it (choose another NAME)", file=str(target))
    text = render_template(args.template, target, Path(args.from_image) if args.from_image else None)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "x", encoding="utf-8") as out:
        out.write(text)
    print(target)
    print(f"next: sdbake watch {target} --serve", file=sys.stderr)
    return 0


def render_template(template: str, target: Path, from_image: Path | None = None) -> str:
    """The recipe text of a template for a file at `target`."""
    from string import Template
    folder = Path(__file__).resolve().parent.parent / "templates"
    settings = dict(SDXL_SETTINGS if template == "sdxl" else DEMO_SETTINGS)
    checkpoint, note = default_checkpoint(template, target)
    if from_image is not None:
        found, checkpoint_found = image_settings(from_image)
        settings.update(found)
        if checkpoint_found:
            checkpoint, note = checkpoint_found, (f"# the model of {from_image.name}: a path, or a name found in " \
                                                 "the checkpoint folders")
    width, height, steps = settings["width"], settings["height"], settings["steps"]
    values = {
        "title": TITLES[template], "template": template, "file": target.name, "name": toml_str(target.stem),
        "checkpoint": toml_str(checkpoint), "checkpoint_note": note, "seed": settings["seed"],
        "seed_2": settings["seed"] + 1, "width": width, "height": height, "steps": steps,
        "sampler": toml_str(settings["sampler"]), "scheduler": toml_str(settings["scheduler"]),
        "cfg": float(settings["cfg"]), "prompt": toml_str(settings["prompt"]),
        "negative": toml_str(settings["negative"]), "half": max(1, steps // 2),
        "hires_steps": max(1, steps // 2), "inpaint_prompt": toml_str(settings["prompt"]),
        "half_w": width // 2, "half_h": height // 2, "quarter_w": width // 4, "quarter_h": height // 4,
        "eighth_w": width // 8, "eighth_h": height // 8,
    }
    header = Template((folder / "_header.toml").read_text(encoding="utf-8")).substitute(values)
    body = Template((folder / f"{template}.toml").read_text(encoding="utf-8")).substitute(values)
    return header + body


def toml_str(text: str) -> str:
    """A TOML basic string: JSON's escapes are a subset of TOML's."""
    return json.dumps(text, ensure_ascii=False)


def default_checkpoint(template: str, target: Path) -> tuple[str, str]:
    """(checkpoint, comment): the demo model, as a path relative to the new file inside this checkout
    and absolute outside it; SDXL (or an install without the demo): a name for the model folders."""
    if template == "sdxl":
        return SDXL_CHECKPOINT, ("# an SDXL checkpoint: a path, or a name found in the checkpoint folders "
                                 "(sdbake models ls)")
    checkout = Path(__file__).resolve().parent.parent.parent
    demo = checkout / "models" / "demo"
    if not (demo / "model_index.json").is_file():
        return FALLBACK_CHECKPOINT, "# an SD1.x checkpoint: a path, or a name found in the checkpoint folders"
    folder = target.parent.resolve()
    if folder.is_relative_to(checkout):
        return Path(os.path.relpath(demo, folder)).as_posix(), "# the small demo model this project ships"
    return demo.as_posix(), "# the small demo model this project ships"


def image_settings(image: Path) -> tuple[dict, str | None]:
    """Settings and checkpoint of an image: its sdbake recipe if it has one, else its A1111 infotext."""
    from sdbake.schemas.errors import InputFileError
    from sdbake.stages.output.metadata import read_metadata
    if not image.is_file():
        raise InputFileError("no such image", file=str(image))
    infotext, sdbake_json = read_metadata(image)
    if sdbake_json:
        return _sdbake_settings(image)
    if infotext:
        return _infotext_settings(infotext, image)
    raise InputFileError("this image carries neither an sdbake recipe nor A1111 parameters", file=str(image))


def _sdbake_settings(image: Path) -> tuple[dict, str | None]:
    from sdbake.runner.sources import load_image_recipe
    recipe = load_image_recipe(image).recipe
    settings: dict = {}
    for stage in recipe.stages:
        if stage.type == "encode" and "prompt" not in settings:
            settings.update(prompt=stage.prompt, negative=stage.negative, seed=stage.seed, width=stage.width,
                            height=stage.height)
        elif stage.type == "sample" and "steps" not in settings:
            settings.update(steps=stage.steps, sampler=stage.sampler, scheduler=stage.scheduler, cfg=stage.cfg)
    model = recipe.defaults.model or next(iter(recipe.models), None)
    return settings, recipe.models[model].checkpoint if model in recipe.models else None


def _infotext_settings(infotext: str, image: Path) -> tuple[dict, str | None]:
    from sdbake.schemas.errors import InputFileError
    from sdbake.schemas.names import parse_sampler, parse_scheduler
    from sdbake.stages.output.infotext import parse_infotext
    prompt, negative, params = parse_infotext(infotext)
    settings: dict = {"prompt": prompt, "negative": negative}
    try:
        if "Seed" in params:
            settings["seed"] = int(params["Seed"])
        if "Steps" in params:
            settings["steps"] = int(params["Steps"])
        if "CFG scale" in params:
            settings["cfg"] = float(params["CFG scale"])
        if "Size" in params:
            width, height = (int(v) for v in params["Size"].lower().split("x"))
            settings.update(width=width, height=height)
        if "Sampler" in params:
            sampler, scheduler = parse_sampler(params["Sampler"])
            settings["sampler"] = sampler
            if scheduler:
                settings["scheduler"] = scheduler
        if "Schedule type" in params:       # "Automatic" stays so: the recipe resolves it per sampler
            settings["scheduler"] = parse_scheduler(params["Schedule type"])
    except ValueError as err:
        raise InputFileError(f"cannot read its A1111 parameters: {err}", file=str(image)) from None
    model = params.get("Model")
    return settings, (model + ".safetensors" if model and "." not in Path(model).name else model)
