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


# ---------------------------------------------------------------- functional F.linear / F.conv2d


class FunctionalLinear(nn.Module):
    """``F.linear`` on tensor attributes (upstream's functional test models use plain
    tensors, which tracing turns into buffers)."""

    def __init__(self, in_features: int = 8, out_features: int = 4) -> None:
        super().__init__()
        self.weight = torch.randn(out_features, in_features)
        self.bias = torch.randn(out_features)

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight, self.bias)


class FunctionalConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight, self.bias = torch.randn(4, 8, 3, 3), torch.randn(4)

    def forward(self, x):
        return torch.nn.functional.conv2d(x, self.weight, self.bias)


class FunctionalChain(nn.Module):
    """linear → linear, functional; ``parameters=True`` holds the weights as parameters
    with names that do not say "bias" (upstream cannot equalize those)."""

    def __init__(self, parameters: bool = False) -> None:
        super().__init__()
        tensors = torch.randn(6, 8), torch.randn(6), torch.randn(4, 6), torch.randn(4)
        if parameters:
            self.w1, self.b1, self.w2, self.b2 = (nn.Parameter(t) for t in tensors)
        else:
            self.weight1, self.bias1, self.weight2, self.bias2 = tensors

    def _params(self):
        if hasattr(self, "w1"):
            return self.w1, self.b1, self.w2, self.b2
        return self.weight1, self.bias1, self.weight2, self.bias2

    def forward(self, x):
        w1, b1, w2, b2 = self._params()
        return torch.nn.functional.linear(torch.nn.functional.linear(x, w1, b1), w2, b2)


class FunctionalConvReLUChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight1, self.bias1 = torch.randn(4, 8, 3, 3), torch.randn(4)
        self.weight2, self.bias2 = torch.randn(2, 4, 1, 1), torch.randn(2)

    def forward(self, x):
        hidden = torch.nn.functional.relu(torch.nn.functional.conv2d(x, self.weight1, self.bias1))
        return torch.nn.functional.conv2d(hidden, self.weight2, self.bias2)


def _global_eq():
    return (fxquant.QConfigMapping().set_global(eq.default_equalization_qconfig),
            tq.QConfigMapping().set_global(up_eq.default_equalization_qconfig))


def _eq_edges(gm: torch.fx.GraphModule) -> list[tuple[str, str, str]]:
    """(equalization observer class, op of what it observes through its observer, op of its user)."""
    edges = []
    for node in gm.graph.nodes:
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, (eq._InputEqualizationObserver, eq._WeightEqualizationObserver,
                               up_eq._InputEqualizationObserver, up_eq._WeightEqualizationObserver)):
            (user,) = node.users
            edges.append((type(module).__name__, node.args[0].args[0].op, str(user.target)))
    return sorted(edges)


@pytest.mark.parametrize(("model_cls", "conv"), [(FunctionalLinear, False), (FunctionalConv, True)],
                         ids=["F.linear", "F.conv2d"])
def test_functional_layer_matches_upstream_bit_exactly(model_cls, conv):
    _, ours, upstream, batches = _pair(model_cls, *_global_eq(), conv)
    # input → observer → input eq observer → op, and weight → observer → weight eq observer → op
    assert _eq_edges(ours) == _eq_edges(upstream)
    assert [e[0] for e in _eq_edges(ours)] == ["_InputEqualizationObserver", "_WeightEqualizationObserver"]
    reference = convert_to_reference_fx(copy.deepcopy(ours))
    up_reference = upstream_fx._convert_to_reference_decomposed_fx(copy.deepcopy(upstream))
    reference.graph.lint()
    for name in ("x_equalization_scale0", "weight", "bias"):
        assert torch.equal(getattr(reference, name), getattr(up_reference, name)), name
    for b in batches:
        assert torch.equal(reference(b), up_reference(b))
    lowered = convert_fx(ours)
    if not conv:  # upstream cannot lower a functional conv called without stride/padding
        up_lowered = upstream_fx.convert_fx(upstream)
        for b in batches:
            assert torch.equal(lowered(b), up_lowered(b))
    else:  # the int8 conv kernel against the reference model's float conv
        assert min(sqnr(reference(b), lowered(b)) for b in batches) > 35.0


