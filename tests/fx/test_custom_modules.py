"""Custom modules in prepare_fx / convert_fx (float → observed → quantized classes), against
upstream's ``torch.ao.quantization.quantize_fx`` with the same custom configs: the quantizable
LSTM and a user-defined custom module."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.quantizable as up_nnqa
import torch.ao.nn.quantized as up_nnq
import torch.ao.quantization as tq
import torch.ao.quantization.quantize_fx as upstream_fx
from torch import nn
from torch.ao.quantization.fx.custom_config import ConvertCustomConfig as UpConvertCustomConfig
from torch.ao.quantization.fx.custom_config import PrepareCustomConfig as UpPrepareCustomConfig

import fxquant
import fxquant.nn.quantizable as nnqa
import fxquant.nn.quantized as nnq
from fxquant.fx import ConvertCustomConfig, PrepareCustomConfig
from fxquant.fx.custom_module import CustomModuleError
from fxquant.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx


class LSTMModel(nn.Module):
    """linear → LSTM with an explicit state → linear; returns the head and the new h."""

    def __init__(self) -> None:
        super().__init__()
        self.fc0 = nn.Linear(4, 4)
        self.lstm = nn.LSTM(4, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x, h, c):
        y, (h2, _c2) = self.lstm(self.fc0(x), (h, c))
        return self.fc(y), h2


class Scaler(nn.Module):
    """A float module the user quantizes with their own classes (not traceable)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) * 2.0 if x.sum() > -1e9 else x


class ObservedScaler(nn.Module):
    def __init__(self, fc: nn.Linear) -> None:
        super().__init__()
        self.fc = fc

    def forward(self, x):
        return self.fc(x) * 2.0

    @classmethod
    def from_float(cls, module):
        observed = cls(module.fc)
        observed.qconfig = module.qconfig
        return observed


class QuantizedScaler(nn.Module):
    """Takes a quantized tensor, returns one quantized with the output observer's qparams."""

    def __init__(self, fc: nn.Linear, scale: float, zero_point: int) -> None:
        super().__init__()
        self.fc, self.scale, self.zero_point = fc, scale, zero_point
        self.saw_quantized_input = False

    def forward(self, x):
        self.saw_quantized_input = x.is_quantized
        return torch.quantize_per_tensor(self.fc(x.dequantize()) * 2.0, self.scale, self.zero_point, torch.quint8)

    @classmethod
    def from_observed(cls, observed):
        scale, zero_point = observed.activation_post_process.calculate_qparams()
        return cls(observed.fc, float(scale), int(zero_point))


class ScalerModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc0 = nn.Linear(4, 4)
        self.custom = Scaler()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.custom(self.fc0(x)))


def _mapping(ns):
    qconfig = ns.QConfig(activation=ns.MinMaxObserver.with_args(reduce_range=True),
                         weight=ns.default_per_channel_weight_observer)
    return ns.get_default_qconfig_mapping("x86").set_global(qconfig)


def _lstm_inputs(seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(5, 2, 4, generator=g), torch.randn(1, 2, 8, generator=g), torch.randn(1, 2, 8, generator=g))


def _observed_values(gm: torch.fx.GraphModule) -> list[str]:
    """The names of the values observed by the graph's observers, sorted."""
    return sorted(n.args[0].name for n in gm.graph.nodes
                  if n.op == "call_module" and "activation_post_process" in str(n.target))


@pytest.fixture(scope="module")
def lstm_pair():
    """(fxquant prepared, upstream prepared) LSTM models calibrated on the same batches."""
    torch.manual_seed(0)
    model = LSTMModel().eval()
    ours = prepare_fx(copy.deepcopy(model), _mapping(fxquant), _lstm_inputs(0),
                      PrepareCustomConfig().set_float_to_observed_mapping(nn.LSTM, nnqa.LSTM))
    upstream = upstream_fx.prepare_fx(copy.deepcopy(model), _mapping(tq), _lstm_inputs(0),
                                      UpPrepareCustomConfig().set_float_to_observed_mapping(nn.LSTM, up_nnqa.LSTM))
    with torch.no_grad():
        for seed in range(4):
            ours(*_lstm_inputs(seed))
            upstream(*_lstm_inputs(seed))
    return ours, upstream


def test_lstm_swapped_for_observed_quantizable_lstm_with_qconfig(lstm_pair):
    ours, _ = lstm_pair
    assert type(ours.lstm) is nnqa.LSTM
    assert ours.lstm.qconfig is not None
    # the observable cell has its own observers (the gates' add/mul and the linears' outputs)
    inner = [m for m in ours.lstm.modules() if type(m).__name__ == "MinMaxObserver"]
    assert len(inner) > 0


