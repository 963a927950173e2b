"""prepare_qat_pt2e: the order of the quantizer hooks and the conv-bn rewrite, fake-quantizers
on the scaled weight, and the train/eval guard on the result."""

from __future__ import annotations

import pytest
import torch
from pt2e_helpers import A, nodes
from torch import nn
from torch.fx import GraphModule

from fxquant import (
    FakeQuantize,
    FakeQuantizeBase,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
)
from fxquant.engine.qat_conv_bn import qat_conv_bn_output
from fxquant.pt2e._qat import prepare_qat_pt2e
from fxquant.pt2e.quantizer import QuantizationSpec, Quantizer
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map, annotate_output_qspec

ACT = QuantizationSpec(
    dtype=torch.uint8, quant_min=0, quant_max=255, qscheme=torch.per_tensor_affine,
    observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver),
)
WEIGHT = QuantizationSpec(
    dtype=torch.int8, quant_min=-127, quant_max=127, qscheme=torch.per_channel_symmetric, ch_axis=0,
    observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver),
)


class RecordingQuantizer(Quantizer):
    """Annotates convs (input, weight, output after the batch norm) and records the hooks."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.weight_producers: list[object] = []
        self.callback_sites = 0

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        self.calls.append("transform")
        assert nodes(model, A.batch_norm.default)[0].args[0].target == A.conv2d.default  # not rewritten yet
        return model

    def annotate(self, model: GraphModule) -> GraphModule:
        self.calls.append("annotate")
        for n in nodes(model, A.conv2d.default):
            self.weight_producers.append(n.args[1].target)
            annotate_input_qspec_map(n, n.args[0], ACT)
            annotate_input_qspec_map(n, n.args[1], WEIGHT)
            annotate_output_qspec(qat_conv_bn_output(n) or n, ACT)
        return model

    def validate(self, model: GraphModule) -> None:
        self.calls.append("validate")

    def prepare_obs_or_fq_callback(self, model, edge_or_node_to_obs_or_fq) -> None:
        self.calls.append("callback")
        assert all(isinstance(m, FakeQuantizeBase) for m in edge_or_node_to_obs_or_fq.values())
        self.callback_sites = len(edge_or_node_to_obs_or_fq)


class ConvBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def _prepared(quantizer: Quantizer) -> GraphModule:
    x = torch.randn(2, 3, 6, 6)
    gm = torch.export.export(ConvBn().train(), (x,)).module()
    gm.meta["user_key"] = "kept"
    return prepare_qat_pt2e(gm, quantizer)


def test_hooks_run_in_order_around_the_conv_bn_rewrite():
    quantizer = RecordingQuantizer()
    gm = _prepared(quantizer)
    assert quantizer.calls == ["transform", "annotate", "validate", "callback"]
    assert quantizer.weight_producers == [A.mul.Tensor]  # annotation saw the scaled weight
    assert quantizer.callback_sites == 3
    assert gm.meta["user_key"] == "kept"


def test_fake_quantizers_sit_on_the_scaled_weight_and_after_the_batch_norm():
    gm = _prepared(RecordingQuantizer())
    gm.graph.lint()
    fq_nodes = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), FakeQuantize)]
    observed = sorted(str(n.args[0].target) for n in fq_nodes)
    assert observed == sorted(["x", str(A.mul.Tensor), str(A.batch_norm.default)])
    (conv,) = nodes(gm, A.conv2d.default)
    assert conv.args[1].op == "call_module" and conv.args[1].args[0].target == A.mul.Tensor
    out = gm(torch.randn(2, 3, 6, 6))
    out.sum().backward()
    assert gm.conv.weight.grad is not None and gm.bn.weight.grad is not None


def test_train_and_eval_calls_are_refused_with_directions():
    gm = _prepared(RecordingQuantizer())
    with pytest.raises(NotImplementedError, match="move_exported_model_to_eval"):
        gm.eval()


def test_prepared_model_is_a_plain_graph_module_without_export_hooks():
    # torchao's prepare returns a plain GraphModule: no per-call input checks from
    # torch.export's .module() wrapper (which the input graph has)
    x = torch.randn(2, 3, 6, 6)
    exported = torch.export.export(ConvBn().train(), (x,)).module()
    assert len(exported._forward_pre_hooks) + len(exported._forward_hooks) > 0
    gm = prepare_qat_pt2e(exported, RecordingQuantizer())
    assert len(gm._forward_pre_hooks) == len(gm._forward_hooks) == 0
    assert type(gm).__mro__[1] is GraphModule
    assert gm(x).shape == (2, 4, 4, 4)


def test_eager_module_is_rejected_with_directions():
    with pytest.raises(TypeError, match=r"torch\.export\.export"):
        prepare_qat_pt2e(ConvBn(), RecordingQuantizer())
