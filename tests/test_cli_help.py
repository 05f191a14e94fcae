"""The command line explains itself: every (sub)command has a description and an example, every option
a help line, and every one of them takes -v/--verbose and --debug."""
from __future__ import annotations

import argparse

import pytest
from sdbake.runner.cli import build_parser, main


def all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """(name, parser) for `sdbake` and every command and subcommand under it."""
    found, todo = [], [("sdbake", build_parser())]
    while todo:
        name, parser = todo.pop()
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}", child) for sub, child in action.choices.items()]
    return sorted(found, key=lambda item: item[0])


PARSERS = all_parsers()
COMMANDS = [name for name, _ in PARSERS]


def test_the_walk_finds_nested_subcommands():
    assert {"sdbake run", "sdbake cache gc", "sdbake prompt expand", "sdbake models ls"} <= set(COMMANDS)


@pytest.mark.parametrize("name,parser", PARSERS, ids=COMMANDS)
def test_every_command_has_a_description_and_an_example(name, parser):
    assert parser.description and len(parser.description) > 10, name
    assert parser.epilog and parser.epilog.startswith("example"), name
    examples = [line.strip() for line in parser.epilog.splitlines()[1:]]
    # Each example is a command line of this very command (the top level's may name any command).
    assert examples and all(line.startswith(("sdbake", "git ")) for line in examples), name
    assert any(line.startswith(name) for line in examples) or name == "sdbake", (name, examples)


@pytest.mark.parametrize("name,parser", PARSERS, ids=COMMANDS)
def test_every_option_and_argument_has_help(name, parser):
    undocumented = [action.option_strings or action.dest for action in parser._actions
                    if not action.help or action.help == argparse.SUPPRESS]
    assert not undocumented, (name, undocumented)


@pytest.mark.parametrize("name,parser", PARSERS, ids=COMMANDS)
def test_every_command_takes_verbose_and_debug(name, parser):
    options = {option for action in parser._actions for option in action.option_strings}
    assert {"-v", "--verbose", "--debug"} <= options, name


def test_help_shows_the_examples_as_written(capsys):
    with pytest.raises(SystemExit):
        main(["cache", "gc", "--help"])
    assert "\nexamples:\n  sdbake cache gc --max-size 2G\n  sdbake cache gc --older-than 30\n" in capsys.readouterr().out


def test_an_error_is_one_line_and_with_debug_a_traceback(tmp_path, capsys):
    missing = str(tmp_path / "missing.toml")
    for argv in (["validate", missing], ["canonical", missing]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "missing.toml" in err and "Traceback" not in err
    for argv in (["canonical", missing, "--debug"], ["--debug", "canonical", missing]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):"), err
        assert "missing.toml" in err.strip().splitlines()[-1]


def test_verbose_logs_the_config_file_and_the_stage_cache(tmp_path, monkeypatch, capsys, isolated_env):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sdbake.toml").write_text('[folders]\ncheckpoints = ["ckpts"]\n')
    assert main(["models", "ls"]) == 0
    assert "sdbake.toml" not in capsys.readouterr().err          # quiet by default
    assert main(["models", "ls", "-v"]) == 0
    assert f"model folders from {tmp_path / 'sdbake.toml'}" in capsys.readouterr().err
    assert main(["cache", "-v", "ls"]) == 0
    assert f"stage cache: {isolated_env.cache / 'sdbake' / 'stages'}" in capsys.readouterr().err
