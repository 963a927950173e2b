"""``torchao.quantization.pt2e.learnable_fake_quantize``: the PT2E :class:`LearnableFakeQuantize`
(LSQ / LSQ+, scale and zero point learned by backprop) and the module-wide switches
``enable_range_learning`` / ``disable_range_learning``.

This is torchao's variant, whose API differs from the eager one in
:mod:`fxquant.fake_quantize.learnable` (torch.ao's ``_LearnableFakeQuantize``):

- ``scale`` and ``zero_point`` do not exist until the first ``forward``, which always lets the
  observer look at the batch and creates them with its shape (one element per tensor, one
  per channel for per-channel observers). There is no ``channel_len`` argument. Build the
  optimizer after that first batch so it sees them.
- Two switches plus range learning: ``observer_enabled`` (the observer overwrites the
  parameters every batch), ``fake_quant_enabled`` and ``learning_enabled``. Enabling the
  observer disables range learning; enabling range learning disables the observer.

Forward and backward are torch's ``_fake_quantize_learnable_per_*_affine`` kernels. With
``z`` the zero point rounded and clamped to the range, ``q = round(x / s) + z``,
``q_c = clamp(q, qmin, qmax)`` and ``g`` the gradient factor, per element (summed over each
parameter's elements)::

    in range (q == q_c):  dx = dy,   ds = g * dy * (q - z - x / s),   dz = 0
    clamped  (q != q_c):  dx = 0,    ds = g * dy * (q_c - z),         dz = -g * dy * s

``use_grad_scaling`` sets ``g = 1 / sqrt(numel(x) * quant_max)`` (Esser et al., "Learned Step
Size Quantization", ICLR 2020); otherwise ``g = 1``.

Where this differs from torchao (both only where torchao misbehaves): while the scale is
being learned it is clamped to at least ``eps`` before each batch (torchao lets it go
negative), and a state dict can be loaded into a module that has not run yet (torchao
rejects the then-unexpected ``scale``/``zero_point`` keys).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn import Parameter

from fxquant.fake_quantize._checks import (
    check_channel_axis,
    check_observer_interface,
    check_qrange_fits_dtype,
)
from fxquant.fake_quantize.base import FakeQuantizeBase
from fxquant.numerics.dtypes import check_ordered_range

__all__ = ["LearnableFakeQuantize", "disable_range_learning", "enable_range_learning"]

logger = logging.getLogger(__name__)

_SYMMETRIC_QSCHEMES = (torch.per_tensor_symmetric, torch.per_channel_symmetric)
_PER_CHANNEL_QSCHEMES = (torch.per_channel_symmetric, torch.per_channel_affine)
_PARAM_NAMES = ("scale", "zero_point")


class LearnableFakeQuantize(FakeQuantizeBase):
    """Fake quantization with a learnable ``scale`` and ``zero_point`` (torchao's PT2E API).

    Use it in a :class:`~fxquant.pt2e.quantizer.QuantizationSpec` for ``prepare_qat_pt2e``::

        ctr = LearnableFakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
            dtype=torch.qint8, use_grad_scaling=True)
        spec = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127,
                                qscheme=torch.per_tensor_affine, observer_or_fake_quant_ctr=ctr)
        ...
        prepared(calibration_batch)              # creates scale / zero_point
        prepared.apply(enable_range_learning)    # then learn them
        optimizer = torch.optim.SGD(prepared.parameters(), lr=...)

    Args:
        observer: observer constructor; receives ``quant_min``, ``quant_max`` and
            ``observer_kwargs``.
        quant_min, quant_max: the integer range (``quant_min < quant_max``).
        use_grad_scaling: scale the parameter gradients by ``1 / sqrt(numel * quant_max)``.
    """

    learning_enabled: torch.Tensor
    eps: torch.Tensor
    scale: Parameter | None
    zero_point: Parameter | None

    def __init__(
        self,
        observer: Any,
        quant_min: int = 0,
        quant_max: int = 255,
        use_grad_scaling: bool = False,
        **observer_kwargs: Any,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_ordered_range(quant_min, quant_max, owner)
        self.quant_min = quant_min
        self.quant_max = quant_max
        self.use_grad_scaling = use_grad_scaling
        # Empty parameter slots until the first forward sizes them.
        self.register_parameter("scale", None)
        self.register_parameter("zero_point", None)
        observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        self.activation_post_process = observer(**observer_kwargs)
        obs = self.activation_post_process
        check_observer_interface(owner, obs)
        check_qrange_fits_dtype(owner, quant_min, quant_max, obs.dtype)
        self.dtype: torch.dtype = obs.dtype
        self.qscheme: torch.qscheme = obs.qscheme
        self.ch_axis: int = getattr(obs, "ch_axis", -1)
        self.register_buffer("learning_enabled", torch.tensor([0], dtype=torch.uint8))
        self.register_buffer("eps", torch.tensor([torch.finfo(torch.float32).eps]))

    @property
    def _initialized(self) -> bool:
        """Whether the first forward (or a state dict) has created the parameters."""
        return self.scale is not None and self.zero_point is not None

    # ---- switches ---------------------------------------------------------------------

    def enable_range_learning(self) -> None:
        """Learn ``scale`` and ``zero_point`` by backprop; the observer stops updating them."""
        self.learning_enabled[0] = 1
        self.disable_observer()
        self._set_requires_grad(True)

    def disable_range_learning(self) -> None:
        """Stop learning ``scale`` and ``zero_point`` (they keep their current values)."""
        self.learning_enabled[0] = 0
        self._set_requires_grad(False)

    def enable_observer(self, enabled: bool = True) -> None:
        """Let the observer overwrite the parameters every batch; this disables range
        learning. ``enabled=False`` freezes them (range learning is left as it is)."""
        self.observer_enabled[0] = 1 if enabled else 0
        if enabled:
            self.disable_range_learning()

    def _set_requires_grad(self, enabled: bool) -> None:
        for param in (self.scale, self.zero_point):
            if param is not None:
                param.requires_grad = enabled

    def observe_quant_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Log (at INFO level) and return the current scale and zero point."""
        scale_param, zero_point_param = self._params("observe_quant_params")
        scale, zero_point = scale_param.detach(), zero_point_param.detach()
        logger.info("%s scale: %s, zero point: %s", type(self).__name__, scale, zero_point)
        return scale, zero_point

    # ---- quantization -----------------------------------------------------------------

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]  # no kwargs
        """``(scale, zero_point)`` for conversion: the scale clamped to at least ``eps`` (in
        place), the zero point rounded and clamped to the range, as int64."""
        scale, zero_point = self._params("calculate_qparams")
        scale.data.clamp_(min=self.eps.item())
        return (
            scale.detach(),
            zero_point.detach().round().clamp(self.quant_min, self.quant_max).long(),
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled[0] == 1 or not self._initialized:
            self.activation_post_process(X.detach())
            scale, zero_point = self.activation_post_process.calculate_qparams()
            self._initialize_or_update_qparams(scale, zero_point)
        elif self.learning_enabled[0] == 1:
            # A learned scale must stay positive.
            self._params("forward")[0].data.clamp_(min=self.eps.item())
        if self.fake_quant_enabled[0] == 1:
            X = self._fake_quantize(X)
        return X

    def _params(self, where: str) -> tuple[Parameter, Parameter]:
        if self.scale is None or self.zero_point is None:
            raise RuntimeError(
                f"{type(self).__name__}.{where}: scale and zero_point are created by the first "
                "forward; run a batch through the model (or load a state dict) first"
            )
        return self.scale, self.zero_point

    def _initialize_or_update_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        """Create the parameters from the observer's estimate on the first batch (with the
        estimate's shape and ``requires_grad`` following range learning); afterwards copy
        the estimate into them."""
        if self.scale is None or self.zero_point is None:
            learning = bool(self.learning_enabled[0] == 1)
            self.scale = Parameter(scale.detach().float().clone(), requires_grad=learning)
            self.zero_point = Parameter(
                zero_point.detach().float().clone(), requires_grad=learning
            )
            return
        self.scale.data.copy_(scale.to(self.scale.device))
        self.zero_point.data.copy_(zero_point.float().to(self.zero_point.device))

    def _fake_quantize(self, X: torch.Tensor) -> torch.Tensor:
        scale, zero_point = self._params("forward")
        if self.qscheme in _SYMMETRIC_QSCHEMES:
            zero_point.data.zero_()
        # g = 1 / sqrt(numel * quant_max) with LSQ gradient scaling
        grad_factor = 1.0 / (X.numel() * self.quant_max) ** 0.5 if self.use_grad_scaling else 1.0
        if self.qscheme in _PER_CHANNEL_QSCHEMES:
            check_channel_axis(type(self).__name__, X, self.ch_axis, scale.numel())
            ch_axis = self.ch_axis % X.dim()  # the kernel accepts only non-negative axes
            return torch._fake_quantize_learnable_per_channel_affine(
                X, scale, zero_point, ch_axis, self.quant_min, self.quant_max, grad_factor
            )
        return torch._fake_quantize_learnable_per_tensor_affine(
            X, scale, zero_point, self.quant_min, self.quant_max, grad_factor
        )

    # ---- state dicts ------------------------------------------------------------------

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
        # Before the first forward there are no parameters to load into: create them with
        # the saved shapes so that a trained module can be restored into a fresh one.
        for name in _PARAM_NAMES:
            saved = state_dict.get(prefix + name)
            if getattr(self, name) is None and isinstance(saved, torch.Tensor):
                setattr(self, name, Parameter(torch.empty_like(saved, dtype=torch.float32)))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        # The loaded learning switch decides whether the parameters get gradients.
        self._set_requires_grad(bool(self.learning_enabled[0] == 1))

    def extra_repr(self) -> str:
        return (
            f"fake_quant_enabled={self.fake_quant_enabled}, "
            f"observer_enabled={self.observer_enabled}, "
            f"learning_enabled={self.learning_enabled}, quant_min={self.quant_min}, "
            f"quant_max={self.quant_max}, dtype={self.dtype}, qscheme={self.qscheme}, "
            f"ch_axis={self.ch_axis}, use_grad_scaling={self.use_grad_scaling}, "
            f"scale={self.scale}, zero_point={self.zero_point}"
        )


def enable_range_learning(mod: nn.Module) -> None:
    """Learn the scale and zero point of ``mod`` if it is a (PT2E) :class:`LearnableFakeQuantize`;
    other modules are left alone.

    >>> prepared.apply(enable_range_learning)
    """
    if isinstance(mod, LearnableFakeQuantize):
        mod.enable_range_learning()


def disable_range_learning(mod: nn.Module) -> None:
    """Stop learning the scale and zero point of ``mod`` if it is a (PT2E)
    :class:`LearnableFakeQuantize` (they keep their current values)."""
    if isinstance(mod, LearnableFakeQuantize):
        mod.disable_range_learning()
