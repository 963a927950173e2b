"""fuse_fx fuses the same chains into the same module types as upstream's fuse_fx."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.quantization.quantize_fx as upstream_fx

from fxquant.quantize_fx import fuse_fx


@pytest.mark.parametrize("name", ["cnn", "mlp", "resnet"])
def test_fused_modules_like_upstream(fx_models, name):
    model, batches = fx_models.build(name)
    ours = fuse_fx(copy.deepcopy(model))
    upstream = upstream_fx.fuse_fx(copy.deepcopy(model))
    assert [type(m).__name__ for _, m in ours.named_modules()][1:] == \
        [type(m).__name__ for _, m in upstream.named_modules()][1:]
    assert [n.op for n in ours.graph.nodes] == [n.op for n in upstream.graph.nodes]
    with torch.no_grad():
        for x in batches:
            torch.testing.assert_close(ours(x), model(x), rtol=1e-5, atol=1e-5)


def test_train_mode_fuses_for_qat(fx_models):
    # upstream's fuse_fx refuses train-mode models; fxquant builds the QAT containers
    model, _ = fx_models.build("cnn")
    fused = fuse_fx(model.train())
    assert type(fused.conv).__name__ == "ConvBnReLU2d"
    assert isinstance(fused.conv[1], torch.nn.BatchNorm2d)
