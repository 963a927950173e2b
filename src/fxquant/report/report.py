"""The per-layer quantization report: what each quantized op costs in accuracy, why, what to do
about it, and which ops stayed in float and why.

A :class:`QuantizationReport` is plain data (it round-trips through JSON) with renderers: a
terminal table (``str(report)``), a PNG plot (:meth:`QuantizationReport.plot`) and a
self-contained HTML page (:meth:`QuantizationReport.to_html`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fxquant.pt2e.quantizer.float_fallback import FallbackReason

__all__ = ["REPORT_FORMAT_VERSION", "FloatOpReport", "LayerReport", "QuantizationReport"]

REPORT_FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class LayerReport:
    """One quantized op.

    ``local_sqnr_db``: SQNR of the op's output when only this op is quantized (its inputs
    taken from the float model, then quantized as the quantized model quantizes them).
    ``propagated_sqnr_db``: SQNR of the op's output in the quantized model (everything up to
    here quantized) against the float model. ``recovery_db``: how much the model's output
    SQNR would gain if this op were kept in float (measured for the top candidates, estimated
    for the others, see ``recovery_measured``); the ranking key of :meth:`QuantizationReport.worst`.
    """

    name: str
    module_path: str
    op_kind: str
    spec: str
    local_sqnr_db: float
    propagated_sqnr_db: float
    recovery_db: float
    recovery_measured: bool = False
    cause: str = ""
    remedy: str = ""
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class FloatOpReport:
    """One op left in float, and why."""

    name: str
    module_path: str
    op_kind: str
    reason: FallbackReason
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class QuantizationReport:
    """Per-layer errors of a quantized model against its float original.

    ``layers`` are the quantized ops in graph order, ``float_ops`` the ops left in float,
    ``model_sqnr_db`` the SQNR of the model's output, ``metrics`` any further measures (e.g.
    ``top1_agreement``), ``notes`` sentences worth reading (e.g. an accuracy budget not met).
    """

    layers: list[LayerReport]
    float_ops: list[FloatOpReport]
    model_sqnr_db: float
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    title: str = "fxquant quantization report"

    def worst(self, n: int = 5) -> list[LayerReport]:
        """The ``n`` layers whose float fallback would recover the most output SQNR."""
        if n < 0:
            raise ValueError(f"worst(n): n must be >= 0, got {n}")
        return sorted(self.layers, key=_ranking_key)[:n]

    def layer(self, name: str) -> LayerReport:
        """The layer of node ``name`` (KeyError naming the known layers otherwise)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no quantized layer named {name!r}; layers: {', '.join(l.name for l in self.layers[:20])}...")

    def __str__(self) -> str:
        from fxquant.report.render import render_text

        return render_text(self)

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Write a PNG of local and propagated SQNR per layer (worst layers labelled)."""
        from fxquant.report.render import render_png

        return render_png(self, Path(path))

    def to_html(self, path: str | os.PathLike[str]) -> Path:
        """Write a self-contained HTML page: summary, layer table, the plot, float ops."""
        from fxquant.report.render import render_html

        return render_html(self, Path(path))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (infinities as the strings ``"inf"``/``"-inf"``)."""
        data = asdict(self)
        for op in data["float_ops"]:
            op["reason"] = op["reason"].name
        return {"format_version": REPORT_FORMAT_VERSION, **_encode_floats(data)}

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the report as JSON; :meth:`from_json` reads it back."""
        out = Path(path)
        out.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantizationReport:
        """The inverse of :meth:`to_dict`."""
        version = data.get("format_version")
        if version != REPORT_FORMAT_VERSION:
            raise ValueError(
                f"unsupported report format version {version!r} (this fxquant reads version "
                f"{REPORT_FORMAT_VERSION}); re-create the report with this fxquant"
            )
        data = _decode_floats({k: v for k, v in data.items() if k != "format_version"})
        try:
            layers = [LayerReport(**layer) for layer in data["layers"]]
            float_ops = [
                FloatOpReport(**{**op, "reason": FallbackReason[op["reason"]]}) for op in data["float_ops"]
            ]
            return cls(**{**data, "layers": layers, "float_ops": float_ops})
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a valid fxquant report: {e}") from e

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> QuantizationReport:
        """Read a report written by :meth:`to_json`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not a JSON report written by QuantizationReport.to_json: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not a JSON report written by QuantizationReport.to_json")  # noqa: TRY004  # bad file content
        return cls.from_dict(data)


def _ranking_key(layer: LayerReport) -> tuple[float, int, float]:
    # on a tie a measured recovery ranks before an estimate (estimates are capped at the
    # smallest measured one)
    return (-layer.recovery_db, 0 if layer.recovery_measured else 1, layer.local_sqnr_db)


def _encode_floats(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _encode_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode_floats(v) for v in value]
    return value


_SPECIAL = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _decode_floats(value: Any, key: str = "") -> Any:
    if isinstance(value, str) and value in _SPECIAL and key not in _TEXT_FIELDS:
        return _SPECIAL[value]
    if isinstance(value, dict):
        return {k: _decode_floats(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_floats(v, key) for v in value]
    return value


# string fields that may legitimately hold "inf"/"nan" text
_TEXT_FIELDS = frozenset({"name", "module_path", "op_kind", "spec", "cause", "remedy", "detail", "title", "notes"})
