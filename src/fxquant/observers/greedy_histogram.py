"""A histogram observer whose range comes from upstream's greedy tail-trimming search.

:class:`~fxquant.observers.HistogramObserver` chooses the range of least expected L2 error
over its histogram (exact, closed form). That is the right choice when every element
matters alike (CNN activations), but on transformer LayerNorm outputs it trims the few
outlier *features* that are large on every token and that the next linear depends on:
on MiniLM-L6 (static int8, 32 held-out 128-token sequences, batch 8) the sentence-embedding
cosine is 0.9908 with it, against 0.9937 for torchao's config; giving only the LayerNorm
outputs torchao's ranges brings it to 0.9941.

:class:`GreedyHistogramObserver` keeps the same statistics (the histogram, ``min_val``,
``max_val``: any :class:`~fxquant.observers.HistogramObserver` state loads) and replaces
only the range search with the one of ``torch.ao.quantization.HistogramObserver`` (from
caffe2's norm minimization): trim the histogram from its lighter tail in steps of 1e-5 of
the total count, scoring each range by an approximate L2 error (values spread uniformly in
each bin), and stop at the first step that makes the error larger. Stopping at the first
local minimum from the outside keeps sparse outliers. On the same histograms it gives
MiniLM-L6 0.9942 and leaves EfficientNet-Lite0 as it was (logits SQNR 20.45 dB against
20.43 dB with the exact search).
"""

from __future__ import annotations

import math
import struct

import torch

from fxquant.observers.histogram import HistogramObserver

__all__ = ["GreedyHistogramObserver", "greedy_histogram_bins"]

# Trimming granularity, as a fraction of the total count (upstream's ``stepsize``).
_STEP = 1e-5


def _approximate_l2_error(histogram: torch.Tensor, bin_width: float, start: int, end: int, dst_bins: int) -> float:
    """Approximate squared error of quantizing the histogram onto ``dst_bins`` levels spanning
    bins ``start..end``: each source bin's count spread uniformly over the bin, each value
    mapped to the center of its (clamped) destination bin."""
    dst_width = bin_width * (end - start + 1) / dst_bins
    if dst_width == 0.0:
        return 0.0
    bins = histogram.numel()
    begin = (torch.arange(bins) - start) * bin_width
    finish = begin + bin_width
    dst_of_begin = torch.clamp(torch.div(begin, dst_width, rounding_mode="floor"), 0, dst_bins - 1)
    dst_of_end = torch.clamp(torch.div(finish, dst_width, rounding_mode="floor"), 0, dst_bins - 1)
    density = histogram / bin_width

    def cube_integral(lo: torch.Tensor | float, hi: torch.Tensor | float) -> torch.Tensor:
        lo_t, hi_t = torch.as_tensor(lo), torch.as_tensor(hi)
        return density * (hi_t * hi_t * hi_t - lo_t * lo_t * lo_t) / 3

    half = dst_width / 2
    error = cube_integral(begin - (dst_of_begin + 0.5) * dst_width, torch.full((bins,), half))
    error = error + (dst_of_end - dst_of_begin - 1) * cube_integral(torch.tensor(-half), torch.tensor(half))
    error = error + cube_integral(torch.tensor(-half), finish - (dst_of_end * dst_width + half))
    return float(error.sum())


def _float32(x: float) -> float:
    return float(struct.unpack("f", struct.pack("f", x))[0])


def greedy_histogram_bins(histogram: torch.Tensor, min_val: float, max_val: float, dst_bins: int) -> tuple[int, int]:
    """The first and last histogram bin of the range upstream's ``HistogramObserver`` would
    choose for ``histogram`` (``bins`` counts spanning ``[min_val, max_val]``) quantized onto
    ``dst_bins`` levels."""
    bins = histogram.numel()
    bin_width = (max_val - min_val) / bins
    total = float(histogram.sum())
    cumulative = torch.cumsum(histogram.float(), 0).tolist()  # float32 values, as upstream compares
    alpha, beta = 0.0, 1.0
    start, end = 0, bins - 1
    best = math.inf
    while alpha < beta:
        next_alpha, next_beta = alpha + _STEP, beta - _STEP
        low_threshold = _float32(next_alpha * total)
        high_threshold = _float32(next_beta * total)
        left, right = start, end
        while left < end and cumulative[left] < low_threshold:
            left += 1
        while right > start and cumulative[right] > high_threshold:
            right -= 1
        next_start, next_end = start, end
        if left - start > end - right:  # trim the lighter tail
            next_start, alpha = left, next_alpha
        else:
            next_end, beta = right, next_beta
        if next_start == start and next_end == end:
            continue
        error = _approximate_l2_error(histogram, bin_width, next_start, next_end, dst_bins)
        if error > best:
            break
        best, start, end = error, next_start, next_end
    return start, end


class GreedyHistogramObserver(HistogramObserver):
    """:class:`~fxquant.observers.HistogramObserver` (same constructor, statistics and state
    dict) whose :meth:`calculate_qparams` uses upstream's greedy tail-trimming range search
    (see the module docs): it keeps sparse outlier features that transformer layers need."""

    @torch.no_grad()
    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]  # no kwargs
        """Scale and zero point of the range upstream's search picks; the exact search's
        answers for the cases without a range to search (no data, a constant tensor) and
        its error for a histogram of the wrong size."""
        lo, hi = float(self.min_val), float(self.max_val)
        if lo == math.inf or hi == -math.inf or lo == hi or self.histogram.numel() != self.bins:
            return super().calculate_qparams()
        histogram = self.histogram if self.histogram.is_cpu else self.histogram.cpu()
        dst_bins = 2 ** torch.iinfo(self.dtype).bits
        start, end = greedy_histogram_bins(histogram, lo, hi, dst_bins)
        bin_width = (self.max_val - self.min_val) / self.bins  # float32, as upstream
        return self._calculate_qparams(self.min_val + bin_width * start, self.min_val + bin_width * (end + 1))
