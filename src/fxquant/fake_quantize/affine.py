"""``AffineFakeQuantize``: fake quantization at any granularity, with the block-wise
parameters of an affine observer (:mod:`fxquant.observers.affine`).

Output, for each element ``x`` and its block's ``scale`` and ``zero_point`` (see
:func:`fxquant.numerics.affine.fake_quantize_affine`)::

    x_out = (clamp(round(x * (1 / scale)) + zero_point, quant_min, quant_max) - zero_point) * scale

with a straight-through gradient: ``dx = dy`` where the rounded value was not clamped, 0 where
it was. For float8 targets the output is the saturating cast and back, with ``dx = dy`` where
``|x / scale|`` is within the float8 range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import fx

from fxquant.fake_quantize.base import FakeQuantizeBase
from fxquant.numerics.affine import blocked_view, fake_quantize_affine
from fxquant.numerics.blockwise import (
    MappingType,
    ZeroPointDomain,
    affine_qrange,
    choose_qparams_affine,
)
from fxquant.numerics.dtypes import SUPPORTED_QDTYPES, is_float_qdtype
from fxquant.observers.affine import AffineQuantizedMinMaxObserver, AffineQuantizedObserverBase
from fxquant.observers.granularity import PerAxis, PerGroup, PerTensor, get_block_size

__all__ = [
    "AffineFakeQuantize",
    "default_affine_fake_quant",
    "default_affine_per_axis_fake_quant",
    "default_groupwise_fake_quant",
]


class AffineFakeQuantize(FakeQuantizeBase):
    """Simulates block-wise affine quantize + dequantize during training.

    Works with every granularity of :mod:`fxquant.observers.granularity` (per tensor, axis,
    group, block, row, token), taking its parameters from an
    :class:`~fxquant.observers.affine.AffineQuantizedObserverBase`.

    - Static (default): while the observer is enabled each batch updates it and ``scale`` /
      ``zero_point`` become its ``calculate_qparams()``; once disabled, the last parameters
      stay frozen.
    - Dynamic (``is_dynamic=True``, with a dynamic observer such as
      ``AffineQuantizedPlaceholderObserver``): parameters are chosen from each batch, exactly
      as the converted graph will choose them at run time.

    After ``convert_pt2e`` the observer's own ``convert`` emits the quantize/dequantize pair.

    Args:
        observer: an affine observer class or ``with_args`` constructor.
        is_dynamic: choose parameters per batch; passed on to the observer.
        **observer_kwargs: the observer's arguments (``mapping_type``, ``target_dtype``,
            ``granularity``, ...).

    Attributes:
        activation_post_process: the observer.
        scale, zero_point: the parameters in use (buffers; int32 zero point, zeros for
            ``ZeroPointDomain.NONE``).
        target_dtype, quant_min, quant_max, mapping_type, granularity, zero_point_domain:
            copied from the observer.
        block_size: the block size of the last batch fake-quantized or observed.

    >>> fq = AffineFakeQuantize(mapping_type=MappingType.SYMMETRIC, target_dtype=torch.int8,
    ...                         granularity=PerGroup(32))
    >>> y = fq(torch.randn(4, 64))    # observe, then fake-quantize in groups of 32
    """

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(
        self,
        observer: Any = AffineQuantizedMinMaxObserver,
        is_dynamic: bool = False,
        **observer_kwargs: Any,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if is_dynamic:
            observer_kwargs["is_dynamic"] = True
        obs = observer(**observer_kwargs)
        if not isinstance(obs, AffineQuantizedObserverBase):
            raise TypeError(
                f"{owner} needs an affine observer (AffineQuantizedMinMaxObserver, "
                f"AffineQuantizedMovingAverageMinMaxObserver, ...), got {type(obs).__name__}; "
                "for dtype/qscheme observers use FakeQuantize"
            )
        if is_dynamic and not obs.is_dynamic:
            raise ValueError(
                f"{owner}(is_dynamic=True) needs a dynamic observer, but {type(obs).__name__} "
                "is static; use AffineQuantizedPlaceholderObserver (or "
                "AffineQuantizedMovingAverageMinMaxObserver with averaging_constant=1)"
            )
        if obs.zero_point_domain is ZeroPointDomain.FLOAT:
            raise NotImplementedError(
                f"{owner}: fake quantization with a float zero point (ZeroPointDomain.FLOAT) "
                "is not supported; use ZeroPointDomain.INT or ZeroPointDomain.NONE"
            )
        self.activation_post_process = obs
        self.target_dtype = obs.target_dtype
        self.quant_min = obs.quant_min
        self.quant_max = obs.quant_max
        self.mapping_type = obs.mapping_type
        self.granularity = obs.granularity
        self.zero_point_domain = obs.zero_point_domain
        self.is_dynamic: bool = obs.is_dynamic
        self.block_size: tuple[int, ...] | None = None
        self.register_buffer("scale", torch.tensor([1.0], dtype=torch.float))
        self.register_buffer("zero_point", torch.tensor([0], dtype=torch.int))

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor | None]:  # type: ignore[override]  # no kwargs
        """The observer's current ``(scale, zero_point)``."""
        return self.activation_post_process.calculate_qparams()

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        obs = self.activation_post_process
        if self.observer_enabled[0] == 1:
            obs(X.detach())
            self.block_size = obs.block_size
            if not self.is_dynamic:
                self._set_qparams(*obs.calculate_qparams())
        if self.fake_quant_enabled[0] == 1:
            block_size = get_block_size(X.shape, self.granularity)
            if self.is_dynamic:
                self._set_qparams(*self._choose_qparams(X.detach(), block_size))
            X = self._fake_quantize(X, block_size)
            self.block_size = block_size
        return X

    def convert(self, model: fx.GraphModule, observer_node: fx.Node) -> None:
        """Replace ``observer_node`` (a call to this module) by the observer's
        quantize/dequantize pattern (see :meth:`AffineQuantizedObserverBase.convert`)."""
        self.activation_post_process.convert(model, observer_node)

    # ---- parameters ---------------------------------------------------------------------

    def _choose_qparams(
        self, x: torch.Tensor, block_size: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # the same call the dynamic convert emits into the graph
        obs = self.activation_post_process
        return choose_qparams_affine(
            x, obs.mapping_type, block_size, obs.target_dtype, obs.quant_min, obs.quant_max,
            obs.eps, obs.scale_dtype, obs.zero_point_dtype, obs.preserve_zero,
            obs.zero_point_domain,
        )

    def _set_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor | None) -> None:
        # The buffers start with one element; block-wise observers produce one per block.
        scale = scale.detach().to(self.scale.device)
        zero_point = (
            torch.zeros_like(scale) if zero_point is None else zero_point.detach()
        ).to(self.zero_point.device)
        if self.scale.shape != scale.shape:
            self.scale.resize_(scale.shape)
        if self.zero_point.shape != zero_point.shape:
            self.zero_point.resize_(zero_point.shape)
        self.scale.copy_(scale)
        self.zero_point.copy_(zero_point)

    # ---- fake quantization --------------------------------------------------------------

    def _fake_quantize(self, X: torch.Tensor, block_size: tuple[int, ...]) -> torch.Tensor:
        blocks = math.prod(s // b for s, b in zip(X.shape, block_size))
        if self.scale.numel() != blocks:
            raise ValueError(
                f"{type(self).__name__}: an input of shape {tuple(X.shape)} has {blocks} blocks "
                f"under {self.granularity} but the module holds {self.scale.numel()} scales; "
                "run at least one batch of this shape with the observer enabled before "
                "fake-quantizing with it disabled"
            )
        qmin, qmax = affine_qrange(self.target_dtype, self.quant_min, self.quant_max)
        zero_point = None if self.zero_point_domain in (None, ZeroPointDomain.NONE) else (
            self.zero_point
        )
        return _FakeQuantizeAffineSTE.apply(
            X, block_size, self.scale, zero_point, self._grid_dtype(), int(qmin), int(qmax)
        )

    def _grid_dtype(self) -> torch.dtype:
        target = self.target_dtype
        if isinstance(target, torch.dtype) and target in SUPPORTED_QDTYPES:
            return target
        if isinstance(target, torch.dtype) and target.is_floating_point:
            raise NotImplementedError(
                f"{type(self).__name__}: cannot fake-quantize to {target}; supported float "
                f"targets are {sorted(str(d) for d in SUPPORTED_QDTYPES if is_float_qdtype(d))}"
            )
        # Any other integer target (torch.uint1..7, torch.int1..7, TorchAODType.INTn): the
        # grid is fully given by [quant_min, quant_max], which int32 contains.
        return torch.int32

    def extra_repr(self) -> str:
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, "
            f"observer_enabled={self.observer_enabled}, "
            f"quant_min={self.quant_min}, quant_max={self.quant_max}, "
            f"target_dtype={self.target_dtype}, granularity={self.granularity}, "
            f"mapping_type={self.mapping_type}, zero_point_domain={self.zero_point_domain}, "
            f"is_dynamic={self.is_dynamic}, block_size={self.block_size}, "
            f"scale={self.scale}, zero_point={self.zero_point}"
        )

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
        # The parameters' shape depends on the data: take the checkpoint's before copying.
        for name in ("scale", "zero_point"):
            saved = state_dict.get(prefix + name)
            if isinstance(saved, torch.Tensor):
                getattr(self, name).resize_(saved.shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class _FakeQuantizeAffineSTE(torch.autograd.Function):
    """fake_quantize_affine forward; straight-through backward masked to the unclamped
    elements."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        block_size: tuple[int, ...],
        scale: torch.Tensor,
        zero_point: torch.Tensor | None,
        dtype: torch.dtype,
        quant_min: int,
        quant_max: int,
    ) -> torch.Tensor:
        x_hat = fake_quantize_affine(x, block_size, scale, zero_point, dtype, quant_min, quant_max)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(
                _unclamped(x, block_size, scale, zero_point, dtype, quant_min, quant_max)
            )
        return x_hat

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_x = None
        if ctx.needs_input_grad[0]:
            (inside,) = ctx.saved_tensors
            grad_x = grad * inside
        return grad_x, None, None, None, None, None, None


def _unclamped(
    x: torch.Tensor,
    block_size: Sequence[int],
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    dtype: torch.dtype,
    quant_min: int,
    quant_max: int,
) -> torch.Tensor:
    """Boolean mask of the elements that quantize inside the range (no clamping/saturation)."""
    blocked, qshape = blocked_view(x.detach(), block_size)
    scale = scale.detach().to(torch.float32).reshape(qshape)
    if is_float_qdtype(dtype):
        # float targets saturate where |x / scale| exceeds the format's largest finite value
        inside = (blocked.float() / scale).abs() <= torch.finfo(dtype).max
    else:
        # the integer level before clamping: round(x * (1 / scale)) + zero_point
        level = torch.round(blocked.float() * (1.0 / scale))
        if zero_point is not None:
            level = level + zero_point.detach().to(torch.float32).reshape(qshape)
        inside = (level >= quant_min) & (level <= quant_max)
    return inside.reshape(x.shape)


# ---- default constructors (the names torchao's PT2E fake_quantize module provides) ---------

default_affine_fake_quant = AffineFakeQuantize.with_args(
    observer=AffineQuantizedMinMaxObserver,
    mapping_type=MappingType.ASYMMETRIC,
    target_dtype=torch.uint8,
    granularity=PerTensor(),
)
"""Activations: asymmetric uint8, one scale per tensor."""

default_groupwise_fake_quant = AffineFakeQuantize.with_args(
    observer=AffineQuantizedMinMaxObserver,
    mapping_type=MappingType.SYMMETRIC,
    target_dtype=torch.int8,
    granularity=PerGroup(128),
)
"""Weights: symmetric int8 in groups of 128 along the last dim."""

default_affine_per_axis_fake_quant = AffineFakeQuantize.with_args(
    observer=AffineQuantizedMinMaxObserver,
    mapping_type=MappingType.SYMMETRIC,
    target_dtype=torch.int8,
    granularity=PerAxis(0),
)
"""Weights: symmetric int8, one scale per output channel (axis 0)."""
