"""docs/recipes.md, generated from the recipe's JSON Schema (`sdbake schema --markdown`), so the reference
cannot drift from what `sdbake validate` accepts: tests/test_recipe_reference.py checks the file is
current, and that every worked example validates."""
from __future__ import annotations

import json
from datetime import datetime

from sdbake.schemas.jsonschema import recipe_json_schema

SECTIONS = (  # ($defs name or "Recipe", heading)
    ("Recipe", "The recipe file"), ("ModelEntry", "[models.NAME]"), ("LoraRef", "LoRA references"),
    ("Defaults", "[defaults]"), ("EncodeParams", "Stage `encode`"), ("SampleParams", "Stage `sample`"),
    ("InterveneParams", "Stage `intervene`"), ("PasteOp", "intervene op `paste`"), ("ImageOp", "intervene op `image`"),
    ("AdjustOp", "intervene op `adjust`"), ("BlurOp", "intervene op `blur`"), ("FillOp", "intervene op `fill`"),
    ("HiresParams", "Stage `hires`"), ("InpaintParams", "Stage `inpaint`"), ("SaveParams", "Stage `save`"),
    ("SdxlConditioning", "SDXL conditioning (`sdxl` of a sampling stage)"),
    ("CheckTolerances", "[check]"), ("Performance", "[performance]"),
)  # a definition of the schema missing here still gets a section, under its own name

EXAMPLES = {
    "encode": '[[stages]]\ntype = "encode"\nprompt = "a (red:1.2) circle, [day:night:0.5], __colors__"\n'
              'negative = "blurry"\n# image = "init.png"      # img2img: VAE-encode this image\n# denoise = 0.6\n',
    "sample": '[[stages]]\ntype = "sample"\nend = 10                    # stop at step 10 of 20: the leftover noise is kept\n\n'
              '[[stages]]\ntype = "sample"\nstart = 10                  # continue exactly where it stopped\n'
              'sampler = "dpmpp_2m"\npreview_every = 5\n',
    "intervene": '[[stages]]\ntype = "intervene"\nrect = [0, 0, 32, 32]       # only this box may change\n'
                 'ops = [{ op = "fill", color = "#1e3cdc", rect = [8, 8, 16, 16] }, { op = "blur", radius = 1.0 }]\n'
                 'preview = "{{ name }}/{{ seed }}-step10.png"\n',
    "hires": '[[stages]]\ntype = "hires"\nscale = 2.0\nupscaler = "latent-bicubic-antialiased"\ndenoise = 0.45\n'
             'steps = 8\n',
    "inpaint": '[[stages]]\ntype = "inpaint"\nrects = [[16, 16, 32, 32]]   # or mask = "masks/face.png"\nloops = 2\n'
               'denoise = [0.75, 0.5]\ncurve = "lazy"\ncolor_correction = true\nprompt = "a green circle"\n',
    "save": '[[stages]]\ntype = "save"\npath = "{{ name }}/{{ seed }}-{{ prompt | words(6) }}-{{ prompt_hash }}.webp"\n'
            'quality = 90\non_exists = "skip"\n',
}


def template_filters() -> dict[str, str]:
    """Filter -> the first line of its function's docstring."""
    from sdbake.stages.output.templates import prompt_words, short_hash, slug
    return {f"{name}": func.__doc__.strip().splitlines()[0] for name, func in
            (("words(n)", prompt_words), ("slug(n)", slug), ("hash(n)", short_hash))}


def _type(prop: dict) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    if "anyOf" in prop or "oneOf" in prop:
        options = [_type(p) for p in prop.get("anyOf", prop.get("oneOf")) if p.get("type") != "null"]
        return " or ".join(dict.fromkeys(options))
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"table of {_type(prop['additionalProperties'])}"
    return kind


def _limits(prop: dict) -> str:
    found = []
    for p in [prop, *prop.get("anyOf", [])]:
        for key, label in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                           ("exclusiveMaximum", "<"), ("multipleOf", "multiple of"), ("minLength", "length >="),
                           ("minItems", "items >="), ("maxItems", "items <="), ("pattern", "matches")):
            if key in p:
                found.append(f"{label} `{p[key]}`")
    return ", ".join(found)


