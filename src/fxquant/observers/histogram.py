"""HistogramObserver: calibrate a per-tensor range by minimising the expected L2 quantization
error over a running histogram of the observed values.

Drop-in for ``torch.ao.quantization.HistogramObserver``: the same constructor, buffers
(``histogram``: ``bins`` counts spanning ``[min_val, max_val]`` uniformly; ``min_val``,
``max_val``) and state-dict layout, so calibrations load across both. Inside, both halves are
new, for speed and accuracy:

``forward`` (statistics)
    Tensors of up to ``2**16`` elements are histogrammed exactly (bit-identical to upstream).
    Larger ones are summarised in two reductions over memory (:func:`_summary`): a strided
    sample gives the shape of the body, and the extremes of interleaved groups of elements
    count the tails exactly; about 30 tensor operations on that summary (25k values for 1M
    elements) make the histogram (:func:`_sampled_histogram`). When a batch widens the range,
    the histogram is re-binned by interpolating its CDF, keeping every count (:func:`_rebin`).

``calculate_qparams`` (range search)
    A per-tensor grid is ``{(j - z) * s : j = 0 .. levels-1}``: a step ``s`` and an integer
    zero offset ``z = zero_point - quant_min``. Its expected squared error over the histogram
    (clipping and rounding) is computed in closed form from cumulative moments tabulated once
    (:mod:`fxquant.observers.histogram_search`), for all steps and offsets of a round at
    once; the step is searched on a log scale, coarse to fine (:func:`search_grid`). The
    scale and zero point come from a range that rebuilds exactly the chosen grid (so the
    error minimised is the error obtained), in Python scalars bit-exact with
    :func:`~fxquant.numerics.qparams.choose_qparams`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from fxquant.numerics.dtypes import is_float_qdtype
from fxquant.numerics.qparams import (
    SYMMETRIC_QSCHEMES,
    choose_qparams_per_tensor,
    symmetric_zero_point,
)
from fxquant.observers.base import (
    UniformQuantizationObserverBase,
    check_finite_minmax,
    warn_empty_input,
)
from fxquant.observers.histogram_search import GridFamily, search_grid

__all__ = ["HistogramObserver"]

_F64 = torch.float64

# -- forward: one batch's histogram ---------------------------------------------------------

# Tensors up to this size are histogrammed element by element (exact, and already fast).
_EXACT_NUMEL = 1 << 16
# Elements sampled per batch for the body of the distribution (about; the stride is a prime).
_SAMPLE_SIZE = 1 << 13
# Extremes are taken over groups of _GROUP_LEN elements spaced _GROUP_STRIDE apart, so that
# values clustered in memory (a hot channel, a bright region) land in different groups.
_GROUP_LEN = 128
_GROUP_STRIDE = 256
# Values beyond the _TAIL_RANK-th most extreme sampled value on each side (about _TAIL_RANK
# sampling strides' worth) are counted exactly from the group extremes.
_TAIL_RANK = 8
# Independent copies of the counters the summary is counted into (see _Sampling).
_COPIES = 4


@lru_cache(maxsize=64)
def _prime_at_least(n: int) -> int:
    """Smallest prime >= max(n, 11). A prime stride never aliases with the power-of-two and
    7 * 2**k sizes of feature maps, so the sample visits every row, column and channel."""
    p = max(n, 11)
    while any(p % d == 0 for d in range(2, math.isqrt(p) + 1)):
        p += 1
    return p


@dataclass(frozen=True, kw_only=True)
class _Sampling:
    """How a flat tensor of ``n`` elements is summarised for ``bins`` bins (per ``(n, bins,
    device)``): :func:`_summary` holds ``n_sample`` samples, then ``groups`` group maxima and
    minima. With ``t = (v - lo) * bins / (hi - lo)``, each goes to slot ``floor(shift + sign
    * t)`` (clamped to ``[lower, upper]``) of one ``scatter_add_``: the sample's bin
    ``floor(t)``; ``bins`` + the maximum's bin from the top, ``floor(bins - t)``; ``2 * bins``
    + the minimum's bin. Elements are dealt round-robin to ``_COPIES`` copies of the slots,
    summed afterwards: ReLU puts thousands of equal values in one slot, and one counter would
    make each addition wait for the last. ``ranks``: of the (``_TAIL_RANK`` + 1)-th smallest
    and largest sample (a row per histogram)."""

    stride: int
    n_sample: int
    groups: int
    spacing: int
    shift: torch.Tensor
    sign: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    ones: torch.Tensor
    ranks: torch.Tensor
    zeros: torch.Tensor


@lru_cache(maxsize=32)
def _sampling(n: int, bins: int, device: torch.device) -> _Sampling:
    stride = _prime_at_least(n // _SAMPLE_SIZE)
    n_sample = len(range(0, n, stride))
    groups = _group_count(n)
    rows = torch.tensor([n_sample, groups, groups], device=device)
    # element i counts in copy i % _COPIES of the slots
    copy = torch.arange(n_sample + 2 * groups, device=device).remainder_(_COPIES) * 3.0 * bins

    def per_row(sample: float, maxima: float, minima: float) -> torch.Tensor:
        return torch.tensor([sample, maxima, minima], device=device).repeat_interleave(rows)

    rank = min(_TAIL_RANK + 1, n_sample)
    return _Sampling(
        stride=stride,
        n_sample=n_sample,
        groups=groups,
        spacing=_group_spacing(n),
        shift=per_row(0.0, 2.0 * bins, 2.0 * bins) + copy,
        sign=per_row(1.0, -1.0, 1.0),
        lower=per_row(0.0, bins, 2.0 * bins) + copy,
        upper=per_row(bins - 1.0, 2.0 * bins - 1.0, 3.0 * bins - 1.0) + copy,
        ones=torch.ones(n_sample + 2 * groups, device=device),
        ranks=torch.tensor([[rank, n_sample - rank + 1]] * 3, dtype=torch.float32, device=device),
        zeros=torch.zeros(2, 1, device=device),
    )


def _group_spacing(n: int) -> int:
    """A spacing ``d`` near ``_GROUP_STRIDE`` such that ``n`` is a whole number of
    ``_GROUP_LEN * d`` spans, or 0 if there is none."""
    if n % _GROUP_LEN:
        return 0
    per_len = n // _GROUP_LEN
    spacings = [d for d in range(_GROUP_STRIDE // 4, _GROUP_STRIDE * 4 + 1) if per_len % d == 0]
    return min(spacings, key=lambda d: abs(math.log(d / _GROUP_STRIDE)), default=0)


def _group_count(n: int) -> int:
    return n // _GROUP_LEN + n % _GROUP_LEN


def _summary(x: torch.Tensor, sampling: _Sampling) -> torch.Tensor:
    """``[strided sample, group maxima, group minima]`` of flat ``x``, concatenated.

    Groups: ``x[g*128*d + j*d + c]`` for ``j = 0..127`` (one group per ``(g, c)``), so
    that values clustered in memory (a hot channel, a bright region) land in different
    groups; the spacing ``d`` is near 256 (:func:`_group_spacing`). Sizes with no such
    spacing are grouped ``x[j*(n // 128) + c]``, and their last ``n % 128`` elements are
    groups of one. Every element is in exactly one group.
    """
    if sampling.spacing:  # the common case
        main = x.view(-1, _GROUP_LEN, sampling.spacing)
        return torch.cat([x[:: sampling.stride], main.amax(1).view(-1), main.amin(1).view(-1)])
    whole = x[: x.numel() - x.numel() % _GROUP_LEN].view(_GROUP_LEN, -1)
    rest = x[whole.numel() :]
    return torch.cat([x[:: sampling.stride], whole.amax(0), rest, whole.amin(0), rest])


def _sampled_histogram(
    summary: torch.Tensor, n: int, lo: float, hi: float, bins: int, sampling: _Sampling
) -> torch.Tensor:
    """Histogram of a large flat tensor of ``n`` elements from its :func:`_summary`.

    The tails decide how much to clip, and a sample sees too few of their values, so they are
    counted exactly: beyond the ``_TAIL_RANK``-th largest sampled value ``t`` lie about
    ``_TAIL_RANK`` strides' worth of values, each the maximum of its group unless two share a
    group (a few percent, corrected for by :func:`_uncollide`). So the bins above ``t``'s bin
    are counted from the group maxima, likewise at the bottom, and the sample stands for the
    rest (all three counted in one ``scatter_add_``, see :class:`_Sampling`)::

        histogram = tails + sample_histogram[between] * (n - tail_count) / sample_count[between]
    """
    slots = torch.addcmul(sampling.shift, summary.sub_(lo), sampling.sign, value=bins / (hi - lo))
    slots = slots.clamp_(sampling.lower, sampling.upper).long()  # floor: all >= 0
    counts = summary.new_zeros(_COPIES * 3 * bins).scatter_add_(0, slots, sampling.ones)
    counts = counts.view(_COPIES, 3, bins).sum(0)
    cum = counts.cumsum(1)  # from the outside in
    # (the ranks are looked up in all three rows at once; the sample's is the first)
    b_lo, b_hi = (min(b, bins - 1) for b in torch.searchsorted(cum, sampling.ranks).tolist()[0])
    tails = _uncollide(cum[1:], sampling.groups)  # in place: cumulative tail counts
    n_top = bins - 1 - b_hi
    picks = [b_hi, max(b_lo - 1, 0), bins + max(n_top - 1, 0), 2 * bins + max(b_lo - 1, 0)]
    body_top, body_below, top_count, low_count = cum.view(-1)[picks].tolist()
    body = body_top - (body_below if b_lo else 0.0)
    tail_count = (top_count if n_top else 0.0) + (low_count if b_lo else 0.0)
    per_bin = torch.diff(tails, dim=1, prepend=sampling.zeros)
    return torch.cat(
        [
            per_bin[1, :b_lo],
            counts[0, b_lo : b_hi + 1] * ((n - tail_count) / body),
            per_bin[0, :n_top].flip(0),
        ]
    )


def _uncollide(cumulative: torch.Tensor, groups: int) -> torch.Tensor:
    """Cumulative tail counts of group extremes (rows, from the most extreme bin inwards),
    corrected in place for values hidden by a larger one in the same group: ``t`` values
    spread at random over ``groups`` groups are the extremes of ``groups * (1 - exp(-t /
    groups))`` of them on average, which is inverted (the most extreme are never hidden)."""
    # -groups * log(1 - c / groups), with c / groups kept below 1
    return cumulative.clamp_(max=groups - 1.0).div_(-groups).log1p_().mul_(-groups)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """``x``'s elements as a flat tensor, in memory order where that needs no copy (the
    histogram does not depend on the order): channels-last maps are read as they lie."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return x.permute(0, 2, 3, 1).reshape(-1) if channels_last else x.reshape(-1)


_Summary = torch.Tensor | None  # a large tensor's summary (or None: histogram it exactly)


def _batch_histogram(
    x: torch.Tensor, lo: float, hi: float, bins: int, summary: _Summary
) -> torch.Tensor:
    """Counts of flat ``x`` in ``bins`` equal bins over ``[lo, hi]`` (as ``torch.histc``):
    exact, or from ``summary`` (:func:`_summary`, consumed) for large tensors."""
    if lo == hi:
        # Every value equals lo: torch.histc puts a point at lo in its middle bin.
        return torch.histc(torch.full((1,), lo, device=x.device), bins, min=lo, max=hi) * x.numel()
    if summary is None:
        return torch.histc(x, bins, min=lo, max=hi)
    return _sampled_histogram(
        summary, x.numel(), lo, hi, bins, _sampling(x.numel(), bins, x.device)
    )


def _rebin(
    hist: torch.Tensor, old_lo: float, old_hi: float, new_lo: float, new_hi: float
) -> torch.Tensor:
    """``hist`` over ``[old_lo, old_hi]`` re-binned onto the same number of bins over the wider
    ``[new_lo, new_hi]``, assuming values spread uniformly within each old bin.

    The old CDF is piecewise linear: at ``u`` old bins from ``old_lo`` it is
    ``cum[floor(u)] + frac(u) * hist[floor(u)]``. Evaluating it at the new edges and
    differencing gives the new counts; the total is preserved exactly.
    """
    bins = hist.numel()
    h = hist.to(_F64)
    if old_lo == old_hi:
        # A point mass (every value equal): it lands in one new bin.
        out = torch.zeros(bins, dtype=_F64, device=hist.device)
        # torch.histc's binning: floor((v - lo) * bins / (hi - lo)), the last bin closed
        out[min(max(int((old_lo - new_lo) * bins / (new_hi - new_lo)), 0), bins - 1)] = h.sum()
        return out.to(hist.dtype)
    edges = torch.linspace(new_lo, new_hi, bins + 1, dtype=_F64, device=hist.device)
    u = ((edges - old_lo) * (bins / (old_hi - old_lo))).clamp_(0, bins)
    i = u.floor().clamp_(max=bins - 1)
    cum = torch.nn.functional.pad(h.cumsum(0), (1, 0))
    idx = i.long()
    cdf = cum[idx] + (u - i) * h[idx]
    return cdf.diff().clamp_(min=0).to(hist.dtype)


class HistogramObserver(UniformQuantizationObserverBase):
    """Per-tensor observer that keeps a running histogram and chooses the clipping range that
    minimises the expected L2 quantization error (same interface and state as upstream's).

    Args:
        bins: number of histogram bins.
        dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic:
            as for :class:`~fxquant.observers.base.UniformQuantizationObserverBase`; only
            ``per_tensor_affine`` and ``per_tensor_symmetric`` are supported, and not dynamic
            quantization.

    Buffers: ``histogram`` (``bins`` counts over ``[min_val, max_val]``), ``min_val`` and
    ``max_val`` (scalars; ``+inf`` / ``-inf`` before any data).

    >>> obs = HistogramObserver()
    >>> _ = obs(torch.randn(4, 8, 16, 16))
    >>> scale, zero_point = obs.calculate_qparams()
    """

    histogram: torch.Tensor
    min_val: torch.Tensor
    max_val: torch.Tensor

    def __init__(
        self,
        bins: int = 2048,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs: dict[str, Any] | None = None,
        eps: float = torch.finfo(torch.float32).eps,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        if qscheme not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise NotImplementedError(
                f"HistogramObserver supports only per_tensor_affine and per_tensor_symmetric "
                f"(got {qscheme}); use PerChannelMinMaxObserver for per-channel schemes"
            )
        if is_dynamic:
            raise NotImplementedError(
                "HistogramObserver does not support dynamic quantization; use "
                "PlaceholderObserver(is_dynamic=True) for dynamic activations"
            )
        if bins < 1:
            raise ValueError(f"HistogramObserver needs at least one bin (got bins={bins})")
        if is_float_qdtype(dtype):
            raise NotImplementedError(
                f"HistogramObserver searches an integer grid and cannot calibrate for {dtype}; "
                "use MinMaxObserver for float16/bfloat16/float8 targets"
            )
        super().__init__(
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            factory_kwargs=factory_kwargs,
            eps=eps,
            is_dynamic=is_dynamic,
            **kwargs,
        )
        factory_kwargs = torch.nn.factory_kwargs(factory_kwargs)
        self.bins = bins
        self.register_buffer("histogram", torch.zeros(bins, **factory_kwargs))
        self.register_buffer("min_val", torch.tensor(float("inf"), **factory_kwargs))
        self.register_buffer("max_val", torch.tensor(float("-inf"), **factory_kwargs))

    # -- statistics ----------------------------------------------------------------------

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        """Add ``x_orig``'s values to the histogram (widening its range if needed); return
        ``x_orig`` unchanged. Raises :class:`NonFiniteInputError` on NaN or Inf."""
        n = x_orig.numel()
        if n == 0:
            warn_empty_input(self)
            return x_orig
        x = _flat(x_orig.detach() if x_orig.requires_grad else x_orig)
        if x.dtype != torch.float32:
            x = x.float()
        if n > _EXACT_NUMEL:
            summary = _summary(x, _sampling(n, self.bins, x.device))
            # every element is in a group (and the sample): the summary's extremes are x's
            x_min, x_max = torch.aminmax(summary)
        else:
            summary = None
            x_min, x_max = torch.aminmax(x)
        lo, hi, *old = torch.stack([x_min, x_max, self.min_val, self.max_val]).tolist()
        if not (math.isfinite(lo) and math.isfinite(hi)):
            check_finite_minmax(self, x_min, x_max)  # raises, naming the problem
        self._accumulate(x, lo, hi, old, summary)
        return x_orig

    def _accumulate(
        self, x: torch.Tensor, x_min: float, x_max: float, old: list[float], summary: _Summary
    ) -> None:
        old_lo, old_hi = old
        if old_lo == math.inf or old_hi == -math.inf:  # nothing observed yet
            batch = _batch_histogram(x, x_min, x_max, self.bins, summary)
            self.histogram.copy_(batch)
            self.min_val.fill_(x_min)
            self.max_val.fill_(x_max)
            return
        new_lo, new_hi = min(old_lo, x_min), max(old_hi, x_max)
        if (new_lo, new_hi) != (old_lo, old_hi):
            self.histogram.copy_(_rebin(self.histogram, old_lo, old_hi, new_lo, new_hi))
            self.min_val.fill_(new_lo)
            self.max_val.fill_(new_hi)
        self.histogram.add_(_batch_histogram(x, new_lo, new_hi, self.bins, summary))

    def reset_histogram(
        self, x: torch.Tensor, min_val: torch.Tensor, max_val: torch.Tensor
    ) -> None:
        """Replace the statistics by the exact histogram of ``x`` over ``[min_val, max_val]``."""
        lo, hi = float(min_val), float(max_val)
        flat = x.detach().reshape(-1).float()
        self.histogram.copy_(_batch_histogram(flat, lo, hi, self.bins, None))
        self.min_val.fill_(lo)
        self.max_val.fill_(hi)

    def reset_min_max_vals(self) -> None:
        """Forget everything observed (back to the state before any data)."""
        self.histogram.zero_()
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))

    # -- range search --------------------------------------------------------------------

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]  # no kwargs
        """Scale and zero point of the grid with the least expected L2 error over the
        histogram; ``(1.0, 0)`` with a warning before any data."""
        lo, hi = float(self.min_val), float(self.max_val)
        if lo == math.inf or hi == -math.inf:  # no data yet: the base class warns
            return self._calculate_qparams(self.min_val, self.max_val)
        if self.histogram.numel() != self.bins:
            raise ValueError(
                f"HistogramObserver has {self.histogram.numel()} histogram bins but was built "
                f"with bins={self.bins}; load a state dict saved with the same number of bins"
            )
        if lo == hi:
            return self._calculate_qparams(self.min_val, self.max_val)
        family = self._grid_family()
        with torch.inference_mode():  # nothing below needs autograd; only floats come out
            counts = self.histogram
            found = search_grid(counts if counts.is_cpu else counts.cpu(), lo, hi, family)
        if found is None:  # an empty histogram
            return self._calculate_qparams(self.min_val, self.max_val)
        new_min, new_max = self._range_for(*found, family)
        return choose_qparams_per_tensor(
            new_min,
            new_max,
            quant_min=self.quant_min,
            quant_max=self.quant_max,
            dtype=self.dtype,
            qscheme=self.qscheme,
            eps=float(self.eps),
            has_customized_qrange=self.has_customized_qrange,
            device=self.min_val.device,
        )

    def _grid_family(self) -> GridFamily:
        levels = self.quant_max - self.quant_min + 1
        if self.qscheme in SYMMETRIC_QSCHEMES:
            zero_point = symmetric_zero_point(
                self.dtype, self.quant_min, self.quant_max, self.has_customized_qrange
            )
            z = zero_point - self.quant_min
            return GridFamily(levels=levels, z_min=z, z_max=z)
        return GridFamily(levels=levels, z_min=0, z_max=levels - 1)

    def _range_for(self, step: float, z: int, family: GridFamily) -> tuple[float, float]:
        """A ``(min, max)`` from which ``_calculate_qparams`` rebuilds this step and offset."""
        span = self.quant_max - self.quant_min
        if self.qscheme in SYMMETRIC_QSCHEMES:
            # scale = max(|min|, |max|) / (span / 2)
            return -step * span / 2, step * span / 2
        # scale = (max - min) / span, zero_point = quant_min - round(min / scale)
        return -z * step, (family.levels - 1 - z) * step

    # -- state ---------------------------------------------------------------------------

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
        version = local_metadata.get("version")
        for name, empty in (("min_val", float("inf")), ("max_val", float("-inf"))):
            key = prefix + name
            if key not in state_dict:
                continue
            # Before version 3 an unobserved min_val / max_val was saved as an empty tensor.
            if (version is None or version < 3) and state_dict[key].shape == torch.Size([0]):
                state_dict[key] = torch.tensor(empty)
            getattr(self, name).resize_(state_dict[key].shape)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"
