"""Per-layer quantization reports: local and propagated error of every quantized op, a likely
cause with a remedy, the ops left in float and why; as a terminal table, a PNG and HTML."""

from fxquant.pt2e.quantizer.float_fallback import FallbackReason
from fxquant.report.build import build_report, capture_with_debug_handles
from fxquant.report.report import FloatOpReport, LayerReport, QuantizationReport

__all__ = [
    "FallbackReason",
    "FloatOpReport",
    "LayerReport",
    "QuantizationReport",
    "build_report",
    "capture_with_debug_handles",
]
