"""Lowering of converted PT2E models (the PT2E-side names of :mod:`fxquant.lowering`).

* ``lower_pt2e_quantized_to_x86(model, example_inputs)``: Inductor's x86 int8 passes ahead of
  time (oneDNN kernels), see :func:`fxquant.lowering.lower_for_inductor`.
* ``lower_to_int8(model)``: torch's quantized CPU kernels through the rule table, see
  :func:`fxquant.lowering.lower_to_int8`.
"""

from __future__ import annotations

from fxquant.lowering.inductor import UnsupportedX86LoweringError, lower_for_inductor
from fxquant.lowering.lower import lower_to_int8

__all__ = ["UnsupportedX86LoweringError", "lower_pt2e_quantized_to_x86", "lower_to_int8"]

lower_pt2e_quantized_to_x86 = lower_for_inductor
