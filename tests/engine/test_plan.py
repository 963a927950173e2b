"""Planning: grouping of annotated sites, sharing rules, and annotation errors."""

from __future__ import annotations

import pytest
import torch
from pt2e_helpers import ACT, ACT_HIST, WEIGHT, A, export
from torch import nn

from fxquant import MinMaxObserver
from fxquant.engine.errors import AnnotationError
from fxquant.engine.plan import plan_observers
from fxquant.pt2e.quantizer import (
    DerivedQuantizationSpec,
    QuantizationSpec,
    SharedQuantizationSpec,
)
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map, annotate_output_qspec


class AddCat(nn.Module):
    def forward(self, x, y):
        a = torch.relu(x)
        return torch.cat([a + y, a], dim=1)


def _graph():
    gm = export(AddCat(), torch.randn(2, 3), torch.randn(2, 3))
    relu, add, cat = (next(n for n in gm.graph.nodes if n.target == t)
                      for t in (A.relu.default, A.add.Tensor, A.cat.default))
    return gm, relu, add, cat


def test_edge_reuses_producer_output_observer_when_quantized_alike():
    gm, relu, add, cat = _graph()
    annotate_output_qspec(relu, ACT)
    annotate_input_qspec_map(add, relu, ACT)
    annotate_input_qspec_map(cat, relu, ACT)
    plan = plan_observers(gm)
    # relu's output and both edges out of it: one group
    assert plan.group_of[relu] == plan.group_of[(relu, add)] == plan.group_of[(relu, cat)]
    assert len(plan.groups) == 1


def test_different_dtype_edge_gets_its_own_group():
    gm, relu, add, _ = _graph()
    annotate_output_qspec(relu, ACT)
    int8 = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127,
                            qscheme=torch.per_tensor_affine, observer_or_fake_quant_ctr=MinMaxObserver)
    annotate_input_qspec_map(add, relu, int8)
    plan = plan_observers(gm)
    assert plan.group_of[relu] != plan.group_of[(relu, add)]


def test_implicit_sharing_can_be_disabled():
    gm, relu, add, _ = _graph()
    annotate_output_qspec(relu, ACT)
    annotate_input_qspec_map(add, relu, ACT)
    add.meta["quantization_annotation"].allow_implicit_sharing = False
    plan = plan_observers(gm)
    assert plan.group_of[relu] != plan.group_of[(relu, add)]


def test_shared_specs_are_transitive():
    gm, relu, add, cat = _graph()
    y = add.args[1]
    annotate_input_qspec_map(add, relu, ACT)
    annotate_input_qspec_map(add, y, SharedQuantizationSpec((relu, add)))
    annotate_output_qspec(add, SharedQuantizationSpec((relu, add)))
    annotate_input_qspec_map(cat, add, SharedQuantizationSpec(add))
    annotate_output_qspec(cat, SharedQuantizationSpec((add, cat)))
    plan = plan_observers(gm)
    groups = {plan.group_of[s] for s in [(relu, add), (y, add), add, (add, cat), cat]}
    assert len(groups) == 1
    (group,) = plan.groups
    assert group.spec is ACT  # the root spec is the one the chain points to
    assert "relu->add" in str(plan)


def test_root_spec_prefers_node_outputs():
    gm, relu, add, _ = _graph()
    annotate_output_qspec(relu, ACT_HIST)
    annotate_input_qspec_map(add, relu, ACT)  # same quantization, other observer
    plan = plan_observers(gm)
    assert plan.groups[plan.group_of[(relu, add)]].spec is ACT_HIST


def test_derived_spec_is_its_own_group():
    gm = export(nn.Linear(3, 2), torch.randn(2, 3))
    linear = next(n for n in gm.graph.nodes if n.target == A.linear.default)
    x, w, b = linear.args
    annotate_input_qspec_map(linear, x, ACT)
    annotate_input_qspec_map(linear, w, WEIGHT)
    bias = DerivedQuantizationSpec(
        derived_from=[(x, linear), (w, linear)], derive_qparams_fn=lambda obs: (None, None),
        dtype=torch.int32, quant_min=-(2**31), quant_max=2**31 - 1, qscheme=torch.per_channel_symmetric, ch_axis=0)
    annotate_input_qspec_map(linear, b, bias)
    plan = plan_observers(gm)
    assert len(plan.groups) == 3
    assert isinstance(plan.groups[plan.group_of[(b, linear)]].spec, DerivedQuantizationSpec)


def test_annotation_of_a_missing_edge_is_named():
    gm, _relu, add, cat = _graph()
    from fxquant.pt2e.quantizer import QuantizationAnnotation

    cat.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map={add.args[1]: ACT})
    with pytest.raises(AnnotationError, match="is not one of its arguments"):
        plan_observers(gm)


def test_shared_spec_pointing_at_unannotated_site_is_named():
    gm, relu, add, _ = _graph()
    annotate_output_qspec(add, SharedQuantizationSpec(relu))
    with pytest.raises(AnnotationError, match="shares its quantization with relu, which is not annotated"):
        plan_observers(gm)


def test_annotate_helper_rejects_non_inputs():
    _gm, relu, _add, cat = _graph()
    with pytest.raises(ValueError, match="is not an input of"):
        annotate_input_qspec_map(relu, cat, ACT)
