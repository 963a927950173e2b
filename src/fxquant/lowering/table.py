"""The int8 lowering table: every rule :func:`fxquant.lowering.lower_to_int8` applies, in
priority order within each stage (stage 0: q/dq boundaries to quantized tensors; 1: int8
kernels; 2: int8 GEMMs with float outputs; 3: weights of ops left in float to constants)."""

from __future__ import annotations

from fxquant.lowering.rule import LoweringRule
from fxquant.lowering.rules.boundaries import BOUNDARY_RULES
from fxquant.lowering.rules.conv import CONV_RULES
from fxquant.lowering.rules.elementwise import ELEMENTWISE_RULES
from fxquant.lowering.rules.folding import FOLDING_RULES
from fxquant.lowering.rules.linear import LINEAR_RULES

__all__ = ["INT8_RULES", "describe_rules"]

_FUSING = (*CONV_RULES, *LINEAR_RULES, *ELEMENTWISE_RULES)
_BY_NAME = {rule.name: rule for rule in BOUNDARY_RULES}

# within a stage the order is the priority: a fused kernel (conv+relu) is preferred to moving
# the quantize above the relu, which is the fallback that lets later ops meet their kernel
INT8_RULES: tuple[LoweringRule, ...] = tuple(
    sorted(
        (
            *(_BY_NAME[name] for name in ("dropout_eval", "quantize", "dequantize", "requantize")),
            *_FUSING,
            _BY_NAME["sink_quantize"],
            *FOLDING_RULES,
        ),
        key=lambda rule: rule.stage,  # stable sort: keeps the order above within a stage
    )
)
assert {r.name for r in INT8_RULES} == {r.name for r in (*BOUNDARY_RULES, *_FUSING, *FOLDING_RULES)}


def describe_rules(rules: tuple[LoweringRule, ...] = INT8_RULES) -> str:
    """A printable listing of the table: stage, name, exactness and pattern of each rule."""
    return "\n".join(
        f"{r.stage}  {r.name:24s} {'exact ' if r.exact else '<=1 step'}  {r.doc}" for r in rules
    )
