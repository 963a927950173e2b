"""Renderers of a :class:`~fxquant.report.report.QuantizationReport`: a terminal table (rich
when installed, plain text otherwise), a PNG plot (matplotlib, Agg backend) and a
self-contained HTML page with the plot embedded."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fxquant.report.report import LayerReport, QuantizationReport

__all__ = ["render_html", "render_png", "render_png_bytes", "render_text"]

# SQNR values above this are drawn at this height (an exact layer has infinite SQNR)
_PLOT_CEILING_DB = 80.0
_LABELLED = 5
# label offsets (points) of the worst layers, staggered so that neighbours do not overlap
_LABEL_OFFSETS = ((8, -18), (8, 14), (8, -34), (8, 30), (8, -50))


def _db(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.1f}" if round(value, 1) != 0 else "0.0"


def _summary_lines(report: QuantizationReport) -> list[str]:
    lines = [report.title,
             (f"output SQNR vs float: {_db(report.model_sqnr_db)} dB; {len(report.layers)} quantized ops, "
              f"{len(report.float_ops)} ops in float")]
    if report.metrics:
        lines.append("metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in report.metrics.items()))
    worst = report.worst(3)
    if worst:
        lines.append("keep in float first: " + ", ".join(
            f"{layer.name} (+{_db(layer.recovery_db)} dB)" for layer in worst))
    lines.extend(f"note: {note}" for note in report.notes)
    return lines


_LAYER_COLUMNS = ("rank", "layer", "module", "op", "local dB", "propagated dB", "recovers dB", "spec", "likely cause", "remedy")
_FLOAT_COLUMNS = ("op", "module", "kind", "reason", "why")


def _layer_rows(report: QuantizationReport) -> list[tuple[str, ...]]:
    rank = {layer.name: i + 1 for i, layer in enumerate(report.worst(len(report.layers)))}
    return [
        (str(rank[layer.name]), layer.name, layer.module_path, layer.op_kind, _db(layer.local_sqnr_db),
         _db(layer.propagated_sqnr_db), _db(layer.recovery_db) + ("" if layer.recovery_measured else "~"),
         layer.spec, layer.cause, layer.remedy)
        for layer in report.layers
    ]


def _float_rows(report: QuantizationReport) -> list[tuple[str, ...]]:
    return [(op.name, op.module_path, op.op_kind, op.reason.value, op.detail) for op in report.float_ops]


# above this many float ops the terminal table groups them by kind and reason
_GROUP_FLOAT_OPS = 20
_NAMES_SHOWN = 4


def _grouped_float_rows(report: QuantizationReport) -> list[tuple[str, ...]]:
    """One row per (op kind, reason, detail): ``softmax x6 (softmax, softmax_1, ...)``."""
    if len(report.float_ops) <= _GROUP_FLOAT_OPS:
        return _float_rows(report)
    groups: dict[tuple[str, str, str], list[str]] = {}
    modules: dict[tuple[str, str, str], set[str]] = {}
    for op in report.float_ops:
        key = (op.op_kind, op.reason.value, op.detail)
        groups.setdefault(key, []).append(op.name)
        modules.setdefault(key, set()).add(op.module_path)
    rows: list[tuple[str, ...]] = []
    for (kind, reason, detail), names in groups.items():
        shown = ", ".join(names[:_NAMES_SHOWN]) + (", ..." if len(names) > _NAMES_SHOWN else "")
        where = next(iter(modules[(kind, reason, detail)])) if len(modules[(kind, reason, detail)]) == 1 else "(several)"
        rows.append((f"{len(names)}x: {shown}", where, kind, reason, detail))
    return rows


def render_text(report: QuantizationReport, width: int = 200) -> str:
    """The report as text: summary, the layer table, the float ops table."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return _plain_text(report)
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    for line in _summary_lines(report):
        console.print(line, highlight=False, markup=False)
    table = Table(title="quantized ops (graph order; recovers: output SQNR gained if kept in float, ~ = estimate)")
    for column in _LAYER_COLUMNS:
        table.add_column(column, overflow="fold", no_wrap=column in ("rank", "local dB", "propagated dB", "recovers dB"))
    for row in _layer_rows(report):
        table.add_row(*row)
    console.print(table)
    if report.float_ops:
        floats = Table(title="ops in float")
        for column in _FLOAT_COLUMNS:
            floats.add_column(column, overflow="fold")
        for row in _grouped_float_rows(report):
            floats.add_row(*row)
        console.print(floats)
    return buffer.getvalue().rstrip() + "\n"


def _plain_table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths)).rstrip()
    return [fmt(columns), fmt(tuple("-" * w for w in widths)), *(fmt(r) for r in rows)]


def _plain_text(report: QuantizationReport) -> str:
    lines = _summary_lines(report)
    lines += ["", "quantized ops:"] + _plain_table(_LAYER_COLUMNS, _layer_rows(report))
    if report.float_ops:
        lines += ["", "ops in float:"] + _plain_table(_FLOAT_COLUMNS, _grouped_float_rows(report))
    return "\n".join(lines) + "\n"


