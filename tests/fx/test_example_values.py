"""record_example_values: the shapes/dtypes it infers without running the model are the
ones the float forward produces; undecidable graphs fall back to the forward; example
inputs that do not fit still raise ExampleInputError naming the node."""

from __future__ import annotations

import operator
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.fx import GraphModule, Interpreter, Node

from fxquant.backend_config import get_native_backend_config
from fxquant.fx.example_values import ExampleInputError, record_example_values
from fxquant.fx.fuse import fuse_graph
from fxquant.fx.shape_rules import Undecided, _like
from fxquant.fx.tracer import trace_for_quantization


def _traced(model: nn.Module, *, fuse: bool = True) -> GraphModule:
    gm = trace_for_quantization(model.eval(), [], [])
    if fuse:
        fuse_graph(gm, is_qat=False, backend_config=get_native_backend_config())
    return gm


def _forward_values(gm: GraphModule, inputs: tuple) -> dict[Node, object]:
    """The oracle: every node's real output, by running the graph."""
    values: dict[Node, object] = {}

    class Keep(Interpreter):
        def run_node(self, n: Node) -> object:
            values[n] = result = super().run_node(n)
            return result

    with torch.no_grad():
        Keep(gm).run(*inputs)
    return values


def _assert_vals_match_forward(gm: GraphModule, inputs: tuple) -> None:
    real = _forward_values(gm, inputs)
    for node in gm.graph.nodes:
        value, val = real[node], node.meta.get("val")
        if isinstance(value, torch.Tensor):
            assert isinstance(val, torch.Tensor) and val.is_meta, node.format_node()
            assert (val.shape, val.dtype) == (value.shape, value.dtype), node.format_node()
        else:
            assert val is None, node.format_node()


