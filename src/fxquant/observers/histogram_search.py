"""The range search of :class:`~fxquant.observers.histogram.HistogramObserver`: the expected
squared quantization error of every candidate grid over a histogram, in closed form from
cumulative moments tabulated once per call, searched coarse to fine.

A per-tensor grid is ``{(j - z) * s : j = 0 .. levels-1}``: a step ``s`` and an integer zero
offset ``z = zero_point - quant_min``. :class:`_ErrorModel` tabulates the moments,
:func:`_grid_errors` evaluates all steps and offsets of a round at once, and
:func:`search_grid` searches the step on a log scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

__all__ = ["GridFamily", "search_grid"]

_F64 = torch.float64

# -- calculate_qparams: expected error of quantization grids over the histogram -------------
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
# density has rounding error s^2 / 12 per value; point masses (values exactly at 0, never
# rounded; ReLU6 at 6, black and white pixels at the ends) get their exact error. Treating
# the rest as locally flat keeps the search from fitting the noise of a sampled histogram.
# Point masses: a bin over 2.5x the mean of its (up to) 4 neighbours each side, and over
# 1/4096 of all values.
_SPIKE_RATIO = 2.5
_SPIKE_REACH = 4
_SPIKE_SHARE = 4096.0

_INVERSE_ORDERS = torch.tensor([1.0, 1.0 / 2.0, 1.0 / 3.0], dtype=_F64)  # 1 / (k+1)


def _excess(counts: list[float], i: int, total: float) -> float:
    """How much ``counts[i]`` exceeds its neighbours' mean if it is a point mass (else 0)."""
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
    total: float = 0.0

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
            total=total,
            zero_bin=zero_bin,
            zero=zero,
            low=_excess(head, 0, total) if low_free else 0.0,
            high=_excess(tail, len(tail) - 1, total) if high_free else 0.0,
        )


@lru_cache(maxsize=8)
def _bin_powers(bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rise, top)`` for the bins ``[i, i + 1]``, ``i = 0 .. bins-1``, and ``k = 0, 1, 2``:
    ``top[k, i] = (i + 1)**(k+1) / (k+1)`` and ``rise[k, i] = top[k, i] - i**(k+1) / (k+1)``,
    the integral of ``t**k`` over bin ``i``."""
    edges = torch.arange(bins + 1, dtype=_F64)
    powers = torch.stack([edges, edges * edges, edges * edges * edges]) * _INVERSE_ORDERS[:, None]
    return powers.diff(dim=1), powers[:, 1:].contiguous()


@lru_cache(maxsize=16)
def _end_layout(levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per grid end (bottom, top; shaped to broadcast to ``(2, 1, K, Z)``): its position on
    the grid (0 or ``levels - 1`` steps) and the signed half step to its cell's limit."""
    ends = torch.tensor([0.0, levels - 1.0], dtype=_F64).view(2, 1, 1, 1)
    return ends, torch.tensor([0.5, -0.5], dtype=_F64).view(2, 1, 1, 1)


