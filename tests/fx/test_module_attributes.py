"""A layer called as a module and read directly (``F.linear(x, self.fc.weight)``): upstream's
convert_fx fails on it; ours re-homes the read tensors before the swap, so the functional call
is quantized and lowered like one on a separate weight — bit for bit what upstream gives for
the same model with the weight untied (min/max activation observers: our HistogramObserver's
range search is deliberately not upstream's)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.quantization as tq
import torch.ao.quantization.quantize_fx as upstream_fx
import torch.nn.functional as F
from helpers import assert_sqnr, quiet_upstream
from torch import nn

import fxquant
from fxquant.fx.module_attributes import (
    DETACHED_ATTRIBUTES_META_KEY,
    detach_swapped_module_attributes,
    drop_unread_detached_attributes,
)
from fxquant.qconfig import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
from fxquant.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx, prepare_qat_fx

quiet_upstream()


class Shared(nn.Module):
    """``fc`` called as a module and its weight (and bias) read by a functional linear."""

    def __init__(self, *, bias: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 8)
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + F.linear(x, self.fc.weight, self.fc.bias if self.bias else None)


class Untied(nn.Module):
    """The same computation with the functional weight as a parameter of its own."""

    def __init__(self, shared: Shared) -> None:
        super().__init__()
        self.fc = copy.deepcopy(shared.fc)
        self.w = nn.Parameter(shared.fc.weight.detach().clone())
        self.b = nn.Parameter(shared.fc.bias.detach().clone()) if shared.bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + F.linear(x, self.w, self.b)


def _mapping(ns):  # ns: fxquant or torch.ao.quantization
    return ns.get_default_qconfig_mapping("x86").set_global(ns.QConfig(
        activation=ns.MinMaxObserver.with_args(reduce_range=True), weight=ns.default_per_channel_weight_observer))


def _data() -> torch.Tensor:
    return torch.randn(32, 8, generator=torch.Generator().manual_seed(1))


def test_upstream_fails_on_the_shared_weight():
    x = _data()
    prepared = upstream_fx.prepare_fx(Shared().eval(), tq.get_default_qconfig_mapping("x86"), (x,))
    prepared(x)
    with pytest.raises(TypeError, match="must be Tensor, not method"):
        upstream_fx.convert_fx(prepared)


@pytest.mark.parametrize("bias", [False, True], ids=["weight", "weight_and_bias"])
@torch.no_grad()
def test_convert_lowers_the_functional_call_like_upstream_on_an_untied_weight(bias):
    x = _data()
    model = Shared(bias=bias).eval()
    prepared = prepare_fx(copy.deepcopy(model), _mapping(fxquant), (x,))
    prepared(x)
    quantized = convert_fx(prepared)
    untied = upstream_fx.prepare_fx(Untied(model).eval(), _mapping(tq), (x,))
    untied(x)
    oracle = upstream_fx.convert_fx(untied)
    assert torch.equal(quantized(x), oracle(x))
    assert_sqnr(model(x), quantized(x), min_db=30)
    # the functional linear runs the int8 kernel; no float copy of the weight is left behind
    assert any(n.target == torch.ops.quantized.linear for n in quantized.graph.nodes)
    assert not any(k.startswith("fc_") for k in quantized.state_dict())
    assert DETACHED_ATTRIBUTES_META_KEY not in quantized.meta
    text = str(quantized)
    assert "(fc): QuantizedLinear(in_features=8, out_features=8" in text and "fc_weight" not in text


@pytest.mark.parametrize(("qconfig", "min_db"), [("default_dynamic_qconfig", 40), ("float16_dynamic_qconfig", 70)],
                         ids=["dynamic_int8", "dynamic_fp16"])
@torch.no_grad()
def test_dynamic_modules_keep_the_functional_call_working(qconfig, min_db):
    x = _data()
    model = Shared(bias=True).eval()
    prepared = prepare_fx(copy.deepcopy(model), fxquant.QConfigMapping().set_global(getattr(fxquant, qconfig)), (x,))
    prepared(x)
    quantized = convert_fx(prepared)
    assert isinstance(quantized.fc, fxquant.nn.quantized.dynamic.Linear)
    assert_sqnr(model(x), quantized(x), min_db=min_db)  # measured: 44.8 dB, 78.2 dB


@torch.no_grad()
def test_the_reference_model_reads_the_float_weight_through_its_own_attribute():
    x = _data()
    model = Shared().eval()
    prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), (x,))
    prepared(x)
    weight = prepared.fc.weight
    reference = convert_to_reference_fx(prepared)
    assert reference.fc_weight is weight  # the prepared model's parameter, not a copy
    assert "fc_weight" in {str(n.target) for n in reference.graph.nodes if n.op == "get_attr"}
    assert_sqnr(model(x), reference(x), min_db=30)


def test_qat_reads_the_trained_weight():
    x = _data()
    model = Shared().train()
    model_weight = model.fc.weight.detach().clone()
    prepared = prepare_qat_fx(model, get_default_qat_qconfig_mapping("x86"), (x,))
    optimizer = torch.optim.SGD(prepared.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        prepared(x).pow(2).mean().backward()
        optimizer.step()
    trained, bias = prepared.fc.weight.detach().clone(), prepared.fc.bias.detach().clone()
    assert not torch.equal(trained, model_weight)
    with torch.no_grad():
        quantized = convert_fx(prepared.eval())  # in place: prepared.fc is quantized now
        expected = F.linear(x, trained, bias) + F.linear(x, trained)  # float, trained
        assert_sqnr(expected, quantized(x), min_db=25)


def test_detach_re_homes_tensors_under_swapped_modules_only():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.other = nn.Linear(4, 4), nn.Linear(4, 4)
            self.fc.register_buffer("mask", torch.ones(4))
            self.fc_weight = nn.Parameter(torch.zeros(1))  # the plain name is taken

        def forward(self, x):
            y = self.fc(x) * self.fc.mask
            y = y + F.linear(x, self.fc.weight) + F.linear(x, self.fc.weight) + F.linear(x, self.other.weight)
            return y + self.fc_weight

    gm = torch.fx.symbolic_trace(Two())
    renamed = detach_swapped_module_attributes(gm, ["fc"])
    assert renamed == {"fc.mask": "fc_mask", "fc.weight": "fc_weight_1"}
    assert gm.fc_weight_1 is gm.fc.weight and isinstance(gm.fc_weight_1, nn.Parameter)
    assert gm.fc_mask is gm.fc.mask and "fc_mask" in dict(gm.named_buffers())
    targets = sorted(str(n.target) for n in gm.graph.nodes if n.op == "get_attr")
    assert targets == ["fc_mask", "fc_weight", "fc_weight_1", "other.weight"]
    x = torch.randn(2, 4)
    assert torch.equal(gm(x), Two.forward(gm, x))
    for node in [n for n in gm.graph.nodes if n.op == "get_attr" and n.target == "fc_mask"]:
        with gm.graph.inserting_before(node):
            node.replace_all_uses_with(gm.graph.call_function(torch.ones, (4,)))
        gm.graph.erase_node(node)
    gm.recompile()
    assert torch.equal(gm(x), Two.forward(gm, x))  # the mask was all ones
    assert drop_unread_detached_attributes(gm) == ["fc_mask"]
    assert not hasattr(gm, "fc_mask") and hasattr(gm, "fc_weight_1")