def test_lstm_observers_at_upstreams_places(lstm_pair):
    ours, upstream = lstm_pair
    # upstream: the model input, h, c, fc0's output (read by the LSTM) and fc's output; the
    # LSTM's results arrive quantized (no observer on fc's input)
    assert _observed_values(ours) == _observed_values(upstream) == ["c", "fc", "fc0", "h", "x"]


def _output_step(reference: torch.fx.GraphModule) -> float:
    """The scale of the last quantize before the first output (one quantization step)."""
    output = next(n for n in reversed(reference.graph.nodes) if n.op == "output")
    dq = output.args[0][0]
    return float(dq.args[1])


def test_lstm_reference_model_matches_upstream(lstm_pair):
    """Upstream's decomposed reference cannot run a custom LSTM (it feeds it float tensors), so
    the oracle is ``convert_to_reference_fx``, which quantizes with ``torch.quantize_per_tensor``
    (fused rounding) where fxquant's reference uses the ``quantized_decomposed`` ops (they round
    differently on rare ties): results agree within one quantization step, nearly all exactly."""
    ours, upstream = lstm_pair
    reference = convert_to_reference_fx(
        copy.deepcopy(ours), ConvertCustomConfig().set_observed_to_quantized_mapping(nnqa.LSTM, nnq.LSTM))
    oracle = upstream_fx.convert_to_reference_fx(
        copy.deepcopy(upstream), UpConvertCustomConfig().set_observed_to_quantized_mapping(up_nnqa.LSTM, up_nnq.LSTM))
    assert type(reference.lstm) is nnq.LSTM
    head_step = _output_step(reference)
    h_step = float(reference.lstm.layers[-1].layer_fw.cell.ogate_cy.scale)
    mismatches, total = 0, 0
    for seed in range(4, 7):
        x = _lstm_inputs(seed)
        (head, h), (up_head, up_h) = reference(*x), oracle(*x)
        assert (h - up_h).abs().max() <= h_step * 1.0001
        assert (head - up_head).abs().max() <= head_step * 1.0001
        mismatches += int((h != up_h).sum() + (head != up_head).sum())
        total += h.numel() + head.numel()
    assert mismatches <= total // 20


def test_lstm_lowered_model_equals_upstream_convert_fx(lstm_pair):
    ours, upstream = lstm_pair
    lowered = convert_fx(
        copy.deepcopy(ours), ConvertCustomConfig().set_observed_to_quantized_mapping(nnqa.LSTM, nnq.LSTM))
    oracle = upstream_fx.convert_fx(
        copy.deepcopy(upstream), UpConvertCustomConfig().set_observed_to_quantized_mapping(up_nnqa.LSTM, up_nnq.LSTM))
    assert type(lowered.fc).__module__.startswith("fxquant.nn.quantized")  # reads the LSTM's int8 output
    for seed in range(4, 7):
        x = _lstm_inputs(seed)
        for a, b in zip(lowered(*x), oracle(*x)):
            assert torch.equal(a, b)


def test_lstm_config_from_upstream_dict_format():
    torch.manual_seed(0)
    config = {"float_to_observed_custom_module_class": {"static": {nn.LSTM: nnqa.LSTM}}}
    prepared = prepare_fx(LSTMModel().eval(), _mapping(fxquant), _lstm_inputs(0), config)
    prepared(*_lstm_inputs(1))
    converted = convert_fx(prepared, {"observed_to_quantized_custom_module_class": {"static": {nnqa.LSTM: nnq.LSTM}}})
    assert type(converted.lstm) is nnq.LSTM
    assert converted(*_lstm_inputs(2))[0].shape == (5, 2, 3)


def test_lstm_with_qconfig_none_stays_float():
    mapping = _mapping(fxquant).set_module_name("lstm", None)
    prepared = prepare_fx(LSTMModel().eval(), mapping, _lstm_inputs(0),
                          PrepareCustomConfig().set_float_to_observed_mapping(nn.LSTM, nnqa.LSTM))
    assert type(prepared.lstm) is nn.LSTM


def _scaler_pair():
    torch.manual_seed(0)
    model = ScalerModel().eval()
    x = (torch.randn(3, 4),)
    ours = prepare_fx(copy.deepcopy(model), _mapping(fxquant), x,
                      PrepareCustomConfig().set_float_to_observed_mapping(Scaler, ObservedScaler))
    upstream = upstream_fx.prepare_fx(
        copy.deepcopy(model), _mapping(tq), x,
        UpPrepareCustomConfig().set_float_to_observed_mapping(Scaler, ObservedScaler)
        .set_non_traceable_module_classes([Scaler]))
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(3, 4, generator=g) for _ in range(4)]
    for b in batches:
        ours(b)
        upstream(b)
    return ours, upstream, batches


