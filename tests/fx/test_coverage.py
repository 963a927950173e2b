"""More ops against upstream's FX flow: transposed convs, functional conv/linear with
parameter weights, cat, conv + add (+ relu) on oneDNN, a mixed static/dynamic mapping."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch
import torch.ao.quantization as tq
import torch.ao.quantization.quantize_fx as upstream_fx
import torch.nn.functional as F
from torch import nn

import fxquant
from fxquant.fx.fuse import fuse_graph
from fxquant.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx


class ConvTransposes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.t1 = nn.ConvTranspose1d(3, 4, 3, stride=2)
        self.t2 = nn.ConvTranspose2d(3, 4, 3, stride=2)
        self.bn2 = nn.BatchNorm2d(4)
        self.t3 = nn.ConvTranspose3d(3, 4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        a = self.t1(x.mean(dim=(3, 4)))
        b = self.bn2(self.t2(x.mean(dim=4)))
        return a, b, self.t3(x)


class Functional(nn.Module):
    """F.conv2d / F.linear with the module's own parameters as weight and bias."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 3, 3, 3) * 0.3)
        self.b = nn.Parameter(torch.randn(6) * 0.1)
        self.lw = nn.Parameter(torch.randn(5, 6) * 0.3)
        self.lb = nn.Parameter(torch.randn(5) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.conv2d(x, self.w, self.b, [1, 1], [1, 1], [1, 1], 1))  # upstream: all positional
        y = F.adaptive_avg_pool2d(y, 1).flatten(1)
        return F.linear(y, self.lw, self.lb)


class Cat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.cat([self.a(x), F.max_pool2d(self.b(x), 1)], dim=1))


class ConvAdd(nn.Module):
    """conv + add and conv + add + relu; the added tensor is not the conv's input (the oneDNN
    kernel accumulates into it in place)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 3, 1)
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x) + self.conv0(x)
        return self.relu(self.conv2(y) + F.max_pool2d(y, 1))


class ConvThenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1))


def _minmax(ns, backend: str = "x86"):
    """The backend's default mapping with deterministic MinMax activation observers (also for
    the transposed convs, which keep per-tensor weights)."""
    activation = ns.MinMaxObserver.with_args(reduce_range=backend == "x86")
    mapping = ns.get_default_qconfig_mapping(backend).set_global(
        ns.QConfig(activation=activation, weight=ns.default_per_channel_weight_observer))
    transpose = ns.QConfig(activation=activation, weight=ns.default_weight_observer)
    for t in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
        mapping.set_object_type(t, transpose)
    return mapping


def _observed(gm: torch.fx.GraphModule) -> list[tuple[str, tuple[str, ...]]]:
    return [(n.args[0].name, tuple(sorted(u.name for u in n.users))) for n in gm.graph.nodes
            if n.op == "call_module" and "activation_post_process" in str(n.target)]


def _outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    out = model(x)
    return out if isinstance(out, tuple) else (out,)


CASES = {
    "conv_transpose": (ConvTransposes, (2, 3, 5, 5, 5), "x86"),
    "functional": (Functional, (2, 3, 6, 6), "x86"),
    "cat": (Cat, (2, 3, 6, 6), "x86"),
    "conv_add_onednn": (ConvAdd, (2, 3, 6, 6), "onednn"),
}


def _pair(case: str, monkeypatch: pytest.MonkeyPatch | None = None):
    cls, shape, backend = CASES[case]
    torch.manual_seed(0)
    model = cls().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(shape, generator=g) for _ in range(3)]
    ours_backend = upstream_backend = None
    if backend == "onednn":
        ours_backend = fxquant.backend_config.get_onednn_backend_config()
        upstream_backend = tq.backend_config.get_onednn_backend_config()
        # the quantized engine must be oneDNN for its conv-add kernels
        assert monkeypatch is not None
        monkeypatch.setattr(torch.backends.quantized, "engine", "onednn")
    ours = prepare_fx(copy.deepcopy(model), _minmax(fxquant, backend), (batches[0],),
                      backend_config=ours_backend)
    upstream = upstream_fx.prepare_fx(copy.deepcopy(model), _minmax(tq, backend), (batches[0],),
                                      backend_config=upstream_backend)
    with torch.no_grad():
        for b in batches:
            ours(b)
            upstream(b)
    return ours, upstream, batches, ours_backend, upstream_backend


@pytest.mark.parametrize("case", list(CASES))
def test_observers_and_reference_equal_upstream(case, monkeypatch):
    ours, upstream, batches, _, upstream_backend = _pair(case, monkeypatch)
    assert _observed(ours) == _observed(upstream)
    reference = convert_to_reference_fx(copy.deepcopy(ours))
    if case == "conv_add_onednn":
        # upstream's reference ConvAdd2d keeps its conv weight in float (its lowering does
        # quantize it); fxquant's reference quantizes it, so it is compared with the lowered
        # int8 model instead: within one output step
        oracle = upstream_fx.convert_fx(copy.deepcopy(upstream), backend_config=upstream_backend)
        for b in batches:
            step = oracle(b).q_scale() if oracle(b).is_quantized else 0.02
            torch.testing.assert_close(reference(b), oracle(b), rtol=0, atol=step)
        return
    oracle = upstream_fx._convert_to_reference_decomposed_fx(copy.deepcopy(upstream))
    for b in batches:
        for a, o in zip(_outputs(reference, b), _outputs(oracle, b), strict=True):
            assert torch.equal(a, o)


@pytest.mark.parametrize("case", list(CASES))
def test_lowered_equals_upstream(case, monkeypatch):
    ours, upstream, batches, ours_backend, upstream_backend = _pair(case, monkeypatch)
    lowered = convert_fx(ours, backend_config=ours_backend)
    oracle = upstream_fx.convert_fx(upstream, backend_config=upstream_backend)
    for b in batches:
        for a, o in zip(_outputs(lowered, b), _outputs(oracle, b), strict=True):
            assert torch.equal(a, o)


def test_default_mapping_with_dynamic_linear_like_upstream():
    torch.manual_seed(0)
    model = ConvThenLinear().eval()
    x = torch.randn(2, 3, 8, 8)
    ours = prepare_fx(copy.deepcopy(model), _minmax(fxquant)
                      .set_object_type(nn.Linear, fxquant.default_dynamic_qconfig), (x,))
    upstream = upstream_fx.prepare_fx(copy.deepcopy(model), _minmax(tq)
                                      .set_object_type(nn.Linear, tq.default_dynamic_qconfig), (x,))
    assert _observed(ours) == _observed(upstream)
    ours(x)
    upstream(x)
    lowered, oracle = convert_fx(ours), upstream_fx.convert_fx(upstream)
    assert "dynamic" in type(lowered.fc).__module__
    assert torch.equal(lowered(x), oracle(x))


@pytest.mark.parametrize("backend", ["onednn", "native", "x86"])
def test_fuse_graph_with_a_backend_config_fuses_like_upstream(backend):
    """conv + add (+ relu) fuse into ConvAdd2d / ConvAddReLU2d with oneDNN's patterns only."""
    torch.manual_seed(0)
    model = ConvAdd().eval()
    ours_config = getattr(fxquant.backend_config, f"get_{backend}_backend_config")()
    up_config = getattr(importlib.import_module(f"torch.ao.quantization.backend_config.{backend}"),
                        f"get_{backend}_backend_config")()
    ours = fuse_graph(torch.fx.symbolic_trace(copy.deepcopy(model)), is_qat=False, backend_config=ours_config)
    upstream = upstream_fx.fuse_fx(copy.deepcopy(model), backend_config=up_config)
    assert {n: type(m).__name__ for n, m in ours.named_modules() if n} == \
        {n: type(m).__name__ for n, m in upstream.named_modules() if n}
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(ours(x), model(x))


