"""Lowering of converted (q/dq) graphs to fast int8 execution on CPU.

* :func:`lower_to_int8` -- one table of pattern rules (:data:`INT8_RULES`) turns q/dq
  patterns into torch's quantized CPU kernels (pre-packed conv/linear with fused relu,
  quantized add/cat/pooling, requantize chains, dynamic linear); runs eagerly.
* :func:`lower_for_inductor` -- the Inductor target: Inductor's own x86 int8 passes run ahead
  of time (oneDNN kernels), for eager use or as the graph ``torch.compile`` starts from.
"""

from fxquant.lowering.inductor import UnsupportedX86LoweringError, lower_for_inductor
from fxquant.lowering.lower import LoweringReport, lower_to_int8, lowering_report
from fxquant.lowering.rule import LoweringRule
from fxquant.lowering.table import INT8_RULES, describe_rules

__all__ = [
    "INT8_RULES",
    "LoweringReport",
    "LoweringRule",
    "UnsupportedX86LoweringError",
    "describe_rules",
    "lower_for_inductor",
    "lower_to_int8",
    "lowering_report",
]
