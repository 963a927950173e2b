"""Static quantized modules (``torch.ao.nn.quantized``'s names and layout).

Quantized tensors in, quantized tensors out, on torch's quantized CPU kernels
(``torch.ops.quantized.*``) for the engine in ``torch.backends.quantized.engine``. Each
module is built from an observed float module with ``from_float`` (or from a reference module
with ``from_reference``); state dicts use upstream's keys, so they load both ways.

Imported on first access: ``dynamic`` (dynamically quantized modules), ``reference`` (float
weights + weight qparams, for lowering) and ``functional`` (the quantized ops as functions). ``LSTM`` (the converted
quantizable LSTM, :mod:`fxquant.nn.quantizable.quantized_lstm`) is also resolved on first
access, since the quantizable package builds on this one.
"""

from __future__ import annotations

import importlib
from typing import Any

from fxquant.nn.quantized.activation import (
    ELU,
    Hardswish,
    LeakyReLU,
    PReLU,
    ReLU6,
    Sigmoid,
    Softmax,
)
from fxquant.nn.quantized.batchnorm import BatchNorm2d, BatchNorm3d
from fxquant.nn.quantized.conv import Conv1d, Conv2d, Conv3d
from fxquant.nn.quantized.conv_transpose import ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from fxquant.nn.quantized.dropout import Dropout
from fxquant.nn.quantized.embedding_ops import Embedding, EmbeddingBag
from fxquant.nn.quantized.functional_modules import FloatFunctional, FXFloatFunctional, QFunctional
from fxquant.nn.quantized.linear import Linear
from fxquant.nn.quantized.normalization import (
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    LayerNorm,
)
from fxquant.nn.quantized.quant_dequant import DeQuantize, Quantize

__all__ = [
    "ELU",
    "LSTM",
    "BatchNorm2d",
    "BatchNorm3d",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "DeQuantize",
    "Dropout",
    "Embedding",
    "EmbeddingBag",
    "FXFloatFunctional",
    "FloatFunctional",
    "GroupNorm",
    "Hardswish",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "MultiheadAttention",
    "PReLU",
    "QFunctional",
    "Quantize",
    "ReLU6",
    "Sigmoid",
    "Softmax",
]

_LAZY_SUBMODULES = ("dynamic", "functional", "reference", "serialization")


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name == "LSTM":
        return importlib.import_module("fxquant.nn.quantizable.quantized_lstm").LSTM
    if name == "MultiheadAttention":
        return importlib.import_module("fxquant.nn.quantizable.quantized_activation").MultiheadAttention
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
