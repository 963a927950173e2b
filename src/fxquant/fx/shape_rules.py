"""Shape rules for :mod:`fxquant.fx.example_values`: a node's output shape, dtype and layout
from its inputs' (as meta tensors), without running the model's arithmetic.

:func:`infer_node` decides one node: by the rule registered for its module type, function or
method name (conv, linear, batch norm, layer norm, pooling, padding, activations,
broadcasting arithmetic, ``matmul``, ``softmax``, ``cat``, ``mean``; fused ``Sequential``
modules part by part); by running it when it only reads metadata (``view``, ``flatten``,
``size``, indexing, ...) or when its inputs are all real values; else it raises
:class:`Undecided`. Rules accept only what they decide exactly and decline the rest.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

__all__ = ["Undecided", "infer_node", "meta_tensor"]


class Undecided(Exception):
    """A node whose output the rules cannot decide: run the float forward instead."""



def meta_tensor(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A shape/dtype-only tensor on the ``meta`` device."""
    return torch.empty(tuple(shape), dtype=dtype, device="meta")


def _float_tensor(x: Any, *, contiguous: bool = True) -> torch.Tensor:
    """``x`` if it is a (contiguous) floating-point tensor; otherwise the node is undecided.
    Most rules make contiguous outputs, which is what their ops make from contiguous inputs."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or (contiguous and not x.is_contiguous()):
        raise Undecided
    return x


def _like(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The output of an elementwise op on ``x`` alone (or with numbers): ``x``'s shape and
    layout if ``x`` is dense (contiguous, permuted); contiguous if ``x`` is a slice whose
    strides decrease with the dim (a chunk of a contiguous tensor); undecided otherwise.
    (``torch.empty_like`` would do, but its meta kernel costs a second on first use.)"""
    dtype = x.dtype if dtype is None else dtype
    if x.is_contiguous():
        return meta_tensor(x.shape, dtype)
    sized = [(stride, size) for stride, size in zip(x.stride(), x.shape) if size != 1]
    expected = 1
    for stride, size in sorted(sized):
        if stride != expected:
            break
        expected *= size
    else:  # non-overlapping and dense: the op keeps the layout
        return torch.empty_strided(tuple(x.shape), tuple(x.stride()), dtype=dtype, device="meta")
    strides = [stride for stride, _ in sized]
    if strides == sorted(strides, reverse=True) and len(set(strides)) == len(strides):
        return meta_tensor(x.shape, dtype)
    raise Undecided


