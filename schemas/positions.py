"""Where each key of a recipe file is (line, column), so every error can name file:line:col.

tomllib and yaml.safe_load return plain data without positions; these scanners map each path
(`("stages", 2, "denoise")`) to the 1-based line and column of its key, or of the item for list
elements. A path that is absent (a missing key) is reported at its nearest present parent.
"""
from __future__ import annotations

from typing import Any

import yaml

Path = tuple[Any, ...]
Positions = dict[Path, tuple[int, int]]


def nearest(positions: Positions, path: Path) -> tuple[int, int] | None:
    for cut in range(len(path), -1, -1):
        if path[:cut] in positions:
            return positions[path[:cut]]
    return None


# ---- YAML -------------------------------------------------------------------------------------

def yaml_positions(text: str) -> tuple[Positions, list[tuple[Path, str]]]:
    """Positions from the composed node tree, and the structural problems: duplicate keys (which
    PyYAML silently drops) and aliases that contain themselves (which no recipe value can be)."""
    positions: Positions = {(): (1, 1)}
    problems: list[tuple[Path, str]] = []
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is None:
        return positions, problems
    walked: set[int] = set()      # an aliased node is walked once: `*a` repeated must not cost exponential time
    open_nodes: set[int] = set()

    def walk(node: yaml.Node, path: Path) -> None:
        if id(node) in open_nodes:
            problems.append((path, "this alias refers to a node that contains it (a recursive structure)"))
            return
        if id(node) in walked:
            return
        walked.add(id(node))
        open_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else id(key_node)
                if key in seen:
                    problems.append((path + (key,), f"duplicate key `{key}`"))
                seen.add(key)
                positions[path + (key,)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                walk(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                positions[path + (index,)] = (item.start_mark.line + 1, item.start_mark.column + 1)
                walk(item, path + (index,))
        open_nodes.discard(id(node))

    walk(root, ())
    return positions, problems


# ---- TOML -------------------------------------------------------------------------------------

class _TomlScanner:
    """Just enough of TOML's grammar to find where keys and array items start."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.line = 1
        self.line_start = 0
        self.positions: Positions = {(): (1, 1)}
        self.array_table_counts: dict[Path, int] = {}

    def here(self) -> tuple[int, int]:
        return self.line, self.pos - self.line_start + 1

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def advance(self, n: int = 1) -> None:
        for _ in range(n):
            if self.pos < len(self.text) and self.text[self.pos] == "\n":
                self.line += 1
                self.line_start = self.pos + 1
            self.pos += 1

    def skip_blank(self, newlines: bool) -> None:
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in " \t\r" or (newlines and ch == "\n"):
                self.advance()
            elif ch == "#":
                while self.pos < len(self.text) and self.text[self.pos] != "\n":
                    self.advance()
            else:
                return

    def skip_string(self) -> str:
        quote = self.peek()
        start = self.pos
        if self.peek(3) == quote * 3:
            self.advance(3)
            while self.pos < len(self.text) and self.peek(3) != quote * 3:
                self.advance(2 if quote == '"' and self.peek() == "\\" else 1)
            self.advance(3)
            while self.peek() == quote:     # up to two quotes may end a multi-line string
                self.advance()
        else:
            self.advance()
            while self.pos < len(self.text) and self.peek() not in (quote, "\n"):
                self.advance(2 if quote == '"' and self.peek() == "\\" else 1)
            self.advance()
        return self.text[start:self.pos]

    def read_key(self) -> list[str]:
        parts = []
        while True:
            self.skip_blank(newlines=False)
            if self.peek() in ('"', "'"):
                raw = self.skip_string()
                parts.append(raw[1:-1])
            else:
                start = self.pos
                while self.pos < len(self.text) and (self.peek().isalnum() or self.peek() in "_-"):
                    self.advance()
                parts.append(self.text[start:self.pos])
            self.skip_blank(newlines=False)
            if self.peek() != ".":
                return parts
            self.advance()

    def read_value(self, path: Path) -> None:
        self.skip_blank(newlines=False)
        ch = self.peek()
        if ch in ('"', "'"):
            self.skip_string()
        elif ch == "[":
            self.advance()
            index = 0
            while True:
                self.skip_blank(newlines=True)
                if self.peek() in ("]", ""):
                    self.advance()
                    return
                self.positions[path + (index,)] = self.here()
                self.read_value(path + (index,))
                index += 1
                self.skip_blank(newlines=True)
                if self.peek() == ",":
                    self.advance()
        elif ch == "{":
            self.advance()
            while True:
                self.skip_blank(newlines=False)
                if self.peek() in ("}", "", "\n"):
                    self.advance()
                    return
                self.key_value(path)
                self.skip_blank(newlines=False)
                if self.peek() == ",":
                    self.advance()
        else:
            while self.pos < len(self.text) and self.peek() not in ",]}\n#":
                self.advance()

    def key_value(self, table: Path) -> None:
        at = self.here()
        key = self.read_key()
        full = table + tuple(key)
        self.positions.setdefault(full, at)
        if self.peek() == "=":
            self.advance()
            self.read_value(full)

    def table_path(self, key: list[str]) -> Path:
        """`[[stages.ops]]` names the `ops` of the latest `[[stages]]` table: insert that table's index."""
        path: Path = ()
        for depth, part in enumerate(key, start=1):
            path += (part,)
            if depth < len(key) and path in self.array_table_counts:
                path += (self.array_table_counts[path] - 1,)
        return path

    def scan(self) -> Positions:
        table: Path = ()
        while True:
            self.skip_blank(newlines=True)
            if self.pos >= len(self.text):
                return self.positions
            at = self.here()
            if self.peek(2) == "[[":
                self.advance(2)
                name = self.table_path(self.read_key())
                index = self.array_table_counts.get(name, 0)
                self.array_table_counts[name] = index + 1
                table = name + (index,)
                self.positions.setdefault(name, at)
                self.positions[table] = at
            elif self.peek() == "[":
                self.advance()
                table = self.table_path(self.read_key())
                self.positions.setdefault(table, at)
            else:
                self.key_value(table)
            while self.pos < len(self.text) and self.peek() != "\n":   # rest of the line
                self.advance()


def toml_positions(text: str) -> Positions:
    try:
        return _TomlScanner(text).scan()
    except (IndexError, ValueError):   # the document parsed; positions are a courtesy, never a crash
        return {(): (1, 1)}
