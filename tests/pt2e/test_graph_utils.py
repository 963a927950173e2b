"""graph_utils: sequential source partitions, equivalent types, traversal, producers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fxquant.pt2e.graph_utils import (
    bfs_trace_with_node_process,
    collect_producer_nodes,
    find_sequential_partitions,
    get_equivalent_types,
    update_equivalent_types_dict,
)

aten = torch.ops.aten


class ConvRelu(nn.Module):
    def __init__(self, functional: bool) -> None:
        super().__init__()
        self.conv, self.relu, self.functional = nn.Conv2d(3, 4, 1), nn.ReLU(), functional

    def forward(self, x):
        y = self.conv(x)
        return (F.relu(y) if self.functional else self.relu(y)), torch.sigmoid(x)


def _export(model, x=None):
    return torch.export.export(model.eval(), (x if x is not None else torch.randn(1, 3, 4, 4),)).module()


@pytest.mark.parametrize("functional", [False, True], ids=["module", "functional"])
def test_find_sequential_partitions_matches_module_and_functional_forms(functional):
    gm = _export(ConvRelu(functional))
    chains = find_sequential_partitions(gm, [nn.Conv2d, nn.ReLU])
    assert len(chains) == 1
    conv, relu = chains[0]
    assert conv.output_nodes[0].target == aten.conv2d.default and relu.output_nodes[0].target == aten.relu.default


def test_find_sequential_partitions_requires_connected_and_distinct_types():
    gm = _export(ConvRelu(False))
    assert find_sequential_partitions(gm, [nn.ReLU, nn.Conv2d]) == []  # relu does not feed conv
    with pytest.raises(ValueError, match="distinct"):
        find_sequential_partitions(gm, [nn.ReLU, F.relu])


def test_update_equivalent_types_dict_extends_matching():
    original = get_equivalent_types()
    gm = _export(ConvRelu(False))
    assert find_sequential_partitions(gm, [nn.Conv2d, nn.Sigmoid]) == []
    try:
        update_equivalent_types_dict([*original, {nn.Sigmoid, torch.sigmoid, "sigmoid"}])
        assert {nn.Sigmoid, torch.sigmoid, "sigmoid"} in get_equivalent_types()
    finally:
        update_equivalent_types_dict(original)
    assert get_equivalent_types() == original
    with pytest.raises(ValueError, match="equivalence classes"):
        update_equivalent_types_dict(None)


class Cond(nn.Module):
    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda t: t.cos(), lambda t: t.sin(), (x,))


def test_bfs_trace_visits_control_flow_subgraphs():
    gm = _export(Cond(), torch.randn(3))
    seen = []
    bfs_trace_with_node_process(gm, lambda n: seen.append(n.target))
    assert aten.cos.default in seen and aten.sin.default in seen
    assert "output" not in {getattr(t, "__name__", t) for t in seen if isinstance(t, str)}
    with pytest.raises(TypeError):
        bfs_trace_with_node_process(nn.Linear(2, 2), print)  # type: ignore[arg-type]


def test_collect_producer_nodes_stops_at_constants_and_refuses_activations():
    gm = _export(ConvRelu(False))
    conv = next(n for n in gm.graph.nodes if n.target == aten.conv2d.default)
    weight = conv.args[1]
    assert collect_producer_nodes(weight) == [weight]
    assert collect_producer_nodes(conv) is None  # depends on the input
