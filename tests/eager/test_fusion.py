"""fuse_modules / fuse_modules_qat give upstream's model, in place or on a copy."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

import fxquant.eager as fe
from fxquant.eager import NoFuserMethodError, fuse_known_modules, fuse_modules, fuse_modules_qat


def _types(model):
    return [(n, type(m).__name__) for n, m in model.named_modules()]


@pytest.mark.parametrize("is_qat", [False, True], ids=["ptq", "qat"])
def test_fused_cnn_matches_upstream(ours_and_upstream, models, is_qat):
    ours, theirs = ours_and_upstream(models.ConvBnReLUNet)
    for m in (ours, theirs):
        models.set_bn_stats(m)
        m.train(is_qat)
    fuse, upstream_fuse = (
        (fuse_modules_qat, tq.fuse_modules_qat) if is_qat else (fuse_modules, tq.fuse_modules)
    )
    fused = fuse(ours, models.FUSE_GROUPS)
    expected = upstream_fuse(theirs, models.FUSE_GROUPS)
    assert _types(fused) == _types(expected)
    assert fused is not ours and isinstance(ours.bn1, nn.BatchNorm2d)  # not in place
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(fused.eval()(x), expected.eval()(x))


def test_single_list_and_inplace(models):
    model = models.build(models.MLP, fe).eval()
    x = torch.randn(3, 16)
    before = model(x)
    result = fuse_modules(model, ["fc1", "relu"], inplace=True)
    assert result is model
    assert type(model.fc1).__name__ == "LinearReLU" and isinstance(model.relu, nn.Identity)
    assert torch.equal(model(x), before)


def test_nested_names_are_resolved():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())).eval()
    fused = fuse_modules(model, [["0.0", "0.1"]])
    assert type(fused[0][0]).__name__ == "ConvReLU2d"


def test_hooks_move_to_the_fused_module():
    conv, relu = nn.Conv2d(1, 2, 1).eval(), nn.ReLU().eval()
    calls = []
    conv.register_forward_pre_hook(lambda m, i: calls.append("pre"))
    relu.register_forward_hook(lambda m, i, o: calls.append("post"))
    fused, identity = fuse_known_modules([conv, relu], is_qat=False)
    fused(torch.randn(1, 1, 2, 2))
    assert calls == ["pre", "post"]
    assert isinstance(identity, nn.Identity) and identity.training is False


def test_unknown_sequence_names_the_group():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.GELU()).eval()
    with pytest.raises(NoFuserMethodError, match=r"\['0', '1'\]"):
        fuse_modules(model, ["0", "1"])


def test_unknown_name_is_reported():
    with pytest.raises(AttributeError, match="'nope'"):
        fuse_modules(nn.Sequential(nn.Conv2d(1, 2, 1)), ["0", "nope"])


def test_custom_fuser_method_via_config():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.GELU()).eval()
    config = {"additional_fuser_method_mapping": {
        (nn.Conv2d, nn.GELU): lambda is_qat, conv, gelu: nn.Sequential(conv, gelu)}}
    fused = fuse_modules(model, ["0", "1"], fuse_custom_config_dict=config)
    assert isinstance(fused[0], nn.Sequential) and isinstance(fused[1], nn.Identity)