class _Bottleneck(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(8, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, 2, 1, groups=2), nn.BatchNorm2d(4)
        self.conv3, self.bn3 = nn.Conv2d(4, 8, 1), nn.BatchNorm2d(8)
        self.down = nn.Sequential(nn.Conv2d(8, 8, 1, 2), nn.BatchNorm2d(8))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += self.down(x)
        return self.relu(out)


class _ResNetish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 7, 2, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.block = _Bottleneck()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


class _Functional(nn.Module):
    """Functional ops, methods, broadcasting arithmetic, views and non-tensor values."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 3, 3, 3))
        self.lw = nn.Parameter(torch.randn(4, 6))
        self.scale = nn.Parameter(torch.ones(6, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = F.conv2d(x, self.w, None, 1, 1)
        y = F.hardtanh(torch.clamp(y * self.scale, -3.0, 3.0), -2.0, 2.0)
        a, b = y.chunk(2, dim=1)
        z = torch.cat([a.sigmoid(), b.relu(), 1 - a, a / 2], dim=1)
        z = z + z.mean((2, 3), keepdim=True)
        s = z.mean(dim=[2, 3])
        s = F.relu(F.linear(s[:, :6], self.lw))
        v = z.view(z.size(0), -1)[:, : z.shape[1]]
        return s * 2 + v.mean(), torch.mean(s)


class _Shapes(nn.Module):
    """1-d/3-d convs and pools, batch norm 1d, layer norm, dropout, unbatched input paths."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 6, 3, padding="same", dilation=2)
        self.bn1 = nn.BatchNorm1d(6)
        self.p1 = nn.MaxPool1d(3, 2, 1, ceil_mode=True)
        self.a1 = nn.AvgPool1d(2, ceil_mode=True)
        self.c3 = nn.Conv3d(2, 3, (1, 2, 3), padding="valid")
        self.p3 = nn.AdaptiveMaxPool3d((None, 2, 1))
        self.ln = nn.LayerNorm([3])
        self.drop = nn.Dropout(0.5)
        self.lin = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.a1(self.p1(self.bn1(self.c1(x))))
        w = self.drop(self.ln(self.p3(self.c3(v)).flatten(2).transpose(1, 2).contiguous()))
        u = self.act(self.bn(self.lin(w).sum(1)))
        return y, w, u


class _Attention(nn.Module):
    """Embedding of integer ids, layer norm, heads by views, matmul, softmax, mask arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.norm = nn.Embedding(10, 8), nn.LayerNorm(8)
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.embed(ids))
        q = self.q(x).unflatten(-1, (2, 4)).transpose(1, 2)
        k = self.k(x).view(x.size(0), -1, 2, 4).transpose(1, 2)
        v = self.v(x).unflatten(-1, (2, 4)).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / 2.0 + (1.0 - mask[:, None, None, :].float()) * -1e4
        out = torch.matmul(F.softmax(scores, dim=-1), v)
        return F.gelu(out.transpose(1, 2).reshape(x.shape))


_MODELS = {
    "resnetish": (_ResNetish, lambda: (torch.randn(2, 3, 32, 32),)),
    "functional": (_Functional, lambda: (torch.randn(2, 3, 9, 7),)),
    "shapes": (_Shapes, lambda: (torch.randn(2, 4, 11), torch.randn(2, 2, 3, 5, 7))),
    "attention": (_Attention, lambda: (torch.randint(0, 10, (2, 5)), torch.ones(2, 5, dtype=torch.long))),
    "float64": (lambda: _ResNetish().double(), lambda: (torch.randn(1, 3, 20, 20, dtype=torch.float64),)),
}


@pytest.mark.parametrize("name", list(_MODELS))
def test_inferred_values_equal_the_forward_ones(name):
    build, inputs = _MODELS[name]
    torch.manual_seed(0)
    gm, x = _traced(build()), inputs()
    record_example_values(gm, x)
    _assert_vals_match_forward(gm, x)


@pytest.mark.parametrize("name", ["resnetish", "float64", "attention"])
def test_models_of_common_layers_need_no_forward(name):
    build, inputs = _MODELS[name]
    gm = _traced(build())
    assert record_example_values(gm, inputs()) is True
    assert any(isinstance(n.meta.get("val"), torch.Tensor) for n in gm.graph.nodes if n.op == "call_module")


def test_an_op_without_a_rule_on_inferred_values_runs_the_model():
    """``sum`` has no rule: ``_Shapes`` runs (its values are checked above); ``_Functional``
    has a rule, or a metadata-only op, for every node."""
    gm = _traced(_Shapes())
    assert record_example_values(gm, _MODELS["shapes"][1]()) is False
    gm = _traced(_Functional())
    assert record_example_values(gm, _MODELS["functional"][1]()) is True


class _Unknown(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs() + 1


class _NeedsForward(nn.Module):
    """An unknown leaf module, a non-contiguous input to a rule, an op with no rule."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x).transpose(0, 1)
        return torch.nonzero(y * 2 > 0).float() + 1


def test_undecidable_graphs_run_the_model_with_the_same_results():
    gm = _traced(_NeedsForward())
    x = (torch.randn(3, 4),)
    assert record_example_values(gm, x) is False
    _assert_vals_match_forward(gm, x)


def test_rule_less_ops_on_real_inputs_run_without_the_forward():
    """Nodes whose inputs are example inputs or attributes simply run."""
    gm = trace_for_quantization(nn.Sequential(_Unknown(), nn.Linear(4, 2)), [], [_Unknown])
    x = (torch.randn(3, 4),)
    assert record_example_values(gm, x) is True
    _assert_vals_match_forward(gm, x)


def test_non_tensor_nodes_have_no_val():
    gm = _traced(_Functional())
    record_example_values(gm, _MODELS["functional"][1]())
    first = {}
    for node in gm.graph.nodes:
        first.setdefault(node.target, node)
    assert "val" not in first["size"].meta and "val" not in first[getattr].meta
    assert "val" not in next(n for n in gm.graph.nodes if n.op == "output").meta
    assert first[operator.getitem].meta["val"].shape == (2, 3, 9, 7)


def test_values_are_replaced_when_recorded_again():
    gm = _traced(nn.Sequential(nn.Linear(4, 3), nn.ReLU()))
    record_example_values(gm, (torch.randn(2, 4),))
    record_example_values(gm, (torch.randn(5, 7, 4),))
    assert [n.meta["val"].shape for n in gm.graph.nodes] == [(5, 7, 4), (5, 7, 3), (5, 7, 3)]  # x, fused, output


@pytest.mark.parametrize("infer", [True, False], ids=["inferred", "forward"])
def test_training_model_keeps_its_statistics_and_modes(infer):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sigmoid() if infer else _Unknown()).train()
    gm = trace_for_quantization(model, [], [_Unknown])
    for m in gm.modules():
        m.train()
    assert record_example_values(gm, (torch.randn(2, 3, 8, 8),)) is infer
    bn = gm.get_submodule("1")
    assert torch.equal(bn.running_mean, torch.zeros(4)) and bn.num_batches_tracked == 0
    assert all(m.training for m in gm.modules())


