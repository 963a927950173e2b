"""fxquant.pt2e.learnable_fake_quantize: torchao's PT2E LearnableFakeQuantize.

torchao is not installed, so the expected values come from the LSQ formulas written out
below (forward bit-exact, gradients to float rounding) and the switch semantics from
torchao 0.18's source: lazy parameters sized by the first batch, observer and range
learning mutually exclusive. End to end: QAT on scikit-learn's digits with it trains and
converts.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import assert_sqnr
from pt2e_helpers import A, FnQuantizer, nodes
from sklearn.datasets import load_digits
from torch import nn
from torch.fx import GraphModule

from fxquant.engine.qat_conv_bn import qat_conv_bn_output
from fxquant.fake_quantize import FakeQuantize
from fxquant.fake_quantize.learnable import LearnableFakeQuantize as EagerLearnableFakeQuantize
from fxquant.observers import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
from fxquant.pt2e._qat import prepare_qat_pt2e
from fxquant.pt2e.export_utils import move_exported_model_to_eval
from fxquant.pt2e.learnable_fake_quantize import (
    LearnableFakeQuantize,
    disable_range_learning,
    enable_range_learning,
)
from fxquant.pt2e.quantize_pt2e import convert_pt2e
from fxquant.pt2e.quantizer import QuantizationSpec
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map, annotate_output_qspec

PER_TENSOR = {"observer": MovingAverageMinMaxObserver, "quant_min": 0, "quant_max": 255}
PER_CHANNEL = {"observer": MovingAveragePerChannelMinMaxObserver, "quant_min": -128, "quant_max": 127,
                   "dtype": torch.qint8, "qscheme": torch.per_channel_symmetric, "ch_axis": 1}


def _lsq_reference(x, scale, zero_point, qmin, qmax, grad_factor, ch_axis=None):
    """LSQ+ forward and the gradients of ``sum(w * y)`` w.r.t. x, scale, zero point, written
    out element-wise (the formulas torchao's module relies on)."""
    shape = [1] * x.dim()
    if ch_axis is not None:
        shape[ch_axis] = -1
    s = scale.reshape(shape)
    z = zero_point.round().clamp(qmin, qmax).reshape(shape)
    q = torch.round(x * (1.0 / s)) + z
    qc = q.clamp(qmin, qmax)
    y = (qc - z) * s
    w = torch.linspace(-1, 2, x.numel()).reshape(x.shape)  # a non-uniform upstream gradient
    inside = q == qc
    dx = torch.where(inside, w, torch.zeros_like(w))
    ds_elem = grad_factor * w * torch.where(inside, q - z - x / s, qc - z)
    dz_elem = torch.where(inside, torch.zeros_like(w), -grad_factor * w * s)
    dims = [d for d in range(x.dim()) if d != ch_axis]
    ds = ds_elem.sum(dims) if ch_axis is not None else ds_elem.sum().reshape(1)
    dz = dz_elem.sum(dims) if ch_axis is not None else dz_elem.sum().reshape(1)
    return y, w, dx, ds, dz


@pytest.mark.parametrize("grad_scaling", [False, True], ids=["g1", "lsq_scaled"])
@pytest.mark.parametrize("kind", ["per_tensor_affine", "per_channel_symmetric"])
def test_forward_and_gradients_follow_the_lsq_formulas(kind, grad_scaling):
    kwargs = PER_TENSOR if kind == "per_tensor_affine" else PER_CHANNEL
    fq = LearnableFakeQuantize(use_grad_scaling=grad_scaling, **kwargs)
    fq(torch.randn(2, 3, 5))  # initialise from the observer
    fq.enable_range_learning()
    with torch.no_grad():  # move the parameters off the observer's estimate
        fq.scale.mul_(0.6)
        if kind == "per_tensor_affine":
            fq.zero_point.add_(17.3)
    x = (torch.randn(2, 3, 5) * 3).requires_grad_()
    ch_axis = None if kind == "per_tensor_affine" else 1
    g = 1.0 / (x.numel() * fq.quant_max) ** 0.5 if grad_scaling else 1.0
    y_ref, w, dx, ds, dz = _lsq_reference(
        x.detach(), fq.scale.detach(), fq.zero_point.detach(), fq.quant_min, fq.quant_max, g, ch_axis
    )
    y = fq(x)
    (y * w).sum().backward()
    assert torch.equal(y, y_ref)
    assert torch.equal(x.grad, dx)
    torch.testing.assert_close(fq.scale.grad, ds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fq.zero_point.grad, dz, rtol=1e-5, atol=1e-6)
    assert (dx == 0).any() and (dx != 0).any()  # both clamped and in-range elements


def test_parameters_are_created_by_the_first_forward_with_the_observer_shape():
    per_tensor, per_channel = LearnableFakeQuantize(**PER_TENSOR), LearnableFakeQuantize(**PER_CHANNEL)
    for fq in (per_tensor, per_channel):
        assert fq.scale is None and fq.zero_point is None
        assert list(fq.parameters()) == [] and "scale" not in fq.state_dict()
    x = torch.randn(4, 6, 3)
    per_tensor(x)
    per_channel(x)
    assert per_tensor.scale.shape == (1,) and per_channel.scale.shape == (6,)
    for fq in (per_tensor, per_channel):
        scale, zero_point = fq.activation_post_process.calculate_qparams()
        assert torch.equal(fq.scale.detach(), scale)
        assert torch.equal(fq.zero_point.detach(), zero_point.float())
        assert fq.zero_point.dtype == torch.float32
        assert not fq.scale.requires_grad  # range learning is off by default
        assert {name for name, _ in fq.named_parameters()} == {"scale", "zero_point"}


def test_first_forward_observes_even_with_the_observer_disabled():
    fq = LearnableFakeQuantize(**PER_TENSOR)
    fq.disable_observer()
    x = torch.rand(16) * 4
    fq(x)
    assert fq.scale is not None
    first = fq.scale.detach().clone()
    fq(x * 10)  # initialised and not observing: the parameters stay
    assert torch.equal(fq.scale.detach(), first)


def test_observer_overwrites_the_parameters_while_enabled():
    fq = LearnableFakeQuantize(**PER_TENSOR)
    fq(torch.rand(16))
    fq(torch.rand(16) * 10)
    scale, _ = fq.activation_post_process.calculate_qparams()
    assert torch.equal(fq.scale.detach(), scale)


def test_range_learning_and_observer_switch_each_other_off():
    fq = LearnableFakeQuantize(**PER_TENSOR)
    fq.enable_range_learning()  # before the first forward: no parameters yet
    assert fq.learning_enabled[0] == 1 and fq.observer_enabled[0] == 0
    fq(torch.randn(8))
    assert fq.scale.requires_grad and fq.zero_point.requires_grad  # created learnable
    fq.enable_observer()
    assert fq.observer_enabled[0] == 1 and fq.learning_enabled[0] == 0
    assert not fq.scale.requires_grad and not fq.zero_point.requires_grad
    fq.enable_range_learning()
    assert fq.observer_enabled[0] == 0 and fq.scale.requires_grad
    fq.disable_observer()  # disabling the observer leaves range learning alone
    assert fq.learning_enabled[0] == 1 and fq.scale.requires_grad
    fq.disable_fake_quant()
    x = torch.randn(8)
    assert torch.equal(fq(x), x)


def test_symmetric_scheme_keeps_the_zero_point_at_zero():
    fq = LearnableFakeQuantize(**PER_CHANNEL)
    fq(torch.randn(2, 3, 4))
    with torch.no_grad():
        fq.zero_point.fill_(5.0)
    fq(torch.randn(2, 3, 4))
    assert torch.equal(fq.zero_point.detach(), torch.zeros(3))


def test_calculate_qparams_clamps_the_scale_and_rounds_the_zero_point():
    fq = LearnableFakeQuantize(**PER_TENSOR)
    with pytest.raises(RuntimeError, match="run a batch through the model"):
        fq.calculate_qparams()
    fq(torch.rand(10))
    with torch.no_grad():
        fq.scale.fill_(-1.0)
        fq.zero_point.fill_(300.4)
    scale, zero_point = fq.calculate_qparams()
    assert torch.equal(scale, fq.eps)
    assert zero_point.dtype == torch.int64 and zero_point.item() == 255


def test_learned_scale_stays_positive():
    fq = LearnableFakeQuantize(**PER_TENSOR)
    fq(torch.rand(10))
    fq.enable_range_learning()
    with torch.no_grad():
        fq.scale.fill_(-0.5)
    out = fq(torch.rand(10))
    assert fq.scale.item() == pytest.approx(float(fq.eps))
    assert torch.isfinite(out).all()


def test_state_dict_restores_into_a_module_that_has_not_run():
    trained = LearnableFakeQuantize(**PER_CHANNEL)
    trained(torch.randn(2, 3, 4))
    trained.enable_range_learning()
    with torch.no_grad():
        trained.scale.mul_(1.5)
    fresh = LearnableFakeQuantize(**PER_CHANNEL)
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.scale.detach(), trained.scale.detach())
    assert fresh.learning_enabled[0] == 1 and fresh.scale.requires_grad
    x = torch.randn(2, 3, 4)
    assert torch.equal(fresh(x), trained(x))
    # and a state dict saved before the first forward loads into a fresh module too
    LearnableFakeQuantize(**PER_CHANNEL).load_state_dict(LearnableFakeQuantize(**PER_CHANNEL).state_dict())


