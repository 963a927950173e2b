"""Insert the planned observers into the graph (the only mutating step of prepare).

Walking nodes in graph order, for each node:

1. each annotated input edge ``(producer, node)`` reads through its group's observer — the
   producer's output observer when they share a group, else an observer inserted once per
   (group, producer) and reused by every consumer in that group;
2. an annotated tensor output gets its group's observer, and every user of the node is
   redirected to read the observed value.
"""

from __future__ import annotations

from torch import nn
from torch.fx import GraphModule, Node

from fxquant.engine.plan import ObserverPlan, is_tensor_node

__all__ = ["OBSERVER_PREFIX", "insert_observers"]

OBSERVER_PREFIX = "activation_post_process_"


class _Inserter:
    def __init__(self, gm: GraphModule, plan: ObserverPlan, observers: list[nn.Module]) -> None:
        self.gm, self.plan = gm, plan
        self._next_index = 0  # names are searched from here on: linear in the observer count
        self.names = [self._register(obs) for obs in observers]
        self.source_of: dict[Node, Node] = {}  # observer node -> the node it observes
        self.output_obs: dict[Node, Node] = {}  # node -> its output observer node
        self.edge_obs: dict[tuple[int, Node], Node] = {}  # (group, producer) -> observer node

    def _register(self, observer: nn.Module) -> str:
        while hasattr(self.gm, f"{OBSERVER_PREFIX}{self._next_index}"):
            self._next_index += 1
        name = f"{OBSERVER_PREFIX}{self._next_index}"
        self._next_index += 1
        self.gm.add_submodule(name, observer)
        return name

    def _observe(self, group: int, value: Node) -> Node:
        with self.gm.graph.inserting_after(value):
            obs_node = self.gm.graph.call_module(self.names[group], (value,))
        obs_node.meta["val"] = value.meta.get("val")
        self.source_of[obs_node] = self.source_of.get(value, value)
        return obs_node

    def input_edges(self, node: Node) -> None:
        for arg in list(node.all_input_nodes):
            producer = self.source_of.get(arg, arg)
            group = self.plan.group_of.get((producer, node))
            if group is None:
                continue
            if self.plan.group_of.get(producer) == group and producer in self.output_obs:
                continue  # already reading the shared output observer
            key = (group, producer)
            if key not in self.edge_obs:
                self.edge_obs[key] = self._observe(group, arg)
            node.replace_input_with(arg, self.edge_obs[key])

    def output(self, node: Node) -> None:
        group = self.plan.group_of.get(node)
        if group is None or not is_tensor_node(node):
            return
        obs_node = self._observe(group, node)
        self.output_obs[node] = obs_node
        for user in list(node.users):
            if user is not obs_node:
                user.replace_input_with(node, obs_node)


def insert_observers(gm: GraphModule, plan: ObserverPlan, observers: list[nn.Module]) -> GraphModule:
    """Attach ``observers[g]`` (as ``activation_post_process_<i>`` submodules) and call them
    where ``plan`` says; returns ``gm``, linted and recompiled."""
    inserter = _Inserter(gm, plan, observers)
    for node in list(gm.graph.nodes):
        if node in inserter.source_of:
            continue
        inserter.input_edges(node)
        inserter.output(node)
    gm.graph.lint()
    gm.recompile()
    return gm
