"""HistogramObserver: calibrate a per-tensor range by minimising the expected L2 quantization
error over a running histogram of the observed values.

Drop-in for ``torch.ao.quantization.HistogramObserver``: the same constructor, buffers
(``histogram``: ``bins`` counts spanning ``[min_val, max_val]`` uniformly; ``min_val``,
``max_val``) and state-dict layout, so calibrations load across both. Inside, both halves are
new, for speed and accuracy:

``forward`` (statistics)
    Tensors of up to ``2**16`` elements are histogrammed exactly (bit-identical to upstream).
    Larger ones are summarised in about one pass over memory: a strided sample gives the
    shape of the body, and the extremes of interleaved groups of elements count the tails
    exactly (:func:`_sampled_histogram`). When a batch widens the range, the accumulated
    histogram is re-binned by interpolating its CDF, which keeps every count (:func:`_rebin`).

``calculate_qparams`` (range search)
    A per-tensor grid is ``{(j - z) * s : j = 0 .. levels-1}``: a step ``s`` and an integer
    zero offset ``z = zero_point - quant_min``. Its expected squared error over the histogram
    (clipping and rounding) is computed in closed form from cumulative moments of the bins
    (:func:`_grid_errors`), for many steps and offsets at once; the step is searched on a log
    scale, coarse to fine (:func:`_search_grid`). The chosen grid goes out through
    ``_calculate_qparams(min, max)`` with a range that rebuilds exactly that grid, so the
    error minimised is the error obtained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from fxquant.numerics.dtypes import is_float_qdtype
from fxquant.numerics.qparams import SYMMETRIC_QSCHEMES, symmetric_zero_point
from fxquant.observers.base import (
    UniformQuantizationObserverBase,
    check_finite_minmax,
    warn_empty_input,
)

__all__ = ["HistogramObserver"]

_F64 = torch.float64

# ---------------------------------------------------------------------------------------------
# forward: one batch's histogram
# ---------------------------------------------------------------------------------------------

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


@lru_cache(maxsize=64)
def _prime_at_least(n: int) -> int:
    """Smallest prime >= max(n, 11). A prime stride never aliases with the power-of-two and
    7 * 2**k sizes of feature maps, so the sample visits every row, column and channel."""
    p = max(n, 11)
    while any(p % d == 0 for d in range(2, math.isqrt(p) + 1)):
        p += 1
    return p


def _group_extremes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maxima and minima of interleaved groups covering every element of flat ``x``.

    Groups: ``x[g*128*256 + j*256 + c]`` for ``j = 0..127`` (one group per ``(g, c)``); what is
    left over is grouped the same way with a smaller spacing, and the last < 128 elements are
    their own groups.
    """
    n = x.numel()
    span = _GROUP_LEN * _GROUP_STRIDE
    n_main = n - n % span
    n_mid = (n - n_main) - (n - n_main) % _GROUP_LEN
    parts_max, parts_min = [], []
    if n_main:
        main = x[:n_main].view(-1, _GROUP_LEN, _GROUP_STRIDE)
        parts_max.append(main.amax(1).flatten())
        parts_min.append(main.amin(1).flatten())
    if n_mid:
        mid = x[n_main : n_main + n_mid].view(_GROUP_LEN, -1)
        parts_max.append(mid.amax(0))
        parts_min.append(mid.amin(0))
    if n_main + n_mid < n:
        parts_max.append(x[n_main + n_mid :])
        parts_min.append(x[n_main + n_mid :])
    if len(parts_max) == 1:
        return parts_max[0], parts_min[0]
    return torch.cat(parts_max), torch.cat(parts_min)


def _bin_of(value: float, lo: float, hi: float, bins: int) -> int:
    # torch.histc's binning: floor((v - lo) * bins / (hi - lo)), the last bin closed.
    return min(max(int((value - lo) * bins / (hi - lo)), 0), bins - 1)


