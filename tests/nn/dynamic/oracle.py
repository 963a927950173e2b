"""Build an fxquant dynamic module and upstream's from identical float copies (importable as
``nn.dynamic.oracle``)."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.ao.nn.quantized.dynamic as tnnqd
import torch.ao.quantization as tq
from torch import nn

import fxquant
import fxquant.nn.quantized.dynamic as nnqd

QCONFIGS = {
    "int8": (fxquant.default_dynamic_qconfig, tq.default_dynamic_qconfig),
    "int8_per_channel": (fxquant.per_channel_dynamic_qconfig, tq.per_channel_dynamic_qconfig),
    "float16": (fxquant.float16_dynamic_qconfig, tq.float16_dynamic_qconfig),
}


def dynamic_pair(float_module: nn.Module, qconfig_name: str) -> tuple[Any, Any]:
    """``(ours, upstream's)`` converted from deep copies of ``float_module``."""
    ours_qc, theirs_qc = QCONFIGS[qconfig_name]
    a, b = copy.deepcopy(float_module), copy.deepcopy(float_module)
    a.qconfig, b.qconfig = ours_qc, theirs_qc
    name = type(float_module).__name__
    return getattr(nnqd, name).from_float(a), getattr(tnnqd, name).from_float(b)


def flatten(output: Any) -> torch.Tensor:
    """All tensors of a (nested) RNN output, concatenated."""
    if isinstance(output, torch.Tensor):
        return output.flatten()
    if isinstance(output, nn.utils.rnn.PackedSequence):
        return output.data.flatten()
    return torch.cat([flatten(o) for o in output])
