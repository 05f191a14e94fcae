"""Property: whatever document it is given, the loader returns a recipe or raises our own error type.

Documents start from the example recipes and are mutated (keys deleted or added, values replaced by
values of other types, text edited character by character), or are random text outright.
"""
from __future__ import annotations

import copy
from pathlib import Path

import tomli_w
import tomllib
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sdbake.schemas.errors import SdbakeError
from sdbake.schemas.loader import LoadedRecipe, load_text

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
EXAMPLE_TEXTS = {path.name: path.read_text() for path in sorted(RECIPES.glob("*.toml")) + sorted(
    RECIPES.glob("*.yaml"))}
EXAMPLE_DOCUMENTS = [tomllib.loads(text) for name, text in EXAMPLE_TEXTS.items() if name.endswith(".toml")]
# Keys the schema knows, so that mutations also hit valid keys with wrong values.
KNOWN_KEYS = ["type", "op", "id", "model", "steps", "start", "end", "denoise", "cfg", "seed", "width", "height",
              "sampler", "scheduler", "mask", "rects", "ops", "image", "loras", "name", "weight", "version",
              "stages", "defaults", "models", "checkpoint", "matrix", "check", "scale", "loops", "at", "color"]

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["encode", "sample", "intervene", "hires", "inpaint", "save", "paste", "fill", "base",
                     "DPM++ 2M Karras", "karras", "", "0", "1.5"]),
    st.integers(min_value=-3, max_value=40),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8)),
                                                 inner, max_size=4)), max_leaves=10)


def paths_of(node, prefix=()):
    """Every path to a value inside `node` (dict keys and list indexes)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths_of(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths_of(value, prefix + (index,))


def parent_and_key(document, path):
    node = document
    for part in path[:-1]:
        node = node[part]
    return node, path[-1]


@st.composite
def mutated_documents(draw):
    document = copy.deepcopy(draw(st.sampled_from(EXAMPLE_DOCUMENTS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = [path for path in paths_of(document) if path]
        path = draw(st.sampled_from(paths))
        parent, key = parent_and_key(document, path)
        action = draw(st.sampled_from(["delete", "replace", "insert", "rename"]))
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(json_values)
        elif action == "insert" and isinstance(parent, dict):
            parent[draw(st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=10)))] = draw(json_values)
        elif action == "insert":
            parent.insert(key, draw(json_values))
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KNOWN_KEYS))] = parent.pop(key)
    return document


def without_none(value):
    """TOML has no null: drop None from what goes to tomli_w (YAML keeps it)."""
    if isinstance(value, dict):
        return {key: without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_none(item) for item in value if item is not None]
    return value


def loads_or_our_error(text: str, fmt: str, overrides: list[str] = ()) -> None:
    try:
        result = load_text(text, fmt, label=f"fuzz.{fmt}", folder=RECIPES, overrides=list(overrides))
    except SdbakeError as err:
        assert str(err).strip(), "an error must say something"
    else:
        assert isinstance(result, LoadedRecipe)


@FUZZ
@given(mutated_documents())
def test_mutated_documents_load_or_raise_our_error(document):
    loads_or_our_error(yaml.safe_dump(document, allow_unicode=True), "yaml")
    finite = without_none(document)
    loads_or_our_error(tomli_w.dumps(finite), "toml")


@FUZZ
@given(st.sampled_from(sorted(EXAMPLE_TEXTS)), st.data())
def test_edited_example_text_loads_or_raises_our_error(name, data):
    text = EXAMPLE_TEXTS[name]
    for _ in range(data.draw(st.integers(min_value=1, max_value=5))):
        at = data.draw(st.integers(min_value=0, max_value=len(text)))
        cut = data.draw(st.integers(min_value=0, max_value=8))
        insert = data.draw(st.one_of(st.text(max_size=6), st.sampled_from(
            ["[", "]", "{", "}", "\n", "  ", "\t", ":", "=", "- ", '"', "'''", "&a ", "*a", "!!", "#", "\\", ".",
             "[[stages]]\n", "\x00", "\ufeff", "\u2028"])))
        text = text[:at] + insert + text[at + cut:]
    loads_or_our_error(text, "toml" if name.endswith(".toml") else "yaml")


@FUZZ
@given(st.text(max_size=200), st.sampled_from(["toml", "yaml"]))
def test_random_text_loads_or_raises_our_error(text, fmt):
    loads_or_our_error(text, fmt)


@settings(FUZZ, max_examples=100)       # one fixed document: a smaller space than the tests above
@given(st.lists(st.text(max_size=30) | st.builds(
    "{}={}".format, st.sampled_from(["stages.hires.denoise", "stages.sample-1.end", "defaults.cfg", "models.m",
                                     "stages", "stages.0", "name", "defaults", "stages.x.y.z", "matrix.seed"]),
    st.text(max_size=10)), max_size=3))
def test_random_overrides_load_or_raise_our_error(overrides):
    loads_or_our_error(EXAMPLE_TEXTS["multistage.yaml"], "yaml", overrides)


def test_nan_and_infinity_are_range_errors_not_crashes():
    text = EXAMPLE_TEXTS["txt2img.yaml"].replace("cfg: 5.0", "cfg: .nan").replace("seed: 1234", "seed: .inf")
    try:
        load_text(text, "yaml", label="nan.yaml", folder=RECIPES)
    except SdbakeError as err:
        assert [line.split(": ", 1)[1] for line in str(err).splitlines()] == [
            "defaults.seed: must be an integer (got inf)", "defaults.cfg: must be a finite number (got nan)"]
    else:
        raise AssertionError("nan cfg must not validate")


def test_exponential_yaml_aliases_are_fast():
    # nine levels of nine aliases would be 9**9 nodes if each alias were walked again
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    try:
        load_text("\n".join(lines) + "\n", "yaml", label="laughs.yaml", folder=RECIPES)
    except SdbakeError as err:
        assert "a8: unknown key `a8`" in str(err)


def test_deep_nesting_is_our_error():
    for fmt, text in [("yaml", "a: " + "[" * 3000 + "]" * 3000), ("toml", "a = " + "[" * 3000 + "]" * 3000),
                      ("toml", "a = " + "{ b = " * 3000 + "1" + " }" * 3000)]:
        try:
            load_text(text, fmt, label=f"deep.{fmt}", folder=RECIPES)
        except SdbakeError as err:
            assert str(err) == f"deep.{fmt}:1:1: lists or tables are nested too deeply to read"
        else:
            raise AssertionError("a document of deep lists is no recipe")
