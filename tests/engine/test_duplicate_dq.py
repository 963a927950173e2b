"""duplicate_dequantize_per_user against torchao's DuplicateDQPass as the oracle: run on the
same q/dq graph, both give the same printed graph (same nodes, order and names)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from pt2e_helpers import ACT, QD, A, FnQuantizer, export, nodes
from torch import nn

from fxquant import PlaceholderObserver
from fxquant.engine.convert import convert_observers_to_qdq
from fxquant.engine.duplicate_dq import duplicate_dequantize_per_user
from fxquant.pt2e.quantize_pt2e import prepare_pt2e
from fxquant.pt2e.quantizer import QuantizationSpec, SharedQuantizationSpec
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map, annotate_output_qspec

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torchao.quantization.pt2e.quantizer.duplicate_dq_pass import DuplicateDQPass

DYNAMIC = QuantizationSpec(dtype=torch.uint8, quant_min=0, quant_max=255, qscheme=torch.per_tensor_affine,
                           is_dynamic=True, observer_or_fake_quant_ctr=PlaceholderObserver)


class FourReaders(nn.Module):
    """relu read by two quantized ops (add, mul) and two float ops (sub, div)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = torch.relu(x)
        return y + 1, y * 2, y - 3, y / 4


def _annotate_four_readers(gm: torch.fx.GraphModule) -> None:
    relu = nodes(gm, A.relu.default)[0]
    annotate_output_qspec(relu, ACT)
    for op in (A.add.Tensor, A.mul.Tensor):
        n = nodes(gm, op)[0]
        annotate_input_qspec_map(n, n.args[0], SharedQuantizationSpec(relu))


class ThreeLinears(nn.Module):
    """One input read by three linears (attention's q/k/v projections)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(6, 4), nn.Linear(6, 4), nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x) + self.k(x) * self.v(x)


def _annotate_linear_inputs(spec: QuantizationSpec):
    def annotate(gm: torch.fx.GraphModule) -> None:
        first = None
        for lin in nodes(gm, A.linear.default):
            shared = spec if first is None else SharedQuantizationSpec((lin.args[0], first))
            annotate_input_qspec_map(lin, lin.args[0], shared)
            first = first or lin
    return annotate


def _qdq_graph(model: nn.Module, annotate, x: torch.Tensor) -> torch.fx.GraphModule:
    gm = prepare_pt2e(export(model, x), FnQuantizer(annotate))
    gm(x)
    return convert_observers_to_qdq(gm)


CASES = [
    pytest.param(FourReaders, _annotate_four_readers, id="float-and-quantized-readers"),
    pytest.param(ThreeLinears, _annotate_linear_inputs(ACT), id="static-shared-input"),
    pytest.param(ThreeLinears, _annotate_linear_inputs(DYNAMIC), id="dynamic-shared-input"),
]


@pytest.mark.parametrize(("make", "annotate"), CASES)
def test_same_graph_as_torchaos_duplicate_dq_pass(make, annotate):
    torch.manual_seed(0)
    x = torch.randn(3, 6) if make is ThreeLinears else torch.randn(3, 4)
    gm = _qdq_graph(make(), annotate, x)
    oracle = DuplicateDQPass()(copy.deepcopy(gm)).graph_module
    ours = duplicate_dequantize_per_user(gm)
    assert str(ours.graph) == str(oracle.graph)
    torch.testing.assert_close(ours(x), oracle(x), rtol=0, atol=0)


def test_annotated_readers_get_copies_float_readers_share():
    gm = duplicate_dequantize_per_user(_qdq_graph(FourReaders(), _annotate_four_readers, torch.randn(3, 4)))
    readers = sorted(sorted(str(u.target) for u in d.users) for d in nodes(gm, QD.dequantize_per_tensor.default))
    assert readers == [["aten.add.Tensor"], ["aten.div.Tensor", "aten.sub.Tensor"], ["aten.mul.Tensor"]]


def test_dynamic_dequantize_stays_shared_static_is_copied():
    x = torch.randn(3, 6)
    dynamic = duplicate_dequantize_per_user(_qdq_graph(ThreeLinears(), _annotate_linear_inputs(DYNAMIC), x))
    [dq] = nodes(dynamic, QD.dequantize_per_tensor.tensor)
    assert len(dq.users) == 3
    static = duplicate_dequantize_per_user(_qdq_graph(ThreeLinears(), _annotate_linear_inputs(ACT), x))
    dqs = nodes(static, QD.dequantize_per_tensor.default)
    assert len(dqs) == 3 and all(len(d.users) == 1 for d in dqs)
    # the copies sit right after the quantize they read, in place of the erased original
    [q] = nodes(static, QD.quantize_per_tensor.default)
    assert q.next.target is QD.dequantize_per_tensor.default
