"""The FX rules of the lowering table, each on a small model: ``convert_fx`` (which lowers
through the table) fires the rule and gives upstream's ``convert_fx`` numbers (within one
output step) and module types."""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable

import pytest
import torch
import torch.ao.quantization as tq
import torch.ao.quantization.quantize_fx as upstream_fx
import torch.nn.functional as F
from helpers import quiet_upstream
from torch import nn
from torch.fx import GraphModule

import fxquant
from fxquant.lowering import INT8_RULES, lowering_report
from fxquant.lowering.graph import qmeta
from fxquant.lowering.rule import Dialect
from fxquant.numerics.ops import quantized_decomposed as qd
from fxquant.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx

quiet_upstream()
pytestmark = pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning")


class ConvLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.max_pool2d(self.conv(x), 1), 1))


class ConvReLU6(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act, self.head = nn.Conv2d(3, 4, 3), nn.ReLU6(), nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)))


class Binary(nn.Module):
    """(a + b).relu, a * b, x + 1.0 between convs."""

    def __init__(self, op: Callable[..., torch.Tensor], relu: bool, scalar: bool = False) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 1)
        self.op, self.relu, self.scalar = op, relu, scalar

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.op(self.a(x), 1.0) if self.scalar else self.op(self.a(x), self.b(x))
        return self.head(F.relu(y) if self.relu else y)


class Unary(nn.Module):
    """conv -> one op -> conv."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.conv, self.op, self.head = nn.Conv2d(3, 4, 3), op, nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.op(self.conv(x)))


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 3, 3, 3) * 0.3)
        self.lw, self.lb = nn.Parameter(torch.randn(5, 6) * 0.3), nn.Parameter(torch.randn(5) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.conv2d(x, self.w, None, [1, 1], [1, 1], [1, 1], 1))  # upstream: all positional
        return F.linear(F.adaptive_avg_pool2d(y, 1).flatten(1), self.lw, self.lb)


class EmbeddingMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.fc = nn.Embedding(20, 8), nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids))


def _minmax(ns) -> object:
    qconfig = ns.QConfig(activation=ns.MinMaxObserver.with_args(reduce_range=True),
                         weight=ns.default_per_channel_weight_observer)
    return ns.get_default_qconfig_mapping("x86").set_global(qconfig)


def _dynamic_linear(ns) -> object:
    return _minmax(ns).set_object_type(nn.Linear, ns.default_dynamic_qconfig)


def _weight_only_embedding(ns) -> object:
    return _minmax(ns).set_object_type(nn.Embedding, ns.float_qparams_weight_only_qconfig) \
        .set_object_type(nn.Linear, None)


IMAGE = (2, 3, 6, 6)
# rule -> (model, input shape (None: token ids), qconfig mapping of a namespace)
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...] | None, Callable[..., object]]] = {
    "fx_quantize": (ConvLinear, IMAGE, _minmax),
    "dequantize": (ConvLinear, IMAGE, _minmax),
    "fx_module": (ConvLinear, IMAGE, _minmax),
    "fx_functional": (Functional, IMAGE, _minmax),
    "fx_dynamic_module": (lambda: nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 2)), (3, 6), _dynamic_linear),
    "fx_weight_only_module": (EmbeddingMLP, None, _weight_only_embedding),
    "fx_binary": (lambda: Binary(operator.add, relu=True), IMAGE, _minmax),
    "fx_binary_scalar": (lambda: Binary(torch.add, relu=False, scalar=True), IMAGE, _minmax),
    "fx_identity": (lambda: Unary(nn.Dropout(0.5)), IMAGE, _minmax),
    "fx_same_qparams": (lambda: Unary(nn.MaxPool2d(2)), IMAGE, _minmax),
    "fx_fixed_qparams": (lambda: Unary(nn.Sigmoid()), IMAGE, _minmax),
}


def _batches(shape: tuple[int, ...] | None) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    if shape is None:
        return [torch.randint(0, 20, (4, 7), generator=g) for _ in range(3)]
    return [torch.randn(shape, generator=g) for _ in range(3)]


def _prepared_pair(rule: str) -> tuple[GraphModule, GraphModule, list[torch.Tensor]]:
    factory, shape, mapping = CASES[rule]
    torch.manual_seed(0)
    model = factory().eval()
    batches = _batches(shape)
    ours = prepare_fx(copy.deepcopy(model), mapping(fxquant), (batches[0],))
    upstream = upstream_fx.prepare_fx(copy.deepcopy(model), mapping(tq), (batches[0],))
    with torch.no_grad():
        for b in batches:
            ours(b)
            upstream(b)
    return ours, upstream, batches


def _max_step(gm: GraphModule) -> float:
    """The largest activation step of the lowered graph (0 if it has none)."""
    return max((meta.scale for n in gm.graph.nodes if (meta := qmeta(n)) is not None), default=0.0)


def _module_types(gm: nn.Module) -> list[str]:
    return [type(m).__name__ for m in gm.modules()][1:]


def test_every_fx_rule_of_the_table_has_a_case():
    fx_rules = {rule.name for rule in INT8_RULES if Dialect.FX in rule.dialects}
    assert fx_rules == {*CASES, "requantize", "fx_module_clamp"}  # those two: tests below


@pytest.mark.parametrize("rule", list(CASES))
def test_fx_rule_fires_and_matches_upstream_convert_fx(rule):
    ours, upstream, batches = _prepared_pair(rule)
    lowered = convert_fx(ours)
    oracle = upstream_fx.convert_fx(upstream)
    lowered.graph.lint()
    assert dict(lowering_report(lowered).applied).get(rule, 0) >= 1, lowering_report(lowered)
    assert _module_types(lowered) == _module_types(oracle)
    step = _max_step(lowered)
    with torch.no_grad():
        for b in batches:
            torch.testing.assert_close(lowered(b), oracle(b), rtol=0, atol=step + 1e-6)


def test_fx_module_clamp_fires_and_stays_within_a_step_of_its_reference():
    """Observing after the clamp is fxquant's default pattern (upstream has no such pattern):
    the oracle is the reference model."""
    torch.manual_seed(0)
    model, batches = ConvReLU6().eval(), _batches(IMAGE)
    prepared = prepare_fx(model, _minmax(fxquant), (batches[0],))
    for b in batches:
        prepared(b)
    reference = convert_to_reference_fx(copy.deepcopy(prepared))
    lowered = convert_fx(prepared)
    assert dict(lowering_report(lowered).applied)["fx_module_clamp"] == 1
    assert type(lowered.conv).__module__.startswith("fxquant.nn.quantized")
    assert not any(n.op == "call_module" and n.target == "act" for n in lowered.graph.nodes)
    step = _max_step(lowered)
    with torch.no_grad():
        for b in batches:
            torch.testing.assert_close(lowered(b), reference(b), rtol=0, atol=step + 1e-6)


def _requantize_graph() -> GraphModule:
    """x -> q -> dq -> q (same parameters) -> dq: the middle pair is the identity."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    args = (0.05, 3, 0, 255, torch.uint8)
    q1 = graph.call_function(qd.quantize_per_tensor.default, (x, *args))
    dq1 = graph.call_function(qd.dequantize_per_tensor.default, (q1, *args))
    q2 = graph.call_function(qd.quantize_per_tensor.default, (dq1, *args))
    graph.output(graph.call_function(qd.dequantize_per_tensor.default, (q2, *args)))
    return GraphModule(nn.Module(), graph)