# ------------------------------------------------------------------ inputs that do not fit


def test_wrong_channel_count_names_the_conv_and_the_error():
    gm = _traced(_ResNetish())
    with pytest.raises(ExampleInputError, match=r"failed at node stem_0 .*channels.*example_inputs"):
        record_example_values(gm, (torch.randn(2, 4, 32, 32),))


def test_input_too_small_for_the_kernel():
    gm = _traced(nn.Sequential(nn.Conv2d(3, 4, 5), nn.ReLU()))
    with pytest.raises(ExampleInputError, match=r"failed at node _0 .*Kernel size can't be greater"):
        record_example_values(gm, (torch.randn(1, 3, 3, 3),))


def test_too_many_example_inputs():
    gm = _traced(nn.Linear(4, 4))
    with pytest.raises(ExampleInputError, match="2 example inputs given, but forward takes 1"):
        record_example_values(gm, (torch.randn(2, 4), torch.randn(2, 4)))


def test_too_few_example_inputs():
    gm = _traced(_Shapes())
    with pytest.raises(ExampleInputError, match=r"failed at node v .*example_inputs"):
        record_example_values(gm, (torch.randn(2, 4, 11),))


def test_dtype_mismatch_is_the_forwards_error():
    gm = _traced(nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(ExampleInputError, match=r"failed at node _0 .*dtype"):
        record_example_values(gm, (torch.randn(2, 4, dtype=torch.float64),))


def test_broadcast_mismatch_is_the_forwards_error():
    class Add(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) + torch.relu(y)

    gm = _traced(Add())
    with pytest.raises(ExampleInputError, match=r"failed at node add .*size of tensor a"):
        record_example_values(gm, (torch.randn(2, 3), torch.randn(2, 4)))


# ------------------------------------------------------------------ rules vs. the real ops

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_POOLS = {
    "max": {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d},
    "avg": {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d},
}


def _check_against_the_module(module: nn.Module, x: torch.Tensor) -> None:
    """The rule gives the module's real output shape and dtype, or the recorder fails as the
    module does."""
    gm = trace_for_quantization(nn.Sequential(module).eval(), [], [])
    try:
        with torch.no_grad():
            expected = module.eval()(x)
    except Exception:  # noqa: BLE001 -- the op rejects the input: so must the recorder
        with pytest.raises(ExampleInputError):
            record_example_values(gm, (x,))
        return
    assert record_example_values(gm, (x,)) is True  # the rule decided, and:
    val = next(n for n in gm.graph.nodes if n.op == "call_module").meta["val"]
    assert (val.shape, val.dtype) == (expected.shape, expected.dtype)


@settings(max_examples=60, deadline=None)
@given(n=st.sampled_from([1, 2, 3]), channels=st.integers(1, 4), groups=st.sampled_from([1, 2]),
       kernel=st.integers(1, 4), stride=st.integers(1, 3), padding=st.sampled_from([0, 1, 2, "same", "valid"]),
       dilation=st.integers(1, 2), size=st.integers(1, 7), batched=st.booleans())
def test_conv_rule_agrees_with_the_op(n, channels, groups, kernel, stride, padding, dilation, size, batched):
    if padding == "same":
        stride = 1
    conv = _CONV[n](2 * groups, 2 * groups, kernel, stride, padding, dilation, groups)
    shape = (channels * groups, *[size] * n)
    _check_against_the_module(conv, torch.randn(2, *shape) if batched else torch.randn(*shape))


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["max", "avg"]), n=st.sampled_from([1, 2, 3]), kernel=st.integers(1, 4),
       stride=st.sampled_from([None, 1, 2, 3]), padding=st.integers(0, 2), dilation=st.integers(1, 2),
       ceil_mode=st.booleans(), size=st.integers(1, 9))
