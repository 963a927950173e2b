"""convert_pt2e on a transformer block against torchao 0.18 as the oracle (X86InductorQuantizer,
default static and dynamic configs): the converted graphs have the same nodes in the same order
(each quantize/dequantize at the same place, shared or duplicated the same way), and Inductor
compiles them to the same kernels (the same oneDNN int8 linears with the same output dtypes
and fused post-ops, the same number of generated C++ kernels)."""

from __future__ import annotations

import re
import warnings
from collections import Counter
from unittest import mock

import pytest
import torch
import torch._inductor.config as inductor_config
from torch import nn
from torch._inductor.graph import GraphLowering

from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer.x86_inductor_quantizer import (
    X86InductorQuantizer,
    get_default_x86_inductor_quantization_config,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torchao.quantization.pt2e.quantize_pt2e as ao_flow
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as ao_x86


class Block(nn.Module):
    """A BERT encoder layer: q/k/v projections of one input, softmax attention, output
    projection + residual, layer norm, linear-GELU-linear + residual, layer norm."""

    def __init__(self, d: int = 32, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ff1, self.ff2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        attn = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        y = self.ln1(x + self.o((attn @ v).transpose(1, 2).reshape(b, t, d)))
        return self.ln2(y + self.ff2(nn.functional.gelu(self.ff1(y))))


class FeedForward(nn.Module):
    """The block's linear-GELU-linear + residual (what Inductor fuses most: a GELU and
    uint8 output into the first GEMM, the residual add into the second)."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.ff1, self.ff2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ff2(nn.functional.gelu(self.ff1(x)))


def _converted(flow: str, is_dynamic: bool, make: type[nn.Module] = Block
               ) -> tuple[torch.fx.GraphModule, torch.Tensor]:
    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(2, 16, 32)
    gm = torch.export.export(model, (x,)).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if flow == "torchao":
            quantizer = ao_x86.X86InductorQuantizer().set_global(
                ao_x86.get_default_x86_inductor_quantization_config(is_dynamic=is_dynamic))
            prepared = ao_flow.prepare_pt2e(gm, quantizer)
        else:
            quantizer = X86InductorQuantizer().set_global(
                get_default_x86_inductor_quantization_config(is_dynamic=is_dynamic))
            prepared = prepare_pt2e(gm, quantizer)
        with torch.no_grad():
            for _ in range(3):
                prepared(torch.randn_like(x))
        convert = ao_flow.convert_pt2e if flow == "torchao" else convert_pt2e
        return convert(prepared), x


def _structure(gm: torch.fx.GraphModule) -> list[tuple[str, ...]]:
    """Each computing node in order: its op and what each argument is (the producing op, a
    constant, or the kind of literal; quantization parameters' values are left out, since
    the observers differ by design)."""

    def describe(a: object) -> str:
        if isinstance(a, torch.fx.Node):
            return "constant" if a.op == "get_attr" else str(a.target) if a.op == "call_function" else a.op
        if isinstance(a, (list, tuple)):
            return "[" + ",".join(describe(i) for i in a) + "]"
        return "number" if isinstance(a, (int, float)) and not isinstance(a, bool) else repr(a)

    return [(str(n.target), *(describe(a) for a in n.args), f"users={len(n.users)}")
            for n in gm.graph.nodes if n.op == "call_function"]


MODES = [pytest.param(False, id="static"), pytest.param(True, id="dynamic")]


@pytest.mark.parametrize("is_dynamic", MODES)
def test_converted_block_is_node_for_node_torchaos(is_dynamic):
    ours, x = _converted("fxquant", is_dynamic)
    oracle, _ = _converted("torchao", is_dynamic)
    assert _structure(ours) == _structure(oracle)
    # and it computes the same function (qparams differ slightly: output-aware weights and
    # fxquant's histogram search)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), oracle(x), atol=0.15, rtol=0)


_QLINEAR = re.compile(r"torch\.ops\.onednn\.(qlinear_pointwise\.\w+)\(.*?(torch\.(?:float32|uint8)), "
                      r"(?:[-\d.e]+, -?\d+, )?'(\w+)'")


def _inductor_calls(gm: torch.fx.GraphModule, x: torch.Tensor) -> Counter[str]:
    codes: list[str] = []
    with mock.patch.object(GraphLowering, "save_output_code", codes.append), \
            mock.patch.object(inductor_config, "freezing", True), torch.no_grad():
        torch.compile(gm)(x)
    calls: Counter[str] = Counter()
    for code in codes:
        calls["cpp kernels"] += len(re.findall(r"^cpp_fused_\w+ = async_compile", code, re.MULTILINE))
        calls.update(" ".join(m) for m in _QLINEAR.findall(code))
        calls.update(re.findall(r"extern_kernels\.\w+", code))
    return calls


@pytest.mark.slow
def test_inductor_compiles_both_to_the_same_kernels():
    ours, x = _converted("fxquant", is_dynamic=False, make=FeedForward)
    oracle, _ = _converted("torchao", is_dynamic=False, make=FeedForward)
    ours_calls, oracle_calls = _inductor_calls(ours, x), _inductor_calls(oracle, x)
    # both linears run as oneDNN int8 GEMMs: ff1 with GELU and uint8 output, ff2 with the
    # residual add fused
    assert ours_calls["qlinear_pointwise.tensor torch.uint8 gelu"] == 1
    assert ours_calls["qlinear_pointwise.binary_tensor torch.float32 sum"] == 1
    assert ours_calls == oracle_calls


def _hooks(gm: torch.fx.GraphModule) -> int:
    return len(gm._forward_pre_hooks) + len(gm._forward_hooks)


@pytest.mark.parametrize("is_dynamic", MODES)
def test_prepared_and_converted_models_run_no_hooks_like_torchaos(is_dynamic):
    # torch.export's .module() wraps the graph in a module with per-call hooks (input-shape
    # checks); torchao's prepare/convert return plain GraphModules, which torch.compile runs
    # without that Python on every call
    torch.manual_seed(0)
    x = torch.randn(2, 16, 32)
    exported = torch.export.export(FeedForward().eval(), (x,)).module()
    assert _hooks(exported) > 0
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_dynamic=is_dynamic))
    prepared = prepare_pt2e(exported, quantizer)
    assert _hooks(prepared) == 0 and "fxquant_observer_plan" in prepared.meta
    prepared(x)
    converted = convert_pt2e(prepared)
    oracle, _ = _converted("torchao", is_dynamic, make=FeedForward)
    assert _hooks(converted) == _hooks(oracle) == 0
    assert type(converted).__mro__[1] is type(oracle).__mro__[1] is torch.fx.GraphModule
    with pytest.raises(NotImplementedError, match="move_exported_model_to_eval"):
        converted.eval()
