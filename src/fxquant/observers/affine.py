"""Observers for block-wise affine quantization (the PT2E / torchao family).

Unlike the ``dtype``/``qscheme`` observers of :mod:`fxquant.observers.minmax`, these are
configured by a :class:`~fxquant.numerics.blockwise.MappingType`, a target dtype and a
:class:`~fxquant.observers.granularity.Granularity`; the block size follows from the first
tensor observed (:func:`~fxquant.observers.granularity.get_block_size`). Scale and zero point
come from :func:`fxquant.numerics.blockwise.choose_qparams_affine_with_min_max`.

``convert(model, observer_node)`` replaces the observer's node in a ``torch.fx`` graph by a
quantize/dequantize pair (see :meth:`AffineQuantizedObserverBase.convert`).
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import fx, nn

from fxquant.numerics import affine as affine_ops
from fxquant.numerics.blockwise import (
    MappingType,
    TorchAODType,
    ZeroPointDomain,
    affine_qrange,
    blockwise_minmax,
    choose_qparams_affine,
    choose_qparams_affine_with_min_max,
)
from fxquant.numerics.dtypes import SUPPORTED_QDTYPES
from fxquant.numerics.ops import quantized_decomposed
from fxquant.observers.base import (
    _with_args,
    _with_callable_args,
    check_finite_minmax,
    warn_empty_input,
)
from fxquant.observers.granularity import (
    Granularity,
    PerAxis,
    PerGroup,
    PerRow,
    PerTensor,
    PerToken,
    get_block_size,
)

__all__ = [
    "AffineQuantizedMinMaxObserver",
    "AffineQuantizedObserverBase",
    "MappingType",
    "TorchAODType",
    "UncalibratedObserverError",
    "ZeroPointDomain",
]

# Integer dtypes the quantized_decomposed q/dq ops accept.
_DECOMPOSED_DTYPES = frozenset({torch.uint8, torch.int8, torch.uint16, torch.int16, torch.int32})


class UncalibratedObserverError(RuntimeError):
    """Quantization parameters were requested from an observer that has seen no data."""


class AffineQuantizedObserverBase(ABC, nn.Module):
    """Base of block-wise affine observers.

    Args:
        mapping_type: symmetric, symmetric without clipping error, or asymmetric.
        target_dtype: the quantized dtype (``torch.int8``, ``torch.uint4``,
            ``TorchAODType.INT4``, ``torch.float8_e4m3fn``, ...).
        granularity: which elements share parameters (``PerTensor()``, ``PerAxis(0)``, ...).
        quant_min, quant_max: a narrower integer range (default: the dtype's full range).
        eps: smallest scale (default: the observed dtype's eps).
        scale_dtype, zero_point_dtype: dtypes of the parameters (default: the observed dtype).
        preserve_zero: widen the range to contain 0 so that 0.0 is exact.
        zero_point_domain: integer, float (with ``preserve_zero=False``) or no zero point.
        **kwargs: accepted and ignored, as upstream does.

    Subclasses implement ``forward`` (record statistics, set ``block_size`` and
    ``original_dtype``, return the input) and ``calculate_qparams``.
    """

    with_args = classmethod(_with_args)
    with_callable_args = classmethod(_with_callable_args)
    # Dynamic observers choose parameters at run time; convert() then emits the choice.
    is_dynamic: bool = False

    def __init__(
        self,
        mapping_type: MappingType,
        target_dtype: torch.dtype | TorchAODType,
        granularity: Granularity,
        quant_min: int | None = None,
        quant_max: int | None = None,
        eps: float | None = None,
        scale_dtype: torch.dtype | None = None,
        zero_point_dtype: torch.dtype | None = None,
        preserve_zero: bool = True,
        zero_point_domain: ZeroPointDomain | None = ZeroPointDomain.INT,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(mapping_type, MappingType):
            raise TypeError(f"{name}: mapping_type must be a MappingType, got {mapping_type!r}")
        if not isinstance(granularity, Granularity):
            raise TypeError(
                f"{name}: granularity must be a Granularity instance such as PerTensor() or "
                f"PerAxis(axis=0), got {granularity!r}"
            )
        if zero_point_domain is not None and not isinstance(zero_point_domain, ZeroPointDomain):
            raise TypeError(
                f"{name}: zero_point_domain must be a ZeroPointDomain or None, "
                f"got {zero_point_domain!r}"
            )
        affine_qrange(target_dtype, quant_min, quant_max)  # validates dtype and range early
        self.mapping_type = mapping_type
        self.target_dtype = target_dtype
        self.granularity = granularity
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.eps = eps
        self.scale_dtype = scale_dtype
        self.zero_point_dtype = zero_point_dtype
        self.preserve_zero = preserve_zero
        self.zero_point_domain = zero_point_domain
        # set by forward from the first observed tensor
        self.block_size: tuple[int, ...] | None = None
        self.original_dtype: torch.dtype | None = None

    @abstractmethod
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Record statistics of ``input`` and return it unchanged."""

    @abstractmethod
    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scale and zero point from the recorded statistics."""

    def extra_repr(self) -> str:
        return (
            f"mapping_type={self.mapping_type.name}, target_dtype={self.target_dtype}, "
            f"granularity={self.granularity}, block_size={self.block_size}"
        )

    def convert(self, model: fx.GraphModule, observer_node: fx.Node) -> None:
        """Replace ``observer_node`` (a call to this observer) by quantize -> dequantize.

        Static observers freeze ``calculate_qparams()`` into the graph and use the standard
        ``torch.ops.quantized_decomposed`` ops where one exists for the granularity
        (per tensor, per axis, per token / row, 2-d per group; integer zero points, dtypes
        int8/uint8/int16/uint16/int32); other block sizes and dtypes call fxquant's
        :func:`~fxquant.numerics.affine.quantize_affine` /
        :func:`~fxquant.numerics.affine.dequantize_affine`. Dynamic observers emit
        :func:`~fxquant.numerics.blockwise.choose_qparams_affine` on the input followed by
        those two functions. All arithmetic is in float32.

        Raises:
            RuntimeError: the observer has not seen data (``block_size`` unknown).
            NotImplementedError: float zero points, or a target dtype fxquant cannot store.
        """
        if self.block_size is None or self.original_dtype is None:
            raise RuntimeError(
                f"{type(self).__name__} at {observer_node.format_node()} has not observed any "
                "tensor, so its block size is unknown; run calibration data through the model "
                "before converting"
            )
        if self.zero_point_domain is ZeroPointDomain.FLOAT:
            raise NotImplementedError(
                f"{observer_node.format_node()}: no graph op quantizes with a float zero point "
                "(ZeroPointDomain.FLOAT); use ZeroPointDomain.INT"
            )
        x = observer_node.args[0]
        assert isinstance(x, fx.Node), "an observer node takes the observed tensor as its input"
        with model.graph.inserting_before(observer_node):
            if self.is_dynamic:
                dq = self._emit_dynamic(model.graph, x)
            else:
                dq = self._emit_static(model, x)
        observer_node.replace_all_uses_with(dq)
        model.graph.erase_node(observer_node)

    # ---- convert helpers -------------------------------------------------------------------

    def _qrange(self) -> tuple[int, int]:
        qmin, qmax = affine_qrange(self.target_dtype, self.quant_min, self.quant_max)
        return int(qmin), int(qmax)

    def _fxquant_storable(self) -> torch.dtype:
        dtype = self.target_dtype
        if not isinstance(dtype, torch.dtype) or dtype not in SUPPORTED_QDTYPES:
            raise NotImplementedError(
                f"cannot convert to target dtype {dtype}: fxquant's quantize_affine supports "
                f"{sorted(map(str, SUPPORTED_QDTYPES))}"
            )
        return dtype

    def _emit_dynamic(self, graph: fx.Graph, x: fx.Node) -> fx.Node:
        dtype = self._fxquant_storable()
        qmin, qmax = self._qrange()
        block = self.block_size
        domain = None if self.zero_point_domain is None else self.zero_point_domain.name
        qparams = graph.call_function(
            choose_qparams_affine,
            (x, self.mapping_type.name, block, dtype, qmin, qmax, self.eps, self.scale_dtype,
             self.zero_point_dtype, self.preserve_zero, domain),
        )
        scale = graph.call_function(operator.getitem, (qparams, 0))
        zero_point = graph.call_function(operator.getitem, (qparams, 1))
        return self._emit_affine_pair(graph, x, scale, zero_point, dtype, qmin, qmax)

    def _emit_affine_pair(
        self, graph: fx.Graph, x: fx.Node, scale: Any, zero_point: Any,
        dtype: torch.dtype, qmin: int, qmax: int,
    ) -> fx.Node:
        q = graph.call_function(
            affine_ops.quantize_affine, (x, self.block_size, scale, zero_point, dtype, qmin, qmax)
        )
        return graph.call_function(
            affine_ops.dequantize_affine, (q, self.block_size, scale, zero_point, dtype),
            {"output_dtype": self.original_dtype},
        )

    def _emit_static(self, model: fx.GraphModule, x: fx.Node) -> fx.Node:
        scale, zero_point = self.calculate_qparams()
        assert self.block_size is not None and self.original_dtype is not None
        qmin, qmax = self._qrange()
        plan = _StaticQDQ(
            model=model,
            x=x,
            scale=scale.detach().to(torch.float32),
            zero_point=(
                torch.zeros_like(scale, dtype=torch.int64)
                if zero_point is None
                else zero_point.detach().to(torch.int64)
            ),
            qmin=qmin,
            qmax=qmax,
            block_size=self.block_size,
            original_dtype=self.original_dtype,
        )
        target = self.target_dtype
        if isinstance(target, torch.dtype) and target in _DECOMPOSED_DTYPES:
            rule = _decomposed_rule(self.granularity, len(self.block_size))
            if rule is not None:
                return rule(plan, target)
        dtype = self._fxquant_storable()
        s = _constant(model, "_scale", plan.scale)
        zp = _constant(model, "_zero_point", plan.zero_point)
        return self._emit_affine_pair(model.graph, x, s, zp, dtype, qmin, qmax)


# ---- static q/dq through torch.ops.quantized_decomposed -------------------------------------


@dataclass(frozen=True, kw_only=True)
class _StaticQDQ:
    """What a static q/dq emitter needs: where to insert, and the frozen parameters."""

    model: fx.GraphModule
    x: fx.Node
    scale: torch.Tensor  # float32
    zero_point: torch.Tensor  # int64
    qmin: int
    qmax: int
    block_size: tuple[int, ...]
    original_dtype: torch.dtype

    def constant(self, prefix: str, value: torch.Tensor) -> fx.Node:
        return _constant(self.model, prefix, value)

    def call(self, op: Callable[..., Any], *args: Any, **kwargs: Any) -> fx.Node:
        return self.model.graph.call_function(op, args, kwargs)


_Rule = Callable[[_StaticQDQ, torch.dtype], fx.Node]


def _decomposed_rule(granularity: Granularity, ndim: int) -> _Rule | None:
    """The quantized_decomposed emitter for a granularity, or None for the generic fallback."""
    if isinstance(granularity, PerTensor):
        return _emit_per_tensor
    if isinstance(granularity, PerAxis):
        return partial(_emit_per_channel, axis=granularity.axis % ndim)
    if isinstance(granularity, PerToken) or (
        isinstance(granularity, PerRow) and granularity.dim in (-1, ndim - 1)
    ):
        return _emit_per_token
    if isinstance(granularity, PerGroup) and ndim == 2:
        return _emit_per_channel_group
    return None


def _emit_per_tensor(p: _StaticQDQ, dtype: torch.dtype) -> fx.Node:
    # per-tensor parameters go in as literals, as the PT2E convert emits them
    args = (float(p.scale), int(p.zero_point), p.qmin, p.qmax, dtype)
    q = p.call(quantized_decomposed.quantize_per_tensor.default, p.x, *args)
    return p.call(
        quantized_decomposed.dequantize_per_tensor.default, q, *args, out_dtype=p.original_dtype
    )


def _emit_per_channel(p: _StaticQDQ, dtype: torch.dtype, *, axis: int) -> fx.Node:
    s = p.constant("_scale", p.scale.reshape(-1))
    zp = p.constant("_zero_point", p.zero_point.reshape(-1))
    args = (s, zp, axis, p.qmin, p.qmax, dtype)
    q = p.call(quantized_decomposed.quantize_per_channel.default, p.x, *args)
    return p.call(
        quantized_decomposed.dequantize_per_channel.default, q, *args, out_dtype=p.original_dtype
    )


def _emit_per_token(p: _StaticQDQ, dtype: torch.dtype) -> fx.Node:
    # the per-token ops broadcast (..., 1)-shaped parameters against the input
    keep = _keepdim_shape(p.block_size, p.scale)
    s = p.constant("_scale", p.scale.reshape(keep))
    zp = p.constant("_zero_point", p.zero_point.reshape(keep))
    args = (s, zp, p.qmin, p.qmax, dtype)
    q = p.call(quantized_decomposed.quantize_per_token.default, p.x, *args)
    return p.call(quantized_decomposed.dequantize_per_token.default, q, *args, p.original_dtype)


def _emit_per_channel_group(p: _StaticQDQ, dtype: torch.dtype) -> fx.Node:
    s = p.constant("_scale", p.scale)
    zp = p.constant("_zero_point", p.zero_point)
    args = (s, zp, p.qmin, p.qmax, dtype, p.block_size[-1])
    q = p.call(quantized_decomposed.quantize_per_channel_group.default, p.x, *args)
    return p.call(
        quantized_decomposed.dequantize_per_channel_group.default, q, *args, p.original_dtype
    )


def _keepdim_shape(block_size: tuple[int, ...], scale: torch.Tensor) -> list[int]:
    # Per-token blocks are (1, ..., 1, N): the leading dims are kept whole and only the last
    # one can have been dropped from the parameters' layout, so restore it as size 1.
    if scale.dim() == len(block_size):
        return list(scale.shape)
    if scale.dim() == len(block_size) - 1:
        return [*scale.shape, 1]
    raise ValueError(
        f"per-token scale of shape {tuple(scale.shape)} does not fit block size {block_size}"
    )


def _constant(model: fx.GraphModule, prefix: str, value: torch.Tensor) -> fx.Node:
    """Register ``value`` as a buffer under the first free name ``{prefix}{i}`` and return a
    ``get_attr`` node reading it."""
    i = 0
    while hasattr(model, f"{prefix}{i}"):
        i += 1
    name = f"{prefix}{i}"
    model.register_buffer(name, value.clone())
    return model.graph.get_attr(name)


# ---- a concrete observer ------------------------------------------------------------------


class AffineQuantizedMinMaxObserver(AffineQuantizedObserverBase):
    """Running per-block minimum and maximum over every batch observed.

    ``min_val``/``max_val`` hold one entry per block (empty until the first batch; the block
    layout of :func:`~fxquant.numerics.blockwise.blockwise_minmax`). Every batch must produce
    the same block layout (for per-token, the same number of tokens).

    >>> obs = AffineQuantizedMinMaxObserver(MappingType.SYMMETRIC, torch.int8, PerAxis(0))
    >>> _ = obs(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
    >>> obs.calculate_qparams()[0]
    tensor([0.0157, 0.0039])
    """

    min_val: torch.Tensor
    max_val: torch.Tensor

    def __init__(
        self,
        mapping_type: MappingType,
        target_dtype: torch.dtype | TorchAODType,
        granularity: Granularity,
        quant_min: int | None = None,
        quant_max: int | None = None,
        eps: float | None = None,
        scale_dtype: torch.dtype | None = None,
        zero_point_dtype: torch.dtype | None = None,
        preserve_zero: bool = True,
        zero_point_domain: ZeroPointDomain | None = ZeroPointDomain.INT,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            mapping_type, target_dtype, granularity, quant_min, quant_max, eps, scale_dtype,
            zero_point_dtype, preserve_zero, zero_point_domain, **kwargs,
        )
        self.register_buffer("min_val", torch.tensor([]))
        self.register_buffer("max_val", torch.tensor([]))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.numel() == 0:
            warn_empty_input(self)
            return input
        x = input.detach()
        block_size = get_block_size(x.shape, self.granularity)
        min_val, max_val = blockwise_minmax(x, block_size)
        check_finite_minmax(self, min_val, max_val)
        self.block_size = block_size
        self.original_dtype = x.dtype
        if self.min_val.numel() == 0:
            self.min_val = min_val
            self.max_val = max_val
            return input
        if self.min_val.shape != min_val.shape:
            raise ValueError(
                f"{type(self).__name__}: this batch gives {tuple(min_val.shape)} blocks but "
                f"earlier batches gave {tuple(self.min_val.shape)} (input shape "
                f"{tuple(x.shape)}, granularity {self.granularity}); keep the blocked dims "
                "the same across batches or use a coarser granularity"
            )
        self.min_val.copy_(torch.min(self.min_val, min_val))
        self.max_val.copy_(torch.max(self.max_val, max_val))
        return input

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.min_val.numel() == 0:
            raise UncalibratedObserverError(
                f"{type(self).__name__}.calculate_qparams() was called before the observer saw "
                "any data; run calibration data through the model first"
            )
        return choose_qparams_affine_with_min_max(
            self.min_val, self.max_val, self.mapping_type, [], self.target_dtype,
            self.quant_min, self.quant_max, self.eps, self.scale_dtype, self.zero_point_dtype,
            self.preserve_zero, self.zero_point_domain,
        )

    def reset_min_max_vals(self) -> None:
        """Forget the recorded range (the block layout is re-learned from the next batch)."""
        self.min_val = torch.tensor([], device=self.min_val.device)
        self.max_val = torch.tensor([], device=self.max_val.device)

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
        # The buffers' shape depends on the data; take the checkpoint's before copying.
        for name in ("min_val", "max_val"):
            saved = state_dict.get(prefix + name)
            if isinstance(saved, torch.Tensor):
                setattr(self, name, torch.empty_like(saved))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
