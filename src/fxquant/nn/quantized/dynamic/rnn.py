"""Dynamic quantized ``LSTM`` and ``GRU`` (multi-layer, bidirectional, packed sequences).

Each (layer, direction) holds its input-hidden and hidden-hidden weights as one cell-params
object made by torch's quantized RNN library (``make_quantized_cell_params_dynamic`` for int8,
``make_quantized_cell_params_fp16`` for float16); ``torch.quantized_lstm`` /
``torch.quantized_gru`` run the whole sequence on them. State dicts hold those objects under
upstream's keys (``_all_weight_values.<i>.param``), so they load into
``torch.ao.nn.quantized.dynamic.LSTM``/``GRU`` and back. Being torch script objects, they need
``torch.load(..., weights_only=False)`` (a trusted file); the dynamic ``Linear``'s state dict
loads with ``weights_only=True``.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import _addindent
from torch.nn.utils.rnn import PackedSequence

from fxquant.nn._errors import check_float_input
from fxquant.nn.quantized.dynamic.weights import (
    DynamicDTypeError,
    dynamic_weight_ctr,
    dynamic_weight_observer,
    pack_weight_bias,
    quantize_dynamic_weight,
)

__all__ = ["GRU", "LSTM", "PackedParameter", "RNNBase"]

_GATES = {"LSTM": 4, "GRU": 3}


class PackedParameter(nn.Module):
    """Holds one cell-params object and saves it as ``<prefix>param`` in the state dict."""

    def __init__(self, param: Any) -> None:
        super().__init__()
        self.param = param

    def _save_to_state_dict(
        self, destination: dict[str, Any], prefix: str, keep_vars: bool
    ) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "param"] = self.param

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
        self.param = state_dict[prefix + "param"]
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, False, missing_keys, unexpected_keys, error_msgs
        )


def _cell_params(
    packed_ih: Any, packed_hh: Any, b_ih: Tensor | None, b_hh: Tensor | None, dtype: torch.dtype,
    reduce_range: bool,
) -> Any:  # fmt: skip
    """One (layer, direction)'s weights as the quantized RNN ops take them."""
    if dtype == torch.qint8:
        if reduce_range:
            return torch.ops.quantized.make_quantized_cell_params_dynamic(
                packed_ih, packed_hh, b_ih, b_hh, True
            )
        return torch.ops.quantized.make_quantized_cell_params_dynamic(
            packed_ih, packed_hh, b_ih, b_hh
        )
    return torch.ops.quantized.make_quantized_cell_params_fp16(packed_ih, packed_hh)


def _unpack(packed: Any) -> tuple[Tensor, Tensor | None]:
    if packed.__getstate__()[0][0].is_quantized:
        return torch.ops.quantized.linear_unpack(packed)
    return torch.ops.quantized.linear_unpack_fp16(packed)


