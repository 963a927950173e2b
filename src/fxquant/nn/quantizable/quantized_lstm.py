"""The quantized LSTM: an observed quantizable :class:`~fxquant.nn.quantizable.LSTM` after
eager ``convert`` (quantized linears and elementwise ops inside, quantized tensors in and
out). Mirrors ``torch.ao.nn.quantized.LSTM``; meant to be re-exported as
``fxquant.nn.quantized.LSTM``.
"""

from __future__ import annotations

from typing import Any

from fxquant.nn.quantizable.rnn import LSTM as QuantizableLSTM
from fxquant.nn.quantizable.rnn import QuantizableModuleError

__all__ = ["LSTM"]


class LSTM(QuantizableLSTM):
    """Quantized LSTM, reached only through ``from_observed`` (``convert`` calls it with the
    default custom-module configuration)."""

    _FLOAT_MODULE = QuantizableLSTM  # type: ignore[assignment]  # converts the observed LSTM

    def _get_name(self) -> str:
        return "QuantizedLSTM"

    @classmethod
    def from_float(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "the quantized LSTM is built from an observed quantizable LSTM: prepare the float "
            "model (nn.LSTM becomes fxquant.nn.quantizable.LSTM), calibrate, then convert"
        )

    @classmethod
    def from_observed(cls, other: Any) -> Any:
        """Convert an observed (calibrated) quantizable LSTM to quantized modules."""
        if not isinstance(other, QuantizableLSTM):
            raise QuantizableModuleError(
                f"{cls.__name__}.from_observed converts fxquant.nn.quantizable.LSTM, got "
                f"{type(other).__name__}"
            )
        # eager mode's convert is above this package; import it where it is needed
        from fxquant.eager import convert

        converted = convert(other, inplace=False, remove_qconfig=True)
        converted.__class__ = cls
        return converted
