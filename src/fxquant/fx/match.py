"""Match a traced graph against the patterns of a :class:`~fxquant.backend_config.BackendConfig`.

Patterns are read in the reversed nested tuple format (see
:mod:`fxquant.backend_config.patterns`): ``(nn.ReLU, nn.Conv2d)`` matches a ReLU module
whose first argument is a conv module. As upstream's matcher does, the graph is walked from
its last node to its first, every node not yet claimed tries the patterns longest first, and
a matched inner node (all but the pattern's output) must have no other user.

A pattern element is a module type (compared by exact type), a function (compared by
identity), a method name, or :class:`~fxquant.backend_config.patterns.MatchAllNode`
(anything, not claimed by the match).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch.fx import GraphModule, Node

from fxquant.backend_config import BackendConfig, BackendPatternConfig
from fxquant.backend_config.patterns import MatchAllNode, Pattern

__all__ = ["PatternMatch", "find_matches", "pattern_length", "sorted_pattern_configs"]


@dataclass(frozen=True, kw_only=True)
class PatternMatch:
    """One occurrence of a backend pattern.

    ``nodes``: the claimed nodes in data-flow order (the root op first, the node whose
    output leaves the pattern last); ``config``: the backend's pattern config.
    """

    pattern: Pattern
    config: BackendPatternConfig
    nodes: tuple[Node, ...]
    root: Node

    @property
    def output(self) -> Node:
        """The node whose output leaves the pattern."""
        return self.nodes[-1]


def pattern_length(pattern: Pattern) -> int:
    """How many ops ``pattern`` names, counting nested tuples (longer patterns match first)."""
    if isinstance(pattern, tuple):
        return sum(pattern_length(p) for p in pattern)
    return 1


def sorted_pattern_configs(
    backend_config: BackendConfig, keep: Callable[[BackendPatternConfig], bool] | None = None,
) -> list[tuple[Pattern, BackendPatternConfig]]:
    """The backend's (pattern, config) pairs that ``keep`` accepts, longest pattern first
    (stable: equally long patterns stay in the backend's order)."""
    pairs = [(p, c) for p, c in backend_config._pattern_complex_format_to_config.items()
             if keep is None or keep(c)]
    return sorted(pairs, key=lambda pc: -pattern_length(pc[0]) if isinstance(pc[0], tuple) else -1)


def _op_matches(gm: GraphModule, node: Node, op: Any) -> bool:
    if isinstance(op, type) and issubclass(op, MatchAllNode):
        return True
    if isinstance(op, type):
        return node.op == "call_module" and type(gm.get_submodule(str(node.target))) is op
    if isinstance(op, str):
        return node.op == "call_method" and node.target == op
    return node.op == "call_function" and node.target is op


def _is_match(gm: GraphModule, node: Any, pattern: Pattern, *, inner: bool) -> bool:
    op, arg_patterns = (pattern[0], pattern[1:]) if isinstance(pattern, tuple) else (pattern, ())
    if isinstance(op, type) and issubclass(op, MatchAllNode):
        return True
    if not isinstance(node, Node) or (inner and len(node.users) > 1):
        return False
    if not _op_matches(gm, node, op):
        return False
    if not arg_patterns:
        return True
    if len(arg_patterns) != len(node.args):
        return False
    return all(_is_match(gm, a, p, inner=True) for a, p in zip(node.args, arg_patterns))


def _claimed(node: Node, pattern: Pattern, out: list[Node]) -> None:
    """The nodes ``pattern`` claims, output first (MatchAllNode claims nothing)."""
    op, arg_patterns = (pattern[0], pattern[1:]) if isinstance(pattern, tuple) else (pattern, ())
    if isinstance(op, type) and issubclass(op, MatchAllNode):
        return
    out.append(node)
    for arg, sub in zip(node.args, arg_patterns):
        assert isinstance(arg, Node) or (isinstance(sub, type) and issubclass(sub, MatchAllNode))
        if isinstance(arg, Node):
            _claimed(arg, sub, out)


def _root(match_nodes: list[Node], config: BackendPatternConfig, pattern: Pattern) -> Node:
    getter = config._root_node_getter
    if getter is None:
        return match_nodes[-1]
    root: Node = getter(_node_pattern(match_nodes[0], pattern))
    return root


def _node_pattern(node: Node, pattern: Pattern) -> Any:
    """The matched nodes in the pattern's own nesting (what root-node getters receive)."""
    if not isinstance(pattern, tuple):
        return node
    return (node, *(_node_pattern(a, p) if isinstance(a, Node) else a
                    for a, p in zip(node.args, pattern[1:])))


def _node_key(gm: GraphModule, node: Node) -> Any:
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target)))
    return node.target


def _by_output_op(pairs: Iterable[tuple[Pattern, BackendPatternConfig]]) -> dict[Any, list[tuple[Pattern, BackendPatternConfig]]]:
    """The pairs grouped by the op at the pattern's output (order kept within a group), so
    each node tries only the patterns that can end in it."""
    index: dict[Any, list[tuple[Pattern, BackendPatternConfig]]] = {}
    for pattern, config in pairs:
        op = pattern[0] if isinstance(pattern, tuple) else pattern
        index.setdefault(op, []).append((pattern, config))
    return index


def find_matches(
    gm: GraphModule,
    pairs: Iterable[tuple[Pattern, BackendPatternConfig]],
    accept: Callable[[PatternMatch], bool] | None = None,
) -> dict[Node, PatternMatch]:
    """Every node of ``gm`` that some pattern of ``pairs`` claims → its match.

    ``pairs`` should be longest first (:func:`sorted_pattern_configs`); ``accept`` may
    reject a candidate match (the node then tries the next pattern). Linear in the number
    of nodes: each node tries only the patterns ending in its own op.
    """
    index = _by_output_op(pairs)
    result: dict[Node, PatternMatch] = {}
    for node in reversed(gm.graph.nodes):
        if node in result or node.op not in ("call_module", "call_function", "call_method"):
            continue
        try:
            candidates = index.get(_node_key(gm, node), [])
        except TypeError:  # an unhashable call target matches no pattern
            continue
        for pattern, config in candidates:
            if not _is_match(gm, node, pattern, inner=False):
                continue
            claimed: list[Node] = []
            _claimed(node, pattern, claimed)
            if any(n in result for n in claimed):
                continue
            match = PatternMatch(pattern=pattern, config=config, nodes=tuple(reversed(claimed)),
                                 root=_root(claimed, config, pattern))
            if accept is not None and not accept(match):
                continue
            for n in claimed:
                result[n] = match
            break
    return result
