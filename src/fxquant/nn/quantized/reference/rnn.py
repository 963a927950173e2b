"""Reference quantized recurrent modules: ``RNNCell``, ``LSTMCell``, ``GRUCell``, ``LSTM``,
``GRU`` — the float recurrences run on quantize-dequantized weights.

Each weight ``<name>`` (``weight_ih``, ``weight_hh_l0``, ...) has its own qparams, given as
``weight_qparams_dict = {"weight_ih": {...}, "weight_hh": {...}, "is_decomposed": False}``
and stored as upstream stores them: attributes ``<name>_qscheme`` / ``<name>_dtype`` /
``<name>_axis_int`` and buffers ``<name>_scale`` / ``<name>_zero_point`` / ``<name>_axis``.
Biases stay float.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import _VF, Tensor, nn

from fxquant.nn.quantized.reference.weight_qdq import WeightQParams

__all__ = [
    "GRU",
    "LSTM",
    "GRUCell",
    "LSTMCell",
    "RNNBase",
    "RNNCell",
    "RNNCellBase",
    "get_quantized_weight",
]

_RNN_QSCHEMES = (None, torch.per_tensor_affine, torch.per_channel_affine)


def _default_qparams() -> dict[str, Any]:
    return {"qscheme": torch.per_tensor_affine, "dtype": torch.quint8, "scale": 1.0, "zero_point": 0}


def _as_buffer(value: Any, dtype: torch.dtype, device: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().clone()
    return torch.tensor(value, dtype=dtype, device=device)


class _PerWeightQParams(nn.Module):
    """Mixin: qparams for each named weight, q/dq by name."""

    is_decomposed: bool

    def _init_weight_qparams_dict(self, weight_qparams_dict: dict[str, Any], device: Any) -> None:
        self.is_decomposed = bool(weight_qparams_dict.get("is_decomposed", False))
        for name, qparams in weight_qparams_dict.items():
            if name == "is_decomposed":
                continue
            qscheme = qparams["qscheme"]
            if qscheme not in _RNN_QSCHEMES:
                raise ValueError(
                    f"{self._get_name()}: qscheme {qscheme} of {name} is not supported; use "
                    f"per_tensor_affine or per_channel_affine"
                )
            setattr(self, name + "_qscheme", qscheme)
            setattr(self, name + "_dtype", qparams["dtype"])
            if qscheme is None:
                continue
            self.register_buffer(name + "_scale", _as_buffer(qparams["scale"], torch.float, device))
            self.register_buffer(
                name + "_zero_point", _as_buffer(qparams["zero_point"], torch.int, device)
            )
            axis = qparams["axis"] if qscheme == torch.per_channel_affine else 0
            self.register_buffer(name + "_axis", _as_buffer(axis, torch.int, device))
            setattr(self, name + "_axis_int", int(getattr(self, name + "_axis").item()))

    def weight_qparams_of(self, name: str) -> WeightQParams:
        """The qparams of weight ``name`` (as the upstream kernels use them: not decomposed)."""
        qscheme = getattr(self, name + "_qscheme", None)
        if qscheme is None:
            one, zero = torch.tensor(1.0), torch.tensor(0)
            return WeightQParams(qscheme=None, dtype=getattr(self, name + "_dtype", torch.float),
                                 scale=one, zero_point=zero)
        return WeightQParams(
            qscheme=qscheme, dtype=getattr(self, name + "_dtype"),
            scale=getattr(self, name + "_scale"), zero_point=getattr(self, name + "_zero_point"),
            axis=getattr(self, name + "_axis_int"),
        )

    def _qdq(self, name: str) -> Tensor:
        return self.weight_qparams_of(name).fake_quantize(getattr(self, name))


def get_quantized_weight(module: Any, name: str) -> Tensor | None:
    """Weight ``name`` of a reference recurrent module, quantized (``None`` if absent)."""
    if not hasattr(module, name):
        return None
    return module.weight_qparams_of(name).quantize(getattr(module, name))


# ---- cells --------------------------------------------------------------------------------


class RNNCellBase(nn.RNNCellBase, _PerWeightQParams):
    """Shared constructor of the reference cells (``num_chunks`` gates)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool,
        num_chunks: int,
        device: Any = None,
        dtype: Any = None,
        weight_qparams_dict: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks, device=device, dtype=dtype)
        if weight_qparams_dict is None:
            weight_qparams_dict = {
                "weight_ih": _default_qparams(), "weight_hh": _default_qparams(),
                "is_decomposed": False,
            }
        if set(weight_qparams_dict) != {"weight_ih", "weight_hh", "is_decomposed"}:
            raise ValueError(
                f"{self._get_name()}: weight_qparams_dict needs exactly the keys weight_ih, "
                f"weight_hh and is_decomposed, got {sorted(weight_qparams_dict)}"
            )
        self._init_weight_qparams_dict(weight_qparams_dict, device)

    def _get_name(self) -> str:
        return "QuantizedRNNCellBase(Reference)"

    def get_quantized_weight_ih(self) -> Tensor | None:
        return get_quantized_weight(self, "weight_ih")

    def get_quantized_weight_hh(self) -> Tensor | None:
        return get_quantized_weight(self, "weight_hh")

    def get_weight_ih(self) -> Tensor:
        return self._qdq("weight_ih")

    def get_weight_hh(self) -> Tensor:
        return self._qdq("weight_hh")

    def _run_cell(self, cell_op: Callable[..., Any], input: Tensor, hx: Any, n_states: int) -> Any:
        """Batch a 1-D input, default the state to zeros, run ``cell_op`` on q/dq weights."""
        if input.dim() not in (1, 2):
            raise ValueError(
                f"{self._get_name()}: expected a 1-D or 2-D input, got {input.dim()}-D"
            )
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
            hx = zeros if n_states == 1 else (zeros, zeros)
        elif not batched:
            hx = hx.unsqueeze(0) if n_states == 1 else tuple(h.unsqueeze(0) for h in hx)
        out = cell_op(input, hx, self.get_weight_ih(), self.get_weight_hh(), self.bias_ih, self.bias_hh)
        if batched:
            return out
        return out.squeeze(0) if n_states == 1 else tuple(o.squeeze(0) for o in out)

    @classmethod
    def _from_float_cell(cls, mod: Any, extra: list[Any], weight_qparams_dict: Any) -> Any:
        # the concrete cells take (input, hidden, bias, *extra, device, dtype, qparams)
        ref = cls(mod.input_size, mod.hidden_size, mod.bias, *extra, mod.weight_ih.device,  # type: ignore[call-arg]
                  mod.weight_ih.dtype, weight_qparams_dict)
        ref.weight_ih, ref.weight_hh = mod.weight_ih, mod.weight_hh
        ref.bias_ih, ref.bias_hh = mod.bias_ih, mod.bias_hh
        return ref