def test_module_wide_switches_touch_only_pt2e_learnable_fake_quantizers():
    lfq = LearnableFakeQuantize(**PER_TENSOR)
    eager_lfq = EagerLearnableFakeQuantize(MovingAverageMinMaxObserver)
    model = nn.Sequential(nn.Linear(4, 4), lfq, FakeQuantize(), eager_lfq)
    model(torch.randn(8, 4))
    estimate = lfq.scale.detach().clone()
    model.apply(enable_range_learning)
    assert lfq.learning_enabled[0] == 1 and lfq.observer_enabled[0] == 0
    assert model[2].observer_enabled[0] == 1 and eager_lfq.learning_enabled[0] == 0
    model(torch.randn(8, 4) * 10).sum().backward()
    assert lfq.scale.grad is not None
    assert torch.equal(lfq.scale.detach(), estimate)  # the observer no longer overwrites it
    model.apply(disable_range_learning)
    assert lfq.learning_enabled[0] == 0 and not lfq.scale.requires_grad


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="strictly less"):
        LearnableFakeQuantize(MovingAverageMinMaxObserver, quant_min=5, quant_max=5)
    with pytest.raises(ValueError, match="outside the range"):
        LearnableFakeQuantize(MovingAverageMinMaxObserver, quant_min=-128, quant_max=127)
    fq = LearnableFakeQuantize(**PER_CHANNEL)
    fq(torch.randn(2, 3, 4))
    fq.disable_observer()
    with pytest.raises(ValueError, match="per-channel scales"):
        fq(torch.randn(2, 5, 4))


