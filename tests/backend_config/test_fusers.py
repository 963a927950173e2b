"""Every fuser method of every ready config fuses like upstream's: same fused module type,
same outputs (post-training, eval mode), same refusals (QAT with batch norm on oneDNN)."""

from __future__ import annotations

import copy
import importlib
import operator

import pytest
import torch
import torch.nn.functional as F
from backend_config.oracle_compare import translate
from torch import nn
from torch.ao.quantization.backend_config import utils as upstream_utils

import fxquant.nn.intrinsic as nni
from fxquant.backend_config import utils
from fxquant.backend_config.patterns import MatchAllNode

# a function in a pattern is fused as its module counterpart
_FUNCTION_MODULES = {F.relu: nn.ReLU, torch.relu: nn.ReLU, F.leaky_relu: nn.LeakyReLU,
                     torch.tanh: nn.Tanh}
_MODULE_ARGS = {nn.Linear: (4, 4), nn.BatchNorm1d: (4,), nn.BatchNorm2d: (4,),
                nn.BatchNorm3d: (4,)}
_CONV_INPUT_SHAPES = {1: (2, 4, 6), 2: (2, 4, 6, 6), 3: (2, 4, 3, 4, 4)}


def _leaf(p):
    if p is MatchAllNode or p in (torch.add, operator.add):
        return p
    if p in _FUNCTION_MODULES:
        return _FUNCTION_MODULES[p]()
    if issubclass(p, (nn.modules.conv._ConvNd,)):
        return p(4, 4, 1)
    return p(*_MODULE_ARGS.get(p, ()))


def _instantiate(pattern):
    return tuple(_instantiate(p) for p in pattern) if isinstance(pattern, tuple) else _leaf(pattern)


def _randomize_bn(modules):
    for m in modules:
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)


def _flat(matched):
    return [x for m in matched for x in (_flat(m) if isinstance(m, tuple) else [m])]


def _example_input(modules):
    for m in modules:
        if isinstance(m, nn.modules.conv._ConvNd):
            return torch.randn(_CONV_INPUT_SHAPES[len(m.kernel_size)])
        if isinstance(m, nn.Linear):
            return torch.randn(3, 4)
    for m in modules:  # batch norm + relu
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            return torch.randn(_CONV_INPUT_SHAPES[2 if isinstance(m, nn.BatchNorm2d) else 3])
    raise AssertionError(f"no input for {modules}")


def _readable(pattern) -> str:
    if isinstance(pattern, tuple):
        return "(" + ",".join(_readable(p) for p in pattern) + ")"
    return {operator.add: "operator.add", torch.add: "torch.add"}.get(pattern, pattern.__name__)


def _fuser_cases():
    cases = []
    # x86, fbgemm, qnnpack and executorch build their fusions with native's builders
    for name in ["native", "onednn"]:
        up = getattr(importlib.import_module(f"torch.ao.quantization.backend_config.{name}"),
                     f"get_{name}_backend_config")()
        ours = getattr(importlib.import_module(f"fxquant.backend_config.{name}"),
                       f"get_{name}_backend_config")()
        up_map, our_map = (upstream_utils.get_fuser_method_mapping(up),
                           utils.get_fuser_method_mapping(ours))
        for up_pattern, up_fuser in up_map.items():
            pattern = translate(up_pattern)
            cases.append(pytest.param(pattern, up_fuser, our_map[pattern],
                                      id=f"{name}-{_readable(pattern)}"))
    return cases


FUSER_CASES = _fuser_cases()


@pytest.mark.parametrize(("pattern", "up_fuser", "our_fuser"), FUSER_CASES)
def test_post_training_fusion_matches_upstream(pattern, up_fuser, our_fuser):
    matched = _instantiate(pattern)
    modules = [m for m in _flat(matched) if isinstance(m, nn.Module)]
    _randomize_bn(modules)
    for m in modules:
        m.eval()
    up_fused = up_fuser(False, *copy.deepcopy(matched))
    our_fused = our_fuser(False, *copy.deepcopy(matched))
    assert type(our_fused) is translate(type(up_fused))
    x = _example_input(modules)
    with torch.no_grad():
        if isinstance(our_fused, (nni.ConvAdd2d, nni.ConvAddReLU2d)):  # two inputs
            other = torch.randn_like(up_fused[0](x))
            expected, got = up_fused(x, other), our_fused(x, other)
        else:
            expected, got = up_fused(x), our_fused(x)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(("pattern", "up_fuser", "our_fuser"), FUSER_CASES)
def test_qat_fusion_matches_upstream(pattern, up_fuser, our_fuser):
    matched = _instantiate(pattern)
    try:
        expected = type(up_fuser(True, *copy.deepcopy(matched)))
    except Exception:  # noqa: BLE001  # upstream raises a bare Exception for ConvTranspose + bn
        with pytest.raises(NotImplementedError):
            our_fuser(True, *copy.deepcopy(matched))
        return
    assert type(our_fuser(True, *copy.deepcopy(matched))) is translate(expected)


def _label_leaves(pattern, prefix="n"):
    """The pattern with every leaf replaced by a unique label, standing in for graph nodes."""
    if isinstance(pattern, tuple):
        return tuple(_label_leaves(p, f"{prefix}{i}") for i, p in enumerate(pattern))
    return prefix


def test_onednn_root_node_and_extra_inputs_getters_match_upstream():
    up = importlib.import_module("torch.ao.quantization.backend_config.onednn") \
        .get_onednn_backend_config()
    ours = importlib.import_module("fxquant.backend_config.onednn").get_onednn_backend_config()
    up_roots = upstream_utils.get_fusion_pattern_to_root_node_getter(up)
    our_roots = utils.get_fusion_pattern_to_root_node_getter(ours)
    up_extras = upstream_utils.get_fusion_pattern_to_extra_inputs_getter(up)
    our_extras = utils.get_fusion_pattern_to_extra_inputs_getter(ours)
    assert len(our_roots) == len(our_extras) == 16
    for up_pattern, up_getter in up_roots.items():
        pattern = translate(up_pattern)
        nodes = _label_leaves(pattern)
        assert our_roots[pattern](nodes) == up_getter(nodes)
        assert our_extras[pattern](nodes) == up_extras[up_pattern](nodes)
