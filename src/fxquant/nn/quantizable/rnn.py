"""Quantizable (observable) LSTM: ``nn.LSTM`` rebuilt from parts that eager quantization can
observe and convert.

``nn.LSTM`` runs as one fused op, so ``prepare`` cannot see its gates. Here each cell is made
of ``nn.Linear`` layers (input and hidden projections), activation modules and
``FloatFunctional`` adds and multiplies; after ``prepare`` every intermediate has its own
observer, and ``convert`` turns the cell into quantized linears and quantized elementwise ops.
The computation per step, for gates ``i, f, g, o`` (chunks of the projections)::

    gates = igates(x) + hgates(h)
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
    h' = sigmoid(o) * tanh(c')

``split_gates=True`` keeps one Linear per gate instead of chunking a 4x wide one.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fxquant.nn.quantized.functional_modules import FloatFunctional

__all__ = ["LSTM", "LSTMCell", "QuantizableModuleError"]

_GATE_NAMES = ("input", "forget", "cell", "output")
_NO_CUSTOM_MODULES: dict[str, dict[Any, Any]] = {"float_to_observed_custom_module_class": {}}
_Hidden = tuple[Tensor, Tensor]


class QuantizableModuleError(TypeError, AssertionError):
    """A quantizable module built from a module it cannot take.

    Also an ``AssertionError``, which is what upstream raises.
    """


class LSTMCell(nn.Module):
    """One LSTM step from observable parts (see the module doc).

    Arguments as ``nn.LSTMCell`` (``input_dim``, ``hidden_dim``, ``bias``), plus
    ``split_gates``. When the state is omitted it starts at zero (quantized with
    ``initial_hidden_state_qparams`` / ``initial_cell_state_qparams`` if the input is
    quantized).
    """

    _FLOAT_MODULE = nn.LSTMCell
    __constants__: ClassVar[list[str]] = ["split_gates"]

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        split_gates: bool = False,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.input_size = input_dim
        self.hidden_size = hidden_dim
        self.bias = bias
        self.split_gates = split_gates
        self.igates: nn.Module
        self.hgates: nn.Module
        self.gates: nn.Module
        if not split_gates:
            self.igates = nn.Linear(input_dim, 4 * hidden_dim, bias=bias, **factory_kwargs)
            self.hgates = nn.Linear(hidden_dim, 4 * hidden_dim, bias=bias, **factory_kwargs)
            self.gates = FloatFunctional()
        else:
            self.igates = nn.ModuleDict(
                {
                    g: nn.Linear(input_dim, hidden_dim, bias=bias, **factory_kwargs)
                    for g in _GATE_NAMES
                }
            )
            self.hgates = nn.ModuleDict(
                {
                    g: nn.Linear(hidden_dim, hidden_dim, bias=bias, **factory_kwargs)
                    for g in _GATE_NAMES
                }
            )
            self.gates = nn.ModuleDict({g: FloatFunctional() for g in _GATE_NAMES})
        self.input_gate = nn.Sigmoid()
        self.forget_gate = nn.Sigmoid()
        self.cell_gate = nn.Tanh()
        self.output_gate = nn.Sigmoid()
        self.fgate_cx = FloatFunctional()
        self.igate_cgate = FloatFunctional()
        self.fgate_cx_igate_cgate = FloatFunctional()
        self.ogate_cy = FloatFunctional()
        self.initial_hidden_state_qparams: tuple[float, int] = (1.0, 0)
        self.initial_cell_state_qparams: tuple[float, int] = (1.0, 0)
        self.hidden_state_dtype: torch.dtype = torch.quint8
        self.cell_state_dtype: torch.dtype = torch.quint8

    def _gate_preactivations(self, x: Tensor, hx: Tensor) -> tuple[Tensor, ...]:
        if not self.split_gates:
            gates = self.gates.add(self.igates(x), self.hgates(hx))  # type: ignore[operator]
            return tuple(gates.chunk(4, 1))
        return tuple(
            self.gates[g].add(self.igates[g](x), self.hgates[g](hx))  # type: ignore[index]
            for g in _GATE_NAMES
        )

    def forward(self, x: Tensor, hidden: _Hidden | None = None) -> _Hidden:
        if hidden is None or hidden[0] is None or hidden[1] is None:
            hidden = self.initialize_hidden(x.shape[0], x.is_quantized)
        hx, cx = hidden
        i, f, g, o = self._gate_preactivations(x, hx)
        input_gate = self.input_gate(i)
        forget_gate = self.forget_gate(f)
        cell_gate = self.cell_gate(g)
        out_gate = self.output_gate(o)
        fgate_cx = self.fgate_cx.mul(forget_gate, cx)
        igate_cgate = self.igate_cgate.mul(input_gate, cell_gate)
        cy = self.fgate_cx_igate_cgate.add(fgate_cx, igate_cgate)
        hy = self.ogate_cy.mul(out_gate, torch.tanh(cy))
        return hy, cy

    def initialize_hidden(self, batch_size: int, is_quantized: bool = False) -> _Hidden:
        """Zero ``(h, c)`` of shape ``(batch_size, hidden_size)``."""
        h = torch.zeros((batch_size, self.hidden_size))
        c = torch.zeros((batch_size, self.hidden_size))
        if is_quantized:
            h_scale, h_zp = self.initial_hidden_state_qparams
            c_scale, c_zp = self.initial_cell_state_qparams
            h = torch.quantize_per_tensor(h, h_scale, h_zp, self.hidden_state_dtype)
            c = torch.quantize_per_tensor(c, c_scale, c_zp, self.cell_state_dtype)
        return h, c

    def _get_name(self) -> str:
        return "QuantizableLSTMCell"

    @classmethod
    def from_params(
        cls,
        wi: Tensor,
        wh: Tensor,
        bi: Tensor | None = None,
        bh: Tensor | None = None,
        split_gates: bool = False,
    ) -> LSTMCell:
        """A cell with the given ``(4 * hidden, in)`` / ``(4 * hidden, hidden)`` weights and
        biases (gate order ``i, f, g, o`` as in ``nn.LSTM``)."""
        if (bi is None) != (bh is None):
            raise QuantizableModuleError("bi and bh must both be None or both be tensors")
        cell = cls(wi.shape[1], wh.shape[1], bias=bi is not None, split_gates=split_gates)
        for w, b, gates in ((wi, bi, cell.igates), (wh, bh, cell.hgates)):
            if not split_gates:
                gates.weight = nn.Parameter(w)
                if b is not None:
                    gates.bias = nn.Parameter(b)
                continue
            for k, linear in enumerate(gates.values()):  # type: ignore[operator]
                linear.weight = nn.Parameter(w.chunk(4, dim=0)[k])
                if b is not None:
                    linear.bias = nn.Parameter(b.chunk(4, dim=0)[k])
        return cell

    @classmethod
    def from_float(
        cls, other: nn.Module, use_precomputed_fake_quant: bool = False, split_gates: bool = False
    ) -> LSTMCell:
        """The observable cell of a float ``nn.LSTMCell`` that carries a ``qconfig``."""
        if type(other) is not cls._FLOAT_MODULE:
            raise QuantizableModuleError(
                f"{cls.__name__}.from_float converts nn.LSTMCell, got {type(other).__name__}"
            )
        if not hasattr(other, "qconfig"):
            raise QuantizableModuleError(
                f"{cls.__name__}.from_float: the LSTMCell has no qconfig; set module.qconfig"
            )
        assert isinstance(other, nn.LSTMCell)
        observed = cls.from_params(
            other.weight_ih, other.weight_hh, other.bias_ih, other.bias_hh, split_gates=split_gates
        )
        observed.qconfig = other.qconfig
        linears = [observed.igates, observed.hgates]
        if split_gates:
            linears += [*observed.igates.values(), *observed.hgates.values()]  # type: ignore[operator]
        for linear in linears:
            linear.qconfig = other.qconfig
        return observed


class _LSTMSingleLayer(nn.Module):
    """One direction of one layer: the cell applied over the sequence (dim 0)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        split_gates: bool = False,
    ) -> None:
        super().__init__()
        self.cell = LSTMCell(
            input_dim, hidden_dim, bias=bias, split_gates=split_gates, device=device, dtype=dtype
        )

    def forward(self, x: Tensor, hidden: _Hidden | None = None) -> tuple[Tensor, _Hidden | None]:
        result = []
        for step in range(x.shape[0]):
            hidden = self.cell(x[step], hidden)
            result.append(hidden[0])
        return torch.stack(result, 0), hidden

    @classmethod
    def from_params(cls, *args: Any, **kwargs: Any) -> _LSTMSingleLayer:
        cell = LSTMCell.from_params(*args, **kwargs)
        layer = cls(cell.input_size, cell.hidden_size, cell.bias, split_gates=cell.split_gates)
        layer.cell = cell
        return layer


