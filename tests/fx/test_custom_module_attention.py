"""``nn.MultiheadAttention`` as an FX custom module: prepare_fx with
``set_float_to_observed_mapping(nn.MultiheadAttention, quantizable.MultiheadAttention)``,
convert_fx to ``quantized.MultiheadAttention``.

Upstream's FX flow cannot run this (it puts an observer on the attention's tuple result and
fails at calibration), so the oracle is upstream's eager quantizable → quantized attention
fed the same quantized input: bit-exact where upstream is right (``batch_first=False``);
for ``batch_first=True`` upstream mixes heads and positions, and the oracle is fxquant's own
eager flow."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.ao.nn.quantizable as up_nnqa
import torch.ao.nn.quantized as up_nnq
import torch.ao.quantization as tq
from torch import nn

import fxquant
import fxquant.nn.quantizable as nnqa
import fxquant.nn.quantized as nnq
from fxquant.fx import ConvertCustomConfig, PrepareCustomConfig
from fxquant.fx.custom_module import dequantize_nested, quantized_inputs, register_quantized_inputs
from fxquant.metrics import sqnr
from fxquant.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx


class SelfAttention(nn.Module):
    def __init__(self, batch_first: bool = False) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=batch_first)

    def forward(self, x):
        return self.attn(x, x, x)  # the whole (output, weights) tuple


class EncoderLayer(nn.Module):
    """A post-norm transformer encoder layer (``nn.TransformerEncoderLayer`` is one opaque
    leaf for FX tracing, as upstream): attention with a padding mask, residuals, LayerNorm,
    ReLU feed-forward."""

    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(16), nn.LayerNorm(16)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x, padding_mask):
        attended, weights = self.self_attn(x, x, x, key_padding_mask=padding_mask)
        x = self.norm1(x + attended)
        return self.norm2(x + self.fc2(torch.relu(self.fc1(x)))), weights


class CausalCrossAttention(nn.Module):
    """Keyword arguments, a float attention mask with -inf entries, kdim/vdim != embed_dim."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, kdim=8, vdim=8)

    def forward(self, query, memory, mask):
        return self.attn(query=query, key=memory, value=memory, attn_mask=mask, need_weights=False)[0]


def _qconfig(ns):
    return ns.QConfig(activation=ns.MinMaxObserver.with_args(reduce_range=True),
                      weight=ns.default_per_channel_weight_observer)


_CUSTOM = PrepareCustomConfig().set_float_to_observed_mapping(nn.MultiheadAttention, nnqa.MultiheadAttention)


