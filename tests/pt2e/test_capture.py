"""capture(): a clear error for models torch.export cannot capture; composition conflicts."""

from __future__ import annotations

import pytest
import torch
from pt2e_helpers import ACT, A, FnQuantizer, nodes
from torch import nn

from fxquant import MinMaxObserver
from fxquant.pt2e.capture import CaptureError, capture
from fxquant.pt2e.quantizer import ComposableQuantizer, QuantizationSpec
from fxquant.pt2e.quantizer.composable_quantizer import QuantizerConflictError
from fxquant.pt2e.quantizer.utils import annotate_output_qspec


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # branches on a tensor's value: export cannot capture this
            return x * 2
        return x - 1


def test_capture_returns_the_graph_module():
    gm = capture(nn.Sequential(nn.Linear(3, 2), nn.ReLU()).eval(), (torch.randn(4, 3),))
    assert nodes(gm, A.linear.default) and nodes(gm, A.relu.default)


def test_uncapturable_model_names_the_line_and_the_remedy():
    with pytest.raises(CaptureError) as info:
        capture(DataDependent(), (torch.randn(3),))
    message = str(info.value)
    assert "could not capture DataDependent" in message
    assert "test_capture.py" in message and "if x.sum() > 0" in message
    assert "torch.cond" in message


def test_example_inputs_must_be_a_tuple():
    with pytest.raises(TypeError, match="wrap a single tensor as"):
        capture(nn.Linear(2, 2), torch.randn(2, 2))  # type: ignore[arg-type]


def test_composable_quantizer_rejects_rewriting_another_quantizers_annotation():
    gm = capture(nn.Sequential(nn.Linear(3, 3), nn.ReLU()).eval(), (torch.randn(2, 3),))
    int8 = QuantizationSpec(dtype=torch.int8, observer_or_fake_quant_ctr=MinMaxObserver,
                            quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine)

    def first(m):
        annotate_output_qspec(nodes(m, A.relu.default)[0], ACT)

    def second(m):  # ignores is_annotated and overwrites the spec
        annotate_output_qspec(nodes(m, A.relu.default)[0], int8)

    with pytest.raises(QuantizerConflictError, match="FnQuantizer changed the annotation of node"):
        ComposableQuantizer([FnQuantizer(first), FnQuantizer(second)]).annotate(gm)
