"""Packed-weight kernels called without the ``__torch_function__`` probe: every quantized
module kind gives exactly the bare op's (and upstream's) output, torch function modes still
see the call, subclass dispatch is back on afterwards, and bad input is refused clearly."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.ao.nn.intrinsic.quantized as ao_nniq
import torch.ao.nn.intrinsic.quantized.dynamic as ao_nniqd
import torch.ao.nn.quantized as ao_nnq
import torch.ao.nn.quantized.dynamic as ao_nnqd
from helpers import quiet_upstream
from torch import nn
from torch.overrides import TorchFunctionMode

import fxquant.nn.intrinsic.quantized as nniq
import fxquant.nn.intrinsic.quantized.dynamic as nniqd
import fxquant.nn.quantized as nnq
import fxquant.nn.quantized.dynamic as nnqd
import fxquant.nn.quantized.functional as qF
from fxquant.nn.packed_call import native_op, no_subclass_probe, packed_kernel

quiet_upstream()
Q = torch.ops.quantized


def _q(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.quantize_per_tensor(torch.randn(shape, generator=g), 0.05, 128, torch.quint8)


def _qw(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.quantize_per_tensor(torch.randn(shape, generator=g) * 0.1, 0.004, 0, torch.qint8)


def _with_weights(ours: nn.Module, theirs: nn.Module, w: torch.Tensor, bias: bool = True) -> tuple[nn.Module, nn.Module]:
    b = torch.randn(w.shape[1] if isinstance(ours, nnq.ConvTranspose2d) else w.shape[0]) if bias else None
    for m in (ours, theirs):
        m.set_weight_bias(w, b)
        if not isinstance(m, (nnqd.Linear, ao_nnqd.Linear)):
            m.scale, m.zero_point = 0.07, 120
    return ours, theirs


def _embedding_bags() -> tuple[nn.Module, nn.Module]:
    ours, theirs = nnq.EmbeddingBag(50, 8), ao_nnq.EmbeddingBag(50, 8)
    w = torch.quantize_per_channel(torch.randn(50, 8), torch.rand(50) * 0.02 + 0.01, torch.zeros(50), 0, torch.quint8)
    ours.set_weight(w)
    theirs.set_weight(w)
    return ours, theirs


def _embeddings() -> tuple[nn.Module, nn.Module]:
    ours, theirs = nnq.Embedding(50, 8), ao_nnq.Embedding(50, 8)
    w = torch.quantize_per_channel(torch.randn(50, 8), torch.rand(50) * 0.02 + 0.01, torch.zeros(50), 0, torch.quint8)
    ours.set_weight(w)
    theirs.set_weight(w)
    return ours, theirs


# kind -> (our module, upstream's module with the same weights, inputs, the bare op, its
# arguments given the module)
CASES: dict[str, Any] = {
    "conv1d": (lambda: _with_weights(nnq.Conv1d(4, 6, 3), ao_nnq.Conv1d(4, 6, 3), _qw((6, 4, 3), 1)),
               lambda: (_q((2, 4, 9), 2),), Q.conv1d),
    "conv2d": (lambda: _with_weights(nnq.Conv2d(4, 6, 3, padding=1), ao_nnq.Conv2d(4, 6, 3, padding=1),
                                     _qw((6, 4, 3, 3), 1)), lambda: (_q((1, 4, 7, 7), 2),), Q.conv2d),
    "conv2d_depthwise": (lambda: _with_weights(nnq.Conv2d(8, 8, 3, groups=8), ao_nnq.Conv2d(8, 8, 3, groups=8),
                                               _qw((8, 1, 3, 3), 3)), lambda: (_q((1, 8, 6, 6), 4),), Q.conv2d),
    "conv3d": (lambda: _with_weights(nnq.Conv3d(2, 4, 3), ao_nnq.Conv3d(2, 4, 3), _qw((4, 2, 3, 3, 3), 1)),
               lambda: (_q((1, 2, 5, 5, 5), 2),), Q.conv3d),
    "conv_relu2d": (lambda: _with_weights(nniq.ConvReLU2d(4, 6, 3), ao_nniq.ConvReLU2d(4, 6, 3), _qw((6, 4, 3, 3), 1)),
                    lambda: (_q((1, 4, 7, 7), 2),), Q.conv2d_relu),
    "conv_transpose2d": (lambda: _with_weights(nnq.ConvTranspose2d(4, 6, 3), ao_nnq.ConvTranspose2d(4, 6, 3),
                                               _qw((4, 6, 3, 3), 1)), lambda: (_q((1, 4, 5, 5), 2),),
                         Q.conv_transpose2d),
    "linear": (lambda: _with_weights(nnq.Linear(16, 8), ao_nnq.Linear(16, 8), _qw((8, 16), 1)),
               lambda: (_q((3, 16), 2),), Q.linear),
    "linear_relu": (lambda: _with_weights(nniq.LinearReLU(16, 8), ao_nniq.LinearReLU(16, 8), _qw((8, 16), 1)),
                    lambda: (_q((3, 16), 2),), Q.linear_relu),
    "dynamic_linear": (lambda: _with_weights(nnqd.Linear(16, 8), ao_nnqd.Linear(16, 8), _qw((8, 16), 1)),
                       lambda: (torch.randn(3, 16),), Q.linear_dynamic),
    "dynamic_linear_relu": (lambda: _with_weights(nniqd.LinearReLU(16, 8), ao_nniqd.LinearReLU(16, 8), _qw((8, 16), 1)),
                            lambda: (torch.randn(3, 16),), Q.linear_relu_dynamic),
    "embedding_bag": (_embedding_bags, lambda: (torch.tensor([1, 4, 9, 4, 49]), torch.tensor([0, 2])),
                      Q.embedding_bag_byte),
    "embedding": (_embeddings, lambda: (torch.tensor([[1, 4], [49, 0]]),), Q.embedding_byte),
}


def _values(t: torch.Tensor) -> torch.Tensor:
    return t.int_repr() if t.is_quantized else t


def _bare(kind: str, module: nn.Module, inputs: tuple[Any, ...]) -> torch.Tensor:
    """The module's computation as the plain op call (what its forward did before)."""
    op = CASES[kind][2]
    if kind.startswith("embedding_bag"):
        ids, offsets = inputs
        return op(module._packed_params._packed_weight, ids, offsets, False, 0, False, None, None, False)
    if kind.startswith("embedding"):
        return op(module._packed_params._packed_weight, *inputs)
    if kind.startswith("dynamic"):
        return op(inputs[0], module._packed_params._packed_params, True)
    packed = module._packed_params
    packed = getattr(packed, "_packed_params", packed)
    return op(inputs[0], packed, module.scale, module.zero_point)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_module_equals_the_bare_op_and_upstream(kind):
    make, inputs, _ = CASES[kind]
    ours, theirs = make()
    x = inputs()
    out = ours(*x)
    assert torch.equal(_values(out), _values(_bare(kind, ours, x)))
    assert torch.equal(_values(out), _values(theirs(*x)))
    if out.is_quantized:
        assert (out.q_scale(), out.q_zero_point()) == (theirs(*x).q_scale(), theirs(*x).q_zero_point())


