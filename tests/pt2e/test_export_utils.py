"""Train/eval switches for exported models, against the eager model in the same mode."""

from __future__ import annotations

import copy

import pytest
import torch
from pt2e_helpers import A, nodes
from torch import nn

from fxquant.pt2e.export_utils import (
    WrapperModule,
    _disallow_eval_train,
    allow_exported_model_train_eval,
    model_is_exported,
    move_exported_model_to_eval,
    move_exported_model_to_train,
)


class DropBn(nn.Module):
    """Batch norm with custom momentum/eps, dropout, feature dropout and in-place dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4, momentum=0.3, eps=1e-3)
        self.drop2d = nn.Dropout2d(0.25)
        self.drop = nn.Dropout(0.5)
        self.drop_inplace = nn.Dropout(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop2d(torch.relu(self.bn(self.conv(x))))
        return self.drop_inplace(self.drop(y) * 2)


DROPOUT_OPS = (A.dropout.default, A.dropout_.default, A.feature_dropout.default)


def _flags(gm):
    bn = [n.args[5:8] for n in nodes(gm, A.batch_norm.default)]
    drop = [n.args[2] for n in gm.graph.nodes if n.target in DROPOUT_OPS]
    return bn, drop


def _export(model: nn.Module, training: bool) -> torch.fx.GraphModule:
    x = torch.randn(4, 3, 6, 6)  # the exported graph guards on this batch size
    return torch.export.export(copy.deepcopy(model).train(training), (x,)).module()


@pytest.mark.parametrize("captured_in_training", [True, False], ids=["captured-train", "captured-eval"])
def test_eval_then_train_match_the_eager_model(captured_in_training):
    model = DropBn()
    gm = _export(model, captured_in_training)
    x = torch.randn(4, 3, 6, 6)

    move_exported_model_to_eval(gm)
    gm.graph.lint()
    assert _flags(gm) == ([(False, 0.3, 1e-3)], [False, False, False])
    assert torch.equal(gm(x), model.eval()(x))
    assert torch.equal(gm.bn.running_mean, model.bn.running_mean)  # eval does not update stats

    move_exported_model_to_train(gm)
    assert _flags(gm) == ([(True, 0.3, 1e-3)], [True, True, True])
    torch.manual_seed(7)
    out = gm(x)
    torch.manual_seed(7)
    ref = model.train()(x)
    torch.testing.assert_close(out, ref)
    assert (out == 0).float().mean() > 0.3  # dropout is active
    # running statistics move with the custom momentum
    torch.testing.assert_close(gm.bn.running_mean, model.bn.running_mean)
    torch.testing.assert_close(gm.bn.running_var, model.bn.running_var)


def test_switches_are_idempotent_and_keep_dropout_probabilities():
    gm = _export(DropBn(), True)
    p_before = [n.args[1] for n in gm.graph.nodes if n.target in DROPOUT_OPS]
    move_exported_model_to_eval(gm)
    code = gm.code
    assert move_exported_model_to_eval(gm) is gm
    assert gm.code == code
    move_exported_model_to_train(gm)
    train_code = gm.code
    move_exported_model_to_train(gm)
    assert gm.code == train_code
    assert [n.args[1] for n in gm.graph.nodes if n.target in DROPOUT_OPS] == p_before == [0.25, 0.5, 0.2]


def test_allow_train_eval_makes_train_and_eval_switch_the_graph():
    model = DropBn()
    gm = _export(model, True)
    with pytest.raises(NotImplementedError):  # torch's exported modules refuse by default
        gm.eval()
    assert allow_exported_model_train_eval(gm) is gm
    x = torch.randn(4, 3, 6, 6)
    assert gm.eval() is gm
    assert not gm.training and not gm.bn.training
    assert torch.equal(gm(x), model.eval()(x))
    gm.train()
    assert gm.training and _flags(gm)[0] == [(True, 0.3, 1e-3)]
    gm.train(False)
    assert _flags(gm) == ([(False, 0.3, 1e-3)], [False, False, False])


def test_disallowed_train_eval_points_to_the_switches():
    gm = _disallow_eval_train(_export(DropBn(), True))
    with pytest.raises(NotImplementedError, match="move_exported_model_to_train"):
        gm.train()
    with pytest.raises(NotImplementedError, match="allow_exported_model_train_eval"):
        gm.eval()


def test_switches_reject_eager_modules():
    with pytest.raises(TypeError, match=r"model.eval\(\)"):
        move_exported_model_to_eval(DropBn())


def test_model_is_exported():
    model = DropBn()
    assert model_is_exported(_export(model, False))
    assert not model_is_exported(torch.fx.symbolic_trace(model))
    assert not model_is_exported(model)


def test_wrapper_module_exports_a_function():
    wrapped = WrapperModule(lambda x, y: torch.relu(x) + y)
    x, y = torch.randn(3), torch.randn(3)
    assert torch.equal(wrapped(x, y), torch.relu(x) + y)
    gm = torch.export.export(wrapped, (x, y)).module()
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"] == [A.relu.default, A.add.Tensor]
    assert torch.equal(gm(x, y), torch.relu(x) + y)