class RNNBase(nn.Module):
    """Shared body of the dynamic quantized ``LSTM`` and ``GRU``.

    ``mode`` is ``"LSTM"`` or ``"GRU"``; the other arguments are ``nn.LSTM``'s, plus
    ``dtype`` (``torch.qint8`` or ``torch.float16``) for the weights.
    """

    _FLOAT_MODULE: type[nn.Module] = nn.RNNBase
    # version 2: the int8 cells run with reduce_range=True
    _version = 2

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
        dtype: torch.dtype = torch.qint8,
    ) -> None:
        super().__init__()
        if mode not in _GATES:
            raise ValueError(f"Unrecognized RNN mode: {mode!r}; use 'LSTM' or 'GRU'")
        if (
            not isinstance(dropout, numbers.Number)
            or isinstance(dropout, bool)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an "
                "element being zeroed"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=2,
            )
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.dtype = dtype
        self.version: int | None = 2
        self.training = False
        self._all_weight_values = nn.ModuleList(
            PackedParameter(self._random_cell(layer)) for layer, _ in self._layer_directions()
        )

    # ----- layout ---------------------------------------------------------------------------

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _layer_directions(self) -> list[tuple[int, str]]:
        """``(layer, name suffix)`` of each cell, in storage order."""
        suffixes = ["", "_reverse"][: self.num_directions]
        return [(layer, suffix) for layer in range(self.num_layers) for suffix in suffixes]

    def _random_cell(self, layer: int) -> Any:
        """Placeholder weights (overwritten by from_float / load_state_dict)."""
        gate_size = _GATES[self.mode] * self.hidden_size
        in_size = self.input_size if layer == 0 else self.hidden_size * self.num_directions
        w_ih, w_hh = torch.randn(gate_size, in_size), torch.randn(gate_size, self.hidden_size)
        b_ih, b_hh = torch.randn(gate_size), torch.randn(gate_size)
        if self.dtype == torch.qint8:
            w_ih = torch.quantize_per_tensor(w_ih, 0.1, 0, torch.qint8)
            w_hh = torch.quantize_per_tensor(w_hh, 0.1, 0, torch.qint8)
        return self._make_cell(w_ih, w_hh, b_ih, b_hh)

    def _make_cell(
        self, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
    ) -> Any:
        dtype = torch.qint8 if w_ih.is_quantized else torch.float16
        reduce_range = self.version is not None and self.version >= 2
        return _cell_params(
            pack_weight_bias(w_ih, b_ih, dtype), pack_weight_bias(w_hh, b_hh, dtype),
            b_ih, b_hh, dtype, reduce_range,
        )  # fmt: skip

    # ----- repr -----------------------------------------------------------------------------

    def _get_name(self) -> str:
        return "DynamicQuantizedRNN"

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if self.bias is not True:
            text += f", bias={self.bias}"
        if self.batch_first is not False:
            text += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            text += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            text += f", bidirectional={self.bidirectional}"
        return text

    def __repr__(self) -> str:
        # nn.Module's repr without the packed weights (they print as whole tensors)
        extra_lines = self.extra_repr().split("\n") if self.extra_repr() else []
        child_lines = [
            f"({key}): " + _addindent(repr(module), 2)
            for key, module in self._modules.items()
            if not isinstance(module, PackedParameter | nn.ModuleList)
        ]
        lines = extra_lines + child_lines
        body = ""
        if len(extra_lines) == 1 and not child_lines:
            body = extra_lines[0]
        elif lines:
            body = "\n  " + "\n  ".join(lines) + "\n"
        return f"{self._get_name()}({body})"

    # ----- input checks ---------------------------------------------------------------------

    def check_input(self, input: Tensor, batch_sizes: Tensor | None) -> None:
        expected_dim = 2 if batch_sizes is not None else 3
        if input.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if self.input_size != input.size(-1):
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {input.size(-1)}"
            )

    def get_expected_hidden_size(
        self, input: Tensor, batch_sizes: Tensor | None
    ) -> tuple[int, int, int]:
        if batch_sizes is not None:
            mini_batch = int(batch_sizes[0])
        else:
            mini_batch = input.size(0) if self.batch_first else input.size(1)
        return (self.num_layers * self.num_directions, mini_batch, self.hidden_size)

    def check_hidden_size(
        self,
        hx: Tensor,
        expected: tuple[int, int, int],
        msg: str = "Expected hidden size {}, got {}",
    ) -> None:
        if hx.size() != expected:
            raise RuntimeError(msg.format(expected, list(hx.size())))

    def _zeros_hidden(self, input: Tensor, max_batch_size: int) -> Tensor:
        return torch.zeros(
            self.num_layers * self.num_directions, max_batch_size, self.hidden_size,
            dtype=input.dtype, device=input.device,
        )  # fmt: skip

    # ----- serialization and weights --------------------------------------------------------

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
        self.version = local_metadata.get("version", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, False, missing_keys, unexpected_keys, error_msgs
        )

    def set_weight_bias(self, weight_bias_dict: dict[str, Tensor]) -> None:
        """Install weights from a flat dict keyed like ``nn.LSTM``'s parameters
        (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...): quantized ``qint8`` tensors for int8,
        float tensors for float16."""
        cells = []
        for layer, suffix in self._layer_directions():
            w_ih, w_hh = (weight_bias_dict[f"weight_{g}_l{layer}{suffix}"] for g in ("ih", "hh"))
            b_ih, b_hh = (weight_bias_dict[f"bias_{g}_l{layer}{suffix}"] for g in ("ih", "hh"))
            cells.append(PackedParameter(self._make_cell(w_ih, w_hh, b_ih, b_hh)))
        self._all_weight_values = nn.ModuleList(cells)

    def _weight_bias(self) -> dict[str, dict[str, Tensor | None]]:
        """``{"weight": {"weight_ih_l0": ..., ...}, "bias": {"bias_ih_l0": ..., ...}}``."""
        result: dict[str, dict[str, Tensor | None]] = {"weight": {}, "bias": {}}
        for cell, (layer, suffix) in zip(self._all_weight_values, self._layer_directions()):
            state: Any = cell.param.__getstate__()  # (tag, tensors, doubles, longs, objects)
            packed_ih, packed_hh = state[0][4]
            for gate, packed in (("ih", packed_ih), ("hh", packed_hh)):
                weight, bias = _unpack(packed)
                result["weight"][f"weight_{gate}_l{layer}{suffix}"] = weight
                result["bias"][f"bias_{gate}_l{layer}{suffix}"] = bias
        return result

    def get_weight(self) -> dict[str, Tensor | None]:
        return self._weight_bias()["weight"]

    def get_bias(self) -> dict[str, Tensor | None]:
        return self._weight_bias()["bias"]

    # ----- construction ---------------------------------------------------------------------

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        """Quantize a float ``nn.LSTM`` / ``nn.GRU`` (with a ``qconfig`` attribute).

        Every weight matrix gets its own observer from ``mod.qconfig.weight``
        (``default_dynamic_qconfig``'s when ``None``); the observer's dtype (``qint8`` or
        ``float16``) picks the kernels.
        """
        target: Any = _FLOAT_TO_DYNAMIC.get(type(mod))
        if target is None:
            raise DynamicDTypeError(
                f"{cls.__name__}.from_float converts nn.LSTM and nn.GRU, got {type(mod).__name__}"
            )
        if not hasattr(mod, "qconfig"):
            raise DynamicDTypeError(
                f"{cls.__name__}.from_float: the {type(mod).__name__} has no qconfig attribute; "
                f"set module.qconfig (quantize_dynamic does it) before converting"
            )
        assert isinstance(mod, nn.RNNBase)
        if not mod.bias:
            raise DynamicDTypeError(
                f"{cls.__name__}.from_float: quantized RNN kernels need biases; build the "
                f"{type(mod).__name__} with bias=True"
            )
        dtype = dynamic_weight_observer(mod.qconfig, cls.__name__).dtype
        weight_ctr = dynamic_weight_ctr(mod.qconfig)
        qmod = target(
            mod.input_size, mod.hidden_size, mod.num_layers, mod.bias, mod.batch_first,
            mod.dropout, mod.bidirectional, dtype,
        )  # fmt: skip
        weights = {
            name: quantize_dynamic_weight(getattr(mod, name), weight_ctr, dtype)
            if name.startswith("weight")
            else getattr(mod, name)
            for name in _param_names(qmod)
        }
        qmod.set_weight_bias(weights)
        return qmod

    @classmethod
    def from_reference(cls, ref_mod: Any) -> Any:
        """Build from a reference quantized LSTM/GRU (quantized weights and float biases)."""
        if not hasattr(ref_mod, "weight_ih_l0_dtype"):
            raise DynamicDTypeError(
                f"{cls.__name__}.from_reference expects a reference RNN with weight_ih_l0_dtype"
            )
        build: Any = cls  # LSTM or GRU: the mode is fixed by the subclass
        qmod = build(
            ref_mod.input_size, ref_mod.hidden_size, ref_mod.num_layers, ref_mod.bias,
            ref_mod.batch_first, ref_mod.dropout, ref_mod.bidirectional,
            ref_mod.weight_ih_l0_dtype,
        )  # fmt: skip
        qmod.set_weight_bias(ref_mod.get_quantized_weight_bias_dict())
        return qmod


