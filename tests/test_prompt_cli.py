"""`sdbake prompt ...` run in-process: output, warnings and exit codes."""
from __future__ import annotations

import json

import pytest
from sdbake.runner.cli import main


def run(capsys, *argv):
    code = main(["prompt", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_schedule_json_matches_the_parser(capsys):
    code, out, err = run(capsys, "schedule", "a [cat:dog:5] AND b:0.5", "--steps", "20", "--json")
    assert code == 0 and err == ""
    result = json.loads(out)
    assert result["parts"] == [
        {"text": "a [cat:dog:5]", "weight": 1.0, "schedule": [[5, "a cat"], [20, "a dog"]]},
        {"text": " b", "weight": 0.5, "schedule": [[20, " b"]]},
    ]


def test_schedule_text_shows_the_steps_each_entry_covers(capsys):
    code, out, _ = run(capsys, "schedule", "[cat:dog:5]", "--steps", "20")
    assert code == 0
    assert "(steps 0-5)  'cat'" in out and "(steps 6-19)  'dog'" in out


def test_schedule_hires_steps(capsys):
    code, out, _ = run(capsys, "schedule", "[a:b:1.5]", "--steps", "20", "--hires-steps", "10", "--json")
    assert code == 0
    assert json.loads(out)["parts"][0]["schedule"] == [[5, "a"], [10, "b"]]


@pytest.mark.parametrize("prompt", ["a [cat:dog", "[a:b:five]", "a | b"])
def test_schedule_warns_when_the_prompt_does_not_parse(capsys, prompt):
    code, out, err = run(capsys, "schedule", prompt, "--json")
    assert code == 0
    assert err.startswith("warning:")
    assert json.loads(out)["parts"][0]["schedule"] == [[20, prompt]]


def test_weights_json(capsys):
    code, out, err = run(capsys, "weights", "a (b:1.5) BREAK c", "--json")
    assert code == 0 and err == ""
    assert json.loads(out) == [["a ", 1.0], ["b", 1.5], ["", 1.0], ["BREAK", -1], ["c", 1.0]]


def test_weights_text_and_warning(capsys):
    code, out, err = run(capsys, "weights", "(open")
    assert code == 0
    assert "1.1000  'open'" in out and "left open" in err


def test_tokens_lists_ids_and_strings(capsys):
    code, out, err = run(capsys, "tokens", "a photo of a cat")
    assert code == 0 and err == ""
    assert "5 tokens in 1 chunk(s)" in out
    assert "1125  photo</w>" in out and "2368  cat</w>" in out


def test_tokens_underscore_is_its_own_token(capsys):
    _, out, _ = run(capsys, "tokens", "blue_eyes")
    assert "318  _</w>" in out


def test_tokens_warn_when_text_runs_past_a_chunk(capsys):
    code, out, err = run(capsys, "tokens", " ".join(["cat"] * 80))
    assert code == 0
    assert "chunk 2 (5/75)" in out
    assert "warning: chunk 1 is full" in err


def test_tokens_with_a_missing_model_is_an_error(capsys, tmp_path):
    code, _, err = run(capsys, "tokens", "cat", "--model", str(tmp_path / "nope"))
    assert code == 1 and "not found" in err


def test_tokens_uses_a_diffusers_folder_tokenizer(capsys, tmp_path):
    from sdbake.runner.commands.prompt import load_tokenizer
    load_tokenizer(None).save_pretrained(str(tmp_path / "model" / "tokenizer"))
    code, out, _ = run(capsys, "tokens", "a cat", "--model", str(tmp_path / "model"))
    assert code == 0 and "2368  cat</w>" in out


def test_expand_with_seed_and_count(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)          # no sdbake.toml here: only --wildcards folders
    (tmp_path / "wc").mkdir()
    (tmp_path / "wc" / "animals.txt").write_text("cat\ndog\nowl\n")
    code, out, _ = run(capsys, "expand", "a __animals__", "--seed", "5", "--count", "3", "--wildcards", str(tmp_path / "wc"))
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3 and all(line in {"a cat", "a dog", "a owl"} for line in lines)
    _, again, _ = run(capsys, "expand", "a __animals__", "--seed", "6", "--wildcards", str(tmp_path / "wc"))
    assert again.splitlines() == lines[1:2]          # image i of seed s is seed s + i


def test_expand_combinatorial(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "expand", "{a|b} {c|d}", "--combinatorial")
    assert code == 0 and out.splitlines() == ["a c", "a d", "b c", "b d"]


def test_expand_missing_wildcard_exits_1_naming_it(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "expand", "__hats__", "--wildcards", str(tmp_path))
    assert code == 1 and out == ""
    assert "__hats__" in err and str(tmp_path) in err


def test_prompt_without_action_prints_help(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "schedule" in err
