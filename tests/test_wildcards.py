"""Wildcards and variants resolve through dynamicprompts: seeded, reproducible, strict about
missing files, and transparent to A1111's own prompt syntax."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sdbake.schemas.errors import PromptError
from sdbake.stages.prompts.wildcards import expand, expand_all, wildcard_files_used


@pytest.fixture
def folders(tmp_path):
    recipe_wildcards = tmp_path / "recipe" / "wildcards"
    configured = tmp_path / "configured"
    (recipe_wildcards / "people").mkdir(parents=True)
    configured.mkdir()
    (recipe_wildcards / "colors.txt").write_text("red\nblue\n\ngreen\n")
    (recipe_wildcards / "people" / "jobs.txt").write_text("doctor\nchef in __colors__\n")
    (configured / "colors.txt").write_text("mauve\n")              # shadowed by the recipe's folder
    (configured / "animals.txt").write_text("cat\ndog\nowl\n")
    (configured / "loop.txt").write_text("again __loop__\n")
    return [recipe_wildcards, configured]


def test_same_seed_gives_same_picks(folders):
    template = "__colors__ {a|b|c} __animals__ __people/jobs__"
    assert expand(template, 1234, folders) == expand(template, 1234, folders)


def test_seeded_picks_are_fixed_across_machines(folders):
    # Values are sorted and picked by random.Random(seed): these strings must never change.
    assert [expand("__colors__ __animals__ {x|y|z}", seed, folders) for seed in (0, 1, 2, 123456789012)] == [
        "green dog x", "blue owl x", "blue cat y", "green owl x"]
    picks = {expand("__animals__", seed, folders) for seed in range(40)}
    assert picks == {"cat", "dog", "owl"}


def test_seeded_picks_do_not_depend_on_the_hash_seed(folders):
    code = ("import sys; from sdbake.stages.prompts.wildcards import expand; "
            f"print(expand('__colors__ {{a|b|c|d}} __animals__', 7, {[str(f) for f in folders]!r}))")
    root = Path(__file__).parents[1]
    outputs = {subprocess.run([sys.executable, "-c", code], check=False, cwd=root, capture_output=True, text=True,
                              env={"PYTHONHASHSEED": str(hash_seed), "PATH": ""}).stdout for hash_seed in (1, 2)}
    assert len(outputs) == 1 and outputs.pop().strip()


def test_variants_pick_one_or_several(folders):
    assert expand("{a|b|c}", 3, folders) in {"a", "b", "c"}
    two = expand("{2$$a|b|c}", 3, folders).split(",")
    assert len(two) == 2 and len(set(two)) == 2 and set(two) <= {"a", "b", "c"}


def test_nested_wildcards_and_folders_resolve(folders):
    results = {expand("__people/jobs__", seed, folders) for seed in range(30)}
    assert results <= {"doctor", "chef in red", "chef in blue", "chef in green"}
    assert "doctor" in results and len(results) > 2


def test_first_folder_wins_a_name_defined_twice(folders):
    assert {expand("__colors__", seed, folders) for seed in range(20)} == {"red", "blue", "green"}
    assert expand("__colors__", 0, folders[::-1]) == "mauve"


def test_a1111_syntax_passes_through_unchanged(folders):
    prompt = "a (b:1.2) [c|d] [e:f:5] \\(x\\) BREAK g AND h:2"
    assert expand(prompt, 5, folders) == prompt


def test_missing_wildcard_names_itself_and_the_folders(folders):
    with pytest.raises(PromptError) as error:
        expand("a __hats__", 1, folders)
    message = str(error.value)
    assert "__hats__" in message and str(folders[0]) in message and str(folders[1]) in message
    with pytest.raises(PromptError, match="__hats__"):
        expand_all("__hats__", folders)
    with pytest.raises(PromptError, match="__hats__"):
        wildcard_files_used("__hats__", folders)


def test_missing_wildcard_with_no_folders_says_so():
    with pytest.raises(PromptError, match="no wildcard folders"):
        expand("__hats__", 1, [])


def test_malformed_template_is_a_prompt_error(folders):
    with pytest.raises(PromptError, match="template"):
        expand("{a|b", 1, folders)


def test_combinatorial_lists_every_expansion(folders):
    assert expand_all("{a|b} __colors__", folders) == [
        "a blue", "a green", "a red", "b blue", "b green", "b red"]
    assert len(expand_all("{a|b} __colors__", folders, limit=4)) == 4


def test_files_used_include_nested_wildcards(folders):
    recipe, configured = folders
    assert wildcard_files_used("__people/jobs__ and __animals__", folders) == sorted(
        [recipe / "colors.txt", recipe / "people" / "jobs.txt", configured / "animals.txt"])
    assert wildcard_files_used("no wildcards {a|b}", folders) == []
    assert wildcard_files_used("__loop__", folders) == [configured / "loop.txt"]