def _param_names(qmod: RNNBase) -> list[str]:
    return [
        f"{kind}_{gate}_l{layer}{suffix}"
        for layer, suffix in qmod._layer_directions()
        for kind in ("weight", "bias")
        for gate in ("ih", "hh")
    ]


def _permute(hx: Tensor, permutation: Tensor | None) -> Tensor:
    return hx if permutation is None else hx.index_select(1, permutation)


class LSTM(RNNBase):
    """Dynamic quantized ``nn.LSTM``: float inputs and states, int8 or float16 weights.

    >>> qlstm = LSTM.from_float(float_lstm)           # float_lstm.qconfig = default_dynamic_qconfig
    >>> output, (h, c) = qlstm(torch.randn(5, 3, 10))
    """

    _FLOAT_MODULE = nn.LSTM

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("LSTM", *args, **kwargs)

    def _get_name(self) -> str:
        return "DynamicQuantizedLSTM"

    def forward(
        self, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Any, tuple[Tensor, Tensor]]:
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            output, hidden = self._run(data, hx, batch_sizes, int(batch_sizes[0]), sorted_indices)
            packed = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return packed, self.permute_hidden(hidden, unsorted_indices)
        max_batch_size = input.size(0) if self.batch_first else input.size(1)
        return self._run(input, hx, None, max_batch_size, None)

    def permute_hidden(
        self, hx: tuple[Tensor, Tensor], permutation: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        return _permute(hx[0], permutation), _permute(hx[1], permutation)

    def check_forward_args(
        self, input: Tensor, hidden: tuple[Tensor, Tensor], batch_sizes: Tensor | None
    ) -> None:
        self.check_input(input, batch_sizes)
        expected = self.get_expected_hidden_size(input, batch_sizes)
        self.check_hidden_size(hidden[0], expected, "Expected hidden[0] size {}, got {}")
        self.check_hidden_size(hidden[1], expected, "Expected hidden[1] size {}, got {}")

    def _run(
        self,
        input: Tensor,
        hx: tuple[Tensor, Tensor] | None,
        batch_sizes: Tensor | None,
        max_batch_size: int,
        sorted_indices: Tensor | None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        check_float_input(self, input)
        if hx is None:
            zeros = self._zeros_hidden(input, max_batch_size)
            hx = (zeros, zeros)
        else:
            hx = self.permute_hidden(hx, sorted_indices)
        self.check_forward_args(input, hx, batch_sizes)
        params = [m.param for m in self._all_weight_values]
        common = (params, self.bias, self.num_layers, float(self.dropout), self.training)
        if batch_sizes is None:
            result = torch.quantized_lstm(
                input, hx, *common, self.bidirectional, self.batch_first,
                dtype=self.dtype, use_dynamic=True,
            )  # fmt: skip
        else:
            result = torch.quantized_lstm(
                input, batch_sizes, hx, *common, self.bidirectional,
                dtype=self.dtype, use_dynamic=True,
            )  # fmt: skip
        return result[0], (result[1], result[2])


class GRU(RNNBase):
    """Dynamic quantized ``nn.GRU``: float inputs and state, int8 or float16 weights."""

    _FLOAT_MODULE = nn.GRU

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("GRU", *args, **kwargs)

    def _get_name(self) -> str:
        return "DynamicQuantizedGRU"

    def forward(
        self, input: Tensor | PackedSequence, hx: Tensor | None = None
    ) -> tuple[Any, Tensor]:
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            output, hidden = self._run(data, hx, batch_sizes, int(batch_sizes[0]), sorted_indices)
            packed = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return packed, self.permute_hidden(hidden, unsorted_indices)
        max_batch_size = input.size(0) if self.batch_first else input.size(1)
        return self._run(input, hx, None, max_batch_size, None)

    def permute_hidden(self, hx: Tensor, permutation: Tensor | None) -> Tensor:
        return _permute(hx, permutation)

    def check_forward_args(self, input: Tensor, hidden: Tensor, batch_sizes: Tensor | None) -> None:
        self.check_input(input, batch_sizes)
        expected = self.get_expected_hidden_size(input, batch_sizes)
        self.check_hidden_size(hidden, expected, "Expected hidden size {}, got {}")

    def _run(
        self,
        input: Tensor,
        hx: Tensor | None,
        batch_sizes: Tensor | None,
        max_batch_size: int,
        sorted_indices: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        check_float_input(self, input)
        hx = (
            self._zeros_hidden(input, max_batch_size)
            if hx is None
            else _permute(hx, sorted_indices)
        )
        self.check_forward_args(input, hx, batch_sizes)
        params = [m.param for m in self._all_weight_values]
        common = (params, self.bias, self.num_layers, self.dropout, self.training)
        if batch_sizes is None:
            result = torch.quantized_gru(input, hx, *common, self.bidirectional, self.batch_first)
        else:
            result = torch.quantized_gru(input, batch_sizes, hx, *common, self.bidirectional)
        return result[0], result[1]


_FLOAT_TO_DYNAMIC: dict[type[nn.Module], type[RNNBase]] = {nn.LSTM: LSTM, nn.GRU: GRU}
