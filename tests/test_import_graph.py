"""Our modules import each other without cycles (imports inside functions included), and the
layering holds: schemas imports nothing of ours outside schemas, stages never imports runner."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"runner": "sdbake.runner", "stages": "sdbake.stages", "schemas": "sdbake.schemas", "sdbake": "sdbake"}


def module_files() -> dict[str, Path]:
    modules = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [package, *path.relative_to(ROOT / folder).with_suffix("").parts]
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that `name` imports anywhere in its file (the package `sdbake` itself excluded:
    every submodule's import runs it first, that is not an edge)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            target = ".".join(filter(None, [base, node.module]))
            found.update(f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m not in (name, "sdbake")}


def test_no_import_cycles():
    modules = module_files()
    graph = {name: imported(name, path, modules) for name, path in modules.items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(name: str, stack: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[name] = "done"
    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_layering():
    modules = module_files()
    for name, path in modules.items():
        targets = imported(name, path, modules)
        if name.startswith("sdbake.schemas"):
            assert all(t.startswith("sdbake.schemas") for t in targets), (name, targets)
            heavy = {alias.name.split(".")[0] for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                     if isinstance(node, ast.Import) for alias in node.names}
            heavy |= {node.module.split(".")[0] for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                      if isinstance(node, ast.ImportFrom) and node.module and not node.level}
            assert not heavy & {"torch", "diffusers", "transformers"}, (name, heavy)
        if name.startswith("sdbake.stages"):
            assert not any(t.startswith("sdbake.runner") for t in targets), (name, targets)
