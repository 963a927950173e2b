"""The standard q/dq graph operators, ``torch.ops.quantized_decomposed.*``.

torch registers them (quantize/dequantize per tensor, per channel, per token, per channel
group, choose_qparams...) when its ``fx._decomposed`` module is imported; Inductor and
ExecuTorch pattern-match on exactly these ops, so fxquant's graphs use them rather than a
library of its own. This module makes sure they are registered and names the overloads that
graph passes emit.
"""

from __future__ import annotations

import importlib

import torch

__all__ = ["DEQUANTIZE_OPS", "QUANTIZE_OPS", "ensure_registered", "quantized_decomposed"]

_REGISTRY_MODULE = "torch.ao.quantization.fx._decomposed"


def ensure_registered() -> None:
    """Import torch's registration of the ``quantized_decomposed`` library (idempotent)."""
    importlib.import_module(_REGISTRY_MODULE)


ensure_registered()
quantized_decomposed = torch.ops.quantized_decomposed

# the quantize / dequantize overloads the engine's convert emits: per tensor (scalar
# parameters; tensor parameters for dynamic quantization) and per channel
QUANTIZE_OPS = frozenset({
    quantized_decomposed.quantize_per_tensor.default,
    quantized_decomposed.quantize_per_tensor.tensor,
    quantized_decomposed.quantize_per_channel.default,
})
DEQUANTIZE_OPS = frozenset({
    quantized_decomposed.dequantize_per_tensor.default,
    quantized_decomposed.dequantize_per_tensor.tensor,
    quantized_decomposed.dequantize_per_channel.default,
})
