"""Every public qconfig of ``torch.ao.quantization.qconfig`` through fxquant's FX flow and
upstream's, on one small model (embedding, conv, pooling, flatten, linear, add, relu), with
the backend config under which upstream runs it: the same observers on the same edges,
bit-identical reference models, lowered models within one output step.

Where upstream cannot run a qconfig on some op, the mapping applies it only where it can:
QAT qconfigs leave the embedding in float (upstream's QAT embedding needs float qparams;
``default_embedding_qat_qconfig`` is swept on its own); qconfigs with an ``nn.Identity`` observer go to the
unweighted ops only (upstream's prepare fails on a weighted module with one); the
reuse-input qconfig goes to ops whose input is quantized by the int8 global qconfig.

Numerics: fxquant's HistogramObserver searches its range differently from upstream's (on
purpose, tested in ``tests/observers``), so for qconfigs with histogram activations the
outputs are compared with the same qconfig using a MinMax observer with the same arguments;
the observer places are compared with the qconfig as is.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import operator
import warnings

import pytest
import torch
import torch.ao.quantization as tq
import torch.ao.quantization.qconfig as upstream_qconfigs
import torch.ao.quantization.quantize_fx as upstream_fx
import torch.nn.functional as F
from fx.observer_chains import observer_chains, outputs
from helpers import quiet_upstream
from torch import nn

import fxquant
from fxquant.backend_config import get_native_backend_config, get_qnnpack_backend_config
from fxquant.backend_config.native import get_test_only_legacy_native_backend_config
from fxquant.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx, prepare_qat_fx

quiet_upstream()

PUBLIC_QCONFIGS = sorted(n for n, v in vars(upstream_qconfigs).items()
                         if isinstance(v, tq.QConfig) and not n.startswith("_"))


class Sweep(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 8)
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 8)
        self.relu = nn.ReLU()

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        c = F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1)
        return self.relu(self.fc(self.emb(ids)) + c)


def _int8(ns):
    return ns.QConfig(activation=ns.MinMaxObserver.with_args(reduce_range=True),
                      weight=ns.default_per_channel_weight_observer)


def _global(ns, qconfig):
    return ns.QConfigMapping().set_global(qconfig)


def _qat(ns, qconfig):
    # the embedding's own QAT qconfig is swept on its own (and its QAT swap tested below)
    return ns.QConfigMapping().set_global(qconfig).set_object_type(nn.Embedding, None)


def _unweighted_ops(ns, qconfig):
    mapping = _global(ns, _int8(ns))
    for op in (F.adaptive_avg_pool2d, "flatten", operator.add, nn.ReLU):
        mapping.set_object_type(op, qconfig)
    return mapping


def _after_int8(ns, qconfig):
    return _global(ns, _int8(ns)).set_object_type(F.adaptive_avg_pool2d, qconfig).set_object_type("flatten", qconfig)


# qconfig name → (backend config, QAT?, mapping); everything else: native, PTQ, global
SPECIAL = {
    "float16_static_qconfig": ("legacy", False, _global),
    "default_symmetric_qnnpack_qconfig": ("qnnpack", False, _global),
    "default_per_channel_symmetric_qnnpack_qconfig": ("qnnpack", False, _global),
    "default_symmetric_qnnpack_qat_qconfig": ("qnnpack", True, _qat),
    "default_per_channel_symmetric_qnnpack_qat_qconfig": ("qnnpack", True, _qat),
    "default_qat_qconfig": ("native", True, _qat),
    "default_qat_qconfig_v2": ("native", True, _qat),
    "default_dynamic_qat_qconfig": ("native", True, _qat),
    "default_embedding_qat_qconfig": ("native", True, _global),
    "default_embedding_qat_qconfig_4bit": ("native", True, _global),
    "default_activation_only_qconfig": ("native", False, _unweighted_ops),
    "default_weight_only_qconfig": ("native", False, _unweighted_ops),
    "default_reuse_input_qconfig": ("native", False, _after_int8),
}

_BACKENDS = {
    "native": (get_native_backend_config, tq.backend_config.get_native_backend_config),
    "qnnpack": (get_qnnpack_backend_config, tq.backend_config.get_qnnpack_backend_config),
    "legacy": (get_test_only_legacy_native_backend_config,
               tq.backend_config.native.get_test_only_legacy_native_backend_config),
}


# upstream's prepare_fx cannot read a qconfig with an ``nn.Identity`` observer (it asks every
# qconfig's weight observer for its dtype); on the unweighted ops they are applied to, these
# upstream qconfigs mean the same: activations fake-quantized / left in float
UPSTREAM_STAND_INS = {
    "default_activation_only_qconfig": lambda: tq.QConfig(activation=tq.default_fake_quant,
                                                          weight=tq.default_weight_fake_quant),
    "default_weight_only_qconfig": lambda: None,
}
# a qconfig for debugging: RecordingObserver records the tensors and has no qparams, so
# neither upstream nor fxquant can convert with it
NOT_CONVERTIBLE = {"default_debug_qconfig"}
# qint8 activations: the int8 kernels (fbgemm, qnnpack) take quint8 activations only, so
# upstream's lowered conv / linear fail when called; fxquant keeps them as reference modules
# (the reference models are compared as usual)
QINT8_ACTIVATIONS = {name for name in SPECIAL if "symmetric_qnnpack" in name}
# fxquant checks a weighted module's weight dtype against the backend (upstream checks only
# functional weights): no backend runs conv / linear with quint8 weights, so fxquant leaves
# them float with a warning, where upstream observes their activations and keeps them as
# reference modules; see test_quint8_weights_stay_float_and_say_why
WEIGHT_DTYPE_CHECKED = {"default_quint8_weight_qconfig"}
# float16 dynamic: upstream observes the linear's input with a float16 PlaceholderObserver
# and its reference model rounds that input to float16, which neither its lowered model nor
# the float16 dynamic kernel does (it reads float32 activations); fxquant observes nothing and
# its reference keeps float32 input (see test_float16_dynamic_reference_keeps_float32_input)
FLOAT16_DYNAMIC = {"float16_dynamic_qconfig"}


def _minmax_activation(ns, qconfig):
    """``qconfig`` with a HistogramObserver activation replaced by a MinMaxObserver with the
    same arguments (everything else as is)."""
    partial = getattr(qconfig.activation, "p", None) if qconfig is not None else None
    if not isinstance(partial, functools.partial) or partial.func is not ns.HistogramObserver:
        return qconfig
    kwargs = {k: v for k, v in partial.keywords.items() if k != "bins"}
    return ns.QConfig(activation=ns.MinMaxObserver.with_args(**kwargs), weight=qconfig.weight)


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 12, (2,), generator=g), torch.randn(2, 3, 5, 5, generator=g)) for _ in range(3)]


def _run(name: str, *, deterministic: bool, quiet: bool = True):
    """(ours, upstream, batches, upstream backend config), prepared and calibrated."""
    backend, qat, mapping = SPECIAL.get(name, ("native", False, _global))
    ours_config, upstream_config = (f() for f in _BACKENDS[backend])
    qconfigs = [getattr(fxquant, name), UPSTREAM_STAND_INS[name]() if name in UPSTREAM_STAND_INS else getattr(tq, name)]
    if deterministic:
        qconfigs = [_minmax_activation(ns, q) for ns, q in zip((fxquant, tq), qconfigs, strict=True)]
    torch.manual_seed(0)
    model = Sweep().train(qat)
    batches = _batches()
    prepare_ours = prepare_qat_fx if qat else prepare_fx
    prepare_upstream = upstream_fx.prepare_qat_fx if qat else upstream_fx.prepare_fx
    with warnings.catch_warnings() if quiet else contextlib.nullcontext():
        if quiet:
            warnings.filterwarnings("ignore", message="prepare_fx leaves")  # tested elsewhere
        ours = prepare_ours(copy.deepcopy(model), mapping(fxquant, qconfigs[0]), batches[0],
                            backend_config=ours_config)
    upstream = prepare_upstream(copy.deepcopy(model), mapping(tq, qconfigs[1]), batches[0],
                                backend_config=upstream_config)
    with torch.no_grad():
        for b in batches:
            ours(*b)
            upstream(*b)
    return ours.eval(), upstream.eval(), batches, upstream_config


def test_every_public_qconfig_is_swept():
    assert len(PUBLIC_QCONFIGS) >= 20 and set(SPECIAL) <= set(PUBLIC_QCONFIGS)
    assert all(hasattr(fxquant, name) for name in PUBLIC_QCONFIGS)


@pytest.mark.parametrize("name", sorted(UPSTREAM_STAND_INS))
def test_upstream_cannot_prepare_qconfigs_with_identity_observers(name):
    """Why the stand-ins: upstream fails; fxquant runs them (the ops stay float where the
    Identity observer leaves nothing to quantize, with a warning)."""
    with pytest.raises(AttributeError, match="Identity"):
        upstream_fx.prepare_fx(Sweep().eval(), _unweighted_ops(tq, getattr(tq, name)), _batches()[0])


def test_debug_qconfig_records_like_upstream_and_convert_says_why_it_cannot():
    ours, upstream, _, _ = _run("default_debug_qconfig", deterministic=False)
    recorded = [m.get_tensor_value() for m in ours.modules() if isinstance(m, fxquant.RecordingObserver)]
    expected = [m.get_tensor_value() for m in upstream.modules() if isinstance(m, tq.RecordingObserver)]
    assert len(recorded) == len(expected) > 0
    assert sorted(len(r) for r in recorded) == sorted(len(e) for e in expected)
    with pytest.raises(Exception, match="RecordingObserver"):
        convert_fx(ours)


def _compared(names: list[str], *skip: set[str]) -> list[str]:
    """The qconfigs compared with upstream as is (the others have their own tests here)."""
    return [n for n in names if n not in NOT_CONVERTIBLE | WEIGHT_DTYPE_CHECKED and not any(n in s for s in skip)]


@pytest.mark.parametrize("name", _compared(PUBLIC_QCONFIGS, FLOAT16_DYNAMIC) + sorted(NOT_CONVERTIBLE))
def test_observers_sit_where_upstreams_do(name):
    ours, upstream, _, _ = _run(name, deterministic=False)
    assert observer_chains(ours) == observer_chains(upstream)


def _upstream_reference(upstream, config):
    """Upstream's decomposed reference model (its plain one quantizes to the dtype's full range,
    ignoring the observers' quant_min / quant_max), with the embedding of its plain reference
    model (the decomposed one rounds ``x / scale`` before adding a float zero point, which no
    kernel does, and has no 4-bit form)."""
    oracle = upstream_fx._convert_to_reference_decomposed_fx(copy.deepcopy(upstream), backend_config=config)
    plain = upstream_fx.convert_to_reference_fx(copy.deepcopy(upstream), backend_config=config)
    oracle.emb = plain.emb
    return oracle


@pytest.mark.parametrize("name", _compared(PUBLIC_QCONFIGS, FLOAT16_DYNAMIC))
def test_reference_model_equals_upstreams(name):
    ours, upstream, batches, config = _run(name, deterministic=True)
    reference = convert_to_reference_fx(copy.deepcopy(ours))
    oracle = _upstream_reference(upstream, config)
    for b in batches:
        for got, want in zip(outputs(reference, *b), outputs(oracle, *b), strict=True):
            assert torch.equal(got, want)


@pytest.mark.parametrize("name", _compared(PUBLIC_QCONFIGS, QINT8_ACTIVATIONS))
def test_lowered_model_within_one_step_of_upstreams(name, monkeypatch):
    ours, upstream, batches, config = _run(name, deterministic=True)
    if SPECIAL.get(name, ("native",))[0] == "qnnpack":
        monkeypatch.setattr(torch.backends.quantized, "engine", "qnnpack")
    lowered = convert_fx(copy.deepcopy(ours))
    oracle = upstream_fx.convert_fx(copy.deepcopy(upstream), backend_config=config)
    reference = convert_to_reference_fx(copy.deepcopy(ours))
    last_q = [n for n in reference.graph.nodes
              if n.target is torch.ops.quantized_decomposed.quantize_per_tensor.default]
    step = float(last_q[-1].args[1]) if last_q else 0.0
    for b in batches:
        for got, want in zip(outputs(lowered, *b), outputs(oracle, *b), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=step + 1e-6)


@pytest.mark.parametrize("name", sorted(QINT8_ACTIVATIONS))
def test_qint8_activation_ops_stay_reference_where_upstreams_kernels_fail(name, monkeypatch):
    ours, upstream, batches, config = _run(name, deterministic=True)
    monkeypatch.setattr(torch.backends.quantized, "engine", "qnnpack")
    lowered = convert_fx(copy.deepcopy(ours))
    reference = convert_to_reference_fx(copy.deepcopy(ours))
    oracle = upstream_fx.convert_fx(copy.deepcopy(upstream), backend_config=config)
    with pytest.raises(RuntimeError, match="QUInt8"):
        oracle(*batches[0])
    # conv and linear were not swapped for int8 modules that cannot run qint8 activations
    assert not [m for m in lowered.modules() if hasattr(m, "_packed_params")]
    assert any(isinstance(m, fxquant.nn.quantized.reference.Conv2d) for m in lowered.modules())
    for b in batches:
        for got, want in zip(outputs(lowered, *b), outputs(reference, *b), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_quint8_weights_stay_float_and_say_why():
    with pytest.warns(UserWarning, match=r"leaves .*conv.* in float: .*weight dtype is torch.quint8"):
        ours, upstream, _, _ = _run("default_quint8_weight_qconfig", deterministic=True, quiet=False)
    consumers = {consumer for _, consumer, _ in observer_chains(ours)}
    assert {"conv", "fc"}.isdisjoint(consumers)
    assert {"conv", "fc"} <= {consumer for _, consumer, _ in observer_chains(upstream)}
    lowered = convert_fx(ours)
    assert type(lowered.conv) is nn.Conv2d and type(lowered.fc) is nn.Linear


def test_float16_dynamic_reference_keeps_float32_input():
    ours, upstream, batches, config = _run("float16_dynamic_qconfig", deterministic=True)
    upstream_only = set(observer_chains(upstream)) - set(observer_chains(ours))
    assert upstream_only == {("emb", "fc", ("PlaceholderObserver:torch.float16:dynamic",))}
    reference = convert_to_reference_fx(copy.deepcopy(ours))
    assert not [n for n in reference.graph.nodes if n.kwargs.get("dtype") == torch.float16]
    oracle = upstream_fx.convert_to_reference_fx(copy.deepcopy(upstream), backend_config=config)
    for b in batches:
        # the same computation once upstream's float16 rounding of the linear's input is undone
        emb = reference.emb(b[0])
        assert torch.equal(oracle.fc(emb.half().float()), F.linear(emb.half().float(), reference.fc.weight,
                                                                   reference.fc.bias))
        assert torch.equal(reference.fc(emb), F.linear(emb, reference.fc.weight, reference.fc.bias))
        torch.testing.assert_close(reference(*b), oracle(*b), rtol=2e-3, atol=2e-3)


def test_prepare_qat_fx_swaps_embeddings_like_upstream():
    ours, upstream, _, _ = _run("default_embedding_qat_qconfig", deterministic=True)
    assert type(upstream.emb).__name__ == "Embedding" and "qat" in type(upstream.emb).__module__
    assert type(ours.emb) is fxquant.nn.qat.Embedding


class ConvReshape(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv(x).reshape(2, -1), x.reshape(2, -1)


def test_reuse_input_after_a_qint8_producer_shares_its_observer_like_upstream():
    """``reshape`` with the reuse-input qconfig after a qint8 conv reuses the conv's output
    observer (no observer of its own, whatever the producer's dtype); on an unquantized
    input it stays float."""
    def mapping(ns):
        symmetric = _minmax_activation(ns, ns.default_symmetric_qnnpack_qconfig)
        return ns.QConfigMapping().set_global(symmetric).set_object_type("reshape", ns.default_reuse_input_qconfig)

    torch.manual_seed(0)
    model = ConvReshape().eval()
    x = torch.randn(2, 3, 5, 5)
    ours = prepare_fx(copy.deepcopy(model), mapping(fxquant), (x,), backend_config=get_qnnpack_backend_config())
    upstream = upstream_fx.prepare_fx(copy.deepcopy(model), mapping(tq), (x,),
                                      backend_config=tq.backend_config.get_qnnpack_backend_config())
    chains = observer_chains(ours)
    assert chains == observer_chains(upstream)
    assert ("reshape", "output", ("MinMaxObserver:torch.qint8",)) in chains
    assert not [c for c in chains if c[0] == "reshape_1"]
    conv_out = next(n for n in ours.graph.nodes if n.op == "call_module" and n.args[0].name == "conv")
    reshape_out = next(n for n in ours.graph.nodes if n.op == "call_module" and n.args[0].name == "reshape")
    assert conv_out.target == reshape_out.target  # one observer module
    ours(x)
    upstream(x)
    reference = convert_to_reference_fx(ours)
    oracle = upstream_fx._convert_to_reference_decomposed_fx(
        upstream, backend_config=tq.backend_config.get_qnnpack_backend_config())
    for got, want in zip(reference(x), oracle(x), strict=True):
        assert torch.equal(got, want)
