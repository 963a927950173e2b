"""Reference quantized modules (``torch.ao.nn.quantized.reference``'s names).

Float in, float out: each holds a float weight plus weight qparams and runs the float op on
the quantize-dequantized weight. ``convert_to_reference_fx`` produces them; lowering turns
``dequantize -> reference module -> quantize`` into the packed quantized module.
"""

from __future__ import annotations

from fxquant.nn.quantized.reference.conv import (
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
)
from fxquant.nn.quantized.reference.linear import Linear
from fxquant.nn.quantized.reference.rnn import GRU, LSTM, GRUCell, LSTMCell, RNNCell
from fxquant.nn.quantized.reference.sparse import Embedding, EmbeddingBag
from fxquant.nn.quantized.reference.utils import (
    ReferenceQuantizedModule,
    weight_qparams_from_observer,
)

__all__ = [
    "GRU",
    "LSTM",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Embedding",
    "EmbeddingBag",
    "GRUCell",
    "LSTMCell",
    "Linear",
    "RNNCell",
    "ReferenceQuantizedModule",
    "weight_qparams_from_observer",
]
