"""Dynamic, float16-dynamic and weight-only qconfigs in the FX flow, against upstream's
``prepare_fx`` / ``convert_fx`` on the same models and inputs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.quantization as tq
import torch.ao.quantization.quantize_fx as upstream_fx
from torch import nn

import fxquant
from fxquant.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx


class Recurrent(nn.Module):
    """linear → LSTM → GRU → linear + relu (fused), and an embedding lookup."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 12)
        self.lstm = nn.LSTM(12, 10, batch_first=True)
        self.gru = nn.GRU(10, 6, batch_first=True)
        self.head = nn.Linear(6, 4)
        self.relu = nn.ReLU()

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x + self.emb(ids))
        h, _ = self.lstm(h)
        h, _ = self.gru(h)
        return self.relu(self.head(h))


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 20, (3, 5), generator=g), torch.randn(3, 5, 8, generator=g)


def _module_types(gm: nn.Module) -> dict[str, str]:
    return {name: f"{type(m).__module__.split('.')[-1]}.{type(m).__name__}"
            for name, m in gm.named_modules() if name and "." not in name}


def _mapping(ns, kind: str):
    qconfig = {"dynamic": ns.default_dynamic_qconfig, "per_channel_dynamic": ns.per_channel_dynamic_qconfig,
               "float16_dynamic": ns.float16_dynamic_qconfig}[kind]
    mapping = ns.QConfigMapping()
    for t in (nn.Linear, nn.ReLU, nn.LSTM, nn.GRU):  # ReLU: fused LinearReLU needs the same
        mapping.set_object_type(t, qconfig)
    return mapping.set_object_type(nn.Embedding, ns.float_qparams_weight_only_qconfig)


def _both(kind: str):
    torch.manual_seed(0)
    model = Recurrent().eval()
    example = _inputs(0)
    ours = prepare_fx(copy.deepcopy(model), _mapping(fxquant, kind), example)
    upstream = upstream_fx.prepare_fx(copy.deepcopy(model), _mapping(tq, kind), example)
    return model, ours, upstream


@pytest.mark.parametrize("kind", ["dynamic", "per_channel_dynamic", "float16_dynamic"])
def test_converted_modules_and_outputs_equal_upstream(kind):
    _, ours, upstream = _both(kind)
    lowered, oracle = convert_fx(ours), upstream_fx.convert_fx(upstream)
    types = _module_types(lowered)
    assert types["fc"].endswith("Linear") and "dynamic" in type(lowered.fc).__module__
    assert "dynamic" in type(lowered.lstm).__module__ and "dynamic" in type(lowered.gru).__module__
    assert type(lowered.head).__name__ == "LinearReLU" and "dynamic" in type(lowered.head).__module__
    assert type(lowered.emb).__name__ == "Embedding" and type(lowered.emb).__module__.startswith("fxquant.nn.quantized")
    assert [t.split(".")[-1] for t in types.values()] == \
        [t.split(".")[-1] for t in _module_types(oracle).values()]
    for seed in range(1, 4):
        x = _inputs(seed)
        assert torch.equal(lowered(*x), oracle(*x))


def test_dynamic_reference_model_equals_upstream_decomposed_reference():
    _, ours, upstream = _both("dynamic")
    reference = convert_to_reference_fx(ours)
    oracle = upstream_fx._convert_to_reference_decomposed_fx(upstream)
    # the float-qparams embedding is compared with its kernel below (upstream's decomposed
    # reference rounds x/scale before adding the float zero point; the kernel rounds after)
    reference.emb = oracle.emb
    for seed in range(1, 3):
        x = _inputs(seed)
        assert torch.equal(reference(*x), oracle(*x))


def test_weight_only_embedding_reference_matches_its_kernel_and_upstreams_kernel():
    _, ours, upstream = _both("dynamic")
    reference = convert_to_reference_fx(copy.deepcopy(ours))
    lowered, oracle = convert_fx(ours), upstream_fx.convert_fx(upstream)
    ids = _inputs(5)[0]
    # the kernel stores scale and offset per row and computes scale * q + offset: float rounding
    torch.testing.assert_close(reference.emb(ids), lowered.emb(ids), rtol=0, atol=1e-5)
    assert torch.equal(lowered.emb(ids), oracle.emb(ids))


def test_dynamic_observes_only_linear_inputs_like_upstream():
    _, ours, upstream = _both("dynamic")

    def observed(gm):
        return sorted(n.args[0].name for n in gm.graph.nodes
                      if n.op == "call_module" and "activation_post_process" in str(n.target))

    assert observed(ours) == observed(upstream)


def test_dynamic_qconfig_on_an_op_without_weights_is_left_float_with_a_reason():
    model = nn.Sequential(nn.Linear(4, 4), nn.Hardswish()).eval()
    mapping = fxquant.QConfigMapping().set_global(fxquant.default_dynamic_qconfig)
    with pytest.warns(UserWarning, match=r"leaves .*in float.*"):
        prepared = prepare_fx(model, mapping, (torch.randn(2, 4),))
    prepared(torch.randn(2, 4))
    lowered = convert_fx(prepared)
    assert "dynamic" in type(lowered.get_submodule("0")).__module__
    assert type(lowered.get_submodule("1")) is nn.Hardswish


def test_qat_conv_left_unquantized_by_a_dynamic_qconfig_becomes_float_like_upstream():
    """prepare_qat_fx swaps the conv for a QAT conv; the dynamic qconfig does not quantize
    it, so convert gives the float conv back (no weight fake-quantization left)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(16, 4)).train()
    x = torch.randn(2, 3, 4, 4)
    mapping = {"fxquant": fxquant.QConfigMapping(), "tq": tq.QConfigMapping()}
    ours = fxquant.quantize_fx.prepare_qat_fx(
        copy.deepcopy(model), mapping["fxquant"].set_global(fxquant.default_dynamic_qat_qconfig), (x,))
    upstream = upstream_fx.prepare_qat_fx(
        copy.deepcopy(model), mapping["tq"].set_global(tq.default_dynamic_qat_qconfig), (x,))
    assert "qat" in type(ours.get_submodule("0")).__module__
    ours(x)
    upstream(x)
    lowered, oracle = convert_fx(ours.eval()), upstream_fx.convert_fx(upstream.eval())
    assert type(lowered.get_submodule("0")) is nn.Conv2d and type(oracle.get_submodule("0")) is nn.Conv2d
    assert "dynamic" in type(lowered.get_submodule("2")).__module__
    assert torch.equal(lowered(x), oracle(x))