def _batches(shape: tuple[int, ...], n: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


def _prepare(model: nn.Module, batches: list[tuple[torch.Tensor, ...]], custom=_CUSTOM):
    prepared = prepare_fx(copy.deepcopy(model), fxquant.QConfigMapping().set_global(_qconfig(fxquant)),
                          batches[0], prepare_custom_config=custom)
    for b in batches:
        prepared(*b)
    return prepared


def _eager_oracle(mha: nn.MultiheadAttention, batches: list[torch.Tensor], *, upstream: bool):
    """Eager quantizable → quantized attention (upstream's or fxquant's), calibrated on
    ``batches``, called on them quantized with a min/max observer's parameters."""
    ns, qa, q = (tq, up_nnqa, up_nnq) if upstream else (fxquant, nnqa, nnq)
    float_mha = copy.deepcopy(mha)
    float_mha.qconfig = _qconfig(ns)
    observed = qa.MultiheadAttention.from_float(float_mha)
    input_observer = ns.MinMaxObserver(reduce_range=True)
    for b in batches:
        input_observer(b)
        observed(b, b, b)
    quantized = q.MultiheadAttention.from_observed(observed)
    scale, zero_point = input_observer.calculate_qparams()

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        qx = torch.quantize_per_tensor(x, float(scale), int(zero_point), torch.quint8)
        out, weights = quantized(qx, qx, qx)
        return out.dequantize(), weights.dequantize()

    return run


def _calls(gm: torch.fx.GraphModule) -> list[str]:
    return [str(n.target) if n.op == "call_module" and not n.target.startswith("activation_post_process")
            else getattr(n.target, "__name__", str(n.target)) if n.op != "call_module" else "observer"
            for n in gm.graph.nodes if n.op in ("call_module", "call_function", "call_method")]


def test_self_attention_equals_upstream_eager_quantized_attention():
    torch.manual_seed(0)
    model, batches = SelfAttention().eval(), _batches((5, 2, 16))
    prepared = _prepare(model, [(b,) for b in batches])
    assert isinstance(prepared.attn, nnqa.MultiheadAttention)
    # one input observer, read as query, key and value; the tuple result is observed inside
    assert _calls(prepared) == ["observer", "attn"]
    quantized = convert_fx(prepared, convert_custom_config=ConvertCustomConfig().set_observed_to_quantized_mapping(
        nnqa.MultiheadAttention, nnq.MultiheadAttention))
    quantized.graph.lint()
    assert type(quantized.attn) is nnq.MultiheadAttention
    assert _calls(quantized) == ["quantize_per_tensor", "attn", "dequantize_nested"]
    oracle = _eager_oracle(model.attn, batches, upstream=True)
    for b in batches:
        out, weights = quantized(b)
        up_out, up_weights = oracle(b)
        assert not out.is_quantized and not weights.is_quantized
        assert torch.equal(out, up_out)
        assert torch.equal(weights, up_weights)
        assert sqnr(model(b)[0], out) > 25.0


def test_batch_first_attention_equals_fxquant_eager_and_fixes_upstream():
    torch.manual_seed(0)
    model, batches = SelfAttention(batch_first=True).eval(), _batches((2, 5, 16))
    quantized = convert_fx(_prepare(model, [(b,) for b in batches]))  # default quantized class
    ours, upstream = _eager_oracle(model.attn, batches, upstream=False), _eager_oracle(model.attn, batches, upstream=True)
    for b in batches:
        out, weights = quantized(b)
        assert torch.equal(out, ours(b)[0]) and torch.equal(weights, ours(b)[1])
        assert sqnr(model(b)[0], out) > 25.0  # measured ~28-29.5 dB
        assert sqnr(model(b)[0], upstream(b)[0]) < 5.0  # upstream's heads are mixed up: ~-2 to -0.5 dB


def test_reference_model_runs_the_quantized_attention():
    torch.manual_seed(0)
    model, batches = SelfAttention().eval(), _batches((5, 2, 16))
    prepared = _prepare(model, [(b,) for b in batches])
    reference = convert_to_reference_fx(copy.deepcopy(prepared))
    lowered = convert_fx(prepared)
    assert type(reference.attn) is nnq.MultiheadAttention
    for b in batches:
        for a, c in zip(reference(b), lowered(b)):
            assert torch.equal(a, c)


def test_masks_stay_float_and_keyword_inputs_are_quantized():
    torch.manual_seed(0)
    model = CausalCrossAttention().eval()
    mask = torch.zeros(4, 6).masked_fill(torch.ones(4, 6).triu(3).bool(), float("-inf"))  # (target, source)
    batches = [(q, m, mask) for q, m in zip(_batches((4, 2, 16)), _batches((6, 2, 8)))]
    prepared = _prepare(model, batches)
    attn = next(n for n in prepared.graph.nodes if n.target == "attn")
    assert [n.name for n in quantized_inputs(attn)] == ["activation_post_process_0", "activation_post_process_1"]
    assert attn.kwargs["attn_mask"].op == "placeholder"  # not observed
    quantized = convert_fx(prepared)
    attn = next(n for n in quantized.graph.nodes if n.target == "attn")
    assert [attn.kwargs[k].target for k in ("query", "key", "value")] == [torch.quantize_per_tensor] * 3
    for b in batches:
        assert sqnr(model(*b), quantized(*b)) > 25.0


def test_encoder_layer_with_padding_mask():
    torch.manual_seed(0)
    model = EncoderLayer().eval()
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[1, 3:] = True
    batches = [(x, mask) for x in _batches((2, 5, 16), n=4)]
    baseline = convert_fx(_prepare(model, batches, custom=None))  # attention left in float
    quantized = convert_fx(_prepare(model, batches))
    assert type(quantized.self_attn) is nnq.MultiheadAttention
    assert type(baseline.self_attn) is nn.MultiheadAttention
    for b in batches:
        expected, expected_weights = model(*b)
        out, weights = quantized(*b)
        assert sqnr(expected, out) > 25.0  # measured ~30 dB (float attention: ~30.5 dB)
        assert sqnr(expected_weights, weights) > 30.0
        assert torch.all(weights[1, :, 3:] == 0)  # padded keys get no attention


def test_without_custom_config_attention_stays_float_like_upstream():
    """Upstream's FX default custom config is empty: the attention is a float leaf."""
    torch.manual_seed(0)
    model, batches = SelfAttention().eval(), _batches((5, 2, 16))
    prepared = _prepare(model, [(b,) for b in batches], custom=None)
    assert type(prepared.attn) is nn.MultiheadAttention
    quantized = convert_fx(prepared)
    for b in batches:
        for a, c in zip(model(b), quantized(b)):
            assert torch.equal(a, c)


def test_register_quantized_inputs_returns_the_function_and_dequantize_nested_walks_tuples():
    class Observed(nn.Module):
        pass

    def first(node):
        return [node.args[0]]

    assert register_quantized_inputs(Observed)(first) is first
    q = torch.quantize_per_tensor(torch.ones(2), 0.5, 0, torch.quint8)
    out = dequantize_nested((q, (q, None), [torch.zeros(1)]))
    assert torch.equal(out[0], torch.ones(2)) and torch.equal(out[1][0], torch.ones(2))
    assert out[1][1] is None and isinstance(out[2], list) and not out[2][0].is_quantized


@pytest.mark.parametrize("is_causal", [True], ids=["is_causal"])
def test_is_causal_is_refused_with_the_remedy(is_causal):
    class Causal(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2)

        def forward(self, x, mask):
            return self.attn(x, x, x, attn_mask=mask, is_causal=is_causal)[0]

    mask = nn.Transformer.generate_square_subsequent_mask(4)
    x = torch.randn(4, 2, 16)
    prepared = prepare_fx(Causal().eval(), fxquant.QConfigMapping().set_global(_qconfig(fxquant)), (x, mask),
                          prepare_custom_config=_CUSTOM)
    with pytest.raises(ValueError, match="is_causal=True; pass the causal mask as attn_mask"):
        prepared(x, mask)
