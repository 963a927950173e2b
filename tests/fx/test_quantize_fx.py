"""prepare_fx / prepare_qat_fx / convert_fx / convert_to_reference_fx against upstream's
``torch.ao.quantization.quantize_fx`` on the same models, mappings and calibration data."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.quantization.quantize_fx as upstream_fx

import fxquant
from fxquant.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx, prepare_qat_fx

MODEL_NAMES = ["cnn", "mlp", "resnet"]


def _module_types(gm: torch.nn.Module) -> list[str]:
    return [type(m).__name__ for m in gm.modules()][1:]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_observers_at_upstreams_places_with_default_mapping(fx_models, name):
    ours, upstream, _ = fx_models.prepare_both(
        name, fxquant.get_default_qconfig_mapping("x86"), fx_models.tq.get_default_qconfig_mapping("x86"),
        calibrate=False,
    )
    assert fx_models.observer_sites(ours) == fx_models.observer_sites(upstream)
    call_nodes = [n.op for n in ours.graph.nodes]
    assert call_nodes == [n.op for n in upstream.graph.nodes]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_reference_model_bit_exact_with_upstream_decomposed_reference(fx_models, name):
    ours, upstream, batches = fx_models.prepare_both(
        name, fx_models.minmax_mapping(fxquant), fx_models.minmax_mapping(fx_models.tq)
    )
    reference = convert_to_reference_fx(ours)
    oracle = upstream_fx._convert_to_reference_decomposed_fx(upstream)
    for x in batches:
        assert torch.equal(reference(x), oracle(x))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_lowered_model_matches_upstream_convert_fx(fx_models, name):
    ours, upstream, batches = fx_models.prepare_both(
        name, fx_models.minmax_mapping(fxquant), fx_models.minmax_mapping(fx_models.tq)
    )
    lowered = convert_fx(ours)
    oracle = upstream_fx.convert_fx(upstream)
    assert _module_types(lowered) == _module_types(oracle)
    for x in batches:
        # the same quantized kernels run on the same integers: equal, not just within a step
        assert torch.equal(lowered(x), oracle(x))


def test_lowered_model_runs_quantized_kernels(fx_models):
    ours, _, _batches = fx_models.prepare_both(
        "cnn", fx_models.minmax_mapping(fxquant), fx_models.minmax_mapping(fx_models.tq)
    )
    lowered = convert_fx(ours)
    targets = [n.target for n in lowered.graph.nodes if n.op == "call_function"]
    assert torch.ops.quantized.add_relu in targets
    assert torch.quantize_per_tensor in targets
    assert type(lowered.conv).__name__ == "ConvReLU2d" and type(lowered.conv).__module__.startswith(
        "fxquant.nn.intrinsic.quantized"
    )
    assert lowered.fc._weight_bias()[0].is_quantized


def test_default_mapping_lowered_model_is_close_to_float(fx_models):
    model, batches = fx_models.build("resnet")
    prepared = prepare_fx(copy.deepcopy(model), fxquant.get_default_qconfig_mapping("x86"), (batches[0],))
    for x in batches:
        prepared(x)
    lowered = convert_fx(prepared)
    from helpers import assert_sqnr

    with torch.no_grad():
        for x in batches:
            assert_sqnr(model(x), lowered(x), min_db=20.0)


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_qat_matches_upstream(fx_models, name):
    model, batches = fx_models.build(name)
    model.train()
    ours = prepare_qat_fx(copy.deepcopy(model), fxquant.get_default_qat_qconfig_mapping("x86"), (batches[0],))
    upstream = upstream_fx.prepare_qat_fx(
        copy.deepcopy(model), fx_models.tq.get_default_qat_qconfig_mapping("x86"), (batches[0],)
    )
    assert fx_models.observer_sites(ours) == fx_models.observer_sites(upstream)
    for x in batches:  # fake-quantized training-mode forwards agree
        assert torch.equal(ours(x), upstream(x))
    lowered, oracle = convert_fx(ours.eval()), upstream_fx.convert_fx(upstream.eval())
    assert _module_types(lowered) == _module_types(oracle)
    for x in batches:
        assert torch.equal(lowered(x), oracle(x))


def test_module_name_none_keeps_that_module_float(fx_models):
    model, batches = fx_models.build("cnn")
    mapping = fx_models.minmax_mapping(fxquant).set_module_name("fc", None)
    up_mapping = fx_models.minmax_mapping(fx_models.tq).set_module_name("fc", None)
    ours = prepare_fx(copy.deepcopy(model), mapping, (batches[0],))
    upstream = upstream_fx.prepare_fx(copy.deepcopy(model), up_mapping, (batches[0],))
    assert fx_models.observer_sites(ours) == fx_models.observer_sites(upstream)
    for x in batches:
        ours(x)
        upstream(x)
    lowered, oracle = convert_fx(ours), upstream_fx.convert_fx(upstream)
    assert type(lowered.fc) is torch.nn.Linear
    for x in batches:
        assert torch.equal(lowered(x), oracle(x))


def test_convert_needs_a_prepared_model(fx_models):
    model, _ = fx_models.build("cnn")
    with pytest.raises(TypeError, match="prepare_fx"):
        convert_fx(torch.fx.symbolic_trace(model))


def test_convert_without_calibration_names_the_observer(fx_models):
    model, batches = fx_models.build("mlp")
    prepared = prepare_fx(model, fx_models.minmax_mapping(fxquant), (batches[0],))
    with pytest.raises(Exception, match="has seen no data"):
        convert_fx(prepared)


def test_preserved_attributes_are_copied(fx_models):
    model, batches = fx_models.build("mlp")
    model.version = 3
    config = fxquant.fx.PrepareCustomConfig().set_preserved_attributes(["version"])
    prepared = prepare_fx(model, fx_models.minmax_mapping(fxquant), (batches[0],), config)
    assert prepared.version == 3


def test_quantized_input_and_output_indexes_like_upstream(fx_models):
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig as UpstreamConfig

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4)).eval()
    x = torch.randn(8, 4)
    ours = prepare_fx(
        copy.deepcopy(model), fx_models.minmax_mapping(fxquant), (x,),
        fxquant.fx.PrepareCustomConfig().set_input_quantized_indexes([0]).set_output_quantized_indexes([0]),
    )
    upstream = upstream_fx.prepare_fx(
        copy.deepcopy(model), fx_models.minmax_mapping(fx_models.tq), (x,),
        UpstreamConfig().set_input_quantized_indexes([0]).set_output_quantized_indexes([0]),
    )
    assert fx_models.observer_sites(ours) == fx_models.observer_sites(upstream)
    ours(x)
    upstream(x)
    lowered, oracle = convert_fx(ours), upstream_fx.convert_fx(upstream)
    qx = torch.quantize_per_tensor(x, 0.02, 128, torch.quint8)
    got, want = lowered(qx), oracle(qx)
    assert got.is_quantized and (got.q_scale(), got.q_zero_point()) == (want.q_scale(), want.q_zero_point())
    assert torch.equal(got.int_repr(), want.int_repr())


class _ReluThenResidual(torch.nn.Module):
    """``torch.relu`` reads a lowered conv's quantized output and feeds an add whose other
    operand has different parameters: lowering must not assume they match."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 1)
        self.conv2 = torch.nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv(x)) + x)


