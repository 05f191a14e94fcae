"""Reading a ComfyUI workflow file: the API format (node id -> class_type and inputs) as is, and the UI
format (nodes and links arrays, widget values by position) turned into the API format, with the
frontend-only nodes (Reroute, PrimitiveNode, notes) and bypassed nodes resolved away."""
from __future__ import annotations

import json
from pathlib import Path

from sdbake.runner.interop.comfy_nodes import input_specs, node_definitions
from sdbake.schemas.errors import RecipeError

NOTES = frozenset({"Note", "MarkdownNote"})
MUTED, BYPASSED = 2, 4          # LiteGraph node modes: "never" and "bypass"
# Input types that are values typed into the node (widgets); every other type arrives through a link.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})


def widget_names(class_type: str) -> list[str]:
    """The widget inputs of a node in the order the UI format's widgets_values lists them; the extra
    values ComfyUI's frontend adds are named `<control>` and `<upload>`."""
    names = []
    specs = input_specs(node_definitions()[class_type])
    for name, spec, _required in specs:
        if isinstance(spec[0], list) or spec[0] in WIDGET_TYPES:
            names.append(name)
            if spec[1].get("control_after_generate"):
                names.append("<control>")
    if any(spec[1].get("image_upload") for _name, spec, _required in specs):
        names.append("<upload>")
    return names


def read_workflow(path: Path) -> dict[str, dict]:
    """node id -> {"class_type", "inputs", "title"}; links are [node id, output index]."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError("no such workflow file", file=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecipeError(f"not a ComfyUI workflow: {err}", file=str(path)) from None
    if isinstance(document, dict) and isinstance(document.get("nodes"), list):
        return _from_ui(document, path)
    if isinstance(document, dict) and isinstance(document.get("prompt"), dict):
        document = document["prompt"]         # a /prompt request body
    if not isinstance(document, dict) or not document or not all(
            isinstance(node, dict) and "class_type" in node for node in document.values()):
        raise RecipeError("not a ComfyUI workflow: expected the API format (node id -> class_type, inputs) "
                          "or the UI format (nodes, links)", file=str(path))
    return {str(node_id): {"class_type": node["class_type"], "inputs": dict(node.get("inputs") or {}),
                           "title": (node.get("_meta") or {}).get("title")} for node_id, node in document.items()}


def _from_ui(document: dict, path: Path) -> dict[str, dict]:
    nodes = {str(node["id"]): node for node in document["nodes"] if isinstance(node, dict) and "id" in node}
    links = {}
    for link in document.get("links") or []:
        if isinstance(link, dict):     # newer frontends write links as objects
            link = [link.get("id"), link.get("origin_id"), link.get("origin_slot"), link.get("target_id"),
                    link.get("target_slot"), link.get("type")]
        links[link[0]] = link

    def source(link_id, depth=0):
        """The [node id, output] a link really comes from, or the literal value of a PrimitiveNode."""
        link = links.get(link_id)
        if link is None or depth > len(nodes):
            return None
        node = nodes.get(str(link[1]))
        if node is None:
            return None
        if node.get("type") == "PrimitiveNode":
            return {"value": (node.get("widgets_values") or [None])[0]}
        if node.get("type") == "Reroute" or node.get("mode") == BYPASSED:
            # a bypassed node passes on its first input of the output's type
            wanted = (node.get("outputs") or [{}])[link[2]].get("type") if node.get("outputs") else None
            for inp in node.get("inputs") or []:
                if inp.get("link") is not None and (node.get("type") == "Reroute" or inp.get("type") == wanted):
                    return source(inp["link"], depth + 1)
            return None
        return [str(link[1]), link[2]]

    api = {}
    for node_id, node in nodes.items():
        kind = node.get("type")
        if kind in NOTES or kind in ("Reroute", "PrimitiveNode") or node.get("mode") in (MUTED, BYPASSED):
            continue
        inputs = _widget_inputs(kind, node.get("widgets_values"))
        for inp in node.get("inputs") or []:
            if inp.get("link") is not None:
                found = source(inp["link"])
                if isinstance(found, dict):
                    inputs[inp["name"]] = found["value"]
                elif found is not None:
                    inputs[inp["name"]] = found
        api[node_id] = {"class_type": kind, "inputs": inputs, "title": node.get("title")}
    return api


def _widget_inputs(kind: str, values) -> dict:
    if isinstance(values, dict):          # some frontends save widgets by name
        return dict(values)
    if kind not in node_definitions() or not isinstance(values, list):
        return {}
    inputs, position = {}, 0
    for name in widget_names(kind):
        if position >= len(values) or name == "<upload>":
            break
        if name == "<control>":           # only workflows saved after ComfyUI added it have this value
            position += values[position] in CONTROL_VALUES
            continue
        inputs[name] = values[position]
        position += 1
    return inputs
