"""Static float16 qconfigs in the FX flow against upstream's ``prepare_fx`` / ``convert_fx``.

Only upstream's ``get_test_only_legacy_native_backend_config`` has float16 static dtype
configs (linear, binary ops, fixed-qparams and shared-qparams ops): there every such op is
observed by ``PlaceholderObserver(dtype=float16)`` and convert casts to float16 and back;
linear modules become reference modules with float16 weights, and lowering keeps all of it
(no float16 kernel). The other backend configs leave the ops in float, with a warning.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.ao.quantization as tq
import torch.ao.quantization.quantize_fx as upstream_fx
import torch.nn.functional as F
from fx.observer_chains import observer_chains, outputs
from helpers import quiet_upstream
from torch import nn
from torch.ao.quantization.backend_config import native as upstream_native

import fxquant
from fxquant.backend_config import native
from fxquant.quantize_fx import convert_fx, convert_to_reference_fx, prepare_fx

quiet_upstream()

_UPSTREAM_LEGACY = upstream_native.get_test_only_legacy_native_backend_config()


class Net(nn.Module):
    """conv + relu (int8 only) → flatten → linear → add → sigmoid → linear + relu → scalar
    mul → functional linear with a parameter weight, and a reshape and a maxpool output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.fc = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 8)
        self.relu = nn.ReLU()
        self.w = nn.Parameter(torch.randn(5, 8) * 0.3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = torch.flatten(F.relu(self.conv(x)), 1)
        y = self.fc(h) + h
        z = self.relu(self.fc2(torch.sigmoid(y)))
        z = z * 2.0
        pooled = F.max_pool1d(z.unsqueeze(1), 2)
        return F.linear(z, self.w), z.reshape(-1), pooled


def _minmax(ns):
    return ns.QConfig(activation=ns.MinMaxObserver.with_args(reduce_range=True),
                      weight=ns.default_per_channel_weight_observer)


MAPPINGS = {
    "global_fp16": lambda ns: ns.QConfigMapping().set_global(ns.float16_static_qconfig),
    # the default mapping's int8 ops with the linear layers in float16
    "default_mapping_fp16_linear": lambda ns: ns.get_default_qconfig_mapping("fbgemm")
    .set_global(_minmax(ns)).set_module_name("fc", ns.float16_static_qconfig)
    .set_module_name("fc2", ns.float16_static_qconfig).set_object_type(F.linear, ns.float16_static_qconfig),
    # float16 everywhere but an int8 conv feeding the float16 ops
    "fp16_with_int8_conv": lambda ns: ns.QConfigMapping().set_global(ns.float16_static_qconfig)
    .set_module_name("conv", _minmax(ns)),
}


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 3, 4, 4, generator=g) for _ in range(3)]


def _prepare_both(case: str):
    torch.manual_seed(0)
    model = Net().eval()
    batches = _batches()
    ours = prepare_fx(copy.deepcopy(model), MAPPINGS[case](fxquant), (batches[0],),
                      backend_config=native.get_test_only_legacy_native_backend_config())
    upstream = upstream_fx.prepare_fx(copy.deepcopy(model), MAPPINGS[case](tq), (batches[0],),
                                      backend_config=_UPSTREAM_LEGACY)
    with torch.no_grad():
        for b in batches:
            ours(b)
            upstream(b)
    return ours, upstream, batches


@pytest.fixture(scope="module", params=list(MAPPINGS))
def prepared(request):
    with warnings.catch_warnings():  # global_fp16: the conv has no float16 dtype config
        warnings.filterwarnings("ignore", message=r"prepare_fx leaves .*Conv2d")
        return request.param, *_prepare_both(request.param)


def test_observers_sit_where_upstreams_do(prepared):
    case, ours, upstream, _ = prepared
    chains = observer_chains(ours)
    assert chains == observer_chains(upstream)
    assert any("float16" in kind for *_, kinds in chains for kind in kinds), case


