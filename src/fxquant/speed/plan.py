"""The speed plan: per unit, int8 or float and why, with the expected end-to-end times."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fxquant.pt2e.quantizer.float_fallback import FallbackReason, KeepFloatQuantizer
    from fxquant.pt2e.quantizer.quantizer import Quantizer

__all__ = ["SpeedPlan", "SpeedPlanRow"]

INT8 = "int8"
FLOAT = "float"


@dataclass(frozen=True, kw_only=True)
class SpeedPlanRow:
    """One quantized unit: its node ``name`` (what a fallback names), ``module_path``, what
    it computes (``op``), the int8 ``kernel`` timed, fp32 / int8 time, ``boundary_ms`` (what
    else switching this unit — with the pass-through ops that follow it — to int8 adds under
    the rest of the plan: quantize/dequantize boundaries and the pass-through ops' int8 vs
    fp32 time; negative when it removes boundaries) and the ``decision`` ("int8" or "float").
    ``passthrough`` rows are unannotated ops (pads, reshapes) that run in int8 exactly when
    their reader does; they are costed but never kept float by name. ``marker_for`` names
    the int8 unit whose output this float unit keeps quantized: it stays annotated (the
    int8 lowering needs a quantizing reader to run a conv in int8) yet computes in float,
    so it is not in :attr:`SpeedPlan.keep_float` either."""

    name: str
    module_path: str
    op: str
    kernel: str
    fp32_ms: float
    int8_ms: float
    boundary_ms: float
    decision: str
    passthrough: bool = False
    marker_for: str | None = None

    def __post_init__(self) -> None:
        if self.decision not in (INT8, FLOAT):
            raise ValueError(f"SpeedPlanRow {self.name}: decision must be 'int8' or 'float', got {self.decision!r}")


def _note(row: SpeedPlanRow) -> str:
    if row.passthrough:
        return " (follows its reader)"
    if row.marker_for:
        return f" (stays annotated: quantizes {row.marker_for}'s output)"
    return ""


@dataclass(frozen=True, kw_only=True)
class SpeedPlan:
    """Which quantized ops to keep in float for speed, and the expected gain.

    ``keep_float`` maps node names to a human reason; ``expected_fp32_ms`` is the estimated
    time of the float model, ``expected_int8_ms`` of the planned one and ``all_int8_ms`` of
    the model with every annotated op in int8 (all three count the ops that stay float and
    the quantize/dequantize boundaries).

    >>> plan = plan_for_speed(model, (x,), quantizer, threads=1)
    >>> print(plan)                                   # the table
    >>> quantizer = plan.keep_float_quantizer(quantizer)   # then prepare_pt2e / convert_pt2e
    """

    rows: tuple[SpeedPlanRow, ...]
    keep_float: dict[str, str] = field(default_factory=dict)
    expected_fp32_ms: float
    expected_int8_ms: float
    all_int8_ms: float
    threads: int
    measured: bool

    @property
    def expected_speedup(self) -> float:
        """Estimated fp32 time over planned int8 time."""
        return self.expected_fp32_ms / self.expected_int8_ms if self.expected_int8_ms > 0 else float("inf")

    @property
    def all_int8_speedup(self) -> float:
        """Estimated fp32 time over the time with every annotated op in int8."""
        return self.expected_fp32_ms / self.all_int8_ms if self.all_int8_ms > 0 else float("inf")

    def as_fallbacks(self) -> dict[str, FallbackReason]:
        """``{node name: FallbackReason.SPEED_PLAN}`` for :class:`KeepFloatQuantizer`."""
        from fxquant.pt2e.quantizer.float_fallback import FallbackReason

        return {name: FallbackReason.SPEED_PLAN for name in self.keep_float}

    def keep_float_quantizer(self, quantizer: Quantizer) -> KeepFloatQuantizer:
        """``quantizer`` wrapped so the ops this plan keeps in float are left unquantized."""
        from fxquant.pt2e.quantizer.float_fallback import KeepFloatQuantizer

        return KeepFloatQuantizer(quantizer, self.as_fallbacks())

    def __str__(self) -> str:
        source = "measured" if self.measured else "analytic estimate"
        header = (f"{'node':<22} {'module':<28} {'op':<44} {'fp32 ms':>8} {'int8 ms':>8} "
                  f"{'bound. ms':>9}  decision")
        lines = [f"Speed plan ({source}, {self.threads} thread{'s' if self.threads != 1 else ''})", header,
                 "-" * len(header)]
        for r in self.rows:
            lines.append(
                f"{r.name:<22} {r.module_path[-28:]:<28} {r.op[:44]:<44} {r.fp32_ms:>8.3f} {r.int8_ms:>8.3f} "
                f"{r.boundary_ms:>+9.3f}  {r.decision}{_note(r)}"
            )
        kept = len(self.keep_float)
        quantized = sum(1 for r in self.rows if not r.passthrough)
        lines += [
            "-" * len(header),
            f"{quantized - kept} of {quantized} quantized ops in int8, {kept} kept in float",
            (f"expected: fp32 {self.expected_fp32_ms:.2f} ms | all int8 {self.all_int8_ms:.2f} ms "
             f"({self.all_int8_speedup:.2f}x) | planned {self.expected_int8_ms:.2f} ms ({self.expected_speedup:.2f}x)"),
        ]
        lines += [f"  keep float {name}: {reason}" for name, reason in self.keep_float.items()]
        return "\n".join(lines)
