"""The package as shipped: its list of subpackages, its declared dependencies, its install docs, no dead
public code, and a wheel that installs everything under `sdbake` only (imports: test_import_graph.py)."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:         # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# The folders at the top of the repository and the import names they install as.
FOLDERS = {"runner": "sdbake.runner", "stages": "sdbake.stages", "schemas": "sdbake.schemas", "sdbake": "sdbake"}
CODE = [ROOT / folder for folder in ("runner", "stages", "schemas")]

# Public names no code of ours calls, on purpose: what only another program calls by name. Empty today:
# `main` (the `sdbake` script), each command's `register` and each stage's `run` are also called by our code.
ENTRY_POINTS: frozenset[str] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = FOLDERS[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_package_list_is_every_folder_with_an_init():
    on_disk = {module_name(init.parent / "__init__.py") for folder in FOLDERS
               for init in (ROOT / folder).rglob("__init__.py")}
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == on_disk
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {name: folder for folder, name in FOLDERS.items()}


def test_install_docs_use_the_makefiles_torch():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    pinned = next(line.split(":=")[1].strip() for line in makefile.splitlines() if line.startswith("TORCH_VERSION"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for index in ("cpu", "cu130"):
        assert f"make install TORCH={index}" in readme
        assert f"torch=={pinned} --index-url https://download.pytorch.org/whl/{index}" in readme
        assert f"ifeq ($(TORCH),{index})" in makefile
    ci = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    assert "make install TORCH=cpu" in ci and "pip install torch" not in ci
    assert "make lint" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def imported_top_levels(paths) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"sdbake"}


def declared_distributions() -> set[str]:
    project = PYPROJECT["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


def test_every_third_party_import_is_declared():
    distributions = packages_distributions()
    # spandrel is optional (the upscalers extra) and need not be installed here to be declared.
    undeclared = {}
    for name in sorted(imported_top_levels(path for folder in FOLDERS for path in (ROOT / folder).rglob("*.py"))):
        provided_by = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
        if not provided_by & declared_distributions():
            undeclared[name] = sorted(provided_by)
    assert not undeclared, f"imported but not in pyproject dependencies: {undeclared}"


def public_definitions() -> list[tuple[str, str]]:
    found = []
    for folder in CODE:
        for path in sorted(folder.rglob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                        and not node.name.startswith("_"):
                    found.append((path.relative_to(ROOT).as_posix(), node.name))
    return found


def names_used_outside_tests() -> Counter:
    """How often each name is read (a call, an attribute, an import) in the code, benchmarks and
    training scripts; a definition is not a use of its own name."""
    used: Counter = Counter()
    for folder in [*FOLDERS, "bench", "models"]:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Name):
                    used[node.id] += 1
                elif isinstance(node, ast.Attribute):
                    used[node.attr] += 1
                elif isinstance(node, ast.alias):
                    used[node.name.rpartition(".")[2]] += 1
    return used


def test_the_public_name_scan_sees_known_code():
    assert ("runner/cache.py", "CacheStore") in public_definitions()
    assert names_used_outside_tests()["CacheStore"] > 0


def test_every_public_function_and_class_is_used_outside_tests():
    used = names_used_outside_tests()
    unused = [f"{path}: {name}" for path, name in public_definitions()
              if used[name] == 0 and name not in ENTRY_POINTS]
    assert not unused, "public but used by no code outside tests (remove it, or make it private):\n" + \
        "\n".join(unused)


@pytest.mark.slow
def test_the_wheel_installs_only_under_sdbake(tmp_path):
    # Build from a copy: a build in the checkout would leave build/ and egg-info behind. With build
    # isolation, as `pip install .` builds: the backend pyproject's [build-system] asks for.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("sdbake-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_levels = {name.split("/")[0] for name in names}
    assert {t for t in top_levels if not t.endswith(".dist-info")} == {"sdbake"}
    for module in ("sdbake/__init__.py", "sdbake/__main__.py", "sdbake/runner/cli.py", "sdbake/stages/sample.py",
                   "sdbake/schemas/recipe.py", "sdbake/runner/configs/clip_tokenizer/vocab.json"):
        assert module in names, module
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "sdbake = sdbake.runner.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