def _table(definition: dict, required: set[str]) -> list[str]:
    lines = ["| field | type | default | limits | description |", "|---|---|---|---|---|"]
    for name, prop in definition.get("properties", {}).items():
        default = "required" if name in required else f"`{json.dumps(prop.get('default'))}`" if "default" in prop \
            else "(empty)"
        description = (prop.get("description") or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{name}` | {_type(prop)} | {default} | {_limits(prop)} | {description} |")
    return lines


def template_variable_names() -> list[str]:
    from sdbake.runner.kinds.common import template_variables
    current = {"prompts": [""], "negatives": [""], "seeds": [0], "width": 0, "height": 0}
    recipe = type("R", (), {"name": ""})()
    return sorted(template_variables(current, recipe, "", "0" * 64, datetime(2000, 1, 1), 0))


def recipe_reference_markdown() -> str:
    from sdbake.schemas.names import SAMPLERS, SCHEDULERS
    from sdbake.schemas.stages import A1111_UPSCALER_FILES, A1111_UPSCALERS, LATENT_UPSCALERS, PIXEL_UPSCALERS
    schema = recipe_json_schema()
    defs = schema["$defs"]
    out = ["# Recipe reference", "",
           ("Generated by `sdbake schema --markdown > docs/recipes.md` from the JSON Schema that `sdbake schema` "
           "prints and `sdbake validate` enforces; do not edit by hand (a test fails when it is stale). "
           "Editor setup: [editors.md](editors.md). A starting recipe: `sdbake new NAME --template hires`."), "",
           ("A stage field left unset comes from `[defaults]` where `[defaults]` has it. Paths inside a recipe "
           "resolve against the recipe's folder; save paths are relative to the output root."), ""]
    listed = {name for name, _ in SECTIONS}
    for name, heading in [*SECTIONS, *((name, name) for name in sorted(defs) if name not in listed)]:
        definition = schema if name == "Recipe" else defs[name]
        out += [f'<a id="{name.lower()}"></a>', f"## {heading}", ""]
        if definition.get("description") and name != "Recipe":
            out += [definition["description"], ""]
        out += _table(definition, set(definition.get("required", []))) + [""]
        kind = name.removesuffix("Params").lower()
        if kind in EXAMPLES:
            out += ["Example:", "", "```toml", EXAMPLES[kind].rstrip("\n"), "```", ""]
    out += ["## Samplers", "",
            ("The ComfyUI id, or A1111's label or alias (`k_dpmpp_2m`) in any case, alone or with a schedule "
             "suffix (`\"DPM++ 2M Karras\"` = `dpmpp_2m` with `karras`; an explicit `scheduler` wins). "
             "`scheduler = \"Automatic\"` is A1111's default schedule of the sampler (karras for DPM++ 2M, "
             "SDE, 2S a and DPM2; exponential for DPM++ 2M SDE (and Heun), 3M SDE; `ddim_uniform` for DDIM; else "
             "`normal`). Split: a sample stage split into parts (`end` < `steps`, then one that continues) equals "
             "one run bit for bit; a sampler that chooses its own steps over the range it is given runs any "
             "slice (img2img, hires, inpaint) but refuses splits at validate time: `dpm_fast` makes `steps` "
             "model calls in all, in fewer steps of up to three calls uniform in log sigma; `dpm_adaptive` as "
             "many as its error control needs (three per try). Both run ComfyUI's way, with eta 0; A1111 runs "
             "them with its eta option, 1 by default: its \"DPM fast\" and \"DPM adaptive\" are "
             "`dpm_fast_a1111` and `dpm_adaptive_a1111`, and an infotext of `dpm_fast` or `dpm_adaptive` says "
             "`Eta: 0.0`."), "",
            "| sampler | A1111 label | model calls per step | noise | split |", "|---|---|---|---|---|",
            *(f"| `{name}` | `{info.label}` | {'its own' if info.whole_range else 2 if info.second_order else 1} | "
              f"{info.noise or 'none'} | {'refused' if info.whole_range else 'exact'} |"
              for name, info in SAMPLERS.items()), "",
            "## Schedulers", "", "| scheduler | A1111 label |", "|---|---|",
            *(f"| `{name}` | `{label}` |" for name, label in SCHEDULERS.items()), "",
            "## Upscalers (hires `upscaler`)", "",
            "Latent: " + ", ".join(f"`{u}`" for u in LATENT_UPSCALERS) + ".", "",
            "Pixel: " + ", ".join(f"`{u}`" for u in PIXEL_UPSCALERS) + "; or an upscaler model file (ESRGAN / "
            "RRDBNet `.safetensors` or `.pth`), by path or by name (with or without extension) in the upscaler "
            "folders.", "",
            ("A1111's labels work as written: " + ", ".join(f"`{label}`" for label in A1111_UPSCALERS)
             + " (`None` resizes the decoded image with Lanczos, as A1111), and its Real-ESRGAN labels find the "
             "file A1111 downloads for them: "
             + ", ".join(f"`{label}` = `{stem}`" for label, stem in A1111_UPSCALER_FILES.items()) + "."), "",
            "## Save path templates", "",
            "A save `path` (and an intervene `preview`) is a jinja2 template in a sandbox. Variables: "
            + ", ".join(f"`{v}`" for v in template_variable_names()) + ".", "",
            "Filters:", "", *(f"- `{f}`: {what}" for f, what in template_filters().items()), "",
            "## Wildcard folders", "",
            ("`__name__` and `__dir/name__` in a prompt read `name.txt` (or `.json` / `.yaml`) from, in order: the "
            "`wildcards/` folder beside the recipe, then the `wildcards` folders of the config file (`sdbake.toml` "
            "or `~/.config/sdbake/config.toml`). `{a|b}` picks a variant. Picks are seeded by the image seed."), ""]
    return "\n".join(out)