def _sampled_histogram(
    x: torch.Tensor, lo: float, hi: float, bins: int, extremes: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Histogram of a large flat tensor from a strided sample and its group extremes.

    The tails decide how much to clip, and a sample sees too few of their values, so they are
    counted exactly: beyond the ``_TAIL_RANK``-th largest sampled value ``t`` lie about
    ``_TAIL_RANK`` strides' worth of values, each the maximum of its group unless two share a
    group (a few percent: groups are many and interleaved; :func:`_uncollide` corrects for
    them). So the bins above ``t``'s bin are counted from the group maxima, likewise at the
    bottom, and the sample stands for the rest::

        histogram = tails + sample_histogram[between] * (n - tail_count) / sample_count[between]
    """
    n = x.numel()
    sample = x[:: _prime_at_least(n // _SAMPLE_SIZE)]
    hist = torch.histc(sample, bins, min=lo, max=hi)
    # the bins holding the (_TAIL_RANK + 1)-th smallest and largest sampled values
    n_sample = sample.numel()
    rank = min(_TAIL_RANK + 1, n_sample)
    ranks = torch.tensor([rank, n_sample - rank + 1], dtype=hist.dtype, device=hist.device)
    b_lo, b_hi = torch.searchsorted(hist.cumsum(0), ranks).clamp_(max=bins - 1).tolist()
    width = (hi - lo) / bins
    group_max, group_min = extremes
    upper = group_max[group_max >= lo + width * (b_hi + 1)]
    lower = group_min[group_min < lo + width * b_lo]
    tails = torch.histc(torch.cat([upper, lower]), bins, min=lo, max=hi)
    tails[b_lo : b_hi + 1] = 0.0  # values on a bin edge may land on either side
    groups = group_max.numel()
    if upper.numel():
        tails[b_hi + 1 :] = _uncollide(tails[b_hi + 1 :].flip(0), groups).flip(0)
    if lower.numel():
        tails[:b_lo] = _uncollide(tails[:b_lo], groups)
    hist[:b_lo] = 0.0
    hist[b_hi + 1 :] = 0.0
    body = float(hist.sum())
    return tails.add_(hist, alpha=(n - float(tails.sum())) / body)


def _uncollide(counts: torch.Tensor, groups: int) -> torch.Tensor:
    """Tail counts of group extremes, ordered from the most extreme bin inwards, corrected for
    values hidden by a larger one in the same group.

    ``t`` values spread at random over ``groups`` groups show up as the extremes of
    ``groups * (1 - exp(-t / groups))`` of them on average; inverting that for the cumulative
    counts from the outside in gives the values up to each bin (the most extreme ones are
    never hidden).
    """
    hit = counts.cumsum(0).div_(groups).clamp_(max=1.0 - 1.0 / groups)
    return torch.diff(hit.neg_().log1p_().mul_(-groups), prepend=hit.new_zeros(1))


def _batch_histogram(
    x: torch.Tensor,
    lo: float,
    hi: float,
    bins: int,
    extremes: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """Counts of flat ``x`` in ``bins`` equal bins over ``[lo, hi]`` (as ``torch.histc``)."""
    if lo == hi:
        # Every value equals lo: torch.histc puts a point at lo in its middle bin.
        return torch.histc(torch.full((1,), lo, device=x.device), bins, min=lo, max=hi) * x.numel()
    if extremes is None:
        return torch.histc(x, bins, min=lo, max=hi)
    return _sampled_histogram(x, lo, hi, bins, extremes)


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
        out[_bin_of(old_lo, new_lo, new_hi, bins)] = h.sum()
        return out.to(hist.dtype)
    edges = torch.linspace(new_lo, new_hi, bins + 1, dtype=_F64, device=hist.device)
    u = ((edges - old_lo) * (bins / (old_hi - old_lo))).clamp_(0, bins)
    i = u.floor().clamp_(max=bins - 1)
    cum = torch.nn.functional.pad(h.cumsum(0), (1, 0))
    idx = i.long()
    cdf = cum[idx] + (u - i) * h[idx]
    return cdf.diff().clamp_(min=0).to(hist.dtype)


# ---------------------------------------------------------------------------------------------
# calculate_qparams: expected error of quantization grids over the histogram
# ---------------------------------------------------------------------------------------------
#
# A per-tensor grid has `levels` points (j - z) * s, j = 0 .. levels-1: step s and zero offset
# z = zero_point - quant_min. Each value rounds to the nearest grid point; values beyond the
# ends clip to them. The expected squared error over the histogram (values spread uniformly
# within each bin) splits into three parts:
#
#   lowest cell   x <  g0 + s/2   rounds to g0 = -z s        (includes the clipping below)
#   highest cell  x >= g1 - s/2   rounds to g1 = g0 + (levels - 1) s   (and clipping above)
#   interior      in between: every value is within s/2 of a grid point
#
# The end cells are computed exactly from cumulative moments. In the interior, a continuous
# density has rounding error s^2 / 12 per value. Point masses do not: values exactly at 0
# (ReLU) are never rounded, and those piled at the ends of the range (ReLU6 at 6, black and
# white pixels) get their exact error. Treating the rest as locally flat also keeps the
# search from fitting the noise of a sampled histogram.

# Point masses: a bin holding over 2.5x the mean count of its (up to) 4 neighbours on each
# side, and over 1/4096 of all values.
_SPIKE_RATIO = 2.5
_SPIKE_REACH = 4
_SPIKE_SHARE = 4096.0

_INVERSE_ORDERS = torch.tensor([1.0, 1.0 / 2.0, 1.0 / 3.0], dtype=_F64)  # 1 / (k+1)


def _excess(counts: list[float], i: int, total: float) -> float:
    """How much ``counts[i]`` exceeds its neighbours' mean, if it stands out as a point mass
    (else 0)."""
    neighbours = counts[max(i - _SPIKE_REACH, 0) : i] + counts[i + 1 : i + _SPIKE_REACH + 1]
    local = sum(neighbours) / max(len(neighbours), 1)
    if counts[i] > _SPIKE_RATIO * local and counts[i] > total / _SPIKE_SHARE:
        return counts[i] - local
    return 0.0


@dataclass(frozen=True, kw_only=True)
class _PointMasses:
    """Counts of values sitting exactly on 0 (ReLU outputs, padding) and on the ends of the
    range (ReLU6 saturating at 6, black and white pixels), read from bins that stand out."""

    zero_bin: int = 0
    zero: float = 0.0
    low: float = 0.0
    high: float = 0.0

    @staticmethod
    def find(counts: torch.Tensor, lo: float, hi: float) -> _PointMasses:
        bins = counts.numel()
        total = float(counts.sum())
        reach = _SPIKE_REACH + 1
        head, tail = counts[:reach].tolist(), counts[-reach:].tolist()
        at_zero = -lo * bins / (hi - lo)
        zero_bin, zero = 0, 0.0
        if 0.0 <= at_zero <= bins:
            # histc may put an exact 0 on either side of a bin edge: look at both
            first = max(math.floor(at_zero) - 1, 0)
            start = max(first - _SPIKE_REACH, 0)
            near = counts[start : min(math.ceil(at_zero), bins - 1) + reach].tolist()
            candidates = range(first, min(math.ceil(at_zero), bins - 1) + 1)
            zero, zero_bin = max((_excess(near, i - start, total), i) for i in candidates)
        # an end bin that holds the zeros is not read twice
        low_free = bins > 1 and not (zero and zero_bin == 0)
        high_free = bins > 1 and not (zero and zero_bin == bins - 1)
        return _PointMasses(
            zero_bin=zero_bin,
            zero=zero,
            low=_excess(head, 0, total) if low_free else 0.0,
            high=_excess(tail, len(tail) - 1, total) if high_free else 0.0,
        )


class _ErrorModel:
    """What the error formulas need from a histogram, in float64.

    The histogram is read as point masses (:class:`_PointMasses`) plus values spread
    uniformly within each bin. Values at exactly 0 cost nothing (every grid contains 0) and
    are left out. The cumulative moments ``C_k(x) = sum of t**k over values t <= x``
    (k = 0, 1, 2) are, in bin ``i`` of density ``rho_i``, the polynomials
    ``C_k(x) = a_k[i] + rho_i x**(k+1) / (k+1)``: evaluating them is one gather of
    ``(a_0, a_1, a_2, rho)`` and a few multiply-adds. Sentinel columns cover ``x`` below
    the range (zeros) and from its top up (the totals); the point masses at the ends are
    added to the constants ``a_k`` from where they lie on.
    """

    def __init__(self, counts: torch.Tensor, lo: float, hi: float) -> None:
        bins = counts.numel()
        masses = _PointMasses.find(counts, lo, hi)
        h = counts.to(_F64)
        if masses.zero or masses.low or masses.high:
            h[masses.zero_bin] -= masses.zero
            h[0] -= masses.low
            h[-1] -= masses.high
        w = (hi - lo) / bins
        edges = torch.linspace(lo, hi, bins + 1, dtype=_F64)
        powers = torch.stack([edges, edges * edges, edges * edges * edges])  # x^(k+1)
        rho = torch.outer(_INVERSE_ORDERS, h / w)  # rho_k = rho / (k+1)
        # C_k at each bin's left edge (rho_k times the power's rise over earlier bins)
        at_left = torch.nn.functional.pad((rho * powers.diff(dim=1)).cumsum(1), (1, 0))
        coef = torch.zeros(6, bins + 2, dtype=_F64)  # rows a0 a1 a2 rho0 rho1 rho2
        torch.addcmul(at_left[:, :-1], rho, powers[:, :-1], value=-1.0, out=coef[:3, 1:-1])
        coef[:3, -1] = at_left[:, -1]  # from the top of the range up: the totals
        coef[3:, 1:-1] = rho
        # point masses m at the ends contribute m * end**k from there on
        if masses.low:
            coef[:3, 1:] += torch.tensor([[1.0], [lo], [lo * lo]], dtype=_F64) * masses.low
        if masses.high:
            coef[:3, -1:] += torch.tensor([[1.0], [hi], [hi * hi]], dtype=_F64) * masses.high
        self.coef = coef
        self.total = coef[:3, -1].tolist()
        self.lo, self.inv_w, self.bins = lo, 1.0 / w, bins
        self.end_masses = [(x, m) for x, m in ((lo, masses.low), (hi, masses.high)) if m > 0]

    def at(self, x: torch.Tensor) -> torch.Tensor:
        """``C_k`` at the points ``x``, stacked on a new first dimension ``k = 0, 1, 2``."""
        col = x.mul(self.inv_w).add_(1.0 - self.lo * self.inv_w).floor_()
        col = col.clamp_(0, self.bins + 1).long().view(1, -1).expand(6, -1)
        g = self.coef.gather(1, col).view(2, 3, -1)
        flat = x.view(-1)
        powers = torch.stack([flat, flat * flat, flat * flat * flat])
        return torch.addcmul(g[0], g[1], powers).view(3, *x.shape)


def _grid_errors(model: _ErrorModel, s: torch.Tensor, z: torch.Tensor, levels: int) -> torch.Tensor:
    """Expected squared error ``E[k, r]`` of the grid with step ``s[k]`` and offset ``z[k, r]``.

    With ``g`` an end point of the grid and ``x`` the limit of its cell (``g0 + s/2`` at the
    bottom, ``g1 - s/2`` at the top), ``F(x, g) = C2(x) - 2 g C1(x) + g^2 C0(x)`` sums
    ``(t - g)^2`` over the values below ``x``. So::

        lowest cell  = F(x0, g0)
        highest cell = (T2 - 2 g1 T1 + g1^2 T0) - F(x1, g1)      (T_k: totals)
        interior     = s^2 / 12 * (C0(x1) - C0(x0))
    """
    g0 = z * -s[:, None]
    half = (0.5 * s)[:, None]
    g1 = g0 + ((levels - 1) * s)[:, None]
    ends = torch.stack([g0, g1])
    limits = torch.stack([g0 + half, g1 - half])
    c0, c1, c2 = model.at(limits)  # each (2, K, Z)
    f = torch.addcmul(c2, ends, torch.addcmul(c1, ends, c0, value=-0.5), value=-2.0)
    t0, t1, t2 = model.total
    errors = torch.addcmul(f[0] - f[1], g1, g1 * t0 - 2.0 * t1).add_(t2)
    errors.addcmul_(c0[1] - c0[0], half * half, value=1.0 / 3.0)
    # a point mass m at x in the interior is off its grid point by d = x - s round(x / s)
    for x, m in model.end_masses:
        d = x - s * (x / s).round()
        inside = (limits[0] <= x) & (limits[1] > x)
        errors.addcmul_(inside, (m * (d * d - s * s / 12))[:, None])
    return errors


@dataclass(frozen=True, kw_only=True)
class _GridFamily:
    """The grids a scheme can produce: ``levels`` points, zero offsets ``z`` in
    ``[z_min, z_max]`` (symmetric schemes: one fixed offset)."""

    levels: int
    z_min: int
    z_max: int

    def covering_step(self, lo: float, hi: float) -> tuple[float, int]:
        """Smallest step, and its offset, whose grid contains ``[lo, hi]`` (``lo <= 0 <= hi``,
        ``lo < hi``): ``-z s <= lo`` and ``(levels - 1 - z) s >= hi``."""
        top = self.levels - 1
        z_real = top * -lo / (hi - lo)  # the offset that would split the levels exactly
        best = (math.inf, self.z_min)
        for z in {self.z_min, self.z_max, math.floor(z_real), math.ceil(z_real)}:
            if not self.z_min <= z <= self.z_max or (lo < 0 and z == 0) or (hi > 0 and z == top):
                continue
            need_lo = -lo / z if lo < 0 else 0.0
            need_hi = hi / (top - z) if hi > 0 else 0.0
            best = min(best, (max(need_lo, need_hi), z))
        if best[0] == math.inf:  # a degenerate family (2 levels, symmetric): cover what it can
            return (hi - lo) / top, self.z_min
        return best

    def offsets(
        self, s: torch.Tensor, lo: float, hi: float, count: int, best: tuple[float, float] | None
    ) -> torch.Tensor:
        """About ``count`` offsets per step ``s[k]`` (rows; repeated when there are fewer).

        Without ``best``: the offsets worth trying for data in ``[lo, hi]`` (``lo <= 0 <= hi``).
        If no data lies in a grid's lowest cell, ``x < (1/2 - z) s``, the grid shifted up by
        one step (``z - 1``) is at least as good: the same lattice, so the same rounding,
        and one more point at the top. So ``z <= 3/2 - lo / s`` suffices; likewise
        ``levels - 1 - z <= hi / s + 3/2`` at the top.

        With ``best``, the ends ``(g0, g1)`` of the best grid so far: the offsets between
        the one keeping its lowest point and the one keeping its highest point, give or take
        ``_OFFSET_REACH``.
        """
        if self.z_min == self.z_max:
            return torch.full((s.numel(), 1), float(self.z_min), dtype=_F64)
        top, inv = self.levels - 1, s.reciprocal()
        if best is None:
            z_lo = inv.mul(-hi).add_(top - 1.5 - _OFFSET_REACH)
            z_hi = inv.mul(-lo).add_(1.5 + _OFFSET_REACH)
        else:
            keep_low, keep_high = inv.mul(-best[0]), inv.mul(-best[1]).add_(top)
            z_lo = torch.minimum(keep_low, keep_high).sub_(_OFFSET_REACH)
            z_hi = torch.maximum(keep_low, keep_high).add_(_OFFSET_REACH)
        z_lo = z_lo.ceil_().clamp_(self.z_min, self.z_max)
        z_hi = torch.maximum(z_hi.ceil_().clamp_(self.z_min, self.z_max), z_lo)
        return torch.addcmul(z_lo[:, None], (z_hi - z_lo)[:, None], _spread(count)).round_()


@lru_cache(maxsize=8)
def _spread(count: int) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, count, dtype=_F64)


# The step is searched on a log scale, coarse to fine. The first round tries _FIRST_ROUND_STEPS
# steps from the covering step (no clipping) down to _MIN_STEP_RATIO of it, plus steps that
# clip _EDGE_CLIPS grid steps off the range (bounded data often wants a little clipping, and
# its error is jagged there); each later round tries _REFINE_STEPS steps between the
# neighbours of the best step so far.
_FIRST_ROUND_STEPS = 24
_REFINE_STEPS = (24,)
_MIN_STEP_RATIO = 2.0**-10
_EDGE_CLIPS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
# offsets tried per step (see _GridFamily.offsets)
_OFFSETS = 32
_OFFSET_REACH = 2


@lru_cache(maxsize=16)
def _first_round_tensor(levels: int) -> torch.Tensor:
    return torch.tensor(_first_round(levels), dtype=_F64).exp_()


@lru_cache(maxsize=16)
def _first_round(levels: int) -> tuple[float, ...]:
    """log(step / covering step) of the first round, increasing, ending at 0."""
    log_min = math.log(_MIN_STEP_RATIO)
    coarse = [log_min * (1 - i / (_FIRST_ROUND_STEPS - 1)) for i in range(_FIRST_ROUND_STEPS)]
    edges = [math.log(1 - clip / (levels - 1)) for clip in _EDGE_CLIPS if clip < levels - 1]
    return tuple(sorted({*coarse, *edges}))


def _search_grid(
    counts: torch.Tensor, lo: float, hi: float, family: _GridFamily
) -> tuple[float, int]:
    """``(step, zero offset)`` minimising the expected squared error over the histogram."""
    model = _ErrorModel(counts, lo, hi)
    lo0, hi0 = min(lo, 0.0), max(hi, 0.0)
    s_cover, z_cover = family.covering_step(lo0, hi0)
    levels = family.levels
    best = (math.inf, s_cover, z_cover)
    ends = None  # (lowest, highest) point of the best grid so far
    ts = _first_round(levels)
    s = _first_round_tensor(levels) * s_cover
    for refine in (*_REFINE_STEPS, 0):
        z = family.offsets(s, lo0, hi0, _OFFSETS, ends)
        e_min, r = _grid_errors(model, s, z, levels).min(1)
        errors = e_min.tolist()
        k = min(range(len(errors)), key=errors.__getitem__)
        if errors[k] < best[0]:
            step, offset = s_cover * math.exp(ts[k]), int(z[k, int(r[k])])
            best, ends = (errors[k], step, offset), (-offset * step, (levels - 1 - offset) * step)
        if refine:  # next: `refine` steps between the neighbours of the best one
            t_lo, t_hi = ts[max(k - 1, 0)], ts[min(k + 1, len(ts) - 1)]
            ts = tuple(t_lo + (t_hi - t_lo) * i / (refine - 1) for i in range(refine))
            s = torch.linspace(t_lo, t_hi, refine, dtype=_F64).exp_().mul_(s_cover)
    return best[1], best[2]


# ---------------------------------------------------------------------------------------------
# the observer
# ---------------------------------------------------------------------------------------------


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
        if x_orig.numel() == 0:
            warn_empty_input(self)
            return x_orig
        x = x_orig.detach().reshape(-1)
        if x.dtype != torch.float32:
            x = x.float()
        extremes = _group_extremes(x) if x.numel() > _EXACT_NUMEL else None
        if extremes is None:
            x_min, x_max = x.amin(), x.amax()
        else:
            x_min, x_max = extremes[1].amin(), extremes[0].amax()
        lo, hi = float(x_min), float(x_max)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            check_finite_minmax(self, x_min, x_max)  # raises, naming the problem
        self._accumulate(x, lo, hi, extremes)
        return x_orig

    def _accumulate(
        self,
        x: torch.Tensor,
        x_min: float,
        x_max: float,
        extremes: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        old_lo, old_hi = float(self.min_val), float(self.max_val)
        if old_lo == math.inf or old_hi == -math.inf:  # nothing observed yet
            batch = _batch_histogram(x, x_min, x_max, self.bins, extremes)
            self.histogram.copy_(batch)
            self.min_val.fill_(x_min)
            self.max_val.fill_(x_max)
            return
        new_lo, new_hi = min(old_lo, x_min), max(old_hi, x_max)
        if (new_lo, new_hi) != (old_lo, old_hi):
            self.histogram.copy_(_rebin(self.histogram, old_lo, old_hi, new_lo, new_hi))
            self.min_val.fill_(new_lo)
            self.max_val.fill_(new_hi)
        self.histogram.add_(_batch_histogram(x, new_lo, new_hi, self.bins, extremes))

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
        if lo == hi or float(self.histogram.sum()) <= 0.0:
            return self._calculate_qparams(self.min_val, self.max_val)
        family = self._grid_family()
        with torch.inference_mode():  # nothing below needs autograd; only floats come out
            step, z = _search_grid(self.histogram.detach().cpu(), lo, hi, family)
        new_min, new_max = self._range_for(step, z, family)
        device = self.min_val.device
        return self._calculate_qparams(
            torch.tensor(new_min, device=device), torch.tensor(new_max, device=device)
        )

    def _grid_family(self) -> _GridFamily:
        levels = self.quant_max - self.quant_min + 1
        if self.qscheme in SYMMETRIC_QSCHEMES:
            zero_point = symmetric_zero_point(
                self.dtype, self.quant_min, self.quant_max, self.has_customized_qrange
            )
            z = zero_point - self.quant_min
            return _GridFamily(levels=levels, z_min=z, z_max=z)
        return _GridFamily(levels=levels, z_min=0, z_max=levels - 1)

    def _range_for(self, step: float, z: int, family: _GridFamily) -> tuple[float, float]:
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