def _pair(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    if isinstance(value, (tuple, list)) and len(value) == n and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise Undecided


def _broadcast(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """Broadcast shape of ``a`` and ``b`` (torch's rules); undecided if they do not broadcast."""
    out: list[int] = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and x != 1 and y != 1:
            raise Undecided
        out.append(y if x == 1 else x)
    return tuple(reversed(out))


def _no_kwargs(kwargs: dict[str, Any], allowed: Sequence[str] = ()) -> None:
    if any(k not in allowed for k in kwargs):
        raise Undecided



def _conv_shape(x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any, groups: Any,
                n: int) -> torch.Tensor:
    """Output of an ``n``-d convolution (batched or not) with zero padding."""
    x = _float_tensor(x)
    if not isinstance(weight, torch.Tensor) or weight.dtype != x.dtype or weight.dim() != n + 2:
        raise Undecided
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.dtype != x.dtype
                             or tuple(bias.shape) != (weight.shape[0],)):
        raise Undecided
    if x.dim() not in (n + 1, n + 2) or not isinstance(groups, int) or groups < 1:
        raise Undecided
    batched = x.dim() == n + 2
    channels, spatial = x.shape[1 if batched else 0], x.shape[-n:]
    if channels != weight.shape[1] * groups or weight.shape[0] % groups:
        raise Undecided
    strides, dilations = _pair(stride, n), _pair(dilation, n)
    kernel = weight.shape[2:]
    if padding == "valid":
        pads = (0,) * n
    elif padding == "same":
        if any(s != 1 for s in strides):
            raise Undecided
        pads = None
    else:
        pads = _pair(padding, n)
    out = []
    for i in range(n):
        if pads is None:
            size = spatial[i]
        else:
            size = (spatial[i] + 2 * pads[i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
        if size < 1 or spatial[i] < 1:
            raise Undecided
        out.append(size)
    lead = (x.shape[0],) if batched else ()
    return meta_tensor((*lead, weight.shape[0], *out), x.dtype)


def _conv_module(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    assert isinstance(m, nn.modules.conv._ConvNd)
    _no_kwargs(kwargs)
    if len(args) != 1 or m.padding_mode != "zeros" or m.transposed:
        raise Undecided
    n = len(m.kernel_size)
    return _conv_shape(args[0], m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups, n)


def _linear_shape(x: Any, weight: Any, bias: Any) -> torch.Tensor:
    """Output of ``linear``: always contiguous, whatever the input's layout."""
    x = _float_tensor(x, contiguous=False)
    if not isinstance(weight, torch.Tensor) or weight.dtype != x.dtype or weight.dim() != 2:
        raise Undecided
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.dtype != x.dtype
                             or tuple(bias.shape) != (weight.shape[0],)):
        raise Undecided
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise Undecided
    return meta_tensor((*x.shape[:-1], weight.shape[0]), x.dtype)


def _linear_module(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    assert isinstance(m, nn.Linear)
    _no_kwargs(kwargs)
    if len(args) != 1:
        raise Undecided
    return _linear_shape(args[0], m.weight, m.bias)


def _linear_function(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    _no_kwargs(kwargs, ("bias",))
    if len(args) + len(kwargs) not in (2, 3) or len(args) < 2:
        raise Undecided
    return _linear_shape(args[0], args[1], args[2] if len(args) == 3 else kwargs.get("bias"))


_BN_DIMS: dict[type[nn.Module], tuple[int, ...]] = {
    nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,),
}


def _batch_norm_module(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    assert isinstance(m, nn.modules.batchnorm._BatchNorm)
    _no_kwargs(kwargs)
    if len(args) != 1:
        raise Undecided
    x = _float_tensor(args[0])
    if x.dim() not in _BN_DIMS[type(m)] or x.shape[1] != m.num_features:
        raise Undecided
    params = [p for p in (m.weight, m.bias, m.running_mean, m.running_var) if p is not None]
    if any(p.dtype != x.dtype for p in params):
        raise Undecided
    return meta_tensor(x.shape, x.dtype)


def _layer_norm_module(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    assert isinstance(m, nn.LayerNorm)
    _no_kwargs(kwargs)
    if len(args) != 1:
        raise Undecided
    x = _float_tensor(args[0])
    k = len(m.normalized_shape)
    if x.dim() < k or tuple(x.shape[x.dim() - k:]) != tuple(m.normalized_shape):
        raise Undecided
    if any(p is not None and p.dtype != x.dtype for p in (m.weight, m.bias)):
        raise Undecided
    return meta_tensor(x.shape, x.dtype)


def _constant_pad_shape(x: Any, pad: Any) -> torch.Tensor:
    """Output of constant padding: ``pad`` = (last dim's left, right, the previous dim's ...)."""
    x = _float_tensor(x)
    if not isinstance(pad, (tuple, list)) or len(pad) % 2 or not all(isinstance(p, int) and p >= 0 for p in pad):
        raise Undecided
    n = len(pad) // 2
    if x.dim() < n:
        raise Undecided
    shape = list(x.shape)
    for i in range(n):
        shape[-1 - i] += pad[2 * i] + pad[2 * i + 1]
    return meta_tensor(shape, x.dtype)


def _constant_pad_module(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    assert isinstance(m, nn.modules.padding._ConstantPadNd)
    _no_kwargs(kwargs)
    if len(args) != 1:
        raise Undecided
    return _constant_pad_shape(args[0], m.padding)


def _elementwise(x: torch.Tensor, inplace: bool | None) -> torch.Tensor:
    """Output of an elementwise op on ``x``: ``x`` itself if ``inplace`` (None: it may be)."""
    if inplace:
        return torch.empty_strided(tuple(x.shape), tuple(x.stride()), dtype=x.dtype, device="meta")
    if inplace is None and not x.is_contiguous():
        raise Undecided
    return _like(x)


# modules that return their input itself (in eval mode), whatever its layout
_ALIASING_MODULES = (nn.Identity, nn.Dropout)


def _same_as_input(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """Elementwise modules (activations, dropout, identity) on a floating-point tensor."""
    _no_kwargs(kwargs)
    if len(args) != 1:
        raise Undecided
    inplace = isinstance(m, _ALIASING_MODULES) or getattr(m, "inplace", False) is True
    return _elementwise(_float_tensor(args[0], contiguous=False), inplace)


def _pool_shape(x: Any, n: int, kernel: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: Any) -> torch.Tensor:
    """Output of max pooling, or of average pooling (``dilation`` None)."""
    x = _float_tensor(x)
    if x.dim() not in (n + 1, n + 2) or not isinstance(ceil_mode, bool):
        raise Undecided
    kernels = _pair(kernel, n)
    strides = kernels if stride is None or stride == [] else _pair(stride, n)
    pads, dilations = _pair(padding, n), _pair(1 if dilation is None else dilation, n)
    out = []
    for size, k, s, p, d in zip(x.shape[-n:], kernels, strides, pads, dilations):
        if k < 1 or s < 1 or d < 1 or p < 0 or 2 * p > k or size < 1:
            raise Undecided
        if n == 3 and dilation is None and size < k:  # avg_pool3d's own check, padding aside
            raise Undecided
        span = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
        length = span // s + 1
        if ceil_mode and (length - 1) * s >= size + p:
            length -= 1
        if length < 1:
            raise Undecided
        out.append(length)
    return meta_tensor((*x.shape[:-n], *out), x.dtype)


def _max_pool_module(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    assert isinstance(m, nn.modules.pooling._MaxPoolNd)
    _no_kwargs(kwargs)
    if len(args) != 1 or m.return_indices:
        raise Undecided
    n = _POOL_DIMS[type(m)]
    return _pool_shape(args[0], n, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)


def _avg_pool_module(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    assert isinstance(m, nn.modules.pooling._AvgPoolNd)
    _no_kwargs(kwargs)
    if len(args) != 1:
        raise Undecided
    n = _POOL_DIMS[type(m)]
    return _pool_shape(args[0], n, m.kernel_size, m.stride, m.padding, None, m.ceil_mode)


def _adaptive_shape(x: Any, n: int, output_size: Any) -> torch.Tensor:
    x = _float_tensor(x)
    if x.dim() not in (n + 1, n + 2) or any(s < 1 for s in x.shape[-n:]):
        raise Undecided
    sizes = (output_size,) * n if isinstance(output_size, int) or output_size is None else tuple(output_size)
    if len(sizes) != n:
        raise Undecided
    out = []
    for size, wanted in zip(x.shape[-n:], sizes):
        if wanted is None:
            out.append(size)
        elif isinstance(wanted, int) and wanted >= 0:
            out.append(wanted)
        else:
            raise Undecided
    return meta_tensor((*x.shape[:-n], *out), x.dtype)


def _adaptive_module(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    _no_kwargs(kwargs)
    if len(args) != 1 or getattr(m, "return_indices", False):
        raise Undecided
    return _adaptive_shape(args[0], _POOL_DIMS[type(m)], m.output_size)


_POOL_DIMS: dict[type[nn.Module], int] = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3,
    nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3,
}


def _adaptive_avg_function(n: int) -> Callable[[tuple[Any, ...], dict[str, Any]], torch.Tensor]:
    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        _no_kwargs(kwargs)
        if len(args) != 2:
            raise Undecided
        return _adaptive_shape(args[0], n, args[1])

    return rule


def _unary(*, inplace: bool = False) -> Callable[[tuple[Any, ...], dict[str, Any]], torch.Tensor]:
    """Elementwise functions (``relu``, ``sigmoid``, ``hardtanh``, ``dropout``...): same
    shape and dtype; any extra argument must be a plain value, not a tensor. ``inplace``:
    ``relu_`` and the like; a ``True`` flag argument may also mean in place."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        if not args or any(isinstance(a, torch.Tensor) for a in (*args[1:], *kwargs.values())):
            raise Undecided
        if "out" in kwargs or "dtype" in kwargs:
            raise Undecided
        maybe: bool | None = inplace or kwargs.get("inplace") is True
        if not maybe and any(a is True for a in args[1:]):
            maybe = None
        return _elementwise(_float_tensor(args[0], contiguous=False), maybe)

    return rule


def _operand(x: Any) -> tuple[tuple[int, ...], Any]:
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool or x.is_complex():
            raise Undecided
        return tuple(x.shape), x
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return (), x
    raise Undecided


def _binary(*, true_divide: bool = False, inplace: bool = False) -> Callable[[tuple[Any, ...], dict[str, Any]], torch.Tensor]:
    """Broadcasting arithmetic between tensors and Python numbers."""

    def rule(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        _no_kwargs(kwargs, () if true_divide or inplace else ("alpha",))
        if len(args) != 2 or not isinstance(kwargs.get("alpha", 1), (int, float)):
            raise Undecided
        if not any(isinstance(a, torch.Tensor) for a in args):
            raise Undecided
        (shape_a, a), (shape_b, b) = _operand(args[0]), _operand(args[1])
        shape = _broadcast(shape_a, shape_b)
        dtype = torch.result_type(a, b)
        if isinstance(kwargs.get("alpha"), float) and not dtype.is_floating_point:
            raise Undecided
        if true_divide and not dtype.is_floating_point:
            raise Undecided
        if inplace:  # the result is ``a`` itself
            if not isinstance(a, torch.Tensor) or shape != shape_a or not torch.can_cast(dtype, a.dtype):
                raise Undecided
            return torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device="meta")
        tensors = [t for t in (a, b) if isinstance(t, torch.Tensor) and t.dim() > 0]
        if all(t.is_contiguous() for t in tensors):
            return meta_tensor(shape, dtype)
        if len(tensors) == 1:  # with a number or a 0-d tensor: laid out like the tensor
            return _like(tensors[0], dtype)
        raise Undecided

    return rule


def _matmul(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """``matmul`` (``@``) of floating-point tensors of one dtype, batch dims broadcast; its
    output is contiguous whatever the inputs' layouts."""
    _no_kwargs(kwargs)
    if len(args) != 2:
        raise Undecided
    a, b = _float_tensor(args[0], contiguous=False), _float_tensor(args[1], contiguous=False)
    if a.dtype != b.dtype or a.dim() == 0 or b.dim() == 0:
        raise Undecided
    shape_a = (1, a.shape[0]) if a.dim() == 1 else tuple(a.shape)
    shape_b = (b.shape[0], 1) if b.dim() == 1 else tuple(b.shape)
    if shape_a[-1] != shape_b[-2]:
        raise Undecided
    rows = () if a.dim() == 1 else (shape_a[-2],)
    columns = () if b.dim() == 1 else (shape_b[-1],)
    return meta_tensor((*_broadcast(shape_a[:-2], shape_b[:-2]), *rows, *columns), a.dtype)


def _softmax(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """``softmax`` over an explicit dim of a contiguous floating-point tensor."""
    _no_kwargs(kwargs, ("dim", "_stacklevel", "dtype"))  # F.softmax passes all of them on
    if kwargs.get("dtype") is not None:
        raise Undecided
    kwargs = {k: v for k, v in kwargs.items() if k == "dim"}
    if len(args) + len(kwargs) != 2:
        raise Undecided
    x = _float_tensor(args[0])
    dim = args[1] if len(args) == 2 else kwargs["dim"]
    if not isinstance(dim, int) or not -max(x.dim(), 1) <= dim < max(x.dim(), 1):
        raise Undecided
    return meta_tensor(x.shape, x.dtype)


def _cat(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    _no_kwargs(kwargs, ("dim",))
    if len(args) + len(kwargs) > 2 or not args or not isinstance(args[0], (list, tuple)) or not args[0]:
        raise Undecided
    dim = args[1] if len(args) == 2 else kwargs.get("dim", 0)
    tensors = [_float_tensor(t) for t in args[0]]
    rank = tensors[0].dim()
    if not isinstance(dim, int) or rank == 0 or not -rank <= dim < rank:
        raise Undecided
    dim %= rank
    first = tensors[0].shape
    dtype = tensors[0].dtype
    total = 0
    for t in tensors:
        if t.dim() != rank or any(t.shape[i] != first[i] for i in range(rank) if i != dim) or t.numel() == 0:
            raise Undecided
        total += t.shape[dim]
        dtype = torch.promote_types(dtype, t.dtype)
    return meta_tensor((*first[:dim], total, *first[dim + 1:]), dtype)


def _mean(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """``mean`` of a floating-point tensor: over everything, or over explicit dims."""
    names = ("dim", "keepdim")
    _no_kwargs(kwargs, names)
    if len(args) > 3 or any(name in kwargs for name in names[:len(args) - 1]):
        raise Undecided
    values: dict[str, Any] = {"dim": None, "keepdim": False, **dict(zip(names, args[1:])), **kwargs}
    x = _float_tensor(args[0], contiguous=False)
    dims, keepdim = values["dim"], values["keepdim"]
    if dims is None and len(args) == 1 and not kwargs:
        return meta_tensor((), x.dtype)
    dims = (dims,) if isinstance(dims, int) else dims
    if not isinstance(dims, (tuple, list)) or not dims or not isinstance(keepdim, bool) or x.dim() == 0:
        raise Undecided
    if not x.is_contiguous() or not all(isinstance(d, int) and -x.dim() <= d < x.dim() for d in dims):
        raise Undecided
    reduced = {d % x.dim() for d in dims}
    if len(reduced) != len(dims):
        raise Undecided
    shape = [1 if i in reduced else s for i, s in enumerate(x.shape) if keepdim or i not in reduced]
    return meta_tensor(shape, x.dtype)


def _method_rule(rule: Callable[[tuple[Any, ...], dict[str, Any]], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A rule for ``x.method(...)``: its receiver is its first argument, and must be a tensor."""

    def method(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        if not args or not isinstance(args[0], torch.Tensor):
            raise Undecided
        return rule(args, kwargs)

    return method


_ModuleRule = Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], torch.Tensor]
_OpRule = Callable[[tuple[Any, ...], dict[str, Any]], torch.Tensor]

_MODULE_RULES: dict[type[nn.Module], _ModuleRule] = {
    nn.Conv1d: _conv_module, nn.Conv2d: _conv_module, nn.Conv3d: _conv_module,
    nn.Linear: _linear_module, nn.LayerNorm: _layer_norm_module,
    **{t: _constant_pad_module for t in (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
                                         nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)},
    **{t: _batch_norm_module for t in _BN_DIMS},
    nn.MaxPool1d: _max_pool_module, nn.MaxPool2d: _max_pool_module, nn.MaxPool3d: _max_pool_module,
    nn.AvgPool1d: _avg_pool_module, nn.AvgPool2d: _avg_pool_module, nn.AvgPool3d: _avg_pool_module,
    **{t: _adaptive_module for t in (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                                     nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)},
    **{t: _same_as_input for t in (
        nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
        nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Dropout, nn.Identity,
    )},
}

_ELEMENTWISE_FUNCTIONS: tuple[Any, ...] = (
    torch.relu, F.relu, F.relu6, F.hardtanh, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu,
    F.gelu, F.silu, F.mish, F.dropout, torch.sigmoid, torch.tanh, F.sigmoid, F.tanh, torch.clamp,
)
_ELEMENTWISE_METHODS = ("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_")

_FUNCTION_RULES: dict[Any, _OpRule] = {
    **{f: _unary() for f in _ELEMENTWISE_FUNCTIONS},
    torch.relu_: _unary(inplace=True),
    **{f: _binary() for f in (operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul)},
    **{f: _binary(true_divide=True) for f in (operator.truediv, torch.div, torch.true_divide)},
    **{f: _binary(inplace=True) for f in (operator.iadd, operator.isub, operator.imul)},
    operator.itruediv: _binary(true_divide=True, inplace=True),
    F.linear: _linear_function,
    F.adaptive_avg_pool1d: _adaptive_avg_function(1), F.adaptive_avg_pool2d: _adaptive_avg_function(2),
    F.adaptive_avg_pool3d: _adaptive_avg_function(3),
    torch.cat: _cat, torch.concat: _cat, torch.mean: _mean,
    torch.matmul: _matmul, operator.matmul: _matmul,
    torch.softmax: _softmax, F.softmax: _softmax,
}

_METHOD_RULES: dict[str, _OpRule] = {
    **{m: _method_rule(_unary(inplace=m.endswith("_"))) for m in _ELEMENTWISE_METHODS},
    **{m: _method_rule(_binary()) for m in ("add", "sub", "mul")},
    **{m: _method_rule(_binary(true_divide=True)) for m in ("div", "true_divide")},
    **{m: _method_rule(_binary(inplace=True)) for m in ("add_", "sub_", "mul_")},
    "mean": _method_rule(_mean), "matmul": _method_rule(_matmul), "softmax": _method_rule(_softmax),
}

# Ops that only read or rearrange tensor metadata: run as they are on meta tensors (their
# meta implementations are cheap and need no shape-inference machinery).
_VIEW_FUNCTIONS: frozenset[Any] = frozenset({
    torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
    torch.chunk, torch.split, torch.t, torch.narrow, torch.select, torch.numel, getattr, len,
})
_VIEW_METHODS = frozenset({
    "view", "reshape", "flatten", "permute", "transpose", "contiguous", "unsqueeze", "squeeze", "size",
    "dim", "chunk", "split", "t", "narrow", "select", "expand", "view_as", "reshape_as", "expand_as",
    "numel", "float", "to", "detach", "unflatten", "movedim", "swapaxes",
})


def _simple_index(index: Any) -> bool:
    if isinstance(index, tuple):
        return all(_simple_index(i) for i in index)
    return index is None or index is Ellipsis or isinstance(index, slice | int) and not isinstance(index, bool)



def _has_meta(value: Any) -> bool:
    """Whether ``value`` (args, kwargs: nested tuples, lists, dicts) holds a meta tensor."""
    if isinstance(value, torch.Tensor):
        return value.is_meta
    if isinstance(value, (tuple, list)):
        return any(_has_meta(v) for v in value)
    if isinstance(value, dict):
        return any(_has_meta(v) for v in value.values())
    return False


def _sequential_rule(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """A fused container whose forward is ``Sequential``'s: its parts one after the other."""
    _no_kwargs(kwargs)
    if len(args) != 1:
        raise Undecided
    value = args[0]
    for part in m.children():
        value = _module_output(part, (value,), {})
    return value


def _module_output(m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    rule = _MODULE_RULES.get(type(m))
    if rule is not None:
        return rule(m, args, kwargs)
    if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward:
        return _sequential_rule(m, args, kwargs)
    raise Undecided


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # an op that does not fit: the float forward reports it, named
        raise Undecided from e


def _is_view(node: Node, args: tuple[Any, ...]) -> bool:
    """Whether ``node`` only reads or rearranges metadata (it can run on meta tensors)."""
    if node.op == "call_method":
        return str(node.target) in _VIEW_METHODS and bool(args) and isinstance(args[0], torch.Tensor)
    if node.target is operator.getitem:
        return len(args) == 2 and (not isinstance(args[0], torch.Tensor) or _simple_index(args[1]))
    return node.target in _VIEW_FUNCTIONS


def infer_node(gm: GraphModule, node: Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The output of ``node``: by its shape rule; else, if its inputs are real values or it
    only reads metadata, by running it; else ``Undecided``."""
    if node.op == "get_attr":
        return _fetch_attr(gm, str(node.target))
    fn: Callable[..., Any]
    rule: Callable[[tuple[Any, ...], dict[str, Any]], Any]
    if node.op == "call_module":
        fn = gm.get_submodule(str(node.target))
        rule = functools.partial(_module_output, fn)
    elif node.op == "call_function":
        fn = node.target  # type: ignore[assignment]  # call_function targets are callables
        rule = _FUNCTION_RULES.get(fn, _undecided)
    elif node.op == "call_method" and args:
        fn = getattr(type(args[0]), str(node.target), _undecided)
        rule = _METHOD_RULES.get(str(node.target), _undecided)
    else:
        raise Undecided
    try:
        return rule(args, kwargs)
    except Undecided:
        if _has_meta((args, kwargs)) and not _is_view(node, args):
            raise
    return _call(fn, args, kwargs)


def _undecided(*args: Any, **kwargs: Any) -> Any:
    raise Undecided


def _fetch_attr(gm: GraphModule, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value
