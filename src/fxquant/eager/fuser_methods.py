"""Fuser methods: how a sequence of modules (conv, bn, relu, ...) becomes one fused module.

Every fuser method takes ``(is_qat, *modules)``. For post-training quantization (``is_qat``
false) batch norm is folded into the preceding conv/linear weights:

    w' = w * gamma / sqrt(var + eps)        b' = (b - mean) * gamma / sqrt(var + eps) + beta

(torch's ``fuse_conv_bn_eval`` / ``fuse_linear_bn_eval``). For QAT the modules are kept in a
fused container (``ConvBn2d`` ...) whose QAT version simulates the folding during training.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

from fxquant.eager.errors import EagerModeError
from fxquant.eager.mappings import get_combined_dict

__all__ = [
    "MatchAllNode",
    "NoFuserMethodError",
    "Pattern",
    "fuse_conv_bn",
    "fuse_conv_bn_relu",
    "fuse_convtranspose_bn",
    "fuse_linear_bn",
    "get_fuser_method",
    "get_fuser_method_new",
]

Pattern: TypeAlias = Any
"""A module-type pattern: a type or op, or a nested tuple of them (``(nn.ReLU, nn.Conv2d)``)."""

FuserMethod: TypeAlias = Callable[..., nn.Module]


class MatchAllNode:
    """A pattern element that matches any module or op."""


class NoFuserMethodError(NotImplementedError, AssertionError):
    """No fuser method for a sequence of modules.

    Also an ``AssertionError``, which is what upstream raises.
    """


def _check_same_mode(*modules: nn.Module) -> None:
    if len({m.training for m in modules}) > 1:
        names = ", ".join(type(m).__name__ for m in modules)
        raise EagerModeError(
            f"cannot fuse {names}: they must all be in the same mode; call .train() or .eval() "
            "on the whole model first"
        )


def _check_bn_foldable(layer: nn.Module, out_features: int, bn: nn.Module) -> None:
    what = f"{type(layer).__name__} + {type(bn).__name__}"
    if bn.num_features != out_features:
        raise EagerModeError(
            f"cannot fuse {what}: {out_features} output channels but the batch norm has "
            f"num_features={bn.num_features}"
        )
    if not bn.affine or not bn.track_running_stats:
        raise EagerModeError(
            f"cannot fuse {what} for QAT: the batch norm needs affine=True and "
            "track_running_stats=True"
        )


def _check_eval(layer: nn.Module, bn: nn.Module) -> None:
    if layer.training or bn.training:
        raise EagerModeError(
            f"folding {type(bn).__name__} into {type(layer).__name__} needs eval-mode modules: call "
            "model.eval() first (or fuse for QAT with fuse_modules_qat on a training model)"
        )


def _copy_structure(module: nn.Module) -> nn.Module:
    """A new module of the same class and settings whose parameter, buffer, submodule and hook
    tables are its own — without copying the tensors (folding replaces the weights anyway;
    ``copy.deepcopy``, as torch's ``fuse_*_eval`` use, clones them first)."""
    twin = copy.copy(module)
    for name, value in module.__dict__.items():
        if isinstance(value, dict):
            twin.__dict__[name] = copy.copy(value)
    return twin


def _fold_conv_bn_eval(conv: Any, bn: Any, *, transpose: bool = False) -> nn.Module:
    """``conv`` with eval-mode ``bn`` folded in: the same values as torch's ``fuse_conv_bn_eval``."""
    _check_eval(conv, bn)
    fused: Any = _copy_structure(conv)
    fused.weight, fused.bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias, transpose
    )
    return fused


