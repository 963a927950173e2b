"""convert, second half: lower the reference model to torch's quantized CPU kernels.

The patterns live in the one lowering table (:data:`fxquant.lowering.INT8_RULES`, the rules
serving ``Dialect.FX``; ``describe_rules()`` lists them) and are applied by its one loop
(:func:`fxquant.lowering.lower.apply_rules`):

1. every per-tensor quantize becomes ``torch.quantize_per_tensor`` (a quantized tensor) and
   its dequantize ``Tensor.dequantize`` (``rules/boundaries.py``);
2. ``dequantize → op → quantize`` becomes one op on quantized tensors: reference conv/linear
   modules → ``fxquant.nn`` quantized modules with pre-packed weights, dynamic / weight-only
   modules (``rules/fx_modules.py``), functional conv/linear (``rules/fx_functional.py``),
   ``add``/``mul`` (+ ReLU) → ``torch.ops.quantized``, ops that run on quantized tensors
   (``rules/fx_ops.py``).

Whatever matches no pattern keeps running in float between dequantize and quantize. Float
tensors the reference graph re-homed from swapped modules
(:mod:`fxquant.fx.module_attributes`) are dropped once nothing reads them.
"""

from __future__ import annotations

from torch.fx import GraphModule

from fxquant.fx.module_attributes import drop_unread_detached_attributes
from fxquant.lowering.lower import apply_rules, record_report
from fxquant.lowering.rule import Dialect, is_dequantize
from fxquant.lowering.rules.fx_modules import forget_lowered_modules

__all__ = ["lower_to_quantized_modules"]


def _keep_outputs_quantized(gm: GraphModule, indexes: list[int]) -> None:
    """Return the quantized tensor itself for the outputs at ``indexes``."""
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    value = output.args[0]
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    for i in indexes:
        if is_dequantize(values[i]):
            values[i] = values[i].args[0]
    new = type(value)(values) if isinstance(value, (tuple, list)) else values[0]
    output.args = (new,)


def lower_to_quantized_modules(gm: GraphModule, output_quantized_indexes: list[int] | None = None) -> GraphModule:
    """Lower the reference model ``gm`` in place; returns it recompiled. The outputs at
    ``output_quantized_indexes`` are returned as quantized tensors;
    ``fxquant.lowering.lowering_report(gm)`` says which rules fired."""
    applied = apply_rules(gm, Dialect.FX)
    forget_lowered_modules(gm)
    _keep_outputs_quantized(gm, output_quantized_indexes or [])
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    drop_unread_detached_attributes(gm)
    gm.recompile()
    record_report(gm, applied)
    return gm