def test_reference_model_equals_upstreams_bit_for_bit(prepared):
    _, ours, upstream, batches = prepared
    reference = convert_to_reference_fx(copy.deepcopy(ours))
    reference.graph.lint()
    oracle = upstream_fx.convert_to_reference_fx(copy.deepcopy(upstream), backend_config=_UPSTREAM_LEGACY)
    decomposed = upstream_fx._convert_to_reference_decomposed_fx(copy.deepcopy(upstream),
                                                                backend_config=_UPSTREAM_LEGACY)
    for b in batches:
        for got, want, want_decomposed in zip(outputs(reference, b), outputs(oracle, b),
                                              outputs(decomposed, b), strict=True):
            assert torch.equal(got, want) and torch.equal(got, want_decomposed)


def test_float16_linear_becomes_a_reference_module_with_float16_weight_dtype(prepared):
    """As upstream's: the weight dtype is float16 but its qscheme is None, so the reference
    module computes with the float weight (only a functional linear's weight edge, observed
    in the graph, is rounded to float16)."""
    case, ours, _, _ = prepared
    reference = convert_to_reference_fx(copy.deepcopy(ours))
    fc = reference.get_submodule("fc")
    assert type(fc).__name__ == "Linear" and "reference" in type(fc).__module__
    assert fc.weight_dtype == torch.float16 and fc.weight_qscheme is None
    x = torch.randn(3, 8)
    assert torch.equal(fc(x), F.linear(x, fc.weight, fc.bias)), case
    linear = next(n for n in reference.graph.nodes if n.target is F.linear)
    weight_cast = linear.args[1]
    assert weight_cast.kwargs.get("dtype") == torch.float32
    assert weight_cast.args[0].kwargs.get("dtype") == torch.float16


def test_lowered_model_keeps_float16_as_reference_and_equals_upstream(prepared):
    case, ours, upstream, batches = prepared
    lowered = convert_fx(copy.deepcopy(ours))
    oracle = upstream_fx.convert_fx(copy.deepcopy(upstream), backend_config=_UPSTREAM_LEGACY)
    # upstream has no float16 kernel: the linear layers stay reference modules
    assert "reference" in type(lowered.get_submodule("fc")).__module__
    assert "reference" in type(oracle.get_submodule("fc")).__module__
    casts = [n for n in lowered.graph.nodes if n.kwargs.get("dtype") == torch.float16]
    assert casts, case
    for b in batches:
        for got, want in zip(outputs(lowered, b), outputs(oracle, b), strict=True):
            assert torch.equal(got, want)


@pytest.mark.parametrize("backend", ["native", "x86", "fbgemm"])
def test_backends_without_float16_ops_keep_them_float_and_say_so(backend):
    """Upstream's native/x86/fbgemm configs have no float16 static dtype config: the ops stay
    float (upstream silently; fxquant warns naming the pattern and the dtype)."""
    config = getattr(fxquant.backend_config, f"get_{backend}_backend_config")()
    mapping = fxquant.QConfigMapping().set_global(fxquant.float16_static_qconfig)
    with pytest.warns(UserWarning, match=r"leaves .*in float: pattern .*Linear.*float16"):
        prepared = prepare_fx(nn.Sequential(nn.Linear(4, 4)).eval(), mapping, (torch.randn(2, 4),),
                              backend_config=config)
    assert not [n for n in prepared.graph.nodes if "activation_post_process" in str(n.target)]
    x = torch.randn(2, 4)
    prepared(x)
    lowered = convert_fx(prepared)
    assert type(lowered.get_submodule("0")) is nn.Linear


def test_float16_static_on_an_op_the_backend_runs_only_in_int8_stays_float_with_a_reason():
    """The legacy config has float16 linear but int8-only conv: the conv stays float."""
    mapping = fxquant.QConfigMapping().set_global(fxquant.float16_static_qconfig)
    with pytest.warns(UserWarning, match=r"leaves .*in float: pattern .*Conv2d.*float16"):
        prepare_fx(nn.Sequential(nn.Conv2d(3, 3, 1)).eval(), mapping, (torch.randn(1, 3, 4, 4),),
                   backend_config=native.get_test_only_legacy_native_backend_config())
