"""KeepFloatQuantizer: ops named by node or module stay in float, and the annotated graph
stays valid (no sharing left pointing at a removed op)."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import assert_sqnr
from torch import nn

from fxquant.engine.errors import AnnotationError
from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.float_fallback import (
    FallbackReason,
    KeepFloatQuantizer,
    remove_quantization,
)
from fxquant.pt2e.quantizer.utils import get_annotation
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)
from fxquant.pt2e.quantizer.xnnpack_quantizer import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)

A = torch.ops.aten
QD = torch.ops.quantized_decomposed


def x86() -> X86InductorQuantizer:
    return X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())


def xnnpack() -> XNNPACKQuantizer:
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x)) + x


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.block = Block()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(self.act(self.stem(x)))
        y = torch.nn.functional.max_pool2d(y, 2)
        return self.fc(torch.flatten(self.pool(y), 1))


def _quantize(model: nn.Module, x: torch.Tensor, quantizer) -> torch.fx.GraphModule:
    gm = torch.export.export(model, (x,)).module()
    prepared = prepare_pt2e(gm, quantizer)
    prepared(x)
    converted = convert_pt2e(prepared)
    converted.graph.lint()
    return converted


def _op(gm: torch.fx.GraphModule, target) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target == target]


@pytest.fixture(scope="module")
def net_and_data():
    torch.manual_seed(0)
    return Net().eval(), torch.randn(4, 3, 16, 16)


def test_reasons_describe_themselves():
    for reason in FallbackReason:
        assert reason.describe().endswith(".") and len(reason.describe()) > 20
    assert FallbackReason.USER_CHOICE.describe() != FallbackReason.SPEED_PLAN.describe()


@pytest.mark.parametrize("make_quantizer", [x86, xnnpack], ids=["x86", "xnnpack"])
def test_node_name_keeps_that_conv_in_float(net_and_data, make_quantizer):
    model, x = net_and_data
    quantizer = KeepFloatQuantizer(make_quantizer(), ["conv2d"])
    q = _quantize(model, x, quantizer)
    conv = next(n for n in q.graph.nodes if n.name == "conv2d")
    # its weight is the float parameter, its input the float image (no dequantize in front)
    assert conv.args[1].op == "get_attr" and conv.args[0].op == "placeholder"
    others = [n for n in _op(q, A.conv2d.default) if n is not conv]
    assert all(n.args[1].target == QD.dequantize_per_channel.default for n in others)
    assert quantizer.kept_float == {"conv2d": FallbackReason.USER_CHOICE}
    with torch.no_grad():
        assert_sqnr(model(x), q(x), min_db=25)


def test_module_name_selects_every_node_of_the_submodule(net_and_data):
    model, x = net_and_data
    quantizer = KeepFloatQuantizer(x86(), {"block": FallbackReason.SPEED_PLAN})
    q = _quantize(model, x, quantizer)
    kept = set(quantizer.kept_float)
    # the block's conv, relu and add (the add is created in Block.forward)
    assert {"conv2d_1", "relu_1", "add"} <= kept
    assert set(quantizer.kept_float.values()) == {FallbackReason.SPEED_PLAN}
    block_conv = next(n for n in q.graph.nodes if n.name == "conv2d_1")
    assert block_conv.args[1].op == "get_attr"
    with torch.no_grad():
        assert_sqnr(model(x), q(x), min_db=25)


def test_unknown_name_lists_close_matches(net_and_data):
    model, x = net_and_data
    gm = torch.export.export(model, (x,)).module()
    with pytest.raises(ValueError, match=r"'blok'.*close matches: block"):
        prepare_pt2e(gm, KeepFloatQuantizer(x86(), ["blok"]))


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="collection of names"):
        KeepFloatQuantizer(x86(), "conv2d")
    with pytest.raises(TypeError, match="FallbackReason"):
        KeepFloatQuantizer(x86(), {"conv2d": "user"})
    with pytest.raises(TypeError, match="wraps a Quantizer"):
        KeepFloatQuantizer(object(), [])


def test_neighbours_sharing_a_removed_output_keep_their_own_quantization(net_and_data):
    """XNNPACK's pools share their producer's output observer; removing that producer must
    leave them quantized with the spec they shared (a naive removal dangles)."""
    model, x = net_and_data
    gm = torch.export.export(model, (x,)).module()
    naive = copy.deepcopy(gm)
    xnnpack().annotate(naive)
    pool = next(n for n in naive.graph.nodes if n.target == A.max_pool2d.default)
    add = pool.args[0]
    assert add.name == "add" and get_annotation(pool).input_qspec_map[add].edge_or_node is add
    get_annotation(add).output_qspec = None  # what removing without repair leaves
    from fxquant.engine.plan import plan_observers

    with pytest.raises(AnnotationError, match="not annotated"):
        plan_observers(naive)

    repaired = copy.deepcopy(gm)
    xnnpack().annotate(repaired)
    remove_quantization(repaired, {n: None for n in repaired.graph.nodes if n.name in ("relu_1", "add")})
    plan_observers(repaired)  # valid now
    q = _quantize(model, x, KeepFloatQuantizer(xnnpack(), ["relu_1", "add"]))
    pool_q = next(n for n in q.graph.nodes if n.target == A.max_pool2d.default)
    assert pool_q.args[0].target == QD.dequantize_per_tensor.default  # still reads int8
    with torch.no_grad():
        assert_sqnr(model(x), q(x), min_db=25)


@pytest.mark.slow
@pytest.mark.parametrize("make_quantizer", [x86, xnnpack], ids=["x86", "xnnpack"])
def test_efficientnet_lite0_blocks_in_float(make_quantizer):
    from fxquant.zoo import efficientnet_lite0, imagenet_photos

    model = efficientnet_lite0().eval()
    x = imagenet_photos(4, split="calibration")
    # a residual block (convs + relu6 patterns + add), the stem, and the head's pooling
    names = ["_blocks.2", "conv2d", "adaptive_avg_pool2d"]
    quantizer = KeepFloatQuantizer(make_quantizer(), names)
    q = _quantize(model, x, quantizer)
    kept = set(quantizer.kept_float)
    assert {"conv2d", "add", "adaptive_avg_pool2d"} <= kept
    for node in q.graph.nodes:
        if node.name in kept and node.target == A.conv2d.default:
            assert node.args[1].op == "get_attr", f"{node.name} still has a quantized weight"
    with torch.no_grad():
        assert_sqnr(model(x), q(x), min_db=15)