def test_requantize_serves_fx_graphs_too():
    from fxquant.fx.lower import lower_to_quantized_modules

    reference = _requantize_graph()
    lowered = lower_to_quantized_modules(_requantize_graph())
    applied = dict(lowering_report(lowered).applied)
    assert applied == {"fx_quantize": 2, "dequantize": 2, "requantize": 1}
    targets = [n.target for n in lowered.graph.nodes if n.op in ("call_function", "call_method")]
    assert targets == [torch.quantize_per_tensor, "dequantize"]
    x = torch.randn(4, 5)
    assert torch.equal(lowered(x), reference(x))


def test_fx_dequantize_gives_each_reader_its_own_call_like_upstream():
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    args = (0.05, 3, 0, 255, torch.uint8)
    q = graph.call_function(qd.quantize_per_tensor.default, (x, *args))
    dq = graph.call_function(qd.dequantize_per_tensor.default, (q, *args))
    total = graph.call_function(operator.add, (graph.call_function(torch.sin, (dq,)), graph.call_function(torch.cos, (dq,))))
    graph.output(total)
    reference = GraphModule(nn.Module(), graph)
    from fxquant.fx.lower import lower_to_quantized_modules

    lowered = lower_to_quantized_modules(copy.deepcopy(reference))
    dequantized = [n for n in lowered.graph.nodes if n.op == "call_method" and n.target == "dequantize"]
    assert len(dequantized) == 2 and all(len(n.users) == 1 for n in dequantized)
    report = lowering_report(lowered)
    assert dict(report.float_ops_after_int8) == {str(torch.cos): 1, str(torch.sin): 1}
    x_value = torch.randn(3, 4)
    assert torch.equal(lowered(x_value), reference(x_value))
