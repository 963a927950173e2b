"""QuantizationReport as data: ranking, JSON round trip, terminal table, PNG, HTML."""

from __future__ import annotations

import json
import math
import struct

import pytest

from fxquant.pt2e.quantizer.float_fallback import FallbackReason
from fxquant.report import FloatOpReport, LayerReport, QuantizationReport, build_report
from fxquant.report.render import _plain_text


def _layer(name: str, local: float, recovery: float, measured: bool = True) -> LayerReport:
    return LayerReport(name=name, module_path=f"blocks.{name}", op_kind="conv2d", spec="in u8 per-tensor",
                       local_sqnr_db=local, propagated_sqnr_db=local - 3, recovery_db=recovery,
                       recovery_measured=measured, cause="depthwise conv", remedy="keep it in float",
                       stats={"depthwise": 1.0})


@pytest.fixture
def synthetic() -> QuantizationReport:
    return QuantizationReport(
        layers=[_layer("a", 30.0, 0.5), _layer("b", 20.0, 2.5), _layer("c", math.inf, 0.1, measured=False)],
        float_ops=[FloatOpReport(name="softmax", module_path="", op_kind="softmax", reason=FallbackReason.NO_PATTERN,
                                 detail="the quantizer has no pattern for softmax")],
        model_sqnr_db=18.5, metrics={"top1_agreement": 0.95}, notes=["accuracy budget met"],
    )


def test_worst_ranks_by_recovery(synthetic):
    assert [layer.name for layer in synthetic.worst(2)] == ["b", "a"]
    assert synthetic.worst(0) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        synthetic.worst(-1)
    with pytest.raises(KeyError, match="no quantized layer named 'zz'"):
        synthetic.layer("zz")


def test_json_round_trip_keeps_everything(synthetic, tmp_path):
    path = synthetic.to_json(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["format_version"] == 1 and data["layers"][2]["local_sqnr_db"] == "inf"
    assert data["float_ops"][0]["reason"] == "NO_PATTERN"
    assert QuantizationReport.from_json(path) == synthetic


def test_json_errors_say_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON report"):
        QuantizationReport.from_json(bad)
    bad.write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match="unsupported report format version 99"):
        QuantizationReport.from_json(bad)
    bad.write_text(json.dumps({"format_version": 1, "layers": [{"name": "x"}], "float_ops": [], "model_sqnr_db": 1}))
    with pytest.raises(ValueError, match="not a valid fxquant report"):
        QuantizationReport.from_json(bad)


@pytest.mark.parametrize("renderer", ["rich", "plain"])
def test_text_table_lists_layers_float_ops_and_summary(synthetic, renderer):
    text = str(synthetic) if renderer == "rich" else _plain_text(synthetic)
    for expected in ("output SQNR vs float: 18.5 dB", "top1_agreement 0.95", "keep in float first: b (+2.5 dB)",
                     "blocks.b", "depthwise conv", "softmax", "no pattern", "note: accuracy budget met", "0.1~"):
        assert expected in text, expected
    assert "inf" in text


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_a_sensible_png(synthetic, tmp_path):
    path = synthetic.plot(tmp_path / "r.png")
    width, height = _png_size(path.read_bytes())
    assert 800 <= width <= 4000 and 600 <= height <= 1500
    assert path.stat().st_size > 20_000  # axes, labels and bars, not an empty canvas


def test_html_is_self_contained(synthetic, tmp_path):
    page = synthetic.to_html(tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert page.count("<tr") == 1 + 3 + 1 + 1  # layer header + rows, float header + row
    assert 'class="worst"' in page and "softmax" in page and "keep it in float" in page
    assert "src='http" not in page and "<link" not in page and "<script" not in page


def test_real_report_renders(small, tmp_path):
    _model, float_gm, q, batches = small
    report = build_report(float_gm, q, batches, measure_top=1, metrics={})
    assert report.metrics == {}
    text = str(report)
    assert all(layer.name in text for layer in report.layers)
    _png_size(report.plot(tmp_path / "small.png").read_bytes())
    assert QuantizationReport.from_json(report.to_json(tmp_path / "small.json")) == report


def test_many_float_ops_are_grouped_in_the_terminal(synthetic):
    ops = [FloatOpReport(name=f"view_{i}", module_path="enc", op_kind="view", reason=FallbackReason.NO_PATTERN,
                         detail="the quantizer has no pattern for view") for i in range(30)]
    many = QuantizationReport(layers=synthetic.layers, float_ops=ops, model_sqnr_db=10.0)
    for text in (str(many), _plain_text(many)):
        assert "30x: view_0, view_1, view_2, view_3, ..." in text and "view_29" not in text
