"""Lowering of converted (q/dq) graphs to fast int8 execution on CPU.

* :func:`lower_to_int8` -- one table of pattern rules (:data:`INT8_RULES`) turns q/dq
  patterns into torch's quantized CPU kernels (pre-packed conv/linear with fused relu,
  quantized add/cat/pooling, requantize chains, dynamic linear); runs eagerly. The same table
  (rules tagged with the :class:`Dialect` they serve) and the same loop (:func:`apply_rules`)
  lower ``convert_fx``'s graphs to upstream-style quantized modules.
  :data:`INT8_MATMUL_RULES` (opt-in, not in the table) lower attention whose matmuls were
  quantized (``set_function_type_qconfig(torch.matmul, ...)``) to int8 GEMMs.
* :func:`lower_for_inductor` -- the Inductor target: Inductor's own x86 int8 passes run ahead
  of time (oneDNN kernels), for eager use or as the graph ``torch.compile`` starts from.
"""

from fxquant.lowering.inductor import UnsupportedX86LoweringError, lower_for_inductor
from fxquant.lowering.lower import LoweringReport, apply_rules, lower_to_int8, lowering_report
from fxquant.lowering.rule import Dialect, LoweringRule
from fxquant.lowering.rules.int8_matmul import INT8_MATMUL_RULES
from fxquant.lowering.table import INT8_RULES, describe_rules, rules_for

__all__ = [
    "INT8_MATMUL_RULES",
    "INT8_RULES",
    "Dialect",
    "LoweringReport",
    "LoweringRule",
    "UnsupportedX86LoweringError",
    "apply_rules",
    "describe_rules",
    "lower_for_inductor",
    "lower_to_int8",
    "lowering_report",
    "rules_for",
]
