"""Dynamic quantized recurrent cells: ``RNNCell``, ``LSTMCell``, ``GRUCell``.

Each cell keeps its input-hidden and hidden-hidden weights packed for the dynamic linear
kernels (``_packed_weight_ih``, ``_packed_weight_hh``: int8 with ``linear_prepack``, float16
with ``linear_prepack_fp16``) and runs one step with torch's fused quantized cell ops
(``quantized_lstm_cell_dynamic`` & co.). The state dict holds the packed objects under
upstream's keys, so it loads into ``torch.ao.nn.quantized.dynamic.LSTMCell`` & co. and back
(with ``torch.load(..., weights_only=False)``: packed objects are torch script objects).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fxquant.nn._errors import check_float_input
from fxquant.nn.quantized.dynamic.weights import (
    DynamicDTypeError,
    dynamic_weight_ctr,
    dynamic_weight_observer,
    pack_weight_bias,
    quantize_dynamic_weight,
)

__all__ = ["GRUCell", "LSTMCell", "RNNCell", "RNNCellBase"]


def _unpack(packed: Any, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    if dtype == torch.qint8:
        return torch.ops.quantized.linear_unpack(packed)
    return torch.ops.quantized.linear_unpack_fp16(packed)


class RNNCellBase(nn.Module):
    """Shared body of the dynamic quantized cells; ``num_chunks`` is the number of gates."""

    __constants__: ClassVar[list[str]] = ["input_size", "hidden_size", "bias"]
    bias_ih: Tensor | None
    bias_hh: Tensor | None

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        num_chunks: int = 4,
        dtype: torch.dtype = torch.qint8,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_dtype = dtype
        if bias:
            # plain attributes (not buffers): the packed weights carry the biases
            self.bias_ih = torch.randn(num_chunks * hidden_size)
            self.bias_hh = torch.randn(num_chunks * hidden_size)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        # placeholder weights, overwritten by from_float / load_state_dict
        weight_ih = torch.randn(num_chunks * hidden_size, input_size)
        weight_hh = torch.randn(num_chunks * hidden_size, hidden_size)
        if dtype == torch.qint8:
            weight_ih = torch.quantize_per_tensor(weight_ih, 1.0, 0, torch.qint8)
            weight_hh = torch.quantize_per_tensor(weight_hh, 1.0, 0, torch.qint8)
        self._packed_weight_ih = pack_weight_bias(weight_ih, self.bias_ih, dtype)
        self._packed_weight_hh = pack_weight_bias(weight_hh, self.bias_hh, dtype)

    def _get_name(self) -> str:
        return "DynamicQuantizedRNNBase"

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            text += f", bias={self.bias}"
        nonlinearity = getattr(self, "nonlinearity", "tanh")
        if nonlinearity != "tanh":
            text += f", nonlinearity={nonlinearity}"
        return text

    def check_forward_input(self, input: Tensor) -> None:
        check_float_input(self, input)
        if input.size(1) != self.input_size:
            raise RuntimeError(
                f"input has inconsistent input_size: got {input.size(1)}, expected "
                f"{self.input_size}"
            )

    def check_forward_hidden(self, input: Tensor, hx: Tensor, hidden_label: str = "") -> None:
        if input.size(0) != hx.size(0):
            raise RuntimeError(
                f"Input batch size {input.size(0)} doesn't match hidden{hidden_label} batch "
                f"size {hx.size(0)}"
            )
        if hx.size(1) != self.hidden_size:
            raise RuntimeError(
                f"hidden{hidden_label} has inconsistent hidden_size: got {hx.size(1)}, "
                f"expected {self.hidden_size}"
            )

    def _zeros(self, input: Tensor) -> Tensor:
        return torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)

    # ----- weights and serialization --------------------------------------------------------

    def _weight_bias(self) -> dict[str, dict[str, Tensor | None]]:
        w_ih, b_ih = _unpack(self._packed_weight_ih, self.weight_dtype)
        w_hh, b_hh = _unpack(self._packed_weight_hh, self.weight_dtype)
        return {
            "weight": {"weight_ih": w_ih, "weight_hh": w_hh},
            "bias": {"bias_ih": b_ih, "bias_hh": b_hh},
        }

    def get_weight(self) -> dict[str, Tensor | None]:
        return self._weight_bias()["weight"]

    def get_bias(self) -> dict[str, Tensor | None]:
        return self._weight_bias()["bias"]

    def set_weight_bias(self, weight_bias_dict: dict[str, dict[str, Any]]) -> None:
        """Pack ``{"weight": {"weight_ih", "weight_hh"}, "bias": {"bias_ih", "bias_hh"}}``."""
        weights, biases = weight_bias_dict["weight"], weight_bias_dict["bias"]
        self._packed_weight_ih = pack_weight_bias(
            weights["weight_ih"], biases["bias_ih"], self.weight_dtype
        )
        self._packed_weight_hh = pack_weight_bias(
            weights["weight_hh"], biases["bias_hh"], self.weight_dtype
        )

    def _save_to_state_dict(
        self, destination: dict[str, Any], prefix: str, keep_vars: bool
    ) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "_packed_weight_ih"] = self._packed_weight_ih
        destination[prefix + "_packed_weight_hh"] = self._packed_weight_hh

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        self._packed_weight_ih = state_dict.pop(prefix + "_packed_weight_ih")
        self._packed_weight_hh = state_dict.pop(prefix + "_packed_weight_hh")
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, False, missing_keys, unexpected_keys, error_msgs
        )

    # ----- construction ---------------------------------------------------------------------

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        """Quantize a float ``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell`` (with a
        ``qconfig`` attribute); each weight matrix gets its own observer from
        ``mod.qconfig.weight`` (``default_dynamic_qconfig``'s when ``None``)."""
        target = _FLOAT_TO_DYNAMIC.get(type(mod))
        if target is None:
            raise DynamicDTypeError(
                f"{cls.__name__}.from_float converts nn.LSTMCell, nn.GRUCell and nn.RNNCell, "
                f"got {type(mod).__name__}"
            )
        if not hasattr(mod, "qconfig"):
            raise DynamicDTypeError(
                f"{cls.__name__}.from_float: the {type(mod).__name__} has no qconfig attribute; "
                f"set module.qconfig (quantize_dynamic does it) before converting"
            )
        assert isinstance(mod, nn.RNNCellBase)
        if not mod.bias:
            raise DynamicDTypeError(
                f"{cls.__name__}.from_float: quantized cell kernels need biases; build the "
                f"{type(mod).__name__} with bias=True"
            )
        dtype = dynamic_weight_observer(mod.qconfig, cls.__name__).dtype
        weight_ctr = dynamic_weight_ctr(mod.qconfig)
        kwargs: dict[str, Any] = {"bias": mod.bias, "dtype": dtype}
        if isinstance(mod, nn.RNNCell):
            kwargs["nonlinearity"] = mod.nonlinearity
        qcell = target(mod.input_size, mod.hidden_size, **kwargs)
        qcell.set_weight_bias(
            {
                "weight": {
                    "weight_ih": quantize_dynamic_weight(mod.weight_ih, weight_ctr, dtype),
                    "weight_hh": quantize_dynamic_weight(mod.weight_hh, weight_ctr, dtype),
                },
                "bias": {"bias_ih": mod.bias_ih, "bias_hh": mod.bias_hh},
            }
        )
        return qcell

    @classmethod
    def from_reference(cls, ref_mod: Any) -> Any:
        """Build from a reference quantized cell (quantized weights and float biases)."""
        if not hasattr(ref_mod, "weight_ih_dtype"):
            raise DynamicDTypeError(
                f"{cls.__name__}.from_reference expects a reference cell with weight_ih_dtype"
            )
        kwargs: dict[str, Any] = {"dtype": ref_mod.weight_ih_dtype}
        if hasattr(ref_mod, "nonlinearity"):
            kwargs["nonlinearity"] = ref_mod.nonlinearity
        qmod = cls(ref_mod.input_size, ref_mod.hidden_size, ref_mod.bias, **kwargs)
        qmod.set_weight_bias(
            {
                "weight": {
                    "weight_ih": ref_mod.get_quantized_weight_ih(),
                    "weight_hh": ref_mod.get_quantized_weight_hh(),
                },
                "bias": {"bias_ih": ref_mod.bias_ih, "bias_hh": ref_mod.bias_hh},
            }
        )
        return qmod


class RNNCell(RNNCellBase):
    """Dynamic quantized ``nn.RNNCell`` (``tanh`` or ``relu``)."""

    __constants__: ClassVar[list[str]] = ["input_size", "hidden_size", "bias", "nonlinearity"]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        dtype: torch.dtype = torch.qint8,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=1, dtype=dtype)
        self.nonlinearity = nonlinearity

    def _get_name(self) -> str:
        return "DynamicQuantizedRNNCell"

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        self.check_forward_input(input)
        hx = self._zeros(input) if hx is None else hx
        self.check_forward_hidden(input, hx, "")
        if self.nonlinearity == "tanh":
            cell = torch.ops.quantized.quantized_rnn_tanh_cell_dynamic
        elif self.nonlinearity == "relu":
            cell = torch.ops.quantized.quantized_rnn_relu_cell_dynamic
        else:
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}; use 'tanh' or 'relu'")
        return cell(
            input, hx, self._packed_weight_ih, self._packed_weight_hh, self.bias_ih, self.bias_hh
        )