@pytest.mark.parametrize(("model_cls", "conv", "min_gain_db", "min_gain_over_unequalized_db"), [
    (FunctionalChain, False, 5.0, 1.0),  # ~30.6 dB; upstream ~21.2, unequalized ~28.1
    (FunctionalConvReLUChain, True, 10.0, -1.0),  # ~23.7 dB; upstream ~8.6, unequalized ~24.5
], ids=["linear-linear", "conv-relu-conv"])
def test_functional_chain_folds_like_upstream_and_keeps_the_range_right(
    model_cls, conv, min_gain_db, min_gain_over_unequalized_db,
):
    """The second scale is folded into the first layer's rows and bias (same weights and
    input scale as upstream, bit for bit); upstream leaves the first layer's output observer
    at the unscaled range, fxquant rescales it."""
    model, ours, upstream, batches = _pair(model_cls, *_global_eq(), conv)
    assert _eq_edges(ours) == _eq_edges(upstream)
    reference = convert_to_reference_fx(copy.deepcopy(ours))
    up_reference = upstream_fx._convert_to_reference_decomposed_fx(copy.deepcopy(upstream))
    for name in ("x_equalization_scale0", "weight1", "bias1", "weight2", "bias2"):
        assert torch.equal(getattr(reference, name), getattr(up_reference, name)), name
    assert [n.target for n in reference.graph.nodes].count(torch.mul) == 1  # no mul between the layers
    ours_db, up_db = _float_sqnr(model, reference, batches), _float_sqnr(model, up_reference, batches)
    baseline = prepare_fx(copy.deepcopy(model), _mapping(fxquant), (batches[0],))
    for b in batches:
        baseline(b)
    assert ours_db > _float_sqnr(model, convert_to_reference_fx(baseline), batches) + min_gain_over_unequalized_db
    assert ours_db > up_db + min_gain_db


def test_functional_chain_equals_the_module_chain():
    """The same two layers as F.linear calls and as nn.Linear modules: same equalized model."""
    torch.manual_seed(0)
    functional = FunctionalChain().eval()
    modules = TwoLinear().eval()
    with torch.no_grad():
        for linear, (w, b) in zip((modules.fc1, modules.fc2), ((functional.weight1, functional.bias1),
                                                               (functional.weight2, functional.bias2))):
            linear.weight.copy_(w)
            linear.bias.copy_(b)
    batches = _batches(False)
    outputs = []
    for model in (functional, modules):
        prepared = prepare_fx(model, _mapping(fxquant), (batches[0],), _equalization_config=_global_eq()[0])
        for b in batches:
            prepared(b)
        reference = convert_to_reference_fx(prepared)
        outputs.append([reference(b) for b in batches])
    for a, b in zip(*outputs):
        assert torch.equal(a, b)


def test_functional_parameters_with_any_names_are_equalized():
    """Upstream assigns a plain tensor to the parameter and fails, and only scales biases whose
    attribute name contains "bias"; fxquant keeps parameters and scales the call's bias."""
    torch.manual_seed(0)
    with_params = FunctionalChain(parameters=True).eval()
    torch.manual_seed(0)
    with_buffers = FunctionalChain().eval()
    batches = _batches(False)
    results = []
    for model in (with_params, with_buffers):
        prepared = prepare_fx(model, _mapping(fxquant), (batches[0],), _equalization_config=_global_eq()[0])
        for b in batches:
            prepared(b)
        results.append(convert_to_reference_fx(prepared))
    assert isinstance(results[0].w1, nn.Parameter)
    assert torch.equal(results[0].b1, results[1].bias1)
    for b in batches:
        assert torch.equal(results[0](b), results[1](b))


def test_functional_weight_read_twice_is_skipped_with_a_warning():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.randn(8, 8)

        def forward(self, x):
            return torch.nn.functional.linear(torch.nn.functional.linear(x, self.weight), self.weight)

    torch.manual_seed(0)
    model, batches = Twice().eval(), _batches(False)
    with pytest.warns(UserWarning, match=r"skips linear: its weight is not a module attribute that only this call"):
        prepared = prepare_fx(copy.deepcopy(model), _mapping(fxquant), (batches[0],),
                              _equalization_config=_global_eq()[0])
    assert _eq_edges(prepared) == []
    for b in batches:
        prepared(b)
    assert _float_sqnr(model, convert_fx(prepared), batches) > 20.0


def test_functional_linear_on_3d_input_equalizes_its_features():
    torch.manual_seed(0)
    model = FunctionalLinear().eval()
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(2, 5, 8, generator=g) * _COLUMNS for _ in range(4)]
    prepared = prepare_fx(copy.deepcopy(model), _mapping(fxquant), (batches[0],),
                          _equalization_config=_global_eq()[0])
    for b in batches:
        prepared(b)
    lowered = convert_fx(prepared)
    assert tuple(lowered.x_equalization_scale0.shape) == (1, 1, 8)
    assert _float_sqnr(model, lowered, batches) > 30.0


