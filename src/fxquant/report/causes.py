"""Likely cause of a layer's quantization error, with a remedy, read off measured statistics.

Each diagnosis is a small function of a :class:`LayerEvidence`, registered in priority order
with :func:`diagnosis`; the first that recognises the layer wins. The statistics come from
:func:`fxquant.report.errors.measure_layer_stats`: the SQNR with only the weights, only the
input, or only the output quantized tells *which* quantization hurts; outlier ratios, levels
used and clipping tell *why*.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Diagnosis", "LayerEvidence", "diagnose", "diagnosis", "registered_diagnoses"]

# a layer at or above this local SQNR is not worth a remedy on its own
GOOD_DB = 30.0
# activation peak over its 99.99th percentile above which the range is outlier-dominated
ACT_OUTLIER_RATIO = 3.0
# weight peak over rms (per channel) above which a few weights set the range
WEIGHT_PEAK_TO_RMS = 8.0
# largest over median channel range above which per-tensor weights waste levels
CHANNEL_SPREAD = 4.0
# fraction of the integer levels an input uses below which the range is too wide
FEW_LEVELS = 0.15
# fraction of inputs clipped above which the range is too narrow
CLIPPED = 1e-3


@dataclass(frozen=True, kw_only=True)
class LayerEvidence:
    """What the diagnoses read about one quantized op."""

    name: str
    op_kind: str
    local_sqnr_db: float
    propagated_sqnr_db: float
    input_propagated_sqnr_db: float = math.inf  # the quantized model's error entering the op
    stats: dict[str, float] = field(default_factory=dict)

    def component(self) -> str | None:
        """Which quantization dominates the local error: "weight", "input" or "output"."""
        parts = {part: self.stats[f"{part}_only_sqnr_db"] for part in ("weight", "input", "output")
                 if f"{part}_only_sqnr_db" in self.stats}
        return min(parts, key=lambda p: parts[p]) if parts else None


@dataclass(frozen=True, kw_only=True)
class Diagnosis:
    """A likely cause and what to do about it."""

    cause: str
    remedy: str


Rule = Callable[[LayerEvidence], Diagnosis | None]
_RULES: list[Rule] = []


def diagnosis(rule: Rule) -> Rule:
    """Register ``rule`` (after the ones registered before it); returns it unchanged."""
    _RULES.append(rule)
    return rule


def registered_diagnoses() -> tuple[Rule, ...]:
    """The rules in the order they are tried."""
    return tuple(_RULES)


def diagnose(evidence: LayerEvidence) -> Diagnosis:
    """The first registered diagnosis that recognises the layer."""
    for rule in _RULES:
        found = rule(evidence)
        if found is not None:
            return found
    raise AssertionError("the catch-all diagnosis is always registered last")


@diagnosis
def _fine(e: LayerEvidence) -> Diagnosis | None:
    if e.local_sqnr_db >= GOOD_DB and e.propagated_sqnr_db >= GOOD_DB:
        return Diagnosis(cause="int8 rounding noise only (the layer quantizes well)", remedy="none needed")
    return None


@diagnosis
def _upstream(e: LayerEvidence) -> Diagnosis | None:
    if e.local_sqnr_db >= GOOD_DB and e.propagated_sqnr_db < GOOD_DB:
        return Diagnosis(
            cause=f"error accumulated upstream (this op alone: {e.local_sqnr_db:.1f} dB)",
            remedy="fix the worst layers before it; this one quantizes well",
        )
    return None


@diagnosis
def _depthwise(e: LayerEvidence) -> Diagnosis | None:
    if e.stats.get("depthwise") and e.component() == "weight":
        n = int(e.stats.get("weights_per_channel", 0))
        return Diagnosis(
            cause=f"depthwise conv: {n} weights per channel, so int8 weight rounding is coarse",
            remedy="keep it in float (keep_float=[name]) or use quantization-aware training",
        )
    return None


@diagnosis
def _per_tensor_weights(e: LayerEvidence) -> Diagnosis | None:
    spread = e.stats.get("weight_channel_spread", 1.0)
    if e.component() == "weight" and not e.stats.get("weight_per_channel") and spread >= CHANNEL_SPREAD:
        return Diagnosis(
            cause=f"weight ranges differ across channels ({spread:.0f}x), one per-tensor scale for all",
            remedy="per-channel weight quantization (e.g. is_per_channel=True) or cross-layer equalization",
        )
    return None


@diagnosis
def _weight_outliers(e: LayerEvidence) -> Diagnosis | None:
    peak = e.stats.get("weight_peak_to_rms", 0.0)
    if e.component() == "weight" and peak >= WEIGHT_PEAK_TO_RMS:
        return Diagnosis(
            cause=f"weight outliers: peak {peak:.0f}x the rms sets the range",
            remedy="cross-layer equalization, a weight observer that clips (MSE), or keep it in float",
        )
    return None


@diagnosis
def _activation_outliers(e: LayerEvidence) -> Diagnosis | None:
    ratio = e.stats.get("act_outlier_ratio", 0.0)
    if e.component() == "input" and ratio >= ACT_OUTLIER_RATIO:
        return Diagnosis(
            cause=f"activation outliers: input peak {ratio:.1f}x its 99.99th percentile",
            remedy="histogram/percentile calibration (HistogramObserver) or keep the op in float",
        )
    return None


@diagnosis
def _clipping(e: LayerEvidence) -> Diagnosis | None:
    clipped = e.stats.get("act_clipped_fraction", 0.0)
    if e.component() == "input" and clipped >= CLIPPED:
        return Diagnosis(
            cause=f"input range too narrow: {clipped:.2%} of values clipped",
            remedy="calibrate on more representative data, or a min/max observer for this input",
        )
    return None


@diagnosis
def _few_levels(e: LayerEvidence) -> Diagnosis | None:
    used = e.stats.get("act_levels_used", 1.0)
    if e.component() == "input" and used < FEW_LEVELS:
        return Diagnosis(
            cause=f"input uses {used:.0%} of the integer levels (range too wide for most values)",
            remedy="histogram/percentile calibration, or keep the op in float",
        )
    return None


@diagnosis
def _output_range(e: LayerEvidence) -> Diagnosis | None:
    if e.component() == "output":
        return Diagnosis(
            cause="output quantization: a wide output range for 256 levels",
            remedy="histogram/percentile calibration of the output, or keep the op in float",
        )
    return None


@diagnosis
def _weight_rounding(e: LayerEvidence) -> Diagnosis | None:
    if e.component() == "weight":
        return Diagnosis(cause="int8 weight rounding (no outliers found)",
                         remedy="keep it in float, or quantization-aware training")
    return None


@diagnosis
def _input_rounding(e: LayerEvidence) -> Diagnosis | None:
    if e.component() == "input":
        return Diagnosis(cause="int8 input rounding (no outliers found)",
                         remedy="keep it in float, or quantization-aware training")
    return None


@diagnosis
def _catch_all(e: LayerEvidence) -> Diagnosis | None:
    return Diagnosis(cause="int8 rounding", remedy="keep it in float if it ranks among the worst")
