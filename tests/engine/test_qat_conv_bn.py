"""rewrite_conv_bn_for_qat (prepare) and fold_conv_bn_qat (convert): graph shape, train-mode
equivalence with the float conv-bn, gradients, and convert matching the QAT model's eval."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from helpers import assert_sqnr
from pt2e_helpers import A, FnQuantizer, nodes, op_counts
from torch import nn
from torch.fx import GraphModule

from fxquant import (
    FakeQuantize,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    disable_observer,
)
from fxquant.engine.convert import convert_observers_to_qdq
from fxquant.engine.qat_conv_bn import (
    QatConvBnFoldWarning,
    fold_conv_bn_qat,
    qat_conv_bn_output,
    rewrite_conv_bn_for_qat,
)
from fxquant.pt2e._qat import prepare_qat_pt2e
from fxquant.pt2e.export_utils import move_exported_model_to_eval
from fxquant.pt2e.quantizer import DerivedQuantizationSpec, QuantizationSpec
from fxquant.pt2e.quantizer.utils import annotate_input_qspec_map, annotate_output_qspec

QD = torch.ops.quantized_decomposed
CONV_OPS = (A.conv1d.default, A.conv2d.default, A.conv3d.default)

ACT_FQ = QuantizationSpec(
    dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine,
    observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver),
)
WEIGHT_FQ = QuantizationSpec(
    dtype=torch.int8, quant_min=-127, quant_max=127, qscheme=torch.per_channel_symmetric, ch_axis=0,
    observer_or_fake_quant_ctr=FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver),
)


def annotate_qat_convs(gm: GraphModule, *, quantize_weight: bool = True, observe_conv_output: bool = False) -> None:
    """Conv input, per-channel weight, output after the batch norm (and relu) of each conv."""
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target not in CONV_OPS:
            continue
        annotate_input_qspec_map(n, n.args[0], ACT_FQ)
        if quantize_weight:
            annotate_input_qspec_map(n, n.args[1], WEIGHT_FQ)
        out = n if observe_conv_output else (qat_conv_bn_output(n) or n)
        users = list(out.users)
        if len(users) == 1 and users[0].target == A.relu.default:
            out = users[0]
        annotate_output_qspec(out, ACT_FQ)


@dataclass(frozen=True)
class Case:
    dims: int
    bias: bool
    relu: bool
    eps: float = 1e-5
    momentum: float = 0.1


CASES = [
    Case(2, bias=True, relu=False),
    Case(2, bias=False, relu=False),
    Case(2, bias=True, relu=True, eps=1e-3, momentum=0.3),
    Case(2, bias=False, relu=True),
    Case(1, bias=True, relu=True),
    Case(1, bias=False, relu=False, eps=1e-2, momentum=0.05),
    Case(3, bias=True, relu=True),
]
IDS = [f"conv{c.dims}d-{'bias' if c.bias else 'nobias'}{'-relu' if c.relu else ''}-eps{c.eps:g}-mom{c.momentum:g}"
       for c in CASES]


class ConvBn(nn.Module):
    def __init__(self, case: Case) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[case.dims]
        bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[case.dims]
        self.conv = conv(3, 6, 3, bias=case.bias, padding=1)
        self.bn = bn(6, eps=case.eps, momentum=case.momentum)
        self.relu = case.relu
        with torch.no_grad():  # non-trivial BN state
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return torch.relu(y) if self.relu else y


def _input(case: Case, batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, 3, *([6] * case.dims))


def _export_train(model: nn.Module, x: torch.Tensor) -> GraphModule:
    return torch.export.export(copy.deepcopy(model).train(), (x,)).module()


def _convert(gm: GraphModule) -> GraphModule:
    """convert_pt2e's first steps: observers to q/dq, then the QAT fold."""
    return fold_conv_bn_qat(convert_observers_to_qdq(gm))


