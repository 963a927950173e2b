"""The last rule: a weight ``dequantize`` that no int8 kernel took (its op stays in float)
becomes a float constant computed once, instead of a dequantize on every call."""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering.graph import add_constant
from fxquant.lowering.rule import LoweringRule, Match
from fxquant.lowering.weights import float_weight
from fxquant.numerics.ops import quantized_decomposed as qd

__all__ = ["FOLDING_RULES"]


def _match_weight(node: Node, gm: GraphModule) -> Match | None:
    value = float_weight(gm, node)
    return None if value is None else {"value": value}


def _rewrite_weight(node: Node, m: Match, gm: GraphModule) -> Node:
    value: torch.Tensor = m["value"]
    return add_constant(gm, "float_weight", value.contiguous(), node)


FOLDING_RULES: tuple[LoweringRule, ...] = (
    LoweringRule(name="fold_weight_dequantize",
                 anchors=frozenset({qd.dequantize_per_channel.default, qd.dequantize_per_tensor.default}),
                 stage=3, match=_match_weight, rewrite=_rewrite_weight,
                 doc="dq(int8 constant) read by a float op -> float constant"),
)
