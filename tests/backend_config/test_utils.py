"""The lookup and printing helpers, and the pattern-format conversions behind them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization.backend_config import utils as upstream_utils

import fxquant.nn.intrinsic as nni
from fxquant.backend_config import BackendPatternConfig, get_native_backend_config, utils
from fxquant.backend_config.patterns import (
    fuser_method_in_reversed_nested_format,
    reverse_sequential_pattern,
)

# (public name, op): boolean-dispatch wrappers all report the same __name__, so ids use ours
BOOLEAN_DISPATCH = {
    name: getattr(F, name)
    for name in ("max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d",
                 "adaptive_max_pool2d", "adaptive_max_pool3d", "fractional_max_pool2d",
                 "fractional_max_pool3d")
}


@pytest.mark.parametrize("op", list(BOOLEAN_DISPATCH.values()), ids=list(BOOLEAN_DISPATCH))
def test_boolean_dispatch_names_match_upstream(op):
    assert utils.remove_boolean_dispatch_from_name(op) == \
        upstream_utils.remove_boolean_dispatch_from_name(op)
    assert utils.remove_boolean_dispatch_from_name(op).startswith("torch.nn.functional.")


@pytest.mark.parametrize("pattern", [
    nn.Linear, "reshape", (F.max_pool2d, nn.ReLU), (nn.ReLU, (torch.add, F.max_pool1d)),
], ids=["module", "method-name", "tuple", "nested"])
def test_pattern_to_human_readable_matches_upstream(pattern):
    assert utils.pattern_to_human_readable(pattern) == \
        upstream_utils.pattern_to_human_readable(pattern)


def test_entry_to_pretty_str_lays_out_one_item_per_line():
    entry = BackendPatternConfig((nn.Linear, F.relu)).to_dict()
    entry["num_tensor_args_to_observation_type"] = {1: "shared"}
    text = utils.entry_to_pretty_str(entry)
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert lines[1].startswith("  'pattern': (<class 'torch.nn.modules.linear.Linear'>")
    assert "  'num_tensor_args_to_observation_type': {" in lines
    assert "    1: shared," in lines
    assert any(line.startswith("  'observation_type': ObservationType.") for line in lines)


@pytest.mark.parametrize(("pattern", "expected"), [
    (nn.Linear, nn.Linear),
    ((nn.Linear, nn.ReLU), (nn.ReLU, nn.Linear)),
    ((nn.Conv2d, nn.BatchNorm2d, nn.ReLU), (nn.ReLU, (nn.BatchNorm2d, nn.Conv2d))),
], ids=["single", "pair", "triple"])
def test_reverse_sequential_pattern(pattern, expected):
    assert reverse_sequential_pattern(pattern) == expected


def test_fuser_method_is_reversed_to_the_matcher_order():
    calls = []

    def fuse(is_qat, conv, bn, relu):
        calls.append((is_qat, conv, bn, relu))
        return nn.Identity()

    config = BackendPatternConfig(("conv", "bn", "relu")).set_fuser_method(fuse)
    fuser_method_in_reversed_nested_format(config)(True, "RELU", ("BN", "CONV"))
    assert calls == [(True, "CONV", "BN", "RELU")]
    with pytest.raises(TypeError, match="tuple pattern"):
        fuser_method_in_reversed_nested_format(BackendPatternConfig(nn.Linear)
                                               .set_fuser_method(fuse))
    with pytest.raises(ValueError, match="no fuser method"):
        fuser_method_in_reversed_nested_format(BackendPatternConfig(nn.Linear))


def test_native_lookup_tables():
    config = get_native_backend_config()
    fusers = utils.get_fuser_method_mapping(config)
    fused = fusers[(nn.ReLU, nn.Linear)](False, nn.ReLU(), nn.Linear(2, 2))
    assert isinstance(fused, nni.LinearReLU)
    assert utils.get_fused_module_classes(config).count(nni.LinearReLU) == 1
    assert utils.get_pattern_to_input_type_to_index(config)[F.linear] == {"weight": 1, "bias": 2}
    assert utils.get_root_module_to_quantized_reference_module(config)[nn.Conv2d].__module__ \
        .startswith("fxquant.nn.quantized.reference")
    assert utils.get_fusion_pattern_to_root_node_getter(config) == {}
    # upstream's private names stay available for code ported from it
    assert utils._get_pattern_in_reversed_nested_tuple_format(
        BackendPatternConfig((nn.Linear, nn.ReLU))) == (nn.ReLU, nn.Linear)