def test_user_custom_module_observed_like_upstream_and_converted_with_quantized_tensors():
    ours, upstream, batches = _scaler_pair()
    assert type(ours.custom) is ObservedScaler
    # input (shared with fc0's output observer) and output of the custom module observed
    assert _observed_values(ours) == _observed_values(upstream) == ["custom", "fc", "fc0", "x"]
    config = ConvertCustomConfig().set_observed_to_quantized_mapping(ObservedScaler, QuantizedScaler)
    up_config = UpConvertCustomConfig().set_observed_to_quantized_mapping(ObservedScaler, QuantizedScaler)
    lowered = convert_fx(copy.deepcopy(ours), config)
    oracle = upstream_fx.convert_fx(copy.deepcopy(upstream), up_config)
    reference = convert_to_reference_fx(copy.deepcopy(ours), config)
    up_reference = upstream_fx.convert_to_reference_fx(copy.deepcopy(upstream), up_config)
    for b in batches:
        assert torch.equal(lowered(b), oracle(b))
        assert torch.equal(reference(b), up_reference(b))
    assert lowered.custom.saw_quantized_input and reference.custom.saw_quantized_input


def test_convert_without_quantized_class_names_module_and_fix():
    ours, _, _ = _scaler_pair()
    with pytest.raises(CustomModuleError, match=r"custom.*ObservedScaler.*set_observed_to_quantized_mapping"):
        convert_fx(ours)


def test_dynamic_custom_module_quant_type_is_refused_clearly():
    config = PrepareCustomConfig().set_float_to_observed_mapping(nn.LSTM, nnqa.LSTM, "dynamic")
    with pytest.raises(CustomModuleError, match=r"'dynamic'.*static"):
        prepare_fx(LSTMModel().eval(), _mapping(fxquant), _lstm_inputs(0), config)


def test_uncalibrated_custom_module_input_names_the_observer():
    torch.manual_seed(0)
    prepared = prepare_fx(LSTMModel().eval(), _mapping(fxquant), _lstm_inputs(0),
                          PrepareCustomConfig().set_float_to_observed_mapping(nn.LSTM, nnqa.LSTM))
    with pytest.raises(Exception, match=r"input of lstm.*seen no data"):
        convert_fx(prepared, ConvertCustomConfig().set_observed_to_quantized_mapping(nnqa.LSTM, nnq.LSTM))


def test_quantizable_lstm_converts_without_convert_config(lstm_pair):
    ours, _ = lstm_pair
    lowered = convert_fx(copy.deepcopy(ours))  # eager mode's default custom-module classes
    assert type(lowered.lstm) is nnq.LSTM


def test_lstm_custom_module_in_qat_flow():
    from fxquant.quantize_fx import prepare_qat_fx

    torch.manual_seed(0)
    prepared = prepare_qat_fx(LSTMModel().train(), fxquant.get_default_qat_qconfig_mapping("x86"), _lstm_inputs(0),
                              PrepareCustomConfig().set_float_to_observed_mapping(nn.LSTM, nnqa.LSTM))
    assert type(prepared.lstm) is nnqa.LSTM and type(prepared.fc).__module__.startswith("fxquant.nn.qat")
    prepared(*_lstm_inputs(1))
    converted = convert_fx(prepared.eval())
    assert type(converted.lstm) is nnq.LSTM
    with torch.no_grad():
        head, h = converted(*_lstm_inputs(2))
    assert head.shape == (5, 2, 3) and h.shape == (1, 2, 8) and not head.is_quantized


def test_lstm_result_returned_whole_is_dequantized():
    """``return self.lstm(x, (h, c))``: the graph output reads the nested tuple whole; its
    tensors come out dequantized, equal to those picked out by getitem."""

    class WholeLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, 8)

        def forward(self, x, h, c):
            return self.lstm(x, (h, c))

    class PickedLSTM(WholeLSTM):
        def forward(self, x, h, c):
            out, (h2, c2) = self.lstm(x, (h, c))
            return out, (h2, c2)

    torch.manual_seed(0)
    whole = WholeLSTM().eval()
    picked = PickedLSTM().eval()
    picked.load_state_dict(whole.state_dict())
    converted = []
    for model in (whole, picked):
        prepared = prepare_fx(model, _mapping(fxquant), _lstm_inputs(0),
                              PrepareCustomConfig().set_float_to_observed_mapping(nn.LSTM, nnqa.LSTM))
        for seed in range(3):
            prepared(*_lstm_inputs(seed))
        converted.append(convert_fx(prepared))
    out, (h, c) = converted[0](*_lstm_inputs(5))
    expected_out, (expected_h, expected_c) = converted[1](*_lstm_inputs(5))
    for a, b in ((out, expected_out), (h, expected_h), (c, expected_c)):
        assert not a.is_quantized
        assert torch.equal(a, b)
