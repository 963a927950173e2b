"""The arithmetic of a per-token dynamic int8 linear layer.

Activations ``x`` of shape ``(M, K)`` (M tokens) are quantized per row at run time, weights
``W`` of shape ``(N, K)`` per output channel ahead of time, symmetric (zero point 0)::

    x[m, :] ~ s_x[m] * (q_x[m, :] - z_x[m])          q_x in [-128, 127]
    W[n, :] ~ s_w[n] *  q_w[n, :]                    q_w in [-128, 127]

so that, with ``acc = q_x @ q_w.T`` computed exactly in int32 (``torch._int_mm``)::

    y[m, n] = s_x[m] * s_w[n] * (acc[m, n] - z_x[m] * sum_k q_w[n, k]) + b[n]

Token parameters (``eps = 1e-5``, as ``quantized_decomposed.choose_qparams_per_token``):

* symmetric:  ``s_x = max(amax |x[m, :]|, eps) / 127``, ``z_x = 0``;
* asymmetric: ``lo = min(x[m, :], 0)``, ``hi = max(x[m, :], 0)``,
  ``s_x = max(hi - lo, eps) / 255``, ``z_x = clamp(round(-128 - lo / s_x), -128, 127)``.

Rounding is the product form ``round_half_even(x * (1 / s_x)) + z_x``, as torch's
``quantize_per_channel`` and the ``quantized_decomposed`` graph ops.

``torch._int_mm`` on CPU accepts any ``M``, ``K``, ``N`` (no multiple-of-8 or ``M > 16``
constraint as on CUDA), so no padding is needed.
"""

from __future__ import annotations

import torch

__all__ = [
    "TokenQuantized",
    "int8_linear_per_token",
    "quantize_per_token_int8",
]

_EPS = 1e-5
_QMIN, _QMAX = -128, 127


class TokenQuantized:
    """An int8 matrix with one scale (and zero point) per row."""

    __slots__ = ("int8", "scale", "zero_point")

    def __init__(
        self, int8: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None
    ) -> None:
        self.int8 = int8  # (M, K) torch.int8
        self.scale = scale  # (M, 1) float32
        self.zero_point = zero_point  # (M, 1) int32, or None when symmetric

    def dequantize(self) -> torch.Tensor:
        """``(int8 - zero_point) * scale`` in float32."""
        q = self.int8.to(torch.float32)
        if self.zero_point is not None:
            q = q - self.zero_point
        return q * self.scale


def _row_range(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # two reductions without a temporary the size of x (abs() would allocate one)
    return x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)


def quantize_per_token_int8(x: torch.Tensor, *, symmetric: bool = True) -> TokenQuantized:
    """Quantize each row of the 2-D float32 ``x`` to int8 (formulas in the module doc)."""
    lo, hi = _row_range(x)
    if symmetric:
        scale = torch.maximum(hi, lo.neg_()).clamp_(min=_EPS).div_(127)
        q = torch.mul(x, scale.reciprocal()).round_().clamp_(_QMIN, _QMAX)
        return TokenQuantized(q.to(torch.int8), scale, None)
    lo.clamp_(max=0)
    hi.clamp_(min=0)
    scale = (hi - lo).clamp_(min=_EPS).div_(_QMAX - _QMIN)
    zero_point = torch.div(lo, scale).neg_().add_(_QMIN).round_().clamp_(_QMIN, _QMAX)
    q = torch.mul(x, scale.reciprocal()).round_().add_(zero_point).clamp_(_QMIN, _QMAX)
    return TokenQuantized(q.to(torch.int8), scale, zero_point.to(torch.int32))


def int8_linear_per_token(
    xq: TokenQuantized,
    weight_int8: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    weight_row_sum: torch.Tensor | None = None,
) -> torch.Tensor:
    """``y = x @ W.T + b`` from a per-token quantized ``x`` and a per-channel int8 ``W``.

    Args:
        xq: the quantized activations, ``(M, K)``.
        weight_int8: ``(N, K)`` int8.
        weight_scale: ``(N,)`` float32.
        bias: ``(N,)`` float32 or ``None``.
        weight_row_sum: ``(N,)`` int32 sums of ``weight_int8`` over ``K``; needed when the
            activations have zero points (computed here if not given).

    Returns:
        ``(M, N)`` float32.
    """
    acc = torch._int_mm(xq.int8, weight_int8.t())
    if xq.zero_point is not None:
        if weight_row_sum is None:
            weight_row_sum = weight_int8.sum(dim=1, dtype=torch.int32)
        # exact in int32: |z| * |sum q_w| <= 128 * 128 * K
        acc.addr_(xq.zero_point.view(-1), weight_row_sum, alpha=-1)
    out = acc.to(torch.float32).mul_(xq.scale).mul_(weight_scale)
    if bias is not None:
        out.add_(bias)
    return out
