"""Hostile recipes: templates, sizes, sweeps, prompts. Each is refused before any work starts, with one
line that names the limit (and how to raise it), in bounded time, touching nothing outside the outputs."""
from __future__ import annotations

import pytest
from hostile_helpers import recipe, with_prompt, with_save_path

LOOP_BOMB = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}x.png"
DOUBLING = "{% set x = 'aaaaaaaaaa' %}" + "{% set x = x ~ x %}" * 40 + "{{ x|length }}.png"

# Save-path templates rendered at plan time: (id, template, what the error says)
TEMPLATES = [
    ("nested-loops-99999", LOOP_BOMB, "SDBAKE_MAX_TEMPLATE_ITERATIONS"),
    ("loop-over-prompt-cubed", ("{% for a in prompt*50 %}{% for b in prompt*50 %}{% for c in prompt %}"
                               "{% endfor %}{% endfor %}{% endfor %}.png"), "loop iterations"),
    ("indent-999999999", "{{ 'a\na'|indent(999999999) }}.png", "SDBAKE_MAX_TEMPLATE_CHARS"),
    ("center-999999999", "{{ 'a'|center(999999999) }}.png", "SDBAKE_MAX_TEMPLATE_CHARS"),
    ("wordwrap-huge", "{{ 'a b'|wordwrap(999999999) }}.png", "SDBAKE_MAX_TEMPLATE_CHARS"),
    ("percent-width", "{{ '%999999999d' % 1 }}.png", "format width"),
    ("percent-star", "{{ '%*d' % (999999999, 1) }}.png", "width in a format string"),
    ("format-filter-width", "{{ '%999999999s'|format('a') }}.png", "format width"),
    ("str-format-width", "{{ '{:>999999999}'.format(1) }}.png", "format width"),
    ("str-format-nested-width", "{{ '{0:>{1}}'.format(1, 999999999) }}.png", "computed width"),
    ("ljust", "{{ 'a'.ljust(999999999) }}.png", "a width of"),
    ("zfill", "{{ '1'.zfill(999999999) }}.png", "a width of"),
    ("expandtabs", "{{ ('\t' * 9000).expandtabs(99999) }}.png", "expandtabs"),
    ("concat-doubling", DOUBLING, "SDBAKE_MAX_TEMPLATE_CHARS"),
    ("plus-doubling", "{% set x = 'aaaaaaaaaa' %}" + "{% set x = x + x %}" * 40 + "{{ x|length }}.png",
     "SDBAKE_MAX_TEMPLATE_CHARS"),
    ("replace-squared", "{% set x = 'a' * 9999 %}{{ x|replace('a', x)|replace('a', x)|length }}.png",
     "`replace` would build"),
    ("join-squared", "{% set x = 'a' * 9999 %}{{ range(9999)|join(x)|length }}.png", "`join` would build"),
    ("repeat-billion", "{{ 'a' * 1000000000 }}.png", "repetition longer"),
    ("power-huge", "{{ 2 ** 999999999 }}.png", "exponent larger"),
    ("macro-recursion", "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}.png", "nests too deep"),
    ("range-over-max", "{{ range(10**9)|length }}.png", "range"),
    ("lipsum-removed", "{{ lipsum(99999) }}.png", "lipsum"),
    ("class-escape", "{{ ''.__class__.__mro__[1].__subclasses__() }}.png", "refused by the sandbox"),
    ("undefined-name", "{{ no_such_variable }}.png", "no_such_variable"),
    ("syntax-error", "{% for %}.png", "invalid"),
    ("absolute-path", "/etc/passwd-{{ seed }}.png", "absolute"),
    ("dotdot-escape", "../../../{{ seed }}.png", "'..'"),
    ("computed-dotdot", "{{ '../' * 5 }}x.png", "'..'"),
    ("drive-letter", "C:/x.png", "drive letter"),
]


@pytest.mark.parametrize("template, message", [case[1:] for case in TEMPLATES], ids=[c[0] for c in TEMPLATES])
def test_hostile_save_path_template_is_refused_at_plan_time(arena, template, message):
    arena.write("r.toml", with_save_path(template))
    arena.sdbake("plan", "r.toml", code=1, expect=message, max_s=10)


def big(width: int, height: int, batch: int = 1, hires: dict | None = None) -> str:
    stages = [{"type": "encode", "prompt": "a cat"}, {"type": "sample"}]
    if hires:
        stages.append({"type": "hires", **hires})
    return recipe(defaults={"width": width, "height": height, "batch_size": batch},
                  stages=[*stages, {"type": "save", "path": "x.png"}])


