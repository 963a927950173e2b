"""The int8 lowering table: one list of rules, ordered by stage, each described."""

from __future__ import annotations

import pytest
import torch

from fxquant.lowering import INT8_RULES, LoweringRule, describe_rules


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
