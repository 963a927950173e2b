"""quantize / quantize_qat / quantize_dynamic / default_eval_fn against upstream's."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq
from helpers import assert_sqnr
from torch import nn

import fxquant
import fxquant.eager as fe
from fxquant.observers import QuantizationWarning
from fxquant.qconfig.per_token import per_token_dynamic_qconfig


def _types(model):
    return {name: type(m).__name__ for name, m in model.named_modules()}


def test_default_eval_fn_runs_every_input():
    seen = []
    fe.default_eval_fn(lambda x: seen.append(x), [(1, "a"), (2, "b")])
    assert seen == [1, 2]


def test_quantize_matches_upstream(ours_and_upstream, models):
    ours, theirs = (m.eval() for m in ours_and_upstream(models.ConvBnReLUNet))
    ours.qconfig, theirs.qconfig = fxquant.default_per_channel_qconfig, tq.default_per_channel_qconfig
    data = [(torch.rand(8, 1, 8, 8), None) for _ in range(3)]
    quantized = fe.quantize(ours, fe.default_eval_fn, [data])
    expected = tq.quantize(theirs, tq.default_eval_fn, [data])
    assert _types(quantized) == _types(expected)
    assert isinstance(ours.conv1, nn.Conv2d)  # not in place
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(quantized(x), expected(x))


def _train_steps(model, data):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for x, y in data:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_quantize_qat_matches_upstream(ours_and_upstream, models):
    ours, theirs = ours_and_upstream(models.ConvBnReLUNet)
    ours = fe.fuse_modules_qat(ours.train(), models.FUSE_GROUPS)
    theirs = tq.fuse_modules_qat(theirs.train(), models.FUSE_GROUPS)
    ours.qconfig = fxquant.get_default_qat_qconfig("x86")
    theirs.qconfig = tq.get_default_qat_qconfig("x86")
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
            for _ in range(3)]
    quantized = fe.quantize_qat(ours, _train_steps, [data])
    expected = tq.quantize_qat(theirs, _train_steps, [data])
    assert _types(quantized) == _types(expected)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(quantized.eval()(x), expected.eval()(x))


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)
        self.block = nn.Sequential(nn.Linear(16, 16), nn.ReLU())
        self.lstm = nn.LSTM(16, 8)
        self.gru = nn.GRU(8, 8)
        self.cell = nn.LSTMCell(8, 8)

    def forward(self, x):
        x = self.block(self.fc(x))
        out, _ = self.lstm(x)
        out, _ = self.gru(out)
        h, _ = self.cell(out[0])
        return h


SPECS = {
    "default-qint8": (lambda ns: None, torch.qint8),
    "default-float16": (lambda ns: None, torch.float16),
    "type-set": (lambda ns: {nn.Linear, nn.LSTM}, torch.qint8),
    "name-set": (lambda ns: {"fc", "gru"}, torch.qint8),
    "name-set-float16": (lambda ns: {"block", "cell"}, torch.float16),
    "dict": (lambda ns: {nn.Linear: ns.default_dynamic_qconfig,
                         "lstm": ns.float16_dynamic_qconfig}, torch.qint8),
    "per-channel-dict": (lambda ns: {nn.Linear: ns.per_channel_dynamic_qconfig}, torch.qint8),
}


@pytest.mark.parametrize("spec", list(SPECS), ids=list(SPECS))
def test_quantize_dynamic_matches_upstream(spec):
    torch.manual_seed(0)
    model = Mixed().eval()
    make_spec, dtype = SPECS[spec]
    quantized = fe.quantize_dynamic(model, make_spec(fxquant), dtype=dtype)
    expected = tq.quantize_dynamic(model, make_spec(tq), dtype=dtype)
    assert _types(quantized) == _types(expected)
    assert _types(quantized) != _types(model)
    x = torch.randn(5, 3, 16)
    assert torch.equal(quantized(x), expected(x))


def test_quantize_dynamic_embeddings_match_upstream():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 4)).eval()
    quantized = fe.quantize_dynamic(model, dtype=torch.quint8)
    expected = tq.quantize_dynamic(model, dtype=torch.quint8)
    assert _types(quantized) == _types(expected)
    ids = torch.randint(0, 50, (3, 7))
    assert torch.equal(quantized(ids), expected(ids))


@pytest.mark.parametrize(
    "spec, dtype",
    [({nn.Linear: per_token_dynamic_qconfig}, torch.qint8),
     ({nn.Linear}, per_token_dynamic_qconfig)],
    ids=["dict", "set-with-qconfig-as-dtype"],
)
def test_per_token_qconfig_selects_the_per_token_linear(spec, dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 32)).eval()
    quantized = fe.quantize_dynamic(model, spec, dtype=dtype)
    assert type(quantized[0]).__name__ == type(quantized[2]).__name__ == "PerTokenLinear"
    x = torch.randn(4, 20, 64)
    with torch.no_grad():
        assert_sqnr(model(x), quantized(x), min_db=30)


def test_unsupported_type_in_spec_is_reported():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(2, 2))
    with pytest.warns(QuantizationWarning, match=r"'0' \(Conv2d\).*no dynamic quantized"):
        quantized = fe.quantize_dynamic(model, {nn.Conv2d, nn.Linear})
    assert isinstance(quantized[0], nn.Conv2d)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [({"dtype": torch.int32}, ValueError, "no default qconfig for dtype"),
     ({"qconfig_spec": {nn.Linear}, "dtype": torch.bfloat16}, ValueError, "dtype"),
     ({"qconfig_spec": nn.Linear}, TypeError, "set of module types"),
     ({"qconfig_spec": {nn.Linear: torch.qint8}}, TypeError, "not a QConfig")],
    ids=["bad-dtype", "bad-dtype-with-set", "bad-spec-type", "dtype-as-dict-value"],
)
def test_bad_arguments_are_explained(kwargs, error, match):
    with pytest.raises(error, match=match):
        fe.quantize_dynamic(nn.Sequential(nn.Linear(2, 2)), **kwargs)


def test_quantize_dynamic_inplace_and_custom_mapping():
    import fxquant.nn.quantized.dynamic as nnqd

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    result = fe.quantize_dynamic(model, {"0"}, mapping={nn.Linear: nnqd.Linear}, inplace=True)
    assert result is model
    assert isinstance(model[0], nnqd.Linear) and type(model[1]) is nn.Linear
