"""Input-weight equalization (``prepare_fx(..., _equalization_config=...)``) against upstream's
``torch.ao.quantization.fx._equalize``: same scales, placement and outputs where upstream is
right; better results where upstream mis-handles connected layers."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.quantization as tq
import torch.ao.quantization.fx._equalize as up_eq
import torch.ao.quantization.quantize_fx as upstream_fx
from torch import nn

import fxquant
from fxquant.fx import _equalize as eq
from fxquant.fx.equalization import EqualizationError
from fxquant.metrics import sqnr
from fxquant.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx

# input channels with very different ranges: what equalization is for
_COLUMNS = torch.tensor([10.0, 0.1, 1.0, 3.0, 0.01, 5.0, 1.0, 2.0])


class TwoLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 6)
        self.fc2 = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc2(self.fc1(x))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 4, 3)
        self.relu = nn.ReLU()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.relu(self.conv(x)))


def _mapping(ns):
    qconfig = ns.QConfig(activation=ns.MinMaxObserver.with_args(reduce_range=True),
                         weight=ns.default_per_channel_weight_observer)
    return ns.get_default_qconfig_mapping("x86").set_global(qconfig)


def _batches(conv: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    if conv:
        return [torch.randn(2, 8, 5, 5, generator=g) * _COLUMNS.view(1, 8, 1, 1) for _ in range(4)]
    return [torch.randn(16, 8, generator=g) * _COLUMNS for _ in range(4)]


def _pair(model_cls, ours_eq, up_eq_mapping, conv: bool = False):
    torch.manual_seed(0)
    model = model_cls().eval()
    batches = _batches(conv)
    ours = prepare_fx(copy.deepcopy(model), _mapping(fxquant), (batches[0],), _equalization_config=ours_eq)
    upstream = upstream_fx.prepare_fx(copy.deepcopy(model), _mapping(tq), (batches[0],),
                                      _equalization_config=up_eq_mapping)
    for b in batches:
        ours(b)
        upstream(b)
    return model, ours, upstream, batches


def _graph_calls(gm: torch.fx.GraphModule) -> list[str]:
    return [f"{n.op}:{type(gm.get_submodule(n.target)).__name__}" if n.op == "call_module" else n.op
            for n in gm.graph.nodes]


def test_equalization_scale_formula_equals_upstream():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(32, 6, generator=g) * torch.arange(1, 7), torch.randn(4, 6, generator=g)
    ours_in, ours_w = eq.input_equalization_observer(), eq.weight_equalization_observer()
    up_in, up_w = up_eq.input_equalization_observer(), up_eq.weight_equalization_observer()
    ours_in(x), ours_w(w), up_in(x), up_w(w)
    scale = eq.calculate_equalization_scale(ours_in, ours_w)
    assert torch.equal(scale, up_eq.calculate_equalization_scale(up_in, up_w))
    ours_in.set_equalization_scale(scale)
    up_in.set_equalization_scale(scale)
    for a, b in zip(ours_in.calculate_scaled_minmax(), up_in.calculate_scaled_minmax()):
        assert torch.equal(a, b)


def test_equalization_qconfig_refuses_observer_instances():
    with pytest.raises(ValueError, match="classes"):
        eq.EqualizationQConfig(input_activation=eq.input_equalization_observer(), weight=eq.weight_equalization_observer)
    observer = eq.default_equalization_qconfig.input_activation()
    assert (observer.dtype, observer.qscheme) == (torch.quint8, torch.per_tensor_symmetric)
    weight = eq.default_equalization_qconfig.weight()
    assert (weight.dtype, weight.qscheme) == (torch.qint8, torch.per_channel_symmetric)


@pytest.mark.parametrize(("model_cls", "name", "conv"), [(TwoLinear, "fc1", False), (ConvNet, "conv", True)],
                         ids=["linear", "conv-relu"])
def test_single_equalized_layer_matches_upstream_bit_exactly(model_cls, name, conv):
    _, ours, upstream, batches = _pair(
        model_cls, fxquant.QConfigMapping().set_module_name(name, eq.default_equalization_qconfig),
        tq.QConfigMapping().set_module_name(name, up_eq.default_equalization_qconfig), conv)
    # x -> input observer -> input equalization observer -> layer, as upstream
    assert _graph_calls(ours) == [c.replace("torch.ao", "") for c in _graph_calls(upstream)]
    reference, up_reference = convert_to_reference_fx(copy.deepcopy(ours)), \
        upstream_fx._convert_to_reference_decomposed_fx(copy.deepcopy(upstream))
    assert torch.equal(reference.x_equalization_scale0, up_reference.x_equalization_scale0)
    lowered, up_lowered = convert_fx(ours), upstream_fx.convert_fx(upstream)
    for b in batches:
        assert torch.equal(reference(b), up_reference(b))
        assert torch.equal(lowered(b), up_lowered(b))


def _float_sqnr(model, quantized, batches) -> float:
    with torch.no_grad():
        return min(sqnr(model(b), quantized(b)) for b in batches)


def test_connected_layers_fold_the_scale_and_keep_the_observer_range_right():
    """Both linears equalized: fc2's scale is folded into fc1's rows. Upstream keeps fc1's
    output observer at the unscaled range (and loses accuracy); fxquant rescales it."""
    model, ours, upstream, batches = _pair(
        TwoLinear, fxquant.QConfigMapping().set_object_type(nn.Linear, eq.default_equalization_qconfig),
        tq.QConfigMapping().set_object_type(nn.Linear, up_eq.default_equalization_qconfig))
    baseline = prepare_fx(copy.deepcopy(model), _mapping(fxquant), (batches[0],))
    for b in batches:
        baseline(b)
    lowered, up_lowered = convert_fx(ours), upstream_fx.convert_fx(upstream)
    ours_db, up_db = _float_sqnr(model, lowered, batches), _float_sqnr(model, up_lowered, batches)
    baseline_db = _float_sqnr(model, convert_fx(baseline), batches)
    assert [n.target for n in lowered.graph.nodes if n.op == "call_function"].count(torch.mul) == 1
    assert ours_db > baseline_db + 1.0  # measured ~32.7 vs ~30.2 dB
    assert ours_db > up_db + 3.0  # upstream ~25.5 dB


def test_second_layer_alone_gets_its_input_scaled():
    """Only fc2 equalized: upstream drops its input scaling because fc1 *could* be equalized
    (output SQNR below 0 dB); fxquant inserts the multiplication."""
    model, ours, upstream, batches = _pair(
        TwoLinear, fxquant.QConfigMapping().set_module_name("fc2", eq.default_equalization_qconfig),
        tq.QConfigMapping().set_module_name("fc2", up_eq.default_equalization_qconfig))
    ours_db = _float_sqnr(model, convert_fx(ours), batches)
    assert ours_db > 25.0
    assert ours_db > _float_sqnr(model, upstream_fx.convert_fx(upstream), batches) + 20.0


def test_shared_input_observer_is_not_rescaled_for_other_users():
    class Fork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 4), nn.Linear(8, 4)

        def forward(self, x):
            return self.fc1(x) + self.fc2(x)

    torch.manual_seed(0)
    model, batches = Fork().eval(), _batches(False)
    prepared = prepare_fx(copy.deepcopy(model), _mapping(fxquant), (batches[0],),
                          _equalization_config=fxquant.QConfigMapping().set_module_name("fc1", eq.default_equalization_qconfig))
    for b in batches:
        prepared(b)
    lowered = convert_fx(prepared)
    assert _float_sqnr(model, lowered, batches) > 25.0


def test_qconfig_in_equalization_mapping_is_a_clear_error():
    with pytest.raises(EqualizationError, match=r"fc1.*EqualizationQConfig"):
        prepare_fx(TwoLinear().eval(), _mapping(fxquant), (torch.randn(2, 8),),
                   _equalization_config=fxquant.QConfigMapping().set_module_name("fc1", fxquant.default_qconfig))


def test_grouped_conv_is_skipped_with_a_warning():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 4, 1)).eval()
    batches = _batches(True)
    with pytest.warns(UserWarning, match=r"skips 0: a grouped conv"):
        prepared = prepare_fx(copy.deepcopy(model), _mapping(fxquant), (batches[0],),
                              _equalization_config=fxquant.QConfigMapping().set_global(eq.default_equalization_qconfig))
    for b in batches:
        prepared(b)
    lowered = convert_fx(prepared)
    # the 1x1 conv is equalized; its input comes from the skipped conv, so it is scaled by a mul
    assert [n.target for n in lowered.graph.nodes if n.op == "call_function"].count(torch.mul) == 1
    assert _float_sqnr(model, lowered, batches) > 20.0


def test_linear_on_3d_input_equalizes_its_features():
    """Upstream observes axis 1 (the sequence) of a linear layer's (batch, seq, features)
    input and fails; fxquant equalizes the features."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4)).eval()
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(2, 5, 8, generator=g) * _COLUMNS for _ in range(4)]
    base = prepare_fx(copy.deepcopy(model), _mapping(fxquant), (batches[0],))
    prepared = prepare_fx(copy.deepcopy(model), _mapping(fxquant), (batches[0],),
                          _equalization_config=fxquant.QConfigMapping().set_global(eq.default_equalization_qconfig))
    for b in batches:
        base(b)
        prepared(b)
    lowered = convert_fx(prepared)
    scales = [b for name, b in lowered.named_buffers() if "_equalization_scale" in name]
    assert [tuple(s.shape) for s in scales] == [(1, 1, 8)]
    assert _float_sqnr(model, lowered, batches) > _float_sqnr(model, convert_fx(base), batches) + 1.0
