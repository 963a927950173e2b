"""Quantizable modules, mirroring ``torch.ao.nn.quantizable``: float modules rebuilt from
parts that eager quantization can observe (``LSTM``, ``LSTMCell``, ``MultiheadAttention``).

:mod:`.quantized_lstm` and :mod:`.quantized_activation` hold the converted (quantized) LSTM
and MultiheadAttention.
"""

from fxquant.nn.quantizable.activation import MultiheadAttention, MultiheadAttentionInputError
from fxquant.nn.quantizable.rnn import LSTM, LSTMCell, QuantizableModuleError

__all__ = [
    "LSTM",
    "LSTMCell",
    "MultiheadAttention",
    "MultiheadAttentionInputError",
    "QuantizableModuleError",
]