# ---- QAT end to end ----------------------------------------------------------------------


class _DigitsNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(x.flatten(1))


def _lsq_quantizer() -> FnQuantizer:
    act = QuantizationSpec(
        dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine,
        observer_or_fake_quant_ctr=LearnableFakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
            dtype=torch.qint8, use_grad_scaling=True),
    )
    weight = QuantizationSpec(
        dtype=torch.int8, quant_min=-127, quant_max=127, qscheme=torch.per_channel_symmetric,
        ch_axis=0,
        observer_or_fake_quant_ctr=LearnableFakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver, quant_min=-127, quant_max=127,
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, use_grad_scaling=True),
    )

    def annotate(gm: GraphModule) -> None:
        for n in gm.graph.nodes:
            if n.op != "call_function" or n.target not in (A.conv2d.default, A.linear.default):
                continue
            annotate_input_qspec_map(n, n.args[0], act)
            annotate_input_qspec_map(n, n.args[1], weight)
            out = qat_conv_bn_output(n) or n
            users = list(out.users)
            if len(users) == 1 and users[0].target == A.relu.default:
                out = users[0]
            annotate_output_qspec(out, act)

    return FnQuantizer(annotate)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
           epoch_hook=lambda epoch: None) -> None:
    for epoch in range(3):
        epoch_hook(epoch)
        for i in range(0, len(x) - 63, 64):
            loss = nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def test_qat_on_digits_learns_the_ranges_and_converts():
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    model = _DigitsNet().train()
    exported = torch.export.export(
        copy.deepcopy(model), (x_train[:64],), dynamic_shapes=({0: torch.export.Dim("batch")},)
    ).module()
    # the float reference, trained the same way from the same initial weights
    _train(model, x_train, y_train, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    with torch.no_grad():
        float_acc = _accuracy(model.eval()(x_test), y_test)

    qat = prepare_qat_pt2e(exported, _lsq_quantizer())
    lfqs = [m for m in qat.modules() if isinstance(m, LearnableFakeQuantize)]
    assert len(lfqs) == 6  # input, weight and output of the conv and of the linear
    qat(x_train[:64])  # the first batch sizes and initialises the parameters
    qparams = {id(p) for m in lfqs for p in (m.scale, m.zero_point)}
    opt = torch.optim.SGD([
        {"params": [p for p in qat.parameters() if id(p) not in qparams]},
        {"params": [p for p in qat.parameters() if id(p) in qparams], "lr": 0.01},
    ], lr=0.05, momentum=0.9)
    scales_before = [m.scale.detach().clone() for m in lfqs]

    def learn_ranges_after_first_epoch(epoch: int) -> None:
        if epoch == 1:  # the usual LSQ recipe: observer estimates first, then learning
            scales_before[:] = [m.scale.detach().clone() for m in lfqs]
            qat.apply(enable_range_learning)

    _train(qat, x_train, y_train, opt, learn_ranges_after_first_epoch)
    assert all(m.learning_enabled[0] == 1 and m.observer_enabled[0] == 0 for m in lfqs)
    assert all(not torch.equal(m.scale.detach(), s) for m, s in zip(lfqs, scales_before))
    move_exported_model_to_eval(qat)
    with torch.no_grad():
        qat_logits = qat(x_test)
    converted = convert_pt2e(copy.deepcopy(qat))
    assert not nodes(converted, A.batch_norm.default)
    with torch.no_grad():
        converted_logits = converted(x_test)
    # measured: float 0.849, QAT 0.854, converted equal to the QAT model's eval output
    assert _accuracy(qat_logits, y_test) >= float_acc - 0.02
    assert_sqnr(qat_logits, converted_logits, min_db=40)
    assert torch.equal(converted_logits.argmax(1), qat_logits.argmax(1))