class ModuleWeightCalledTwice(nn.Module):
    """``F.linear`` on the parameters of a linear module that is also called (the module is
    kept in float: a ``get_attr`` of the weight of a module that lowering swapped for a
    quantized one fails at run time when the functional call is not lowered too — upstream
    fails on this model even without equalization)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(torch.nn.functional.linear(x, self.fc.weight, self.fc.bias))


class GroupedFunctionalConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.randn(8, 1, 3, 3)

    def forward(self, x):
        return torch.nn.functional.conv2d(x, self.weight, groups=8)


@pytest.mark.parametrize(("model_cls", "message", "conv"), [
    (ModuleWeightCalledTwice, "skips linear: its weight is not a module attribute that only this call reads", False),
    (GroupedFunctionalConv, "skips conv2d: a grouped conv's weight columns", True),
], ids=["weight-of-a-called-module", "grouped-conv"])
def test_functional_layers_that_cannot_be_equalized_are_skipped_with_a_warning(model_cls, message, conv):
    torch.manual_seed(0)
    model, batches = model_cls().eval(), _batches(conv)
    mapping = _mapping(fxquant).set_object_type(nn.Linear, None)
    with pytest.warns(UserWarning, match=message):
        prepared = prepare_fx(copy.deepcopy(model), mapping, (batches[0],), _equalization_config=_global_eq()[0])
    assert _eq_edges(prepared) == []
    for b in batches:
        prepared(b)
    lowered = convert_fx(prepared)
    assert _float_sqnr(model, lowered, batches) > 20.0


# ---------------------------------------------------------------- upstream's helper functions


def test_convert_equalization_ref_keeps_the_float_function_and_convert_follows():
    model, ours, _, batches = _pair(
        TwoLinear, fxquant.QConfigMapping().set_object_type(nn.Linear, eq.default_equalization_qconfig),
        tq.QConfigMapping())
    direct = convert_fx(copy.deepcopy(ours))
    equalized = eq._convert_equalization_ref(ours)
    assert _eq_edges(equalized) == []
    assert [n.target for n in equalized.graph.nodes].count(torch.mul) == 1
    with torch.no_grad():
        for b in batches:  # observers pass values through: the equalized float model
            torch.testing.assert_close(equalized(b), model(b), rtol=1e-5, atol=1e-4)
    lowered = convert_fx(equalized)
    for b in batches:
        assert torch.equal(lowered(b), direct(b))


def test_layer_sqnr_dict_and_equalization_qconfig_dict_agree_with_upstream():
    class Three(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(8, 6), nn.Linear(6, 6), nn.Linear(6, 4)

        def forward(self, x):
            return self.fc3(self.fc2(self.fc1(x)))

    model, ours, upstream, batches = _pair(Three, None, None)
    lowered, up_lowered = convert_fx(ours), upstream_fx.convert_fx(upstream)
    layer_sqnr = eq.get_layer_sqnr_dict(model, lowered, batches[0])
    assert sorted(layer_sqnr) == ["fc1", "fc2", "fc3"]
    assert layer_sqnr["fc3"] == pytest.approx(sqnr(model(batches[0]), lowered(batches[0])), abs=1e-4)
    # upstream (torch 2.13) reports every layer under the name None; the last one is fc3
    (up_value,) = up_eq.get_layer_sqnr_dict(model, up_lowered, batches[0]).values()
    assert layer_sqnr["fc3"] == pytest.approx(float(up_value), abs=1e-4)
    config = eq.get_equalization_qconfig_dict(layer_sqnr, 2)
    up_config = up_eq.get_equalization_qconfig_dict(layer_sqnr, 2)
    assert [name for name, _ in config["module_name"]] == [name for name, _ in up_config["module_name"]]
    worst_two = sorted(layer_sqnr, key=layer_sqnr.__getitem__)[:2]
    assert [name for name, _ in config["module_name"]] == worst_two
    prepared = prepare_fx(copy.deepcopy(model), _mapping(fxquant), (batches[0],), _equalization_config=config)
    assert sorted(e[2] for e in _eq_edges(prepared)) == sorted(worst_two)


def test_support_predicates_agree_with_upstream():
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.conv, self.bn = nn.Linear(8, 8), nn.Conv1d(8, 8, 1), nn.BatchNorm1d(8)
            self.weight = torch.randn(8, 8)

        def forward(self, x):
            y = torch.nn.functional.linear(self.fc(x), self.weight)
            return torch.nn.functional.relu(self.bn(self.conv(y.unsqueeze(-1))))

    gm = torch.fx.symbolic_trace(Mixed())
    modules = dict(gm.named_modules())
    ours = {n.name: eq.node_supports_equalization(n, modules) for n in gm.graph.nodes}
    assert ours == {n.name: up_eq.node_supports_equalization(n, modules) for n in gm.graph.nodes}
    assert sorted(name for name, supported in ours.items() if supported) == ["conv", "fc", "linear"]
    fused = fxquant.nn.intrinsic.LinearReLU(nn.Linear(2, 2), nn.ReLU())
    assert eq.fused_module_supports_equalization(fused) and not eq.nn_module_supports_equalization(fused)
    assert eq.is_equalization_observer(eq.input_equalization_observer())
    assert not eq.is_equalization_observer(fxquant.MinMaxObserver())
