"""More block-wise affine observers: an exponential moving average of the per-block range,
and a placeholder for dynamic quantization.

Both share :class:`~fxquant.observers.affine.AffineQuantizedObserverBase`'s configuration
(mapping type, target dtype, granularity, ...) and its ``convert(model, observer_node)``:

- :class:`AffineQuantizedMovingAverageMinMaxObserver` records, per block,
  ``min <- min + c * (batch_min - min)`` (likewise ``max``) after taking the first batch's
  range as is, and chooses parameters from that range. Static by default; with
  ``is_dynamic=True`` (which needs ``averaging_constant=1``) convert emits a run-time choice.
- :class:`AffineQuantizedPlaceholderObserver` records nothing but the block layout and input
  dtype. With ``is_dynamic=True`` convert emits ``choose_qparams_affine`` on the live tensor
  followed by quantize/dequantize: parameters are chosen per call, as dynamic quantization of
  activations does.

Used in a PT2E ``QuantizationSpec``, the engine also passes the spec's set fields as keyword
arguments: ``dtype``, ``qscheme`` and ``ch_axis`` are accepted and ignored (the target dtype and
the granularity say it all), ``quant_min``/``quant_max`` override the observer's range and
``is_dynamic=True`` makes these two observers dynamic.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from fxquant.numerics.blockwise import (
    MappingType,
    TorchAODType,
    ZeroPointDomain,
    blockwise_minmax,
)
from fxquant.observers.affine import AffineQuantizedMinMaxObserver, AffineQuantizedObserverBase
from fxquant.observers.base import check_finite_minmax, warn_empty_input
from fxquant.observers.granularity import Granularity, get_block_size

__all__ = [
    "AffineQuantizedMovingAverageMinMaxObserver",
    "AffineQuantizedPlaceholderObserver",
    "StaticPlaceholderError",
]


class StaticPlaceholderError(RuntimeError):
    """A placeholder observer (no statistics) was asked for static quantization parameters."""


class AffineQuantizedMovingAverageMinMaxObserver(AffineQuantizedMinMaxObserver):
    """Per-block exponential moving average of the minimum and maximum.

    The first batch sets ``min_val``/``max_val``; each later batch moves them towards its own
    per-block range by ``averaging_constant`` ``c``::

        min_val = min_val + c * (batch_min - min_val)
        max_val = max_val + c * (batch_max - max_val)

    ``calculate_qparams`` is :func:`~fxquant.numerics.blockwise.choose_qparams_affine_with_min_max`
    on that averaged range. State handling (empty input, non-finite input, block layout that
    must not change, ``reset_min_max_vals``, state dicts) is that of
    :class:`~fxquant.observers.affine.AffineQuantizedMinMaxObserver`.

    Args:
        averaging_constant: ``c`` in ``(0, 1]``; 1 keeps only the latest batch.
        is_dynamic: convert to a run-time choice of parameters (needs ``averaging_constant=1``,
            the only value for which a single batch is the whole statistic).
        other args: as :class:`~fxquant.observers.affine.AffineQuantizedObserverBase`.

    >>> obs = AffineQuantizedMovingAverageMinMaxObserver(
    ...     MappingType.ASYMMETRIC, torch.uint8, PerTensor(), averaging_constant=0.5)
    >>> _ = obs(torch.tensor([0.0, 2.0])); _ = obs(torch.tensor([0.0, 4.0]))
    >>> obs.max_val
    tensor(3.)
    """

    def __init__(
        self,
        mapping_type: MappingType,
        target_dtype: torch.dtype | TorchAODType,
        granularity: Granularity,
        averaging_constant: float = 0.01,
        quant_min: int | None = None,
        quant_max: int | None = None,
        eps: float | None = None,
        is_dynamic: bool = False,
        scale_dtype: torch.dtype | None = None,
        zero_point_dtype: torch.dtype | None = None,
        preserve_zero: bool = True,
        zero_point_domain: ZeroPointDomain | None = ZeroPointDomain.INT,
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        if not 0.0 < averaging_constant <= 1.0:
            raise ValueError(
                f"{name}: averaging_constant must be in (0, 1], got {averaging_constant}"
            )
        if is_dynamic and averaging_constant != 1:
            raise NotImplementedError(
                f"{name}: dynamic quantization chooses parameters from each batch alone, which "
                f"an average over batches (averaging_constant={averaging_constant}) cannot "
                "represent; pass averaging_constant=1 or use AffineQuantizedPlaceholderObserver"
            )
        super().__init__(
            mapping_type, target_dtype, granularity, quant_min, quant_max, eps, scale_dtype,
            zero_point_dtype, preserve_zero, zero_point_domain, **kwargs,
        )
        self.averaging_constant = averaging_constant
        self.is_dynamic = is_dynamic

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
        c = self.averaging_constant
        self.min_val.copy_(self.min_val + c * (min_val - self.min_val))
        self.max_val.copy_(self.max_val + c * (max_val - self.max_val))
        return input

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, averaging_constant={self.averaging_constant}, "
            f"is_dynamic={self.is_dynamic}"
        )


class AffineQuantizedPlaceholderObserver(AffineQuantizedObserverBase):
    """Records only the block layout and dtype of what it sees; parameters are chosen later.

    Meant for dynamic quantization (``is_dynamic=True``): convert replaces the observer by
    ``choose_qparams_affine`` on the live tensor, then quantize/dequantize with the result
    (see :meth:`AffineQuantizedObserverBase.convert`). A static placeholder has nothing to
    freeze, so ``calculate_qparams`` and a static ``convert`` raise
    :class:`StaticPlaceholderError`.

    Args:
        is_dynamic: choose the parameters at run time (what this observer is for).
        other args: as :class:`~fxquant.observers.affine.AffineQuantizedObserverBase`.

    >>> obs = AffineQuantizedPlaceholderObserver(
    ...     MappingType.ASYMMETRIC, torch.int8, PerToken(), is_dynamic=True)
    >>> _ = obs(torch.randn(2, 3, 8)); obs.block_size
    (1, 1, 8)
    """

    def __init__(
        self,
        mapping_type: MappingType,
        target_dtype: torch.dtype | TorchAODType,
        granularity: Granularity,
        quant_min: int | None = None,
        quant_max: int | None = None,
        eps: float | None = None,
        is_dynamic: bool = False,
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
        self.is_dynamic = is_dynamic

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.block_size = get_block_size(input.shape, self.granularity)
        self.original_dtype = input.dtype
        return input

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise StaticPlaceholderError(
            f"{type(self).__name__} keeps no statistics, so it has no quantization parameters; "
            "construct it with is_dynamic=True (parameters chosen at run time) or observe with "
            "AffineQuantizedMinMaxObserver for static parameters"
        )

    def convert(self, model: fx.GraphModule, observer_node: fx.Node) -> None:
        """Replace ``observer_node`` by a run-time ``choose_qparams_affine`` followed by
        quantize/dequantize (see :meth:`AffineQuantizedObserverBase.convert`).

        Raises:
            StaticPlaceholderError: the observer is not dynamic.
        """
        if not self.is_dynamic:
            raise StaticPlaceholderError(
                f"{observer_node.format_node()}: a static {type(self).__name__} has no "
                "parameters to freeze into the graph; construct it with is_dynamic=True (or "
                "set is_dynamic=True on the QuantizationSpec), or use "
                "AffineQuantizedMinMaxObserver for static quantization"
            )
        super().convert(model, observer_node)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, is_dynamic={self.is_dynamic}"