def _clip(value: float) -> float:
    if math.isnan(value):
        return 0.0
    return max(min(value, _PLOT_CEILING_DB), -_PLOT_CEILING_DB)


def _figure(report: QuantizationReport) -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError as e:
        raise ImportError("plotting a report needs matplotlib: pip install 'fxquant[plot]' (or matplotlib)") from e
    layers = report.layers
    n = len(layers)
    fig, (ax, bars) = plt.subplots(2, 1, figsize=(max(10.0, min(0.14 * n + 6, 30.0)), 9.0),
                                   gridspec_kw={"height_ratios": [3, 2]}, constrained_layout=True)
    x = list(range(n))
    ax.plot(x, [_clip(layer.propagated_sqnr_db) for layer in layers], "-", color="tab:red", lw=1.6,
            label="propagated SQNR (everything quantized up to here)")
    ax.plot(x, [_clip(layer.local_sqnr_db) for layer in layers], "o", color="tab:blue", ms=4,
            label="local SQNR (only this op quantized)")
    if math.isfinite(report.model_sqnr_db):
        ax.axhline(report.model_sqnr_db, color="gray", ls="--", lw=1, label=f"model output: {report.model_sqnr_db:.1f} dB")
    for rank, layer in enumerate(report.worst(_LABELLED), start=1):
        i = layers.index(layer)
        ax.annotate(f"#{rank} {layer.name}", (i, _clip(layer.local_sqnr_db)), xytext=_LABEL_OFFSETS[rank - 1],
                    textcoords="offset points", fontsize=8, color="tab:blue",
                    arrowprops={"arrowstyle": "-", "color": "tab:blue", "lw": 0.6})
    ax.set_xlabel("quantized op (graph order)")
    ax.set_ylabel("SQNR vs float (dB, higher is better)")
    ax.set_title(f"{report.title}: error per layer")
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # outside the axes, so it never hides a point or a label
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _recovery_panel(bars, report)
    return fig


def _recovery_panel(ax: Any, report: QuantizationReport) -> None:
    worst: list[LayerReport] = report.worst(10)
    labels = [f"{layer.name} ({layer.module_path})" if layer.module_path else layer.name for layer in worst]
    values = [_clip(layer.recovery_db) for layer in worst]
    colors = ["tab:green" if layer.recovery_measured else "tab:olive" for layer in worst]
    ax.barh(range(len(worst)), values, color=colors)
    ax.set_yticks(range(len(worst)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("output SQNR recovered if kept in float (dB; green measured, olive estimated)")
    ax.set_title("layers to keep in float first")
    ax.grid(axis="x", alpha=0.3)


def render_png_bytes(report: QuantizationReport) -> bytes:
    """The plot as PNG bytes."""
    import matplotlib.pyplot as plt

    fig = _figure(report)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def render_png(report: QuantizationReport, path: Path) -> Path:
    """Write the plot to ``path`` (PNG)."""
    path.write_bytes(render_png_bytes(report))
    return path


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0}
tr.worst td{background:#fff1e6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #ddd}
"""


def _html_table(columns: tuple[str, ...], rows: list[tuple[str, ...]], numeric: set[int],
                highlighted: frozenset[int] | set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r, row in enumerate(rows):
        cells = "".join(f'<td class="num">{html.escape(v)}</td>' if i in numeric else f"<td>{html.escape(v)}</td>"
                        for i, v in enumerate(row))
        cls = ' class="worst"' if r in highlighted else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(report: QuantizationReport, path: Path) -> Path:
    """Write a self-contained HTML page (no external files) to ``path``."""
    image = base64.b64encode(render_png_bytes(report)).decode("ascii")
    worst = {layer.name for layer in report.worst(_LABELLED)}
    highlighted = {i for i, layer in enumerate(report.layers) if layer.name in worst}
    summary = "".join(f"<p>{html.escape(line)}</p>" for line in _summary_lines(report)[1:])
    float_section = (
        "<h2>Ops in float</h2>" + _html_table(_FLOAT_COLUMNS, _float_rows(report), set())
        if report.float_ops else "<h2>Ops in float</h2><p>none</p>"
    )
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(report.title)}</h1>{summary}"
        f"<img alt='SQNR per layer' src='data:image/png;base64,{image}'>"
        "<h2>Quantized ops</h2><p>local: only this op quantized; propagated: everything up to here "
        "quantized; recovers: output SQNR gained if this op is kept in float (~ estimated). "
        "Highlighted: the worst layers.</p>"
        f"{_html_table(_LAYER_COLUMNS, _layer_rows(report), {0, 4, 5, 6}, highlighted)}"
        f"{float_section}</body></html>"
    )
    path.write_text(page, encoding="utf-8")
    return path