# Recipes refused by `validate` (no model, no torch): (id, recipe text, expected message)
RECIPES = [
    ("area-8192x8192-batch-64", big(8192, 8192, 64), "SDBAKE_MAX_IMAGE_PIXELS"),
    ("area-4096x4096-batch-64", big(4096, 4096, 64), "SDBAKE_MAX_MEMORY_GB"),
    ("hires-to-8192-from-64", big(64, 64, 1, {"width": 8192}), "hires target 8192x8192"),
    ("hires-scale-8-from-4096", big(4096, 2048, 1, {"scale": 8.0}), "SDBAKE_MAX_IMAGE_PIXELS"),
    ("prompt-parens-10k-deep", with_prompt("(" * 10000 + "cat" + ")" * 10000), "SDBAKE_MAX_PROMPT_DEPTH"),
    ("prompt-brackets-10k-deep", with_prompt("[" * 10000 + "cat" + "]" * 10000), "SDBAKE_MAX_PROMPT_DEPTH"),
    ("negative-parens-deep", with_prompt("cat", "(" * 5000), "SDBAKE_MAX_PROMPT_DEPTH"),
    ("weight-1e400", with_prompt("(cat:1e400)"), "not a finite number"),
    ("weight-product-overflow", with_prompt("((((cat:1e30):1e30):1e30):1e30)"), "not a finite number"),
    ("variants-40-deep", with_prompt("{" * 40 + "a|b" + "}" * 40), "SDBAKE_MAX_WILDCARD_DEPTH"),
    ("intervene-negative-rect", recipe(stages=[
        {"type": "encode", "prompt": "a"}, {"type": "sample", "end": 1},
        {"type": "intervene", "rect": [0, 0, -5, 10], "ops": [{"op": "blur"}]}, {"type": "sample"},
        {"type": "save", "path": "x.png"}]), "width and height must be at least 1"),
    ("inpaint-huge-rect", recipe(stages=[
        {"type": "encode", "prompt": "a"}, {"type": "sample"},
        {"type": "inpaint", "rects": [[0, 0, 2 ** 40, 2 ** 40]]}, {"type": "save", "path": "x.png"}]),
     "coordinates beyond"),
    ("fill-zero-rect", recipe(stages=[
        {"type": "encode", "prompt": "a"}, {"type": "sample", "end": 1},
        {"type": "intervene", "ops": [{"op": "fill", "color": "#ff0000", "rect": [5, 5, 0, 0]}]},
        {"type": "sample"}, {"type": "save", "path": "x.png"}]), "width and height must be at least 1"),
    ("paste-far-away", recipe(stages=[
        {"type": "encode", "prompt": "a"}, {"type": "sample", "end": 1},
        {"type": "intervene", "ops": [{"op": "paste", "image": "x.png", "at": [2 ** 40, 0]}]},
        {"type": "sample"}, {"type": "save", "path": "x.png"}]), "beyond"),
]


@pytest.mark.parametrize("text, message", [case[1:] for case in RECIPES], ids=[c[0] for c in RECIPES])
def test_hostile_recipe_is_refused_by_validate(arena, text, message):
    arena.write("r.toml", text)
    arena.sdbake("validate", "r.toml", code=1, expect=message, max_s=10)


# Sweeps: refused before a single point is expanded (the bombs would take hours or all memory).
MATRICES = [
    ("seed-range-billion", {"seed": "1-1000000000"}, [], "SDBAKE_MAX_RANGE_VALUES"),
    ("seed-count-2-billion", {"seed": "1-10 [2000000000]"}, [], "SDBAKE_MAX_RANGE_VALUES"),
    ("cube-1000", {"seed": "1-1000", "defaults.steps": "1-1000", "defaults.cfg": "1-1000 [1000]"}, [],
     "SDBAKE_MAX_MATRIX_POINTS"),
    ("float-tiny-step", {"defaults.cfg": "1-2 (+0.0000001)"}, [], "SDBAKE_MAX_RANGE_VALUES"),
    ("float-infinite-bound", {"defaults.cfg": "1e400-2 [3]"}, [], "finite"),
    ("many-ranges-one-axis", {"seed": ", ".join(["1-9000"] * 5)}, [], "SDBAKE_MAX_RANGE_VALUES"),
    ("cli-matrix-billion", {}, ["--matrix", "seed=1-1000000000"], "SDBAKE_MAX_RANGE_VALUES"),
    ("cli-matrix-cube", {}, ["--matrix", "seed=1-100", "--matrix", "defaults.steps=1-100",
                             "--matrix", "defaults.cfg=1-100 [100]"], "SDBAKE_MAX_MATRIX_POINTS"),
]


@pytest.mark.parametrize("command", ["plan", "run"])
@pytest.mark.parametrize("matrix, extra, message", [case[1:] for case in MATRICES], ids=[c[0] for c in MATRICES])
def test_hostile_sweep_is_refused_before_expanding(arena, command, matrix, extra, message):
    arena.write("r.toml", recipe(matrix=matrix or None))
    arena.sdbake(command, "r.toml", *extra, code=1, expect=message, max_s=10)


def test_self_referencing_wildcard_is_an_error_line(arena):
    arena.write("wildcards/loop.txt", "__loop__ and {a|__loop__}\n")
    arena.write("r.toml", with_prompt("a __loop__"))
    arena.sdbake("plan", "r.toml", code=1, expect="nests too deep", max_s=20)


# Recipe files themselves: broken, huge, deep, special.
def deep_toml(depth: int) -> str:
    return 'version = 1\nname = "x"\nx = ' + "[" * depth + "]" * depth + "\n"


RECIPE_FILES = [
    ("toml-arrays-100k-deep", deep_toml(100_000), "r.toml"),
    ("yaml-flow-100k-deep", "version: 1\nx: " + "[" * 100_000 + "]" * 100_000 + "\n", "r.yaml"),
    ("yaml-billion-laughs", "version: 1\nstages: [{type: encode}]\nname: [&a [x, x, x, x, x, x, x, x, x], "
     + ", ".join(f"&{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(9)) + "]\n",
     "r.yaml"),
    ("nul-bytes", 'version = 1\nname = "a\x00b"\n', "r.toml"),
    ("invalid-utf8", b'version = 1\nname = "\xff\xfe"\n', "r.toml"),
    ("yaml-python-tag", "version: 1\nname: !!python/object/apply:os.system ['echo pwned']\n", "r.yaml"),
    ("stage-id-path", recipe(stages=[{"type": "encode", "prompt": "a", "id": "../../../etc"},
                                     {"type": "sample"}, {"type": "save", "path": "x.png"}]), "r.toml"),
]


@pytest.mark.parametrize("text, name", [case[1:] for case in RECIPE_FILES], ids=[c[0] for c in RECIPE_FILES])
def test_hostile_recipe_file_is_one_error_line(arena, text, name):
    arena.write(name, text)
    arena.sdbake("validate", name, code=1, max_s=15)
