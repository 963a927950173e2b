"""X86InductorQuantizer against torchao 0.18's as the oracle: for static, dynamic, PTQ and QAT
configs the prepared graphs observe the same edges with the same kind of observer, and the
converted graphs have the same quantize/dequantize ops at the same places.

Dynamic configs: torchao quantizes the activations of convolutions per call too (not only
those of linears), with static per-channel weights; so do we. The one deliberate difference
is the PTQ weight observer (output-aware MSE instead of per-channel min/max, see
``get_default_x86_inductor_quantization_config``): weights are compared by dtype, scheme and
axis, not by observer class.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torchao.quantization.pt2e.quantize_pt2e as ao_flow
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as ao_x86


class ConvNet(nn.Module):
    """conv+relu -> max-pool -> conv + skip add + relu -> conv -> flatten -> linear+relu ->
    linear + add: every pattern family of the recipe (post-ops as modules, which is how
    torchao's source partitions find them)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)
        self.fc1, self.fc2 = nn.Linear(36, 5), nn.Linear(5, 5)
        self.r1, self.r2, self.r3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.max_pool2d(self.r1(self.c1(x)), 2)
        y = self.c3(self.r2(self.c2(y) + y))
        y = self.r3(self.fc1(torch.flatten(y, 1)))
        return self.fc2(y) + y


# Our observers that compute upstream's qparams from upstream's statistics (bit for bit).
_UPSTREAM_NAMES = {"GreedyHistogramObserver": "HistogramObserver"}


def _observers(gm: torch.fx.GraphModule) -> list[tuple[object, ...]]:
    """(observed node, its readers, observer kind) for every observer call of ``gm``."""
    rows = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or "activation_post_process" not in str(node.target):
            continue
        observer = getattr(gm, str(node.target))
        source = node.args[0]
        is_weight = source.op == "get_attr"
        kind = (
            (str(observer.dtype), str(observer.qscheme), getattr(observer, "ch_axis", None))
            if is_weight and type(observer).__name__ != "FusedMovingAvgObsFakeQuantize"
            else _UPSTREAM_NAMES.get(type(observer).__name__, type(observer).__name__)
        )
        rows.append((source.name, tuple(sorted(u.name for u in node.users)), kind))
    return sorted(rows)


def _prepared(flow: str, is_dynamic: bool, is_qat: bool) -> torch.fx.GraphModule:
    torch.manual_seed(0)
    model, x = ConvNet(), torch.randn(2, 3, 8, 8)
    model.train(is_qat)
    gm = torch.export.export(model, (x,)).module()
    if flow == "torchao":
        quantizer = ao_x86.X86InductorQuantizer().set_global(
            ao_x86.get_default_x86_inductor_quantization_config(is_qat=is_qat, is_dynamic=is_dynamic))
        prepare = ao_flow.prepare_qat_pt2e if is_qat else ao_flow.prepare_pt2e
    else:
        quantizer = X86InductorQuantizer().set_global(
            get_default_x86_inductor_quantization_config(is_qat=is_qat, is_dynamic=is_dynamic))
        prepare = prepare_qat_pt2e if is_qat else prepare_pt2e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare(gm, quantizer)
        with torch.no_grad():
            prepared(x)
            prepared(torch.randn_like(x))
    return prepared


MODES = [pytest.param(d, q, id=f"{'dynamic' if d else 'static'}-{'qat' if q else 'ptq'}")
         for d in (True, False) for q in (False, True)]


@pytest.mark.parametrize(("is_dynamic", "is_qat"), MODES)
def test_prepared_graph_observes_the_same_edges_as_torchao(is_dynamic, is_qat):
    ours, oracle = _prepared("fxquant", is_dynamic, is_qat), _prepared("torchao", is_dynamic, is_qat)
    assert _observers(ours) == _observers(oracle)


@pytest.mark.parametrize(("is_dynamic", "is_qat"), MODES)
def test_converted_graph_has_torchaos_quantize_dequantize_ops(is_dynamic, is_qat):
    ours, oracle = _prepared("fxquant", is_dynamic, is_qat), _prepared("torchao", is_dynamic, is_qat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, oracle = convert_pt2e(ours), ao_flow.convert_pt2e(oracle)

    def ops(gm: torch.fx.GraphModule) -> list[tuple[str, int]]:
        # every op in order, with its reader count: dequantizes are shared or duplicated
        # per reader exactly as torchao's DuplicateDQPass does
        return [(str(n.target), len(n.users)) for n in gm.graph.nodes if n.op == "call_function"]

    assert ops(ours) == ops(oracle)


def test_dynamic_config_quantizes_conv_activations_per_call_with_static_weights():
    gm = convert_pt2e(_prepared("fxquant", is_dynamic=True, is_qat=False))
    qd = torch.ops.quantized_decomposed
    for conv in (n for n in gm.graph.nodes if n.target == torch.ops.aten.conv2d.default):
        x, w = conv.args[0], conv.args[1]
        assert x.target == qd.dequantize_per_tensor.tensor  # parameters chosen per call
        assert x.args[0].args[1].args[0].target == qd.choose_qparams.tensor
        assert w.target == qd.dequantize_per_channel.default  # int8 constant, fixed scales
