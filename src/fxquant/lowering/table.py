"""The lowering table: every rule :mod:`fxquant.lowering.lower` applies, for both graph
dialects, in priority order within each stage.

Stages: 0 q/dq boundaries to quantized tensors; 1 int8 kernels (PT2E: fused conv/linear/add
kernels on aten patterns; FX: ``fxquant.nn`` quantized modules and ``torch.ops.quantized``
calls on torch-level patterns); 2 int8 GEMMs with float outputs; 3 weights of ops left in
float to constants. Each rule names the dialects it serves (``Dialect.PT2E`` for
``convert_pt2e``'s exported graphs, ``Dialect.FX`` for ``convert_fx``'s); the boundary rules
``dequantize`` and ``requantize`` serve both.

Not in the table: :data:`fxquant.lowering.rules.int8_matmul.INT8_MATMUL_RULES` (attention
whose matmuls were quantized, on int8 GEMMs), measured no faster on x86 than the default
recipe's fused float attention (``benchmarks/int8_attention.py``); pass
``rules=(*INT8_RULES, *INT8_MATMUL_RULES)`` to ``lower_to_int8`` to use them.
"""

from __future__ import annotations

from fxquant.lowering.rule import Dialect, LoweringRule
from fxquant.lowering.rules.boundaries import BOUNDARY_RULES
from fxquant.lowering.rules.conv import CONV_RULES
from fxquant.lowering.rules.elementwise import ELEMENTWISE_RULES
from fxquant.lowering.rules.folding import FOLDING_RULES
from fxquant.lowering.rules.fx_functional import FX_FUNCTIONAL_RULES
from fxquant.lowering.rules.fx_modules import FX_MODULE_RULES
from fxquant.lowering.rules.fx_ops import FX_OP_RULES
from fxquant.lowering.rules.linear import LINEAR_RULES

__all__ = ["INT8_RULES", "describe_rules", "rules_for"]

_FUSING = (*CONV_RULES, *LINEAR_RULES, *ELEMENTWISE_RULES)
# FX kernels: a functional conv/linear or a module call before the ops around it
_FX_KERNELS = (*FX_FUNCTIONAL_RULES, *FX_MODULE_RULES, *FX_OP_RULES)
_BY_NAME = {rule.name: rule for rule in BOUNDARY_RULES}
_BOUNDARIES = ("dropout_eval", "quantize", "fx_quantize", "dequantize", "requantize")

# within a stage the order is the priority: a fused kernel (conv+relu) is preferred to moving
# the quantize above the relu, which is the fallback that lets later ops meet their kernel
INT8_RULES: tuple[LoweringRule, ...] = tuple(
    sorted(
        (
            *(_BY_NAME[name] for name in _BOUNDARIES),
            *_FUSING,
            *_FX_KERNELS,
            _BY_NAME["sink_quantize"],
            *FOLDING_RULES,
        ),
        key=lambda rule: rule.stage,  # stable sort: keeps the order above within a stage
    )
)
assert {r.name for r in INT8_RULES} == {
    r.name for r in (*BOUNDARY_RULES, *_FUSING, *_FX_KERNELS, *FOLDING_RULES)
}, "every rule of every rule file is in the table"


def rules_for(dialect: Dialect, rules: tuple[LoweringRule, ...] = INT8_RULES) -> tuple[LoweringRule, ...]:
    """The rules of ``rules`` that serve ``dialect``, in table order."""
    return tuple(rule for rule in rules if dialect in rule.dialects)


def describe_rules(rules: tuple[LoweringRule, ...] = INT8_RULES) -> str:
    """A printable listing of the table: stage, name, dialects, exactness and pattern of each
    rule."""
    return "\n".join(
        f"{r.stage}  {r.name:24s} {_dialects(r):9s} {'exact ' if r.exact else '<=1 step'}  {r.doc}"
        for r in rules
    )


def _dialects(rule: LoweringRule) -> str:
    return "+".join(d.value for d in Dialect if d in rule.dialects)
