"""Dynamically quantized modules, mirroring ``torch.ao.nn.quantized.dynamic``: float inputs
and outputs, weights quantized ahead of time (int8 or float16), activations quantized per
call.

* ``Linear`` (``linear_dynamic`` / ``linear_dynamic_fp16``), ``LSTM``, ``GRU``,
  ``RNNCell``, ``LSTMCell``, ``GRUCell`` -- upstream's modules, same state-dict layout;
* ``PerTokenLinear`` -- fxquant's int8 linear with one activation scale per token
  (``torch._int_mm``), what ``per_token_dynamic_qconfig`` converts ``nn.Linear`` to.
"""

from fxquant.nn.quantized.dynamic.linear import Linear
from fxquant.nn.quantized.dynamic.per_token_linear import PerTokenLinear, PerTokenLinearError
from fxquant.nn.quantized.dynamic.rnn import GRU, LSTM, PackedParameter, RNNBase
from fxquant.nn.quantized.dynamic.rnn_cell import GRUCell, LSTMCell, RNNCell, RNNCellBase
from fxquant.nn.quantized.dynamic.weights import DynamicDTypeError

__all__ = [
    "GRU",
    "LSTM",
    "DynamicDTypeError",
    "GRUCell",
    "LSTMCell",
    "Linear",
    "PackedParameter",
    "PerTokenLinear",
    "PerTokenLinearError",
    "RNNBase",
    "RNNCell",
    "RNNCellBase",
]