class RNNCell(RNNCellBase):
    """Reference quantized ``nn.RNNCell`` (tanh or relu)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: Any = None,
        dtype: Any = None,
        weight_qparams_dict: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 1, device, dtype, weight_qparams_dict)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"unknown nonlinearity {nonlinearity!r}; use 'tanh' or 'relu'")
        self.nonlinearity = nonlinearity

    def _get_name(self) -> str:
        return "QuantizedRNNCell(Reference)"

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        op = _VF.rnn_tanh_cell if self.nonlinearity == "tanh" else _VF.rnn_relu_cell
        return self._run_cell(op, input, hx, 1)

    @classmethod
    def from_float(cls, mod: Any, weight_qparams_dict: dict[str, Any]) -> RNNCell:
        """Share ``mod``'s weights, with one qparams entry per weight."""
        return cls._from_float_cell(mod, [mod.nonlinearity], weight_qparams_dict)


class LSTMCell(RNNCellBase):
    """Reference quantized ``nn.LSTMCell``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        weight_qparams_dict: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device, dtype, weight_qparams_dict)

    def _get_name(self) -> str:
        return "QuantizedLSTMCell(Reference)"

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        return self._run_cell(_VF.lstm_cell, input, hx, 2)

    @classmethod
    def from_float(
        cls, mod: Any, weight_qparams_dict: dict[str, Any], use_precomputed_fake_quant: bool = False
    ) -> LSTMCell:
        """Share ``mod``'s weights, with one qparams entry per weight."""
        return cls._from_float_cell(mod, [], weight_qparams_dict)


