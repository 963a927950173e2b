"""The lowering table: one list of rules for both graph dialects, ordered by stage, each
described."""

from __future__ import annotations

import pytest
import torch

from fxquant.lowering import INT8_RULES, LoweringRule, describe_rules
from fxquant.lowering.rule import Dialect
from fxquant.lowering.table import rules_for


def test_table_is_ordered_by_stage_and_names_are_unique():
    stages = [rule.stage for rule in INT8_RULES]
    assert stages == sorted(stages)
    names = [rule.name for rule in INT8_RULES]
    assert len(names) == len(set(names))
    # kernels before the quantize-sinking fallback, weight folding last
    assert names.index("conv2d") < names.index("sink_quantize")
    assert names[-1] == "fold_weight_dequantize"


def test_describe_rules_lists_every_rule():
    text = describe_rules()
    assert all(rule.name in text for rule in INT8_RULES)
    assert len(text.splitlines()) == len(INT8_RULES)


def test_a_rule_needs_a_name_and_anchors():
    with pytest.raises(ValueError, match="name and at least one anchor"):
        LoweringRule(name="x", anchors=frozenset(), match=lambda n, gm: None, rewrite=lambda n, m, gm: n)
    rule = LoweringRule(name="x", anchors=frozenset({torch.ops.aten.relu.default}),
                        match=lambda n, gm: None, rewrite=lambda n, m, gm: n)
    assert rule.exact and rule.stage == 1


def test_one_table_serves_both_dialects():
    """FX rules sit in the same table as the PT2E rules; the boundary rules shared by both
    dialects are the same objects, and each dialect's selection keeps the table order."""
    pt2e, fx = rules_for(Dialect.PT2E), rules_for(Dialect.FX)
    assert set(pt2e) | set(fx) == set(INT8_RULES)
    shared = {rule.name for rule in set(pt2e) & set(fx)}
    assert shared == {"dequantize", "requantize"}
    fx_names = [rule.name for rule in fx]
    assert fx_names[:3] == ["fx_quantize", "dequantize", "requantize"]  # stage 0 first
    assert {"fx_module", "fx_functional", "fx_binary", "fx_same_qparams", "fx_dynamic_module"} <= set(fx_names)
    assert fx_names.index("fx_module") < fx_names.index("fx_same_qparams")
    assert all(not rule.name.startswith("fx_") for rule in pt2e)


def test_describe_rules_names_each_rules_dialects():
    lines = {line.split()[1]: line.split()[2] for line in describe_rules().splitlines()}
    assert lines["conv2d"] == "pt2e"
    assert lines["fx_module"] == "fx"
    assert lines["dequantize"] == "pt2e+fx"


def test_a_rule_needs_dialects():
    with pytest.raises(ValueError, match="dialects must be a non-empty set"):
        LoweringRule(name="x", anchors=frozenset({torch.ops.aten.relu.default}), dialects=frozenset(),
                     match=lambda n, gm: None, rewrite=lambda n, m, gm: n)
    with pytest.raises(ValueError, match="dialects must be a non-empty set"):
        LoweringRule(name="x", anchors=frozenset({torch.ops.aten.relu.default}), dialects=frozenset({"fx"}),  # type: ignore[arg-type]  # the mistake under test
                     match=lambda n, gm: None, rewrite=lambda n, m, gm: n)
