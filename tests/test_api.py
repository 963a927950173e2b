"""quantize_model: one call from a float model to a quantized one with its report."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxquant
from fxquant.api import BACKENDS, QuantizationResult, backend_quantizer, quantize_model
from fxquant.metrics import sqnr
from fxquant.pt2e.quantizer.float_fallback import FallbackReason

QD = torch.ops.quantized_decomposed


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(y.mean((2, 3)))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sum": self.a(x) + self.b(y), "x": self.a(x)}


@pytest.fixture(scope="module")
def convnet():
    torch.manual_seed(0)
    return ConvNet().eval(), list(torch.randn(16, 3, 10, 10).split(8))


@pytest.mark.parametrize("backend", list(BACKENDS), ids=list(BACKENDS))
def test_every_backend_quantizes_and_reports(convnet, backend):
    model, batches = convnet
    result = quantize_model(model, (batches[0],), batches, backend, progress=False)
    assert isinstance(result, QuantizationResult) and result.report is not None
    with torch.no_grad():
        ref, out = model(batches[1]), result.model(batches[1])
    assert sqnr(ref, out) > 20
    assert result.report.layers, "no quantized layer reported"
    targets = [n.target for n in result.model.graph.nodes]
    assert targets.count(QD.dequantize_per_channel.default) >= 1
    dynamic = QD.choose_qparams.tensor in targets
    assert dynamic == (backend == "x86-dynamic")


def test_unknown_backend_lists_the_choices():
    with pytest.raises(ValueError, match="unknown backend 'tpu'; choose one of: x86, xnnpack, x86-dynamic"):
        backend_quantizer("tpu")


def test_bad_calls_are_refused(convnet):
    model, batches = convnet
    with pytest.raises(TypeError, match="not one tensor"):
        quantize_model(model, (batches[0],), batches[0], progress=False)
    with pytest.raises(ValueError, match="calibration_data is empty"):
        quantize_model(model, (batches[0],), [], progress=False)
    with pytest.raises(TypeError, match="Tensor or a tuple"):
        quantize_model(model, (batches[0],), [{"x": batches[0]}], progress=False)
    with pytest.raises(ValueError, match="needs the report"):
        quantize_model(model, (batches[0],), batches, accuracy_budget=30, report=False, progress=False)
    with pytest.raises(TypeError, match="nn.Module"):
        quantize_model(lambda x: x, (batches[0],), batches)


def test_keep_float_is_reported_as_user_choice(convnet):
    model, batches = convnet
    result = quantize_model(model, (batches[0],), batches, keep_float=["conv2"], progress=False)
    assert result.keep_float == {"conv2d_1": FallbackReason.USER_CHOICE}
    float_ops = {op.name: op.reason for op in result.report.float_ops}
    assert float_ops["conv2d_1"] is FallbackReason.USER_CHOICE
    assert "conv2d_1" not in [layer.name for layer in result.report.layers]


def test_accuracy_budget_keeps_the_worst_layers_in_float(convnet):
    model, batches = convnet
    plain = quantize_model(model, (batches[0],), batches, progress=False)
    budget = plain.report.model_sqnr_db + 1.0
    result = quantize_model(model, (batches[0],), batches, accuracy_budget=budget, progress=False)
    assert result.report.model_sqnr_db >= budget
    assert set(result.keep_float.values()) == {FallbackReason.ACCURACY_BUDGET}
    assert next(iter(result.keep_float)) == plain.report.worst(1)[0].name
    assert any("met" in note for note in result.report.notes)


def test_unreachable_budget_warns_and_says_so(convnet):
    model, batches = convnet
    with pytest.warns(UserWarning, match="accuracy budget 200.0 dB not met"):
        result = quantize_model(model, (batches[0],), batches, accuracy_budget=200.0, max_float_layers=1,
                                progress=False)
    assert len(result.keep_float) == 1
    assert "max_float_layers reached" in result.report.notes[-1]


def test_several_inputs_and_dict_outputs():
    torch.manual_seed(0)
    model = TwoInputs().eval()
    batches = [(torch.randn(4, 8), torch.randn(4, 8)) for _ in range(2)]
    result = quantize_model(model, batches[0], batches, progress=False)
    assert {layer.name for layer in result.report.layers} >= {"linear", "linear_1"}
    with torch.no_grad():
        out = result.model(*batches[0])
    assert sqnr(model(*batches[0])["sum"], out["sum"]) > 20


def test_save_round_trips(convnet, tmp_path):
    model, batches = convnet
    result = quantize_model(model, (batches[0],), batches, report=False, progress=False)
    assert result.report is None
    result.save(tmp_path / "m.fxq")
    loaded = fxquant.load(tmp_path / "m.fxq")
    with torch.no_grad():
        assert torch.equal(loaded(batches[1]), result.model(batches[1]))


def test_progress_bars_do_not_change_the_result(convnet, capsys):
    model, batches = convnet
    quiet = quantize_model(model, (batches[0],), batches, progress=False)
    shown = quantize_model(model, (batches[0],), batches, progress=True)
    assert "calibrating" in capsys.readouterr().err
    with torch.no_grad():
        assert torch.equal(quiet.model(batches[0]), shown.model(batches[0]))
