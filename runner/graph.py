"""A run as one graph of distinct stage keys (DESIGN.md section 12).

The plans of every point of a sweep (or every recipe of a `check` suite) are merged: a stage whose
key appears in several plans is one node, so a shared prefix is computed once. A node depends on
the node that produces the state it reads. Executors (runner/executors/) walk this graph; the
graph itself imports no torch and no Ray.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sdbake.runner.plan import Invocation, Plan


@dataclass
class Node:
    key: str
    plan_index: int                    # the first plan that uses it: the one it is computed from
    inv_index: int                     # its place in that plan
    depends_on: str | None             # key of the node producing its input state (None: empty start)
    users: list[int] = field(default_factory=list)      # plan indexes that use this key

    def invocation(self, plans: list[Plan]) -> Invocation:
        return plans[self.plan_index].invocations[self.inv_index]


@dataclass
class StageGraph:
    plans: list[Plan]
    nodes: dict[str, Node]             # key -> node, in first-seen (dependency) order
    point_keys: list[list[str]]        # per plan, its stage keys in run order

    @classmethod
    def build(cls, plans: list[Plan]) -> StageGraph:
        nodes: dict[str, Node] = {}
        point_keys = []
        for plan_index, plan in enumerate(plans):
            producer: dict[str, str] = {}        # state key -> key of the node that made it
            previous_state: str | None = None
            keys = []
            for inv_index, inv in enumerate(plan.invocations):
                depends_on = producer.get(previous_state) if previous_state else None
                node = nodes.get(inv.key)
                if node is None:
                    node = nodes[inv.key] = Node(inv.key, plan_index, inv_index, depends_on)
                if plan_index not in node.users:
                    node.users.append(plan_index)
                if not inv.passes_state_through:
                    producer[inv.state_key] = inv.key
                previous_state = inv.state_key
                keys.append(inv.key)
            point_keys.append(keys)
        return cls(plans, nodes, point_keys)

    def invocation(self, key: str) -> Invocation:
        return self.nodes[key].invocation(self.plans)

    def plan_of(self, key: str) -> Plan:
        return self.plans[self.nodes[key].plan_index]

    @property
    def naive(self) -> int:
        return sum(len(keys) for keys in self.point_keys)

    def dependents(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {key: [] for key in self.nodes}
        for node in self.nodes.values():
            if node.depends_on:
                found[node.depends_on].append(node.key)
        return found

    def critical_path(self) -> list[str]:
        """The longest chain of dependent stage executions (keys, first to last): no executor,
        however many workers it has, finishes the run in fewer sequential steps."""
        depth: dict[str, int] = {}
        for key, node in self.nodes.items():              # insertion order is a topological order
            depth[key] = 1 + (depth[node.depends_on] if node.depends_on else 0)
        if not depth:
            return []
        key = max(depth, key=depth.get)
        chain = [key]
        while self.nodes[key].depends_on:
            key = self.nodes[key].depends_on
            chain.append(key)
        return chain[::-1]

    def stages_per_model(self) -> Counter:
        counts: Counter = Counter()
        for key in self.nodes:
            inv = self.invocation(key)
            counts[inv.model.model_name if inv.model else "(no model)"] += 1
        return counts

    def lines(self) -> list[str]:
        """What `sdbake plan` prints about the run as a whole."""
        points = len(self.plans)
        head = (f"graph: {points} point{'s' if points != 1 else ''}, {len(self.nodes)} stage executions "
                f"needed, {self.naive} naive")
        return [head, *self.detail_lines()]

    def detail_lines(self) -> list[str]:
        """The critical path and the stage executions per model."""
        text = []
        path = self.critical_path()
        if path:
            text.append(f"critical path: {len(path)} stages ({' -> '.join(self.invocation(k).id for k in path)})")
        per_model = self.stages_per_model()
        text.append("stages per model: " + ", ".join(f"{name} {count}" for name, count in sorted(per_model.items())))
        return text