def _fold_linear_bn_eval(linear: Any, bn: Any) -> nn.Module:
    """``linear`` with eval-mode ``bn`` folded in: the same values as torch's ``fuse_linear_bn_eval``."""
    _check_eval(linear, bn)
    _check_bn_foldable(linear, linear.out_features, bn)
    fused: Any = _copy_structure(linear)
    fused.weight, fused.bias = fuse_linear_bn_weights(
        linear.weight, linear.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    return fused


def _conv_bn_classes() -> dict[type, type]:
    from fxquant.nn import intrinsic as nni

    return {nn.Conv1d: nni.ConvBn1d, nn.Conv2d: nni.ConvBn2d, nn.Conv3d: nni.ConvBn3d}


def _conv_bn_relu_classes() -> dict[type, type]:
    from fxquant.nn import intrinsic as nni

    return {
        nn.Conv1d: nni.ConvBnReLU1d, nn.Conv2d: nni.ConvBnReLU2d, nn.Conv3d: nni.ConvBnReLU3d,
    }


def _conv_relu_classes() -> dict[type, type]:
    from fxquant.nn import intrinsic as nni

    return {nn.Conv1d: nni.ConvReLU1d, nn.Conv2d: nni.ConvReLU2d, nn.Conv3d: nni.ConvReLU3d}


def _fused_class(classes: dict[type, type], modules: tuple[nn.Module, ...]) -> type:
    fused = classes.get(type(modules[0]))
    if fused is None:
        names = ", ".join(type(m).__name__ for m in modules)
        raise NoFuserMethodError(f"cannot fuse ({names}): no fused module for {names}")
    return fused


def fuse_conv_bn(is_qat: bool, conv: nn.Module, bn: nn.Module) -> nn.Module:
    """Conv{1,2,3}d + BatchNorm: a ``ConvBn`` container for QAT, else a conv with BN folded in.

    >>> fused = fuse_conv_bn(False, nn.Conv2d(3, 8, 3).eval(), nn.BatchNorm2d(8).eval())
    """
    _check_same_mode(conv, bn)
    if not is_qat:
        return _fold_conv_bn_eval(conv, bn)
    _check_bn_foldable(conv, conv.out_channels, bn)  # type: ignore[arg-type]  # a ConvNd
    return _fused_class(_conv_bn_classes(), (conv, bn))(conv, bn)


def fuse_conv_bn_relu(is_qat: bool, conv: nn.Module, bn: nn.Module, relu: nn.Module) -> nn.Module:
    """Conv + BatchNorm + ReLU: ``ConvBnReLU`` for QAT, else ``ConvReLU`` with BN folded in."""
    _check_same_mode(conv, bn, relu)
    if is_qat:
        _check_bn_foldable(conv, conv.out_channels, bn)  # type: ignore[arg-type]  # a ConvNd
        return _fused_class(_conv_bn_relu_classes(), (conv, bn, relu))(conv, bn, relu)
    fused_class = _fused_class(_conv_relu_classes(), (conv, bn, relu))
    return fused_class(_fold_conv_bn_eval(conv, bn), relu)


def fuse_linear_bn(is_qat: bool, linear: nn.Module, bn: nn.Module) -> nn.Module:
    """Linear + BatchNorm1d: ``LinearBn1d`` for QAT, else a linear with BN folded in."""
    from fxquant.nn import intrinsic as nni

    _check_same_mode(linear, bn)
    if not is_qat:
        return _fold_linear_bn_eval(linear, bn)
    _check_bn_foldable(linear, linear.out_features, bn)  # type: ignore[arg-type]  # a Linear
    return nni.LinearBn1d(linear, bn)


def fuse_convtranspose_bn(is_qat: bool, convt: nn.Module, bn: nn.Module) -> nn.Module:
    """ConvTranspose + BatchNorm: a transposed conv with BN folded in (not available for QAT)."""
    _check_same_mode(convt, bn)
    if is_qat:
        raise NoFuserMethodError("Fusing ConvTranspose+BatchNorm is not supported for QAT")
    return _fold_conv_bn_eval(convt, bn, transpose=True)


def _sequential_fuser(fused_class: Callable[..., nn.Module], is_qat: bool,
                      *modules: nn.Module) -> nn.Module:
    del is_qat  # a plain container is the same for PTQ and QAT
    return fused_class(*modules)


def _container(name: str) -> FuserMethod:
    """A fuser method that puts its modules into ``fxquant.nn.intrinsic.<name>``."""

    def fuser(is_qat: bool, *modules: nn.Module) -> nn.Module:
        from fxquant.nn import intrinsic as nni

        return _sequential_fuser(getattr(nni, name), is_qat, *modules)

    fuser.__name__ = f"fuse_into_{name}"
    return fuser


@functools.cache
def _default_op_list_to_fuser_method() -> dict[tuple[type, ...], FuserMethod]:
    return {
        (nn.Conv1d, nn.BatchNorm1d): fuse_conv_bn,
        (nn.Conv1d, nn.BatchNorm1d, nn.ReLU): fuse_conv_bn_relu,
        (nn.Conv2d, nn.BatchNorm2d): fuse_conv_bn,
        (nn.Conv2d, nn.BatchNorm2d, nn.ReLU): fuse_conv_bn_relu,
        (nn.Conv3d, nn.BatchNorm3d): fuse_conv_bn,
        (nn.Conv3d, nn.BatchNorm3d, nn.ReLU): fuse_conv_bn_relu,
        (nn.Conv1d, nn.ReLU): _container("ConvReLU1d"),
        (nn.Conv2d, nn.ReLU): _container("ConvReLU2d"),
        (nn.Conv3d, nn.ReLU): _container("ConvReLU3d"),
        (nn.Linear, nn.BatchNorm1d): fuse_linear_bn,
        (nn.Linear, nn.ReLU): _container("LinearReLU"),
        (nn.BatchNorm2d, nn.ReLU): _container("BNReLU2d"),
        (nn.BatchNorm3d, nn.ReLU): _container("BNReLU3d"),
        (nn.ConvTranspose1d, nn.BatchNorm1d): fuse_convtranspose_bn,
        (nn.ConvTranspose2d, nn.BatchNorm2d): fuse_convtranspose_bn,
        (nn.ConvTranspose3d, nn.BatchNorm3d): fuse_convtranspose_bn,
    }


def get_fuser_method(
    op_list: tuple[type, ...],
    additional_fuser_method_mapping: Mapping[tuple[type, ...], FuserMethod] | None = None,
) -> FuserMethod:
    """The fuser method for a tuple of module types, e.g. ``(nn.Conv2d, nn.BatchNorm2d)``.

    Raises:
        NoFuserMethodError: no fuser method for these types (pass one in
            ``additional_fuser_method_mapping``).
    """
    combined = get_combined_dict(
        _default_op_list_to_fuser_method(), additional_fuser_method_mapping or {}
    )
    fuser_method = combined.get(op_list)
    if fuser_method is None:
        names = ", ".join(getattr(t, "__name__", str(t)) for t in op_list)
        raise NoFuserMethodError(
            f"no fuser method for ({names}); supported sequences are conv-bn(-relu), "
            "conv-relu, linear-bn, linear-relu, bn-relu and convtranspose-bn, or pass "
            "additional_fuser_method_mapping"
        )
    return fuser_method


def _valid_patterns(op_pattern: Pattern) -> list[Any]:
    """``op_pattern`` and every variant with some elements replaced by :class:`MatchAllNode`,
    most specific first: ``(add, (relu, conv))`` -> ``[(add, (relu, conv)), (add, (relu, MatchAll
    Node)), ..., (MatchAllNode, (MatchAllNode, MatchAllNode))]``."""
    if isinstance(op_pattern, (tuple, list)):
        return list(itertools.product(*(_valid_patterns(sub) for sub in op_pattern)))
    return [op_pattern, MatchAllNode]


def get_fuser_method_new(
    op_pattern: Pattern, fuser_method_mapping: Mapping[Pattern, Any]
) -> Any:
    """The fuser method for ``op_pattern`` in ``fuser_method_mapping``, where mapping keys may
    use :class:`MatchAllNode` as a wildcard (the most specific key wins).

    Raises:
        NoFuserMethodError: nothing in the mapping matches.
    """
    for pattern in _valid_patterns(op_pattern):
        fuser_method = fuser_method_mapping.get(pattern)
        if fuser_method is not None:
            return fuser_method
    raise NoFuserMethodError(f"no fuser method for pattern {op_pattern}")