class _ErrorModel:
    """What the error formulas need from a histogram, in float64, in bin widths from the
    bottom of the range (``u = (x - lo) / w``; errors in units of ``w**2``, same order). The
    histogram is read as point masses (:class:`_PointMasses`) plus values spread uniformly
    within each bin. Values at exactly 0 cost nothing (every grid contains 0): left out.

    The cumulative moments ``C_k(u) = sum of t**k over values t <= u`` (k = 0, 1, 2) are, in
    bin ``i`` holding ``h_i`` values, ``a_k[i] + rho_k[i] u**(k+1)`` with
    ``rho_k = h_i / (k+1)``; the moments from above, ``U_k(u) = T_k - C_k(u)`` (``T_k`` the
    totals), likewise with ``T_k - a_k`` and ``-rho_k``. ``table`` holds both, flat, shaped
    ``(2, 6, bins + 2)``: ``C`` then ``U``; rows ``a_0, a_1, a_2, rho_0, rho_1, rho_2``; a
    column per bin plus one for ``u`` below the range (zeros) and one from its top up (the
    totals). Evaluating either is one lookup per row and a multiply-add.
    """

    def __init__(self, counts: torch.Tensor, lo: float, hi: float) -> None:
        bins = counts.numel()
        masses = _PointMasses.find(counts, lo, hi)
        h = counts.to(_F64)
        if masses.zero or masses.low or masses.high:
            h[masses.zero_bin] -= masses.zero
            h[0] -= masses.low
            h[-1] -= masses.high
        rise, top = _bin_powers(bins)
        cum = (h * rise).cumsum_(1)  # C_k at each bin's top
        table = torch.zeros(2, 6, bins + 2, dtype=_F64)
        below = table[0]
        torch.addcmul(cum, h, top, value=-1.0, out=below[:3, 1:-1])
        torch.mul(h, _INVERSE_ORDERS[:, None], out=below[3:, 1:-1])
        below[:3, -1] = cum[:, -1]
        # point masses m at the ends: m * end**k from where they lie on
        if masses.low:
            below[0, 1:] += masses.low
        if masses.high:
            below[:3, -1] += torch.tensor([1.0, bins, bins * bins], dtype=_F64) * masses.high
        # U: the totals (last column; its densities are 0) less C
        torch.sub(below[:, -1:], below, out=table[1])
        self.table = table.view(-1)
        self.total_t = below[0, -1]
        self.count = masses.total
        self.bins = bins
        origin = -lo * bins / (hi - lo)  # where 0 is
        self.origin = torch.tensor(origin, dtype=_F64)
        # point masses at the ends: (where, where from 0, how many), each shaped (M, 1, 1)
        ends = [(u, u - origin, m) for u, m in ((0.0, masses.low), (bins, masses.high)) if m]
        self.end_masses = (
            torch.tensor(ends, dtype=_F64).T.reshape(3, -1, 1, 1).unbind(0) if ends else None
        )

    def moments(self, u: torch.Tensor) -> torch.Tensor:
        """``C_k`` at the points ``u[0]`` and ``U_k`` at the points ``u[1]``: ``u`` shaped
        ``(2, 1, ...)``, the result ``(2, 3, ...)`` (``k = 0, 1, 2`` in the middle)."""
        columns = self.bins + 2
        # column floor(u) + 1, clamped to the sentinels (truncation is floor from 0 up)
        col = u.add(1.0).clamp_(0, columns - 1).long()
        g = self.table.index_select(0, (col + _row_starts(columns, u.dim())).view(-1))
        a, rho = g.view(2, 2, 3, *u.shape[2:]).unbind(1)
        sq = u * u
        return torch.addcmul(a, rho, torch.cat([u, sq, sq * u], dim=1))


@lru_cache(maxsize=8)
def _row_starts(columns: int, dims: int) -> torch.Tensor:
    """Where the rows of the ``C`` and ``U`` tables start, shaped ``(2, 6, 1, ...)``."""
    return torch.arange(0, 12 * columns, columns).view(2, 6, *[1] * (dims - 2))


def _grid_errors(model: _ErrorModel, s: torch.Tensor, z: torch.Tensor, levels: int) -> torch.Tensor:
    """Expected squared error ``E[k, r]`` of the grid with step ``s[k, 0]`` and offset
    ``z[k, r]`` (in bin widths).

    With ``g`` an end point of the grid and ``x`` the limit of its cell (``g0 + s/2`` at the
    bottom, ``g1 - s/2`` at the top), ``C2 - 2 g C1 + g^2 C0`` at ``x`` sums ``(t - g)^2``
    over the values below ``x``, and with ``U`` for ``C``, over those above. So::

        lowest cell  = C2(x0) - 2 g0 C1(x0) + g0^2 C0(x0)
        highest cell = U2(x1) - 2 g1 U1(x1) + g1^2 U0(x1)
        interior     = s^2 / 12 * (T0 - C0(x0) - U0(x1))
    """
    positions, half = _end_layout(levels)
    ends = torch.addcmul(torch.addcmul(model.origin, z, s, value=-1.0), positions, s)
    limits = torch.addcmul(ends, half, s)  # (2, 1, K, Z): bottom, top
    c0, c1, c2 = model.moments(limits).unbind(1)
    g = ends[:, 0]
    # the interior's s^2/12 per value is counted as T0 s^2/12 less the cells' share
    rounding = (s * s).div_(12.0)
    cells = torch.addcmul(c2, g, torch.addcmul(c1, g, c0, value=-0.5), value=-2.0)
    cells.addcmul_(c0, rounding, value=-1.0)
    errors = cells.sum(0).addcmul_(rounding, model.total_t)
    if model.end_masses is not None:
        # a point mass m at u (x from 0) in the interior is d = x - s round(x / s) off its
        # grid point, not s^2/12 on average
        u, x, m = model.end_masses
        d = x - s * (x / s).round_()
        inside = (limits[0, 0] <= u) & (limits[1, 0] > u)
        errors.add_((inside * (m * (d * d - rounding))).sum(0))
    return errors