def test_pool_rule_agrees_with_the_op(kind, n, kernel, stride, padding, dilation, ceil_mode, size):
    extra = {"dilation": dilation} if kind == "max" else {}
    pool = _POOLS[kind][n](kernel, stride, padding, ceil_mode=ceil_mode, **extra)
    _check_against_the_module(pool, torch.randn(2, 3, *[size] * n))


@settings(max_examples=40, deadline=None)
@given(a=st.lists(st.integers(1, 3), min_size=0, max_size=3), b=st.lists(st.integers(1, 3), min_size=0, max_size=3),
       dtypes=st.sampled_from([(torch.float32, torch.float32), (torch.float32, torch.float64),
                               (torch.int64, torch.float32), (torch.int32, torch.int64)]))
def test_broadcasting_rule_agrees_with_the_op(a, b, dtypes):
    class Mul(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return x * y - 1

    x, y = torch.ones(a, dtype=dtypes[0]), torch.ones(b, dtype=dtypes[1])
    gm = _traced(Mul())
    try:
        expected = x * y - 1
    except RuntimeError:
        with pytest.raises(ExampleInputError):
            record_example_values(gm, (x, y))
        return
    assert record_example_values(gm, (x, y)) is True
    val = next(n for n in gm.graph.nodes if n.op == "output").meta["val"]
    assert (val.shape, val.dtype) == (expected.shape, expected.dtype)


@settings(max_examples=80, deadline=None)
@given(perm=st.permutations([0, 1, 2]), steps=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 2)),
       starts=st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(0, 1)))
def test_elementwise_output_layout_is_the_ops(perm, steps, starts):
    """Inferred elementwise outputs have the real op's strides (what later views depend on),
    or are left undecided."""
    x = torch.randn(4, 5, 6).permute(*perm)[tuple(slice(a, None, s) for a, s in zip(starts, steps))]
    try:
        inferred = _like(x.to("meta"))
    except Undecided:
        return
    assert inferred.stride() == torch.sigmoid(x).stride() == (x * 2.0).stride()


_FRESH_PROCESS = """
import sys, torch
from torch import nn
from fxquant.fx.example_values import record_example_values
from fxquant.fx.tracer import trace_for_quantization

class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.pool, self.fc = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.MaxPool2d(2), nn.Linear(9, 2)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        a, b = y.chunk(2, 1)
        z = torch.cat([a.sigmoid(), 1 - b], 1) * 2 + y
        z = torch.softmax(z, -1) @ z.transpose(-1, -2)
        return self.fc(self.pool(z).flatten(2)).mean((1, 2))

heavy = {"sympy", "torch._dynamo"}
before = heavy & set(sys.modules)
assert record_example_values(trace_for_quantization(M().eval(), [], []), (torch.randn(2, 3, 8, 8),))
print(sorted((heavy & set(sys.modules)) - before))
"""


def test_inference_imports_no_shape_machinery():
    """Meta kernels of elementwise ops pull in sympy and dynamo (about a second on first use):
    inference must not touch them."""
    root = pathlib.Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], cwd=root, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(root / "src")})
    assert out.stdout.strip().splitlines()[-1] == "[]"


@settings(max_examples=60, deadline=None)
@given(a=st.lists(st.integers(1, 3), min_size=1, max_size=4), b=st.lists(st.integers(1, 3), min_size=1, max_size=4),
       match=st.booleans(), transpose=st.booleans())
def test_matmul_rule_agrees_with_the_op(a, b, match, transpose):
    class MatMul(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return torch.matmul(x, y) + 1

    if match:
        b[0 if len(b) == 1 else -2] = a[-1]
    y = torch.randn(*b)
    if transpose and y.dim() > 1:
        y = y.transpose(-1, -2).contiguous().transpose(-1, -2)
    x = torch.randn(*a)
    gm = _traced(MatMul())
    try:
        expected = torch.matmul(x, y) + 1
    except RuntimeError:
        with pytest.raises(ExampleInputError):
            record_example_values(gm, (x, y))
        return
    assert record_example_values(gm, (x, y)) is True
    val = next(n for n in gm.graph.nodes if n.op == "output").meta["val"]
    assert (val.shape, val.dtype) == (expected.shape, expected.dtype)