class GRUCell(RNNCellBase):
    """Reference quantized ``nn.GRUCell``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        weight_qparams_dict: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device, dtype, weight_qparams_dict)

    def _get_name(self) -> str:
        return "QuantizedGRUCell(Reference)"

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return self._run_cell(_VF.gru_cell, input, hx, 1)

    @classmethod
    def from_float(cls, mod: Any, weight_qparams_dict: dict[str, Any]) -> GRUCell:
        """Share ``mod``'s weights, with one qparams entry per weight."""
        return cls._from_float_cell(mod, [], weight_qparams_dict)


# ---- multi-layer recurrences ----------------------------------------------------------------


class RNNBase(nn.RNNBase, _PerWeightQParams):
    """Shared part of the reference ``LSTM`` / ``GRU``: the float module's own forward runs
    with ``_flat_weights`` (the list it hands to the kernel) replaced by q/dq'd weights for
    the duration of the call."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: Any = None,
        weight_qparams_dict: dict[str, Any] | None = None,
    ) -> None:
        nn.RNNBase.__init__(
            self, mode, input_size, hidden_size, num_layers, bias, batch_first, dropout,
            bidirectional, proj_size, device, dtype,
        )
        if weight_qparams_dict is None:
            weight_qparams_dict = {"is_decomposed": False}
            for name in self._flat_weights_names:
                if name.startswith("weight"):
                    weight_qparams_dict[name] = _default_qparams()
        self._init_weight_qparams_dict(weight_qparams_dict, device)

    def get_flat_weights(self) -> list[Tensor | None]:
        """The kernel's weight list: q/dq'd weights, float biases."""
        return [
            (self._qdq(name) if name.startswith("weight") else getattr(self, name))
            if hasattr(self, name) else None
            for name in self._flat_weights_names
        ]

    def get_quantized_weight_bias_dict(self) -> dict[str, Tensor | None]:
        """``{flat weight name: quantized weight or float bias}``."""
        return {
            name: (get_quantized_weight(self, name) if name.startswith("weight")
                   else getattr(self, name, None))
            for name in self._flat_weights_names
        }

    def _forward_with_qdq_weights(self, float_forward: Callable[..., Any], *args: Any) -> Any:
        # The float forward first rebuilds ``_flat_weights`` from the parameters if they were
        # reassigned since (``from_float`` does that); do it now, or it would undo the swap.
        self._update_flat_weights()
        float_weights = self._flat_weights
        self._flat_weights = self.get_flat_weights()
        try:
            return float_forward(self, *args)
        finally:
            self._flat_weights = float_weights

    @classmethod
    def _from_float_rnn(cls, mod: Any, extra: dict[str, Any], weight_qparams_dict: Any) -> Any:
        ref = cls(
            mod.input_size, mod.hidden_size, mod.num_layers, mod.bias, mod.batch_first,
            mod.dropout, mod.bidirectional, weight_qparams_dict=weight_qparams_dict, **extra,
        )
        for name in mod._flat_weights_names:
            setattr(ref, name, getattr(mod, name))
        return ref


class LSTM(RNNBase, nn.LSTM):
    """Reference quantized ``nn.LSTM`` (packed sequences, projections, bidirectional)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("LSTM", *args, **kwargs)

    def forward(self, input: Any, hx: Any = None) -> Any:
        return self._forward_with_qdq_weights(nn.LSTM.forward, input, hx)

    def _get_name(self) -> str:
        return "QuantizedLSTM(Reference)"

    @classmethod
    def from_float(cls, mod: Any, weight_qparams_dict: dict[str, Any]) -> LSTM:
        """Share ``mod``'s weights, with one qparams entry per weight."""
        return cls._from_float_rnn(mod, {"proj_size": mod.proj_size}, weight_qparams_dict)


class GRU(RNNBase, nn.GRU):
    """Reference quantized ``nn.GRU``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size is supported by LSTM only, not GRU")
        super().__init__("GRU", *args, **kwargs)

    def forward(self, input: Any, hx: Any = None) -> Any:
        return self._forward_with_qdq_weights(nn.GRU.forward, input, hx)

    def _get_name(self) -> str:
        return "QuantizedGRU(Reference)"

    @classmethod
    def from_float(cls, mod: Any, weight_qparams_dict: dict[str, Any]) -> GRU:
        """Share ``mod``'s weights, with one qparams entry per weight."""
        return cls._from_float_rnn(mod, {}, weight_qparams_dict)
