"""The default custom-module configuration of eager mode: float LSTM / MultiheadAttention ->
observable (quantizable) class -> quantized class.

A *custom module* cannot be observed by one output observer; ``prepare`` swaps it for an
*observed* class (``from_float``) that observes its internals, and ``convert`` for a quantized
class (``from_observed``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["get_default_custom_config_dict"]


def get_default_custom_config_dict() -> dict[str, dict[Any, Any]]:
    """``{"float_to_observed_custom_module_class": {nn.LSTM: quantizable.LSTM,
    nn.MultiheadAttention: quantizable.MultiheadAttention}, "observed_to_quantized_custom_module_class":
    {quantizable.LSTM: quantized.LSTM, quantizable.MultiheadAttention: quantized.MultiheadAttention}}``.

    A fresh dict on every call.
    """
    from fxquant.nn.quantizable import LSTM as ObservedLSTM
    from fxquant.nn.quantizable import MultiheadAttention as ObservedMultiheadAttention
    from fxquant.nn.quantizable.quantized_activation import (
        MultiheadAttention as QuantizedMultiheadAttention,
    )
    from fxquant.nn.quantizable.quantized_lstm import LSTM as QuantizedLSTM

    return {
        "float_to_observed_custom_module_class": {
            nn.LSTM: ObservedLSTM,
            nn.MultiheadAttention: ObservedMultiheadAttention,
        },
        "observed_to_quantized_custom_module_class": {
            ObservedLSTM: QuantizedLSTM,
            ObservedMultiheadAttention: QuantizedMultiheadAttention,
        },
    }
