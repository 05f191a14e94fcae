"""Hypothesis fuzzing of the two readers that take bytes from anywhere: image metadata and entry.json.
No input may produce anything but a value or one of our errors (never a traceback)."""
from __future__ import annotations

import json

import pytest
from hostile_helpers import png_with_text
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.filterwarnings("ignore")
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=20)
KEY = "ab" + "3" * 62


@FUZZ
@given(data=st.binary(max_size=400))
def test_any_bytes_as_an_image_read_as_metadata_or_input_file_error(tmp_path_factory, data):
    from sdbake.schemas.errors import InputFileError
    from sdbake.stages.output.metadata import read_metadata
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data if data[:1] == b"\x00" else data)
    try:
        infotext, sdbake_json = read_metadata(path)
    except InputFileError:
        return
    assert infotext is None or isinstance(infotext, str)
    assert sdbake_json is None or isinstance(sdbake_json, str)


@FUZZ
@given(document=json_values | st.text(max_size=200))
def test_any_sdbake_chunk_is_shown_or_refused_in_one_line(tmp_path_factory, capsys, document):
    from sdbake.runner.cli import main
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    text = document if isinstance(document, str) else json.dumps(document)
    path.write_bytes(png_with_text({"parameters": text, "sdbake": text}))
    for fmt in ("recipe", "infotext", "json"):
        capsys.readouterr()
        code = main(["show", str(path), "--format", fmt])
        captured = capsys.readouterr()
        assert code in (0, 1) and "Traceback" not in captured.err
        assert code == 0 or len(captured.err.strip().splitlines()) == 1


def fresh_entry(tmp_path_factory):
    from sdbake.runner.cache import CacheStore
    warned: list[str] = []
    store = CacheStore(tmp_path_factory.mktemp("cache"), warn=warned.append)
    store.put(KEY, stage={"id": "s", "type": "save", "recipe": "r"}, files={"0": b"png"}, inputs={})
    return store, warned


@FUZZ
@given(info=json_values)
def test_any_json_as_entry_json_is_served_only_when_whole(tmp_path_factory, info):
    store, warned = fresh_entry(tmp_path_factory)
    (store.entry_folder(KEY) / "entry.json").write_text(json.dumps(info))
    assert store.get(KEY) is None and warned and "corrupt" in warned[0]
    assert len(store.entries()) <= 1


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(["format", "key", "stage", "meta", "inputs", "files", "has_tensors",
                                                "size_bytes", "tensors_size", "tensors_sha256", "digest"]),
                               json_values, min_size=1, max_size=3), redigest=st.booleans())
@example(changes={"has_tensors": 0}, redigest=True)     # equal in Python, not in the file: refused, rightly
@example(changes={"has_tensors": 0}, redigest=False)
def test_an_entry_json_with_fields_changed_is_never_served_wrong(tmp_path_factory, changes, redigest):
    from sdbake.runner.cache import entry_digest
    store, _ = fresh_entry(tmp_path_factory)
    path = store.entry_folder(KEY) / "entry.json"
    info = json.loads(path.read_text())
    original = dict(info)
    info.update(changes)
    if redigest:
        info["digest"] = entry_digest(info)
    path.write_text(json.dumps(info))
    entry = store.get(KEY)
    if entry is not None:       # served: then it must still be a whole, consistent entry of this key
        assert entry.key == KEY and entry.info["key"] == KEY
        assert entry.blob_bytes("0") == b"png" if "0" in entry.files else True
    else:
        # compared as JSON text: in Python 0 == False and 1 == 1.0, but the file says `0` where it said `false`
        assert json.dumps(info, sort_keys=True) != json.dumps(original, sort_keys=True)


@FUZZ
@given(data=st.binary(max_size=300))
def test_any_bytes_as_entry_json_never_raise(tmp_path_factory, data):
    store, _ = fresh_entry(tmp_path_factory)
    (store.entry_folder(KEY) / "entry.json").write_bytes(data)
    assert store.get(KEY) is None