class LSTMCell(RNNCellBase):
    """Dynamic quantized ``nn.LSTMCell``: ``(h, c) = cell(x, (h, c))``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        dtype: torch.dtype = torch.qint8,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=4, dtype=dtype)

    def _get_name(self) -> str:
        return "DynamicQuantizedLSTMCell"

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        self.check_forward_input(input)
        if hx is None:
            zeros = self._zeros(input)
            hx = (zeros, zeros)
        self.check_forward_hidden(input, hx[0], "[0]")
        self.check_forward_hidden(input, hx[1], "[1]")
        return torch.ops.quantized.quantized_lstm_cell_dynamic(
            input, hx, self._packed_weight_ih, self._packed_weight_hh, self.bias_ih, self.bias_hh
        )


class GRUCell(RNNCellBase):
    """Dynamic quantized ``nn.GRUCell``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        dtype: torch.dtype = torch.qint8,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=3, dtype=dtype)

    def _get_name(self) -> str:
        return "DynamicQuantizedGRUCell"

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        self.check_forward_input(input)
        hx = self._zeros(input) if hx is None else hx
        self.check_forward_hidden(input, hx, "")
        return torch.ops.quantized.quantized_gru_cell_dynamic(
            input, hx, self._packed_weight_ih, self._packed_weight_hh, self.bias_ih, self.bias_hh
        )


_FLOAT_TO_DYNAMIC: dict[type[nn.Module], type[RNNCellBase]] = {
    nn.LSTMCell: LSTMCell,
    nn.GRUCell: GRUCell,
    nn.RNNCell: RNNCell,
}
