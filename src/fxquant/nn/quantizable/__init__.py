"""Quantizable modules, mirroring ``torch.ao.nn.quantizable``: float modules rebuilt from
parts that eager quantization can observe (``LSTM``, ``LSTMCell``).

:mod:`.quantized_lstm` holds the converted (quantized) LSTM.
"""

from fxquant.nn.quantizable.rnn import LSTM, LSTMCell, QuantizableModuleError

__all__ = ["LSTM", "LSTMCell", "QuantizableModuleError"]
