"""Standalone modules in prepare_fx / convert_fx against upstream's
``torch.ao.quantization.quantize_fx`` with the same configs: the submodule is prepared and
converted as its own GraphModule, the parent observes / dequantizes at the boundary as the
standalone module's input/output quantized indexes say."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.quantization as tq
import torch.ao.quantization.quantize_fx as upstream_fx
from torch import nn
from torch.ao.quantization.fx.custom_config import PrepareCustomConfig as UpPrepareCustomConfig

import fxquant
from fxquant.fx import PrepareCustomConfig
from fxquant.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.relu(self.conv(x)) + x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.block = Block()
        self.conv2 = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.conv2(self.block(self.conv(x)))


def _mapping(ns):
    qconfig = ns.QConfig(activation=ns.MinMaxObserver.with_args(reduce_range=True),
                         weight=ns.default_per_channel_weight_observer)
    return ns.get_default_qconfig_mapping("x86").set_global(qconfig)


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(2, 3, 6, 6, generator=g) for _ in range(4)]


def _observers(gm: torch.fx.GraphModule) -> list[tuple[str, tuple[str, ...]]]:
    return sorted((n.args[0].name, tuple(sorted(u.name for u in n.users))) for n in gm.graph.nodes
                  if n.op == "call_module" and "activation_post_process" in str(n.target))


def _prepare_pair(indexes: list[int], by: str):
    torch.manual_seed(0)
    model = Net().eval()
    x = (_batches()[0],)
    sm_inputs = (torch.randn(2, 4, 6, 6),)
    ours_sm = PrepareCustomConfig().set_input_quantized_indexes(indexes).set_output_quantized_indexes(indexes)
    up_sm = UpPrepareCustomConfig().set_input_quantized_indexes(indexes).set_output_quantized_indexes(indexes)
    if by == "name":
        ours_config = PrepareCustomConfig().set_standalone_module_name("block", None, None, ours_sm, None)
        up_config = UpPrepareCustomConfig().set_standalone_module_name("block", None, sm_inputs, up_sm, None)
    else:
        ours_config = PrepareCustomConfig().set_standalone_module_class(Block, None, sm_inputs, ours_sm, None)
        up_config = UpPrepareCustomConfig().set_standalone_module_class(Block, None, sm_inputs, up_sm, None)
    ours = prepare_fx(copy.deepcopy(model), _mapping(fxquant), x, ours_config)
    upstream = upstream_fx.prepare_fx(copy.deepcopy(model), _mapping(tq), x, up_config)
    with torch.no_grad():
        for b in _batches():
            ours(b)
            upstream(b)
    return ours, upstream


CASES = [([], "name"), ([0], "name"), ([0], "class")]
IDS = ["float-boundary-by-name", "quantized-boundary-by-name", "quantized-boundary-by-class"]


QUANTIZED_CASES, QUANTIZED_IDS = CASES[1:], IDS[1:]


@pytest.mark.parametrize(("indexes", "by"), QUANTIZED_CASES, ids=QUANTIZED_IDS)
def test_observers_at_upstreams_places_in_parent_and_standalone_module(indexes, by):
    ours, upstream = _prepare_pair(indexes, by)
    assert isinstance(ours.block, torch.fx.GraphModule)
    assert _observers(ours) == _observers(upstream)
    assert _observers(ours.block) == _observers(upstream.block)


def test_float_output_of_standalone_module_is_observed_for_its_quantized_user():
    """Deliberate deviation: upstream assumes a standalone module's output is quantized even
    when its output is float, so the next conv gets no input observer and runs as a float
    reference module; fxquant observes that output and the conv runs in int8. Everything
    else is placed as upstream places it, and outputs agree within one quantization step."""
    ours, upstream = _prepare_pair([], "name")
    assert _observers(ours) == sorted([*_observers(upstream), ("block", ("conv2",))])
    assert _observers(ours.block) == _observers(upstream.block)
    lowered, oracle = convert_fx(copy.deepcopy(ours)), upstream_fx.convert_fx(copy.deepcopy(upstream))
    assert type(lowered.conv2).__module__.startswith("fxquant.nn.quantized")
    assert not type(oracle.conv2).__module__.startswith("torch.ao.nn.quantized.modules")
    step = float(lowered.conv2.scale)
    for b in _batches():
        assert (lowered(b) - oracle(b)).abs().max() <= step * 1.0001


@pytest.mark.parametrize(("indexes", "by"), CASES, ids=IDS)
def test_reference_model_equals_upstream_decomposed_reference(indexes, by):
    ours, upstream = _prepare_pair(indexes, by)
    reference = convert_to_reference_fx(ours)
    oracle = upstream_fx._convert_to_reference_decomposed_fx(upstream)
    for b in _batches():
        assert torch.equal(reference(b), oracle(b))


@pytest.mark.parametrize(("indexes", "by"), QUANTIZED_CASES, ids=QUANTIZED_IDS)
def test_lowered_model_equals_upstream_convert_fx(indexes, by):
    ours, upstream = _prepare_pair(indexes, by)
    lowered = convert_fx(ours)
    oracle = upstream_fx.convert_fx(upstream)
    assert type(lowered.block.conv2).__module__.startswith("fxquant.nn.quantized")
    for b in _batches():
        assert torch.equal(lowered(b), oracle(b))


def test_quantized_boundary_passes_quantized_tensors():
    ours, _ = _prepare_pair([0], "name")
    lowered = convert_fx(ours)
    seen: dict[str, bool] = {}

    def before(_module, args):
        seen["in"] = args[0].is_quantized

    def after(_module, _args, out):
        seen["out"] = out.is_quantized

    lowered.block.register_forward_pre_hook(before)
    lowered.block.register_forward_hook(after)
    lowered(_batches()[0])
    assert seen == {"in": True, "out": True}


def test_standalone_module_own_qconfig_mapping_keeps_it_float():
    torch.manual_seed(0)
    config = PrepareCustomConfig().set_standalone_module_name(
        "block", fxquant.QConfigMapping(), None, None, None)
    prepared = prepare_fx(Net().eval(), _mapping(fxquant), (_batches()[0],), config)
    assert _observers(prepared.block) == []
    for b in _batches():
        prepared(b)
    lowered = convert_fx(prepared)
    assert not any(type(m).__module__.startswith(("fxquant.nn.quantized", "fxquant.nn.intrinsic.quantized"))
                   for m in lowered.block.modules())
    assert type(lowered.conv).__module__.startswith("fxquant.nn.quantized")
    with torch.no_grad():
        assert lowered(_batches()[0]).shape == (2, 2, 6, 6)


def test_standalone_module_example_inputs_captured_when_not_given():
    ours, _ = _prepare_pair([], "name")  # "name" passes no example inputs for the block
    shapes = [n.meta["val"].shape for n in ours.block.graph.nodes if n.op == "placeholder"]
    assert shapes == [torch.Size([2, 4, 6, 6])]


def test_standalone_module_in_qat_flow():
    from fxquant.quantize_fx import prepare_qat_fx

    torch.manual_seed(0)
    sm_config = PrepareCustomConfig().set_input_quantized_indexes([0]).set_output_quantized_indexes([0])
    prepared = prepare_qat_fx(Net().train(), fxquant.get_default_qat_qconfig_mapping("x86"), (_batches()[0],),
                              PrepareCustomConfig().set_standalone_module_name("block", None, None, sm_config, None))
    assert type(prepared.block.conv).__module__.startswith("fxquant.nn.intrinsic.qat")
    prepared(_batches()[1])
    lowered = convert_fx(prepared.eval())
    assert type(lowered.block.conv2).__module__.startswith("fxquant.nn.quantized")
    with torch.no_grad():
        assert lowered(_batches()[2]).shape == (2, 2, 6, 6)
