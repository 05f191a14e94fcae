"""Save-path templates: every variable and filter, and hostile templates that must stay confined."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from sdbake.schemas.errors import OutputError
from sdbake.stages.output.names import safe_relative_path, sanitize_component
from sdbake.stages.output.templates import TEMPLATE_VARIABLES, render_path

VARIABLES = {
    "name": "portrait", "seed": 1234, "steps": 20, "cfg": 7.5, "sampler": "dpmpp_2m",
    "scheduler": "karras", "width": 512, "height": 768, "model_name": "v1-5-pruned",
    "model_hash": "6ce0161689", "prompt": "a (red:1.2) circle, [blue] square <lora:foo:0.8>!",
    "negative": "blurry, lowres", "prompt_hash": "0f1e2d3c", "batch_index": 3, "stage": "save",
    "date": "2024-05-06", "datetime": "20240506-123456", "recipe_hash": "abcdef012345",
}


def test_every_documented_variable_renders():
    assert set(VARIABLES) == set(TEMPLATE_VARIABLES)
    for name, value in VARIABLES.items():
        assert render_path(f"{{{{ {name} }}}}", VARIABLES) == str(value), name


def test_user_template_with_words_filter():
    rendered = render_path("out/{{ name }}/{{ seed }}-{{ prompt | words(6) }}.png", VARIABLES)
    assert rendered == "out/portrait/1234-a red circle blue square.png"


def test_words_drops_weights_brackets_punctuation_and_lora_tags():
    assert render_path("{{ prompt | words(3) }}", VARIABLES) == "a red circle"
    assert render_path("{{ '[cat:dog:0.5], ((best)), 16:9' | words(9) }}", {}) == "cat dog best 16 9"
    assert render_path("{{ '(((,,,)))' | words(3) }}", {}) == "empty"     # as A1111's [prompt_words]


def test_slug_filter():
    assert render_path("{{ prompt | slug }}", VARIABLES) == "a-red-1-2-circle-blue-square-lora-foo-0-8"
    assert render_path("{{ 'Café Déjà Vu' | slug(8) }}", {}) == "cafe-dej"
    assert render_path("{{ 'Hello  World--x' | slug(6) }}", {}) == "hello"      # no trailing '-'


def test_hash_filter():
    digest = hashlib.sha256(b"a prompt").hexdigest()
    assert render_path("{{ 'a prompt' | hash }}", {}) == digest[:8]
    assert render_path("{{ 'a prompt' | hash(12) }}", {}) == digest[:12]
    assert render_path("{{ seed | hash(4) }}", VARIABLES) == hashlib.sha256(b"1234").hexdigest()[:4]


def test_unknown_variable_is_an_error_naming_it():
    with pytest.raises(OutputError, match="'sede' is undefined"):
        render_path("{{ sede }}.png", VARIABLES)


def test_syntax_error_is_an_output_error():
    with pytest.raises(OutputError, match="invalid"):
        render_path("{{ seed ", VARIABLES)


@pytest.mark.parametrize("template", [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ seed.__class__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ 'x' * 100000000 }}",
    "{{ 10 ** 100000 }}",
    "{{ seed / 0 }}",
    "{% for i in range(1000) %}{{ 'abcdefgh' }}{% endfor %}",   # 8000 characters: too long
])
def test_templates_that_reach_python_internals_or_exhaust_resources_are_refused(template):
    with pytest.raises(OutputError, match="save path template"):
        render_path(template, VARIABLES)


def safe(rendered: str, root: Path) -> Path:
    """The path a rendered name would be written to; it must lie inside root."""
    relative = safe_relative_path(rendered, root)
    target = (root / relative).resolve()
    assert target.is_relative_to(root.resolve())
    assert not any(part.startswith(".") or part == "" for part in relative.parts), relative
    return relative


@pytest.mark.parametrize("rendered, expected", [
    ("out/1234-a red circle.png", "out/1234-a red circle.png"),
    ("x" * 300 + ".png", "x" * 124 + ".png"),                       # cut to 128, extension kept
    ("a\x00b.png", "a_b.png"),                                       # NUL
    ("line\nbreak\rtab\t.png", "line_break_tab_.png"),
    ('w<i>n:d"o\\w|s?*#.png', "w_i_n_d_o_w_s___.png"),               # A1111's refused characters
    ("CON.png", "CON_.png"), ("nul", "nul_"), ("com1.tar.gz", "com1_.tar.gz"), ("LPT9 .png", "LPT9_.png"),
    (".png", "image.png"),                                           # ComfyUI's empty-prefix bug
    (".hidden", "image.hidden"),
    ("out/.git/x.png", "out/image.git/x.png"),
    ("trailing dots... ", "trailing dots"),
    ("   leading.png", "leading.png"),
    ("", "image"), ("out/", "out/image"), ("out/.", "out/image"), ("...", "image"),
    ("a//b/./c.png", "a/b/c.png"),
    ("🙂 smile.png", "🙂 smile.png"),
])
def test_hostile_names_become_safe_names(tmp_path, rendered, expected):
    assert safe(rendered, tmp_path) == Path(expected)


def test_long_emoji_name_fits_255_bytes_without_splitting_a_character(tmp_path):
    relative = safe("🙂" * 200 + ".png", tmp_path)
    name = relative.name
    assert len(name.encode("utf-8")) <= 255 and name.endswith(".png")
    assert set(name[:-4]) == {"🙂"}
    (tmp_path / relative).write_bytes(b"ok")                          # the filesystem accepts it


def test_every_component_is_cut_to_max_component():
    assert sanitize_component("y" * 300, max_chars=40) == "y" * 40
    assert sanitize_component("é" * 300, max_chars=300) == "é" * 127   # 254 bytes <= 255


@pytest.mark.parametrize("rendered", [
    "../x.png", "a/../../b.png", "out/..", "..\\x.png", "/etc/x.png", "\\\\server\\share\\x.png",
    "C:/Windows/x.png", "c:x.png",
])
def test_paths_that_escape_the_root_are_errors(tmp_path, rendered):
    with pytest.raises(OutputError, match="save path"):
        safe_relative_path(rendered, tmp_path)


def test_a_symlink_under_root_that_leads_outside_is_an_error(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(OutputError, match="outside the output folder"):
        safe_relative_path("link/x.png", root)
    os.symlink(root / "sub", root / "inner")                          # a link that stays inside is fine
    assert safe_relative_path("inner/x.png", root) == Path("inner/x.png")


def test_rendered_hostile_templates_end_inside_root_or_fail(tmp_path):
    hostile = {"prompt": "../../etc/passwd", "name": "/abs", "seed": 1}
    assert safe(render_path("{{ prompt | words(3) }}.png", hostile), tmp_path) == Path("etc passwd.png")
    assert safe(render_path("{{ prompt | slug }}.png", hostile), tmp_path) == Path("etc-passwd.png")
    with pytest.raises(OutputError, match="contains '..'"):
        safe_relative_path(render_path("{{ prompt }}.png", hostile), tmp_path)
    with pytest.raises(OutputError, match="absolute"):
        safe_relative_path(render_path("{{ name }}/{{ seed }}.png", hostile), tmp_path)