def test_lowering_checks_the_parameters_a_lowered_producer_hands_on():
    import torch.ao.quantization as tq

    def mapping(ns):
        return ns.get_default_qconfig_mapping("x86").set_global(ns.QConfig(
            activation=ns.MinMaxObserver.with_args(reduce_range=True),
            weight=ns.default_per_channel_weight_observer))

    torch.manual_seed(0)
    model, x = _ReluThenResidual().eval(), torch.randn(2, 4, 6, 6)
    ours = prepare_fx(copy.deepcopy(model), mapping(fxquant), (x,))
    theirs = upstream_fx.prepare_fx(copy.deepcopy(model), mapping(tq), (x,))
    for _ in range(3):
        batch = torch.randn(2, 4, 6, 6)
        ours(batch), theirs(batch)
    assert torch.equal(convert_fx(ours)(x), upstream_fx.convert_fx(theirs)(x))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_prepare_does_not_run_the_model(fx_models, name):
    """Shapes come from inference (fxquant.fx.example_values), as upstream runs nothing:
    no leaf module of these models computes anything in prepare_fx (tracing only steps
    through the containers' forwards)."""
    model, batches = fx_models.build(name)
    calls: list[str] = []
    for module_name, module in model.named_modules():
        if not list(module.children()):
            module.register_forward_pre_hook(lambda m, args, name=module_name: calls.append(name))
    x = batches[0]
    prepared = prepare_fx(model.eval(), fxquant.get_default_qconfig_mapping("x86"), (x,))
    assert calls == []
    prepared(x)  # the prepared model does call its (leaf) modules
    assert calls