class _Recorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", ["conv2d", "linear", "dynamic_linear", "embedding_bag"])
def test_torch_function_modes_still_see_the_kernel(kind):
    make, inputs, op = CASES[kind]
    ours, _ = make()
    x = inputs()
    with _Recorder() as bare:
        _bare(kind, ours, x)
    with _Recorder() as bypass:
        ours(*x)
    # the mode sees the operator as it did with the bare call (there the packet, now the
    # overload the packet resolves to)
    def calls_of_op(seen: list[Any]) -> list[Any]:
        return [f for f in seen if f is op or getattr(f, "overloadpacket", None) is op]

    assert calls_of_op(bare.seen) == [op]
    assert len(calls_of_op(bypass.seen)) == 1


def test_subclass_dispatch_is_back_on_after_the_call_and_after_an_error():
    conv, _ = CASES["conv2d"][0]()
    conv(*CASES["conv2d"][1]())
    assert torch._C._is_torch_function_enabled()
    with pytest.raises(RuntimeError):
        conv._OP(torch.randn(1, 4, 7, 7), conv._packed_params, 0.1, 0)  # float input: refused by the kernel
    assert torch._C._is_torch_function_enabled()


def test_the_quantized_engine_is_left_alone():
    engine = torch.backends.quantized.engine
    lin, _ = CASES["linear"][0]()
    lin(*CASES["linear"][1]())
    assert torch.backends.quantized.engine == engine


def test_functional_conv_and_linear_equal_upstream():
    import torch.ao.nn.quantized.functional as ao_qF

    x, w, b = _q((1, 4, 7, 7), 1), _qw((6, 4, 3, 3), 2), torch.randn(6)
    out = qF.conv2d(x, w, b, padding=1, scale=0.07, zero_point=120)
    assert torch.equal(out.int_repr(), ao_qF.conv2d(x, w, b, padding=1, scale=0.07, zero_point=120).int_repr())
    xl, wl = _q((3, 16), 3), _qw((8, 16), 4)
    assert torch.equal(qF.linear(xl, wl, None, 0.07, 120).int_repr(),
                       ao_qF.linear(xl, wl, None, 0.07, 120).int_repr())


def test_packed_kernel_is_named_after_its_operator():
    kernel = packed_kernel(Q.linear_dynamic.default)
    assert kernel.__name__ == "packed_quantized_linear_dynamic"
    assert "quantized::linear_dynamic" in (kernel.__doc__ or "")
    assert native_op(Q.linear.default) is Q.linear.default._op
    with no_subclass_probe():
        assert not torch._C._is_torch_function_enabled()


def test_a_packet_instead_of_an_overload_is_refused_with_advice():
    with pytest.raises(TypeError, match=r"overload.*overloads\(\)"):
        packed_kernel(Q.linear)  # type: ignore[arg-type]  # the packet, not an overload