@dataclass(frozen=True, kw_only=True)
class GridFamily:
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
        """About ``count`` offsets per step ``s[k, 0]`` (rows; repeated when there are fewer).

        Without ``best``: those worth trying for data in ``[lo, hi]`` (``lo <= 0 <= hi``). If
        no data lies in a grid's lowest cell, ``x < (1/2 - z) s``, the grid shifted up one
        step (``z - 1``) is as good (same lattice, one more point at the top). So
        ``z <= 3/2 - lo / s`` suffices; likewise ``levels - 1 - z <= hi / s + 3/2``. With
        ``best``, the ends ``(g0, g1)`` of the best grid so far: the offsets between the one
        keeping its lowest and the one keeping its highest point, +- ``_OFFSET_REACH``.
        """
        if self.z_min == self.z_max:
            return _fixed_offset(s.numel(), self.z_min)
        top, inv = self.levels - 1, s.reciprocal()
        if best is None:
            z_lo = inv.mul(-hi).add_(top - 1.5 - _OFFSET_REACH)
            z_hi = inv.mul(-lo).add_(1.5 + _OFFSET_REACH)
        else:
            keep_low, keep_high = inv.mul(-best[0]), inv.mul(-best[1]).add_(top)
            z_lo = torch.minimum(keep_low, keep_high).sub_(_OFFSET_REACH)
            z_hi = torch.maximum(keep_low, keep_high).add_(_OFFSET_REACH)
        # z_lo <= z_hi (both rise with the step), and stay so rounded and clamped
        bounds = torch.cat([z_lo, z_hi], dim=1).ceil_().clamp_(self.z_min, self.z_max)
        return torch.lerp(bounds[:, :1], bounds[:, 1:], _spread(count)).round_()


@lru_cache(maxsize=16)
def _fixed_offset(steps: int, z: int) -> torch.Tensor:
    return torch.full((steps, 1), float(z), dtype=_F64)


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
# offsets tried per step (see GridFamily.offsets)
_OFFSETS = 32
_OFFSET_REACH = 2


@lru_cache(maxsize=16)
def _first_round(levels: int) -> tuple[tuple[float, ...], torch.Tensor]:
    """log(step / covering step) of the first round, increasing, ending at 0; and the
    ratios themselves as a column."""
    log_min = math.log(_MIN_STEP_RATIO)
    coarse = [log_min * (1 - i / (_FIRST_ROUND_STEPS - 1)) for i in range(_FIRST_ROUND_STEPS)]
    edges = [math.log(1 - clip / (levels - 1)) for clip in _EDGE_CLIPS if clip < levels - 1]
    ts = tuple(sorted({*coarse, *edges}))
    return ts, torch.tensor(ts, dtype=_F64).exp_().view(-1, 1)


def search_grid(
    counts: torch.Tensor, lo: float, hi: float, family: GridFamily
) -> tuple[float, int] | None:
    """``(step, zero offset)`` minimising the expected squared error over the histogram
    (``None`` if it is empty)."""
    model = _ErrorModel(counts, lo, hi)
    if model.count <= 0.0:
        return None
    width = (hi - lo) / counts.numel()
    # the search runs in bin widths: steps s / width, data range relative to 0
    lo0, hi0 = min(lo, 0.0) / width, max(hi, 0.0) / width
    s_cover, z_cover = family.covering_step(lo0, hi0)
    levels = family.levels
    best = (math.inf, s_cover, z_cover)
    ends = None  # (lowest, highest) point of the best grid so far
    ts, ratios = _first_round(levels)
    s = ratios * s_cover
    for refine in (*_REFINE_STEPS, 0):
        z = family.offsets(s, lo0, hi0, _OFFSETS, ends)
        errors = _grid_errors(model, s, z, levels)
        k, r = divmod(int(errors.argmin()), z.shape[1])
        error, offset = torch.stack([errors[k, r], z[k, r]]).tolist()
        if error < best[0]:
            step, offset = s_cover * math.exp(ts[k]), int(offset)
            best, ends = (error, step, offset), (-offset * step, (levels - 1 - offset) * step)
        if refine:  # next: `refine` steps between the neighbours of the best one
            t_lo, t_hi = ts[max(k - 1, 0)], ts[min(k + 1, len(ts) - 1)]
            ts = tuple(t_lo + (t_hi - t_lo) * i / (refine - 1) for i in range(refine))
            s = torch.tensor([[s_cover * math.exp(t)] for t in ts], dtype=_F64)
    return best[1] * width, best[2]


# -- the observer ----------------------------------------------------------------------------
