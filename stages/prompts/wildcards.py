"""Wildcards and variants (`__name__`, `__dir/name__`, `{a|b}`, `{2$$a|b|c}`) through the
`dynamicprompts` library, as A1111's sd-dynamic-prompts extension reads them. Random mode is seeded
by the image seed (Python's Mersenne Twister seeded with an int: the same picks on every machine);
combinatorial mode lists every expansion for sweeps. A1111's own syntax passes through untouched."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from sdbake.schemas.errors import PromptError

WILDCARD_SUFFIXES = (".txt", ".json", ".yaml")


def _existing_folders(wildcard_dirs) -> list[Path]:
    return [Path(folder) for folder in wildcard_dirs if Path(folder).is_dir()]


def _describe(wildcard_dirs) -> str:
    return ", ".join(str(Path(folder)) for folder in wildcard_dirs) or "(no wildcard folders)"


def _manager(wildcard_dirs):
    """A dynamicprompts WildcardManager over the folders, the first folder winning a name that
    several define, that raises PromptError for a wildcard with no file instead of printing it."""
    from dynamicprompts.wildcards import WildcardManager

    class StrictWildcardManager(WildcardManager):
        def get_values(self, wildcard):
            values = super().get_values(wildcard)
            if len(values) == 0:
                raise PromptError(f"wildcard __{wildcard}__ not found in: {_describe(wildcard_dirs)}")
            return values

    # later roots override earlier ones in dynamicprompts, so the first folder goes last
    return StrictWildcardManager(root_map={"": list(reversed(_existing_folders(wildcard_dirs)))})


def _parse_error(template: str, err: Exception) -> PromptError:
    return PromptError(f"cannot read prompt template {template!r}: {err}")


def _too_deep(template: str) -> PromptError:
    return PromptError(f"prompt template {template[:60]!r} nests too deep to expand (a wildcard that uses "
                       "itself, or variants inside variants)")


def expand(template: str, seed: int, wildcard_dirs=()) -> str:
    """One expansion of the template, picked with the image seed."""
    from dynamicprompts.generators import RandomPromptGenerator
    from pyparsing import ParseException

    generator = RandomPromptGenerator(wildcard_manager=_manager(wildcard_dirs), seed=int(seed))
    try:
        return generator.generate(template, 1)[0]
    except ParseException as err:
        raise _parse_error(template, err) from err
    except RecursionError:
        raise _too_deep(template) from None


def expand_all(template: str, wildcard_dirs=(), limit: int | None = None) -> list[str]:
    """Every expansion of the template (at most `limit`), in dynamicprompts' combinatorial order."""
    from dynamicprompts.generators import CombinatorialPromptGenerator
    from pyparsing import ParseException

    generator = CombinatorialPromptGenerator(wildcard_manager=_manager(wildcard_dirs))
    try:
        return generator.generate(template, limit)
    except ParseException as err:
        raise _parse_error(template, err) from err
    except RecursionError:
        raise _too_deep(template) from None


def _commands(node):
    """Every dynamicprompts command in a parsed template."""
    from dynamicprompts.commands.base import Command

    if isinstance(node, Command) or dataclasses.is_dataclass(node):
        yield node
        for field in dataclasses.fields(node):
            yield from _commands(getattr(node, field.name))
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from _commands(item)
    elif isinstance(node, dict):
        for item in node.values():
            yield from _commands(item)


def wildcard_files_used(template: str, wildcard_dirs=()) -> list[Path]:
    """The wildcard files an expansion of the template can read, whatever the seed (their hashes
    belong in the cache key). A wildcard whose name is computed (`__${var}__`) could be any file, so
    then every wildcard file in the folders is listed."""
    from dynamicprompts.commands import WildcardCommand
    from dynamicprompts.parser.parse import parse
    from pyparsing import ParseException

    manager = _manager(wildcard_dirs)
    every_file = sorted(path for folder in _existing_folders(wildcard_dirs) for path in folder.rglob("*")
                        if path.suffix in WILDCARD_SUFFIXES and path.is_file())
    used: set[Path] = set()
    seen_texts: set[str] = set()
    pending = [template]
    while pending:
        text = pending.pop()
        if text in seen_texts:
            continue
        seen_texts.add(text)
        try:
            parsed = parse(text)
        except ParseException as err:
            raise _parse_error(text, err) from err
        except RecursionError:
            raise _too_deep(text) from None
        for command in _commands(parsed):
            if not isinstance(command, WildcardCommand):
                continue
            if not isinstance(command.wildcard, str):
                return every_file
            values = manager.get_values(command.wildcard)     # raises PromptError when missing
            collections = list(manager.match_collections(command.wildcard)) or \
                list(manager.match_collections(f"**/{command.wildcard}"))
            for collection in collections:
                path = getattr(collection, "_path", None)
                if path is None:   # a collection from a .json/.yaml file: list those files
                    used.update(p for p in every_file if p.suffix in (".json", ".yaml"))
                else:
                    used.add(Path(path))
            pending.extend(str(value) for value in values)
    return sorted(used)
