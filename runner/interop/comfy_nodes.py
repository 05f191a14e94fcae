"""ComfyUI's core node definitions (comfyui_nodes.json, in the shape of ComfyUI's /object_info) and a
check of an API-format workflow against them: what ComfyUI itself verifies before it queues a prompt."""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

NODES_FILE = Path(__file__).with_name("comfyui_nodes.json")


@cache
def node_definitions() -> dict[str, dict]:
    return json.loads(NODES_FILE.read_text(encoding="utf-8"))["nodes"]


def input_specs(definition: dict) -> list[tuple[str, list, bool]]:
    """(name, [type, options], required) of each input, in ComfyUI's order."""
    found = []
    for group in ("required", "optional"):
        for name in definition["input_order"].get(group, []):
            found.append((name, definition["input"][group][name], group == "required"))
    return found


def validate_workflow(workflow: dict, definitions: dict | None = None) -> list[str]:
    """Every problem ComfyUI would refuse the API-format `workflow` for, one line each naming the node:
    unknown class, missing required input, a link to a missing node or output or of the wrong type, a
    value of the wrong type, outside its range or not among its choices. Empty when it would queue."""
    definitions = definitions if definitions is not None else node_definitions()
    problems = []
    for node_id, node in workflow.items():
        where = f"node {node_id}"
        class_type = node.get("class_type") if isinstance(node, dict) else None
        if class_type not in definitions:
            problems.append(f"{where}: unknown node class {class_type!r}")
            continue
        where += f" ({class_type})"
        inputs = node.get("inputs", {})
        specs = input_specs(definitions[class_type])
        known = {name for name, _spec, _req in specs}
        problems += [f"{where}: unknown input {name!r}" for name in inputs if name not in known]
        for name, spec, required in specs:
            if name not in inputs:
                if required:
                    problems.append(f"{where}: required input {name!r} is missing")
                continue
            problem = _check_input(workflow, definitions, inputs[name], spec)
            if problem:
                problems.append(f"{where}: input {name!r}: {problem}")
    return problems


def _check_input(workflow: dict, definitions: dict, value, spec: list) -> str | None:
    kind, options = spec[0], spec[1]
    if isinstance(value, list):                 # a link: [source node id, output index]
        if len(value) != 2 or not isinstance(value[1], int):
            return f"a link is [node id, output index] (got {value!r})"
        source = workflow.get(str(value[0]))
        if not isinstance(source, dict) or source.get("class_type") not in definitions:
            return f"links to node {value[0]!r}, which is not in the workflow"
        outputs = definitions[source["class_type"]]["output"]
        if not 0 <= value[1] < len(outputs):
            return f"links to output {value[1]} of node {value[0]}, which has {len(outputs)} output(s)"
        wanted = "COMBO" if isinstance(kind, list) else kind
        if outputs[value[1]] != wanted:
            return f"needs {wanted}, but output {value[1]} of node {value[0]} is {outputs[value[1]]}"
        return None
    if isinstance(kind, list):
        return None if value in kind else f"{value!r} is not one of {', '.join(map(str, kind))}"
    if kind == "COMBO":
        return None if isinstance(value, str) and value else f"needs a file name (got {value!r})"
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"needs an integer (got {value!r})"
    elif kind == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"needs a number (got {value!r})"
    elif kind == "STRING":
        return None if isinstance(value, str) else f"needs a string (got {value!r})"
    elif kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"needs true or false (got {value!r})"
    else:
        return f"needs a link to a {kind} output (got the value {value!r})"
    if "min" in options and value < options["min"]:
        return f"{value} is below the minimum {options['min']}"
    if "max" in options and value > options["max"]:
        return f"{value} is above the maximum {options['max']}"
    return None