class TwoCalls(nn.Module):
    """One linear module called on two inputs with different ranges, one result float."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.exp(self.fc(x)), self.fc(3.0 * x).sum(-1)


def test_module_called_twice_gets_a_quantized_module_per_output_quantization():
    torch.manual_seed(0)
    model = TwoCalls().eval()
    x = torch.randn(3, 4)
    prepared = prepare_fx(copy.deepcopy(model), _minmax(fxquant), (x,))
    prepared(x)
    reference = convert_to_reference_fx(copy.deepcopy(prepared))
    lowered = convert_fx(prepared)
    quantized = [m for m in lowered.children() if isinstance(m, fxquant.nn.quantized.Linear)]
    assert len(quantized) == 2 and quantized[0].scale != quantized[1].scale
    for got, want in zip(lowered(x), reference(x), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0.1)


def test_output_quantized_index_of_a_float_output_stays_float_like_upstream():
    """An output index asked to stay quantized whose op runs in float (exp) gets no observer
    (as upstream's prepare_fx does); the quantized one (after the quantized linear) does."""
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig as UpstreamConfig

    class Outputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.fc(x)
            return torch.exp(y), F.relu(y)

    torch.manual_seed(0)
    model = Outputs().eval()
    x = torch.randn(3, 4)
    ours = prepare_fx(copy.deepcopy(model), _minmax(fxquant), (x,),
                      fxquant.fx.PrepareCustomConfig().set_output_quantized_indexes([0, 1]))
    upstream = upstream_fx.prepare_fx(copy.deepcopy(model), _minmax(tq), (x,),
                                      UpstreamConfig().set_output_quantized_indexes([0, 1]))
    assert _observed(ours) == _observed(upstream)
    ours(x)
    upstream(x)
    lowered, oracle = convert_fx(ours), upstream_fx.convert_fx(upstream)
    (a0, a1), (b0, b1) = lowered(x), oracle(x)
    assert not a0.is_quantized and torch.equal(a0, b0)
    assert a1.is_quantized and torch.equal(a1.int_repr(), b1.int_repr()) and a1.q_scale() == b1.q_scale()