# ----------------------------------------------------------------------------------------------
# rewrite


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rewrite_builds_the_simulated_fold_pattern(case):
    x = _input(case)
    gm = rewrite_conv_bn_for_qat(_export_train(ConvBn(case), x))
    gm.graph.lint()
    (conv,) = [n for n in gm.graph.nodes if n.target in CONV_OPS]
    (bn,) = nodes(gm, A.batch_norm.default)
    weight = conv.args[1]
    assert weight.target == A.mul.Tensor and weight.args[0].op == "get_attr"
    assert weight.args[0].target == "conv.weight"
    if case.bias:
        assert conv.args[2].target == A.zeros_like.default
        assert bn.args[0].target == A.add.Tensor and bn.args[0].args[0].target == A.div.Tensor
    else:
        assert conv.args[2] is None
        assert bn.args[0].target == A.div.Tensor
    # training=True, momentum and eps kept
    assert bn.args[5:8] == (True, case.momentum, case.eps)
    assert qat_conv_bn_output(conv) is bn
    # every new node carries a fake value (the engine observes tensors only)
    assert all("val" in n.meta for n in gm.graph.nodes if n.op == "call_function")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_rewrite_equals_float_conv_bn_in_train_mode(case):
    model = ConvBn(case).train()
    x = _input(case)
    gm = rewrite_conv_bn_for_qat(_export_train(model, x))
    for _ in range(3):  # outputs and running statistics after several steps
        batch = torch.randn_like(x) * 2 + 0.5
        torch.testing.assert_close(gm(batch), model(batch), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(gm.bn.running_mean, model.bn.running_mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gm.bn.running_var, model.bn.running_var, atol=1e-6, rtol=1e-5)
    assert int(gm.bn.num_batches_tracked) == int(model.bn.num_batches_tracked) == 3


def test_rewrite_accepts_an_eval_mode_capture_and_switches_bn_to_training():
    case = Case(2, bias=True, relu=True, eps=1e-3, momentum=0.2)
    model = ConvBn(case).eval()
    x = _input(case)
    gm = rewrite_conv_bn_for_qat(torch.export.export(copy.deepcopy(model), (x,)).module())
    (bn,) = nodes(gm, A.batch_norm.default)
    assert bn.args[5:8] == (True, 0.2, 1e-3)
    torch.testing.assert_close(gm(x), model.train()(x), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(gm.bn.running_var, model.bn.running_var)


@pytest.mark.parametrize("case", [CASES[0], CASES[3]], ids=[IDS[0], IDS[3]])
def test_rewrite_gradients_match_float_conv_bn(case):
    model = ConvBn(case).train()
    x = _input(case)
    gm = rewrite_conv_bn_for_qat(_export_train(model, x))
    target = torch.randn_like(model(x))
    nn.functional.mse_loss(model(x), target).backward()
    nn.functional.mse_loss(gm(x), target).backward()
    for name in ("conv.weight", "bn.weight", "bn.bias") + (("conv.bias",) if case.bias else ()):
        got = gm.get_parameter(name).grad
        want = model.get_parameter(name).grad
        assert got is not None and got.abs().sum() > 0, name
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4, msg=name)


class Unfoldable(nn.Module):
    """A conv feeding two users, a conv without BN, and a BN without running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Conv2d(3, 4, 1)
        self.bn_shared = nn.BatchNorm2d(4)
        self.plain = nn.Conv2d(4, 4, 1)
        self.stats_free = nn.Conv2d(4, 4, 1)
        self.bn_stats_free = nn.BatchNorm2d(4, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shared(x)
        y = self.bn_shared(y) + y
        return self.bn_stats_free(self.stats_free(self.plain(y)))


def test_rewrite_leaves_convs_it_cannot_fold_alone():
    x = torch.randn(2, 3, 5, 5)
    gm = _export_train(Unfoldable(), x)
    before = [(n.target, n.args) for n in gm.graph.nodes]
    rewrite_conv_bn_for_qat(gm)
    assert [(n.target, n.args) for n in gm.graph.nodes] == before
    assert all(qat_conv_bn_output(n) is None for n in gm.graph.nodes)


def test_rewrite_is_idempotent():
    case = CASES[2]
    gm = rewrite_conv_bn_for_qat(_export_train(ConvBn(case), _input(case)))
    code = gm.code
    assert rewrite_conv_bn_for_qat(gm).code == code


# ----------------------------------------------------------------------------------------------
# prepare_qat_pt2e + fold at convert


def _qat_trained(case: Case, quantizer: FnQuantizer, steps: int = 4) -> tuple[GraphModule, torch.Tensor]:
    model = ConvBn(case)
    x = _input(case, batch=8)
    gm = prepare_qat_pt2e(_export_train(model, x), quantizer)
    opt = torch.optim.SGD(gm.parameters(), lr=0.05)
    target = torch.randn_like(model(x))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(gm(torch.randn_like(x)), target).backward()
        opt.step()
    move_exported_model_to_eval(gm)
    gm.apply(disable_observer)  # freeze the scales the converted model will use
    return gm, x


def _output_scale(gm: GraphModule) -> float:
    (out,) = [n for n in gm.graph.nodes if n.op == "output"]
    producer = out.args[0][0]
    assert producer.op == "call_module"
    return float(gm.get_submodule(producer.target).scale)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fold_after_qat_matches_the_qat_model_in_eval(case):
    gm, x = _qat_trained(case, FnQuantizer(annotate_qat_convs))
    bn = gm.get_submodule("bn")
    (weight_fq,) = [n for n in gm.graph.nodes if n.op == "call_module" and n.args[0].target == A.mul.Tensor]
    weight_scale = gm.get_submodule(weight_fq.target).scale.clone()
    expected_weight = gm.get_parameter("conv.weight").detach() * (
        bn.weight / torch.sqrt(bn.running_var + case.eps)).detach().reshape([-1] + [1] * (case.dims + 1))
    qat_out = gm(x)
    step = _output_scale(gm)

    q = _convert(gm)
    q.graph.lint()
    assert not nodes(q, A.batch_norm.default) and not nodes(q, A.add_.Tensor)
    for op in (A.mul.Tensor, A.div.Tensor, A.sqrt.default, A.zeros_like.default, A.reshape.default):
        assert not nodes(q, op), op
    assert op_counts(q) == {"quantize_per_tensor": 2, "dequantize_per_tensor": 2,
                            "quantize_per_channel": 1, "dequantize_per_channel": 1}
    (conv,) = [n for n in q.graph.nodes if n.target in CONV_OPS]
    w_dq = conv.args[1]
    assert w_dq.target == QD.dequantize_per_channel.default
    w_q = w_dq.args[0]
    assert w_q.target == QD.quantize_per_channel.default and w_q.args[0].op == "get_attr"
    # the folded weight is W * s with the training scales; the bias is a constant
    torch.testing.assert_close(q.get_parameter(w_q.args[0].target), expected_weight)
    torch.testing.assert_close(q.get_buffer(w_q.args[1].target), weight_scale)
    assert conv.args[2].op == "get_attr"

    out = q(x)
    assert (out - qat_out).abs().max() <= step * 1.001  # within one quantization step
    assert_sqnr(qat_out, out, min_db=40)


def _derived_bias_scale(obs_or_fqs):
    act, weight = obs_or_fqs
    act_scale, _ = act.calculate_qparams()
    weight_scale, _ = weight.calculate_qparams()
    scale = (act_scale * weight_scale).float()
    return scale, torch.zeros_like(scale, dtype=torch.int32)


def annotate_with_quantized_bias(gm: GraphModule) -> None:
    annotate_qat_convs(gm)
    for n in gm.graph.nodes:
        if n.target in CONV_OPS and n.args[2] is not None:
            bias_spec = DerivedQuantizationSpec(
                derived_from=[(n.args[0], n), (n.args[1], n)], derive_qparams_fn=_derived_bias_scale,
                dtype=torch.int32, quant_min=-(2**31), quant_max=2**31 - 1,
                qscheme=torch.per_channel_symmetric, ch_axis=0,
            )
            annotate_input_qspec_map(n, n.args[2], bias_spec)


def test_fold_keeps_the_quantize_dequantize_of_a_quantized_bias():
    case = CASES[2]
    gm, x = _qat_trained(case, FnQuantizer(annotate_with_quantized_bias))
    qat_out = gm(x)
    q = _convert(gm)
    (conv,) = [n for n in q.graph.nodes if n.target in CONV_OPS]
    bias_dq = conv.args[2]
    assert bias_dq.target == QD.dequantize_per_channel.default
    assert bias_dq.args[0].args[0].op == "get_attr"
    assert not nodes(q, A.batch_norm.default)
    assert_sqnr(qat_out, q(x), min_db=35)


def test_fold_without_weight_quantization_folds_the_float_weight():
    case = CASES[0]
    gm, x = _qat_trained(case, FnQuantizer(lambda g: annotate_qat_convs(g, quantize_weight=False)))
    qat_out = gm(x)
    q = _convert(gm)
    (conv,) = [n for n in q.graph.nodes if n.target in CONV_OPS]
    assert conv.args[1].op == "get_attr" and conv.args[2].op == "get_attr"
    assert not nodes(q, A.batch_norm.default) and not nodes(q, A.mul.Tensor)
    assert_sqnr(qat_out, q(x), min_db=40)


def test_converted_model_no_longer_updates_batch_norm_state():
    case = CASES[2]
    gm, x = _qat_trained(case, FnQuantizer(annotate_qat_convs))
    q = _convert(gm)
    state = {k: v.clone() for k, v in q.state_dict().items()}
    q(torch.randn_like(x))
    assert all(torch.equal(v, q.state_dict()[k]) for k, v in state.items())


def test_fold_warns_and_keeps_the_pattern_when_the_conv_output_was_observed():
    case = CASES[0]
    gm, x = _qat_trained(case, FnQuantizer(lambda g: annotate_qat_convs(g, observe_conv_output=True)))
    qat_out = gm(x)
    with pytest.warns(QatConvBnFoldWarning, match="conv output is quantized"):
        q = _convert(gm)
    assert len(nodes(q, A.batch_norm.default)) == 1
    torch.testing.assert_close(q(x), qat_out)


def test_fold_leaves_a_plain_conv_bn_alone():
    model = ConvBn(CASES[0]).eval()
    x = _input(CASES[0])
    gm = torch.export.export(model, (x,)).module()
    code = gm.code
    assert fold_conv_bn_qat(gm).code == code


def test_string_padding_overload_is_rewritten_and_folded():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding="same"), nn.BatchNorm2d(4)).train()
    x = torch.randn(2, 3, 6, 6)
    gm = rewrite_conv_bn_for_qat(_export_train(model, x))
    (conv,) = nodes(gm, A.conv2d.padding)
    assert conv.args[1].target == A.mul.Tensor and conv.args[4] == "same"
    torch.testing.assert_close(gm(x), model(x), atol=2e-5, rtol=1e-5)
    fold_conv_bn_qat(gm)
    assert not nodes(gm, A.batch_norm.default)
    torch.testing.assert_close(gm(x), model.eval()(x), atol=2e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# transposed convs: the weight is (C_in, C_out / groups, *k), output channels along axis 1

TRANSPOSED_OPS = (A.conv_transpose1d.default, A.conv_transpose2d.input, A.conv_transpose3d.input)
WEIGHT_FQ_AXIS1 = QuantizationSpec(
    dtype=torch.int8, quant_min=-127, quant_max=127, qscheme=torch.per_channel_symmetric, ch_axis=1,
    observer_or_fake_quant_ctr=FakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver, ch_axis=1),
)


@dataclass(frozen=True)
class TCase:
    dims: int
    groups: int
    bias: bool
    relu: bool
    eps: float = 1e-5


T_CASES = [
    TCase(2, groups=1, bias=True, relu=True),
    TCase(2, groups=1, bias=False, relu=False, eps=1e-3),
    TCase(2, groups=2, bias=True, relu=True),
    TCase(2, groups=3, bias=False, relu=True),
    TCase(1, groups=1, bias=True, relu=False),
    TCase(3, groups=2, bias=True, relu=False),
]
T_IDS = [f"convT{c.dims}d-g{c.groups}-{'bias' if c.bias else 'nobias'}{'-relu' if c.relu else ''}"
         for c in T_CASES]


class ConvTransposeBn(nn.Module):
    """6 -> 6 channels; with groups > 1 each group's weight block holds several output
    channels (C_out / groups = 3 or 2), so a wrong layout of ``s`` cannot pass by accident."""

    def __init__(self, case: TCase) -> None:
        super().__init__()
        conv = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[case.dims]
        bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[case.dims]
        self.conv = conv(6, 6, 3, stride=2, padding=1, output_padding=1, groups=case.groups,
                         bias=case.bias)
        self.bn = bn(6, eps=case.eps)
        self.relu = case.relu
        with torch.no_grad():
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.5, 0.5)
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return torch.relu(y) if self.relu else y


def _t_input(case: TCase, batch: int = 4) -> torch.Tensor:
    return torch.randn(batch, 6, *([4] * case.dims))


def _hand_scaled_weight(weight: torch.Tensor, s: torch.Tensor, groups: int) -> torch.Tensor:
    """W[i, j] * s[output channel of (i, j)], element by element."""
    c_in, c_out_g = weight.shape[:2]
    out = torch.empty_like(weight)
    for i in range(c_in):
        for j in range(c_out_g):
            out[i, j] = weight[i, j] * s[(i // (c_in // groups)) * c_out_g + j]
    return out


def annotate_qat_conv_transposes(gm: GraphModule) -> None:
    for n in gm.graph.nodes:
        if n.op != "call_function" or n.target not in TRANSPOSED_OPS:
            continue
        annotate_input_qspec_map(n, n.args[0], ACT_FQ)
        annotate_input_qspec_map(n, n.args[1], WEIGHT_FQ_AXIS1)
        out = qat_conv_bn_output(n) or n
        users = list(out.users)
        if len(users) == 1 and users[0].target == A.relu.default:
            out = users[0]
        annotate_output_qspec(out, ACT_FQ)


@pytest.mark.parametrize("case", T_CASES, ids=T_IDS)
def test_transposed_rewrite_scales_the_weight_along_its_output_channels(case):
    model = ConvTransposeBn(case).train()
    x = _t_input(case)
    gm = rewrite_conv_bn_for_qat(_export_train(model, x))
    gm.graph.lint()
    (conv,) = [n for n in gm.graph.nodes if n.target in TRANSPOSED_OPS]
    (bn,) = nodes(gm, A.batch_norm.default)
    assert qat_conv_bn_output(conv) is bn
    assert conv.args[1].target == A.mul.Tensor and conv.args[1].args[0].target == "conv.weight"
    assert (conv.args[2] is None) != case.bias
    # the weight the conv sees, evaluated in the graph, is W * s laid out by hand
    s = (model.bn.weight / torch.sqrt(model.bn.running_var + case.eps)).detach()
    expected = _hand_scaled_weight(model.conv.weight.detach(), s, case.groups)
    seen = {}

    class Probe(torch.fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            if n is conv.args[1]:
                seen["w"] = result
            return result

    out = Probe(gm).run(x)
    torch.testing.assert_close(seen["w"], expected, atol=0, rtol=1e-6)
    # the first call ran in train mode: same output as the float model on batch statistics
    torch.testing.assert_close(out, model(x), atol=3e-5, rtol=1e-5)


@pytest.mark.parametrize("case", [T_CASES[0], T_CASES[2]], ids=[T_IDS[0], T_IDS[2]])
def test_transposed_rewrite_matches_float_training(case):
    model = ConvTransposeBn(case).train()
    x = _t_input(case)
    gm = rewrite_conv_bn_for_qat(_export_train(model, x))
    target = torch.randn_like(copy.deepcopy(model)(x))
    nn.functional.mse_loss(model(x), target).backward()
    nn.functional.mse_loss(gm(x), target).backward()
    for name in ("conv.weight", "bn.weight", "bn.bias") + (("conv.bias",) if case.bias else ()):
        got, want = gm.get_parameter(name).grad, model.get_parameter(name).grad
        assert got is not None and got.abs().sum() > 0, name
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4, msg=name)
    torch.testing.assert_close(gm.bn.running_mean, model.bn.running_mean, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gm.bn.running_var, model.bn.running_var, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("case", T_CASES, ids=T_IDS)
def test_transposed_qat_trains_converts_and_matches_the_qat_model(case):
    from fxquant.pt2e.quantize_pt2e import convert_pt2e

    model = ConvTransposeBn(case)
    x = _t_input(case, batch=8)
    gm = prepare_qat_pt2e(_export_train(model, x), FnQuantizer(annotate_qat_conv_transposes))
    opt = torch.optim.SGD(gm.parameters(), lr=0.05)
    target = torch.randn_like(model(x))
    weight_before = gm.get_parameter("conv.weight").detach().clone()
    for _ in range(4):
        opt.zero_grad()
        nn.functional.mse_loss(gm(torch.randn_like(x)), target).backward()
        opt.step()
    assert not torch.equal(gm.get_parameter("conv.weight"), weight_before)  # it trained
    move_exported_model_to_eval(gm)
    gm.apply(disable_observer)
    bn = gm.get_submodule("bn")
    s = (bn.weight / torch.sqrt(bn.running_var + case.eps)).detach()
    expected_weight = _hand_scaled_weight(gm.get_parameter("conv.weight").detach(), s, case.groups)
    qat_out = gm(x)
    step = _output_scale(gm)

    q = convert_pt2e(gm, fold_quantize=False)
    q.graph.lint()
    assert not nodes(q, A.batch_norm.default)
    (conv,) = [n for n in q.graph.nodes if n.target in TRANSPOSED_OPS]
    w_q = conv.args[1].args[0]
    assert w_q.target == QD.quantize_per_channel.default and w_q.args[3] == 1  # axis 1
    torch.testing.assert_close(q.get_parameter(w_q.args[0].target), expected_weight, atol=0, rtol=1e-6)
    out = q(x)
    assert (out - qat_out).abs().max() <= step * 1.001  # within one quantization step
    assert_sqnr(qat_out, out, min_db=35)


@pytest.mark.parametrize("groups", [1, 2], ids=["g1", "g2"])
def test_xnnpack_qat_conv_transpose_bn_relu_converts_within_a_step(groups):
    from fxquant.pt2e.quantize_pt2e import convert_pt2e
    from fxquant.pt2e.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    model = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ConvTranspose2d(6, 6, 3, stride=2, groups=groups), nn.BatchNorm2d(6), nn.ReLU()
    )
    x = torch.randn(8, 3, 6, 6)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))
    gm = prepare_qat_pt2e(_export_train(model, x), quantizer)
    assert len(nodes(gm, A.batch_norm.default)) == 1 and nodes(gm, A.mul.Tensor)  # rewritten
    opt = torch.optim.SGD(gm.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        gm(torch.randn_like(x)).square().mean().backward()
        opt.step()
    move_exported_model_to_eval(gm)
    gm.apply(disable_observer)
    qat_out = gm(x)
    step = _output_scale(gm)
    q = convert_pt2e(gm)
    assert not nodes(q, A.batch_norm.default)
    assert (q(x) - qat_out).abs().max() <= step * 1.001
