"""convert / swap_module give upstream's quantized model: same module types, equal outputs."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

import fxquant
import fxquant.eager as fe
from fxquant.nn._errors import QuantizedInputError


def _types(model):
    return {name: type(m).__name__ for name, m in model.named_modules()}


def _calibrated(ours, theirs, x, ours_qconfig, theirs_qconfig):
    ours.qconfig, theirs.qconfig = ours_qconfig, theirs_qconfig
    prepared, expected = fe.prepare(ours), tq.prepare(theirs)
    prepared(x)
    expected(x)
    return prepared, expected


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_static_cnn_matches_upstream(ours_and_upstream, models, fused):
    ours, theirs = (m.eval() for m in ours_and_upstream(models.ConvBnReLUNet))
    models.set_bn_stats(ours)
    models.set_bn_stats(theirs)
    if fused:
        ours = fe.fuse_modules(ours, models.FUSE_GROUPS)
        theirs = tq.fuse_modules(theirs, models.FUSE_GROUPS)
    x = torch.rand(16, 1, 8, 8)
    prepared, expected = _calibrated(
        ours, theirs, x, fxquant.default_per_channel_qconfig, tq.default_per_channel_qconfig)
    converted, reference = fe.convert(prepared), tq.convert(expected)
    assert _types(converted) == _types(reference)
    assert type(converted.quant).__name__ == "Quantize"
    assert not hasattr(converted, "qconfig") and not hasattr(converted.fc, "qconfig")
    assert torch.equal(converted(x), reference(x))
    assert hasattr(prepared.conv1, "activation_post_process")  # not in place


def test_mlp_linear_relu_matches_upstream(ours_and_upstream, models):
    ours, theirs = (m.eval() for m in ours_and_upstream(models.MLP))
    ours = fe.fuse_modules(ours, ["fc1", "relu"])
    theirs = tq.fuse_modules(theirs, ["fc1", "relu"])
    x = torch.randn(32, 16)
    prepared, expected = _calibrated(ours, theirs, x, fxquant.default_qconfig, tq.default_qconfig)
    converted, reference = fe.convert(prepared), tq.convert(expected)
    assert type(converted.fc1).__name__ == "LinearReLU"
    assert torch.equal(converted(x), reference(x))


def test_reference_convert_matches_upstream(ours_and_upstream, models):
    ours, theirs = (m.eval() for m in ours_and_upstream(models.MLP))
    x = torch.randn(32, 16)
    prepared, expected = _calibrated(
        ours, theirs, x, fxquant.default_per_channel_qconfig, tq.default_per_channel_qconfig)
    converted = fe.convert(prepared, is_reference=True)
    reference = tq.convert(expected, is_reference=True)
    assert _types(converted) == _types(reference)
    # Reference modules compute in float (quantize-dequantize of the weight); the stubs
    # still become real Quantize/DeQuantize, so compare the layers on float input.
    for name in ("fc1", "fc2"):
        ours_layer, theirs_layer = converted.get_submodule(name), reference.get_submodule(name)
        assert torch.equal(ours_layer.get_weight(), theirs_layer.get_weight())
        h = torch.randn(4, ours_layer.in_features)
        assert torch.equal(ours_layer(h), theirs_layer(h))


def test_hooks_qconfig_and_observers_after_convert():
    model = nn.Sequential(fe.QuantStub(), nn.Linear(4, 4), fe.DeQuantStub())
    calls = []
    model[1].register_forward_hook(lambda m, i, o: calls.append(o.is_quantized))
    model.qconfig = fxquant.default_qconfig
    prepared = fe.prepare(model)
    prepared(torch.randn(3, 4))
    kept = fe.convert(prepared, remove_qconfig=False)
    assert kept.qconfig is not None  # the root is never swapped
    converted = fe.convert(prepared)
    assert not any(hasattr(m, "qconfig") for m in converted.modules())
    assert len(converted[1]._forward_hooks) == 1
    calls.clear()
    converted(torch.randn(3, 4))
    assert calls == [True]


def test_swap_module_only_with_qconfig_and_mapping():
    mapping = fe.get_default_static_quant_module_mappings()
    plain = nn.Linear(4, 4)
    assert fe.swap_module(plain, mapping, {}) is plain
    observed = nn.Linear(4, 4)
    observed.qconfig = fxquant.default_qconfig
    observed.activation_post_process = fxquant.default_observer()
    observed.activation_post_process(torch.randn(2, 4))
    swapped = fe.swap_module(observed, mapping, {})
    assert type(swapped).__name__ == "Linear" and swapped is not observed
    gelu = nn.GELU()
    gelu.qconfig = fxquant.default_qconfig
    assert fe.swap_module(gelu, mapping, {}) is gelu


def test_float_input_without_quant_stub_gets_a_clear_error():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    model.qconfig = fxquant.default_qconfig
    prepared = fe.prepare(model)
    prepared(torch.randn(2, 4))
    converted = fe.convert(prepared)
    with pytest.raises(QuantizedInputError, match="QuantStub"):
        converted(torch.randn(2, 4))


def test_float_functional_becomes_qfunctional(models):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = fe.QuantStub()
            self.fc = nn.Linear(4, 4)
            self.add = fxquant.nn.quantized.FloatFunctional()
            self.dequant = fe.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            return self.dequant(self.add.add(self.fc(x), x))

    class Upstream(Net):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
            self.add = torch.ao.nn.quantized.FloatFunctional()

    torch.manual_seed(0)
    ours = Net().eval()
    torch.manual_seed(0)
    theirs = Upstream().eval()
    x = torch.randn(8, 4)
    prepared, expected = _calibrated(ours, theirs, x, fxquant.default_qconfig, tq.default_qconfig)
    converted, reference = fe.convert(prepared), tq.convert(expected)
    assert type(converted.add).__name__ == "QFunctional"
    assert torch.equal(converted(x), reference(x))