def _split_directions(state: Any, bidirectional: bool) -> tuple[Any, Any]:
    """``(forward, backward)`` parts of a per-layer state tensor (or ``None``)."""
    if state is None or not bidirectional:
        return state, None
    return state[0], state[1]


class _LSTMLayer(nn.Module):
    """One layer, one or two directions."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        bias: bool = True,
        batch_first: bool = False,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        split_gates: bool = False,
    ) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.bidirectional = bidirectional
        kwargs: dict[str, Any] = {"device": device, "dtype": dtype, "split_gates": split_gates}
        self.layer_fw = _LSTMSingleLayer(input_dim, hidden_dim, bias=bias, **kwargs)
        if self.bidirectional:
            self.layer_bw = _LSTMSingleLayer(input_dim, hidden_dim, bias=bias, **kwargs)

    def forward(self, x: Tensor, hidden: Any = None) -> tuple[Tensor, tuple[Any, Any]]:
        if self.batch_first:
            x = x.transpose(0, 1)
        hx, cx = (None, None) if hidden is None else hidden
        hx_fw, hx_bw = _split_directions(hx, self.bidirectional)
        cx_fw, cx_bw = _split_directions(cx, self.bidirectional)
        hidden_fw = None if hx_fw is None and cx_fw is None else (hx_fw, cx_fw)
        hidden_bw = None if hx_bw is None or cx_bw is None else (hx_bw, cx_bw)
        result, hidden_fw = self.layer_fw(x, hidden_fw)
        if hasattr(self, "layer_bw") and self.bidirectional:
            result_bw, hidden_bw = self.layer_bw(x.flip(0), hidden_bw)
            result = torch.cat([result, result_bw.flip(0)], result.dim() - 1)
            if hidden_fw is None or hidden_bw is None:
                h, c = hidden_fw if hidden_bw is None else hidden_bw
            else:
                h = torch.stack([hidden_fw[0], hidden_bw[0]], 0)
                c = torch.stack([hidden_fw[1], hidden_bw[1]], 0)
        else:
            h, c = hidden_fw
        if self.batch_first:
            result.transpose_(0, 1)
        return result, (h, c)

    @classmethod
    def from_float(
        cls, other: nn.Module, layer_idx: int = 0, qconfig: Any = None, **kwargs: Any
    ) -> _LSTMLayer:
        """Layer ``layer_idx`` of a float ``nn.LSTM`` (keyword overrides for the layout)."""
        if not hasattr(other, "qconfig") and qconfig is None:
            raise QuantizableModuleError("the LSTM has no qconfig and none was given")

        def get(name: str) -> Any:
            return kwargs.get(name, getattr(other, name))

        split_gates = kwargs.get("split_gates", False)
        layer = cls(
            get("input_size"), get("hidden_size"), get("bias"), get("batch_first"),
            get("bidirectional"), split_gates=split_gates,
        )  # fmt: skip
        layer.qconfig = getattr(other, "qconfig", qconfig)
        suffixes = ["", "_reverse"] if getattr(other, "bidirectional", False) else [""]
        for suffix, attr in zip(suffixes, ("layer_fw", "layer_bw")):
            params = [
                getattr(other, f"{kind}_l{layer_idx}{suffix}", None)
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
            setattr(layer, attr, _LSTMSingleLayer.from_params(*params, split_gates=split_gates))
        return layer


class LSTM(nn.Module):
    """Quantizable ``nn.LSTM`` (same arguments, plus ``split_gates``); dropout is ignored.

    Built by ``prepare`` from a float ``nn.LSTM`` through :meth:`from_float` (the default
    custom-module configuration of eager mode), converted by the quantized ``LSTM``'s
    ``from_observed``. Weights are per layer: ``lstm.layers[0].layer_fw.cell.igates.weight``.

    >>> observed = LSTM.from_float(float_lstm)    # float_lstm.qconfig set; observers attached
    >>> output, (h, c) = observed(torch.randn(5, 3, 10))
    """

    _FLOAT_MODULE = nn.LSTM

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        split_gates: bool = False,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.training = False  # eval unless asked otherwise
        _check_dropout(dropout, num_layers)
        kwargs: dict[str, Any] = {
            "batch_first": False, "bidirectional": bidirectional, "split_gates": split_gates,
            "device": device, "dtype": dtype,
        }  # fmt: skip
        # layers after the first read both directions' outputs (upstream passes hidden_size
        # here, so its freshly built bidirectional multi-layer LSTM cannot run)
        num_directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            _LSTMLayer(
                input_size if idx == 0 else hidden_size * num_directions,
                hidden_size,
                bias,
                **kwargs,
            )
            for idx in range(num_layers)
        )

    def _initial_states(self, x: Tensor, hidden: Any) -> list[Any]:
        num_directions = 2 if self.bidirectional else 1
        max_batch_size = x.size(1)
        if hidden is None:
            zeros = torch.zeros(
                num_directions, max_batch_size, self.hidden_size, dtype=torch.float, device=x.device
            ).squeeze_(0)
            if x.is_quantized:
                zeros = torch.quantize_per_tensor(zeros, scale=1.0, zero_point=0, dtype=x.dtype)
            return [(zeros, zeros) for _ in range(self.num_layers)]
        if not isinstance(hidden[0], Tensor):
            return list(hidden)
        shape = (self.num_layers, num_directions, max_batch_size, self.hidden_size)
        hx, cx = hidden[0].reshape(shape), hidden[1].reshape(shape)
        return [(hx[idx].squeeze(0), cx[idx].squeeze(0)) for idx in range(self.num_layers)]

    def forward(self, x: Tensor, hidden: Any = None) -> tuple[Tensor, _Hidden]:
        if self.batch_first:
            x = x.transpose(0, 1)
        states = self._initial_states(x, hidden)
        hx_list, cx_list = [], []
        for idx, layer in enumerate(self.layers):
            x, (h, c) = layer(x, states[idx])
            hx_list.append(h)
            cx_list.append(c)
        hx_tensor, cx_tensor = torch.stack(hx_list), torch.stack(cx_list)
        # fold the direction dimension of bidirectional layers into the layer dimension
        hx_tensor = hx_tensor.reshape(-1, hx_tensor.shape[-2], hx_tensor.shape[-1])
        cx_tensor = cx_tensor.reshape(-1, cx_tensor.shape[-2], cx_tensor.shape[-1])
        if self.batch_first:
            x = x.transpose(0, 1)
        return x, (hx_tensor, cx_tensor)

    def _get_name(self) -> str:
        return "QuantizableLSTM"

    @classmethod
    def from_float(cls, other: nn.Module, qconfig: Any = None, split_gates: bool = False) -> Any:
        """The observed LSTM of a float ``nn.LSTM``: rebuilt from observable parts, then
        prepared (``prepare`` in eval mode, ``prepare_qat`` in training mode) with
        ``other.qconfig`` (or ``qconfig``)."""
        if not isinstance(other, cls._FLOAT_MODULE):
            raise QuantizableModuleError(
                f"{cls.__name__}.from_float converts nn.LSTM, got {type(other).__name__}"
            )
        if not hasattr(other, "qconfig") and not qconfig:
            raise QuantizableModuleError(
                f"{cls.__name__}.from_float: the LSTM has no qconfig; set module.qconfig or "
                f"pass qconfig="
            )
        observed = cls(
            other.input_size, other.hidden_size, other.num_layers, other.bias,
            other.batch_first, other.dropout, other.bidirectional, split_gates=split_gates,
        )  # fmt: skip
        observed.qconfig = getattr(other, "qconfig", qconfig)
        for idx in range(other.num_layers):
            observed.layers[idx] = _LSTMLayer.from_float(
                other, idx, qconfig, batch_first=False, split_gates=split_gates
            )
        # eager mode's prepare is above this package; import it where it is needed
        from fxquant.eager import prepare, prepare_qat

        if other.training:
            observed.train()
            return prepare_qat(observed, inplace=True)
        observed.eval()
        # nothing inside is a custom module: observe the parts as they are
        return prepare(observed, inplace=True, prepare_custom_config_dict=_NO_CUSTOM_MODULES)

    @classmethod
    def from_observed(cls, other: Any) -> Any:
        raise NotImplementedError(
            "the quantizable LSTM only goes float -> observed; convert an observed LSTM with "
            "the quantized LSTM's from_observed (convert() does it)"
        )


def _check_dropout(dropout: Any, num_layers: int) -> None:
    if (
        not isinstance(dropout, numbers.Real)
        or isinstance(dropout, bool)
        or not 0 <= float(dropout) <= 1
    ):
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability of an "
            "element being zeroed"
        )
    if float(dropout) > 0:
        warnings.warn(
            "dropout option for quantizable LSTM is ignored. If you are training, please, use "
            "nn.LSTM version followed by `prepare` step.",
            stacklevel=3,
        )
        if num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=3,
            )
