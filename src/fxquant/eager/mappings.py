"""Which module replaces which: the eager-mode module mappings, keyed by module type.

Every table maps a float (or observed / QAT) module class to the class that ``convert`` (or
``prepare_qat``) swaps in through its ``from_float``. The tables name classes of
:mod:`fxquant.nn`, which is imported when a table is first needed (the quantized module
packages may themselves use the eager stubs, so importing them here eagerly would be circular).

Each getter returns a fresh ``dict`` / ``set``: changing it never changes the defaults.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from fxquant.eager.stubs import DeQuantStub, QuantStub
from fxquant.fake_quantize.defaults import (
    default_fixed_qparams_range_0to1_fake_quant,
    default_fixed_qparams_range_neg1to1_fake_quant,
)

__all__ = [
    "NoQuantizedModuleError",
    "get_combined_dict",
    "get_default_compare_output_module_list",
    "get_default_dynamic_quant_module_mappings",
    "get_default_dynamic_sparse_quant_module_mappings",
    "get_default_float_to_quantized_operator_mappings",
    "get_default_qat_module_mappings",
    "get_default_qconfig_propagation_list",
    "get_default_static_quant_module_mappings",
    "get_default_static_quant_reference_module_mappings",
    "get_default_static_sparse_quant_module_mappings",
    "get_dynamic_quant_module_class",
    "get_embedding_qat_module_mappings",
    "get_embedding_static_quant_module_mappings",
    "get_quantized_operator",
    "get_static_quant_module_class",
    "no_observer_set",
]

ModuleMapping = dict[Callable[..., Any], Any]


class NoQuantizedModuleError(LookupError, AssertionError):
    """A float module class or operator has no quantized counterpart in a mapping.

    Also an ``AssertionError``, which is what upstream raises.
    """

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, kw_only=True)
class _Tables:
    """The default tables, built once from :mod:`fxquant.nn`."""

    static: Mapping[Callable[..., Any], Any]
    reference: Mapping[Callable[..., Any], Any]
    qat: Mapping[Callable[..., Any], Any]
    dynamic: Mapping[Callable[..., Any], Any]
    embedding_qat: Mapping[Callable[..., Any], Any]  # float embeddings -> QAT embeddings
    embedding_qat_to_quantized: Mapping[Callable[..., Any], Any]  # QAT -> quantized embeddings
    no_observer: frozenset[type]  # observed custom modules that observe themselves
    functional: tuple[type, ...]  # FloatFunctional & co.: hold their own observer slot
    fused_base: type  # base class of fused modules (observed and swapped as one unit)
    # quantized class -> (qconfig predicate, the class to use instead when it holds)
    specializations: Mapping[type, tuple[Callable[[Any], bool], type]]


def _static_table() -> ModuleMapping:
    import fxquant.nn.intrinsic as nni
    import fxquant.nn.intrinsic.qat as nniqat
    import fxquant.nn.intrinsic.quantized as nniq
    import fxquant.nn.qat as nnqat
    import fxquant.nn.quantized as nnq

    return {
        QuantStub: nnq.Quantize,
        DeQuantStub: nnq.DeQuantize,
        nn.BatchNorm2d: nnq.BatchNorm2d,
        nn.BatchNorm3d: nnq.BatchNorm3d,
        nn.Dropout: nnq.Dropout,
        nn.Conv1d: nnq.Conv1d,
        nn.Conv2d: nnq.Conv2d,
        nn.Conv3d: nnq.Conv3d,
        nn.ConvTranspose1d: nnq.ConvTranspose1d,
        nn.ConvTranspose2d: nnq.ConvTranspose2d,
        nn.ConvTranspose3d: nnq.ConvTranspose3d,
        nn.ELU: nnq.ELU,
        nn.Embedding: nnq.Embedding,
        nn.EmbeddingBag: nnq.EmbeddingBag,
        nn.GroupNorm: nnq.GroupNorm,
        nn.Hardswish: nnq.Hardswish,
        nn.InstanceNorm1d: nnq.InstanceNorm1d,
        nn.InstanceNorm2d: nnq.InstanceNorm2d,
        nn.InstanceNorm3d: nnq.InstanceNorm3d,
        nn.LayerNorm: nnq.LayerNorm,
        nn.LeakyReLU: nnq.LeakyReLU,
        nn.modules.linear.NonDynamicallyQuantizableLinear: nnq.Linear,
        nn.Linear: nnq.Linear,
        nn.ReLU6: nnq.ReLU6,
        nn.PReLU: nnq.PReLU,
        # functional wrapper: float ops -> quantized ops
        nnq.FloatFunctional: nnq.QFunctional,
        # fused float modules
        nni.BNReLU2d: nniq.BNReLU2d,
        nni.BNReLU3d: nniq.BNReLU3d,
        nni.ConvReLU1d: nniq.ConvReLU1d,
        nni.ConvReLU2d: nniq.ConvReLU2d,
        nni.ConvReLU3d: nniq.ConvReLU3d,
        nni.ConvAdd2d: nniq.ConvAdd2d,
        nni.ConvAddReLU2d: nniq.ConvAddReLU2d,
        nni.LinearReLU: nniq.LinearReLU,
        nni.LinearLeakyReLU: nniq.LinearLeakyReLU,
        nni.LinearTanh: nniq.LinearTanh,
        # fused QAT modules (their BN is folded into the quantized weight)
        nniqat.ConvBn1d: nnq.Conv1d,
        nniqat.ConvBn2d: nnq.Conv2d,
        nniqat.ConvBn3d: nnq.Conv3d,
        nniqat.ConvBnReLU1d: nniq.ConvReLU1d,
        nniqat.ConvBnReLU2d: nniq.ConvReLU2d,
        nniqat.ConvBnReLU3d: nniq.ConvReLU3d,
        nniqat.ConvReLU2d: nniq.ConvReLU2d,
        nniqat.ConvReLU3d: nniq.ConvReLU3d,
        nniqat.LinearReLU: nniq.LinearReLU,
        nniqat.LinearBn1d: nnq.Linear,
        # QAT modules
        nnqat.Linear: nnq.Linear,
        nnqat.Conv2d: nnq.Conv2d,
        nnqat.Conv3d: nnq.Conv3d,
    }


def _reference_table() -> ModuleMapping:
    import fxquant.nn.quantized as nnq
    import fxquant.nn.quantized.reference as nnqr

    return {
        QuantStub: nnq.Quantize,
        DeQuantStub: nnq.DeQuantize,
        nn.Linear: nnqr.Linear,
        nn.Conv1d: nnqr.Conv1d,
        nn.Conv2d: nnqr.Conv2d,
        nn.Conv3d: nnqr.Conv3d,
        nn.ConvTranspose1d: nnqr.ConvTranspose1d,
        nn.ConvTranspose2d: nnqr.ConvTranspose2d,
        nn.ConvTranspose3d: nnqr.ConvTranspose3d,
        nn.Embedding: nnqr.Embedding,
        nn.EmbeddingBag: nnqr.EmbeddingBag,
        nn.GRUCell: nnqr.GRUCell,
        nn.LSTMCell: nnqr.LSTMCell,
        nn.RNNCell: nnqr.RNNCell,
        nn.LSTM: nnqr.LSTM,
    }


def _qat_table() -> ModuleMapping:
    import fxquant.nn.intrinsic as nni
    import fxquant.nn.intrinsic.qat as nniqat
    import fxquant.nn.qat as nnqat

    return {
        nn.Conv2d: nnqat.Conv2d,
        nn.Conv3d: nnqat.Conv3d,
        nn.Linear: nnqat.Linear,
        nn.modules.linear.NonDynamicallyQuantizableLinear: nnqat.Linear,
        nni.ConvBn1d: nniqat.ConvBn1d,
        nni.ConvBn2d: nniqat.ConvBn2d,
        nni.ConvBn3d: nniqat.ConvBn3d,
        nni.ConvBnReLU1d: nniqat.ConvBnReLU1d,
        nni.ConvBnReLU2d: nniqat.ConvBnReLU2d,
        nni.ConvBnReLU3d: nniqat.ConvBnReLU3d,
        nni.ConvReLU2d: nniqat.ConvReLU2d,
        nni.ConvReLU3d: nniqat.ConvReLU3d,
        nni.LinearReLU: nniqat.LinearReLU,
        nni.LinearBn1d: nniqat.LinearBn1d,
    }


def _dynamic_table() -> ModuleMapping:
    import fxquant.nn.intrinsic as nni
    import fxquant.nn.intrinsic.quantized.dynamic as nniqd
    import fxquant.nn.qat.dynamic as nnqatd
    import fxquant.nn.quantized as nnq
    import fxquant.nn.quantized.dynamic as nnqd

    # Dynamic convolutions exist upstream but are not mapped by default (poor accuracy).
    return {
        nn.GRUCell: nnqd.GRUCell,
        nn.Linear: nnqd.Linear,
        nnqatd.Linear: nnqd.Linear,
        nn.modules.linear.NonDynamicallyQuantizableLinear: nnqd.Linear,
        nn.LSTM: nnqd.LSTM,
        nn.GRU: nnqd.GRU,
        nn.LSTMCell: nnqd.LSTMCell,
        nn.RNNCell: nnqd.RNNCell,
        nni.LinearReLU: nniqd.LinearReLU,
        nn.EmbeddingBag: nnq.EmbeddingBag,
        nn.Embedding: nnq.Embedding,
    }


def _embedding_qat_table() -> ModuleMapping:
    import fxquant.nn.qat as nnqat

    return {nn.EmbeddingBag: nnqat.EmbeddingBag, nn.Embedding: nnqat.Embedding}


def _embedding_qat_to_quantized_table() -> ModuleMapping:
    import fxquant.nn.qat as nnqat
    import fxquant.nn.quantized as nnq

    return {nnqat.EmbeddingBag: nnq.EmbeddingBag, nnqat.Embedding: nnq.Embedding}


@functools.cache
def _tables() -> _Tables:
    import fxquant.nn.intrinsic as nni
    import fxquant.nn.quantizable as nnqa
    import fxquant.nn.quantized as nnq
    import fxquant.nn.quantized.dynamic as nnqd
    from fxquant.qconfig.per_token import is_per_token_dynamic_qconfig

    return _Tables(
        static=_static_table(),
        reference=_reference_table(),
        qat=_qat_table(),
        dynamic=_dynamic_table(),
        embedding_qat=_embedding_qat_table(),
        embedding_qat_to_quantized=_embedding_qat_to_quantized_table(),
        no_observer=frozenset({nnqa.LSTM, nnqa.MultiheadAttention}),
        functional=(nnq.FloatFunctional, nnq.QFunctional),
        fused_base=nni._FusedModule,
        specializations={nnqd.Linear: (is_per_token_dynamic_qconfig, nnqd.PerTokenLinear)},
    )


# Allowed to carry a qconfig although it is not itself swapped (its children are).
_INCLUDE_QCONFIG_PROPAGATE_LIST: frozenset[type] = frozenset({nn.Sequential})

_FLOAT_TO_QUANTIZED_OPERATOR: dict[Callable[..., Any] | str, Callable[..., Any]] = {
    F.elu: torch.ops.quantized.elu,
    F.hardswish: torch.ops.quantized.hardswish,
    F.instance_norm: torch.ops.quantized.instance_norm,
    F.layer_norm: torch.ops.quantized.layer_norm,
    F.leaky_relu: torch.ops.quantized.leaky_relu,
    F.dropout: torch.ops.quantized.dropout,
}

# In training (QAT), these activations get fixed output qparams whatever the qconfig says:
# their output range is known ([0, 1] or [-1, 1]).
_MODULE_TO_ACT_POST_PROCESS: dict[type, Callable[..., Any]] = {
    nn.Hardsigmoid: default_fixed_qparams_range_0to1_fake_quant,
    nn.Sigmoid: default_fixed_qparams_range_0to1_fake_quant,
    nn.Softmax: default_fixed_qparams_range_0to1_fake_quant,
    nn.Tanh: default_fixed_qparams_range_neg1to1_fake_quant,
}


def get_combined_dict(default_dict: Mapping[K, V], additional_dict: Mapping[K, V]) -> dict[K, V]:
    """A new dict with the entries of ``default_dict`` updated by ``additional_dict``.

    >>> get_combined_dict({"a": 1, "b": 1}, {"b": 2, "c": 3})
    {'a': 1, 'b': 2, 'c': 3}
    """
    combined = dict(default_dict)
    combined.update(additional_dict)
    return combined


def no_observer_set() -> set[Any]:
    """Observed custom module classes that get no output observer (they observe inside)."""
    return set(_tables().no_observer)


def get_default_static_quant_module_mappings() -> ModuleMapping:
    """Float / QAT module class -> quantized module class, for static quantization."""
    return dict(_tables().static)


def get_default_static_quant_reference_module_mappings() -> ModuleMapping:
    """Float module class -> reference quantized module class (``convert(is_reference=True)``)."""
    return dict(_tables().reference)


def get_embedding_static_quant_module_mappings() -> ModuleMapping:
    """The static mappings plus QAT ``Embedding`` / ``EmbeddingBag`` -> quantized embeddings."""
    return get_combined_dict(_tables().static, _tables().embedding_qat_to_quantized)


def get_default_static_sparse_quant_module_mappings() -> ModuleMapping:
    """Float module class -> sparse quantized module class.

    fxquant has no sparse quantized modules yet, so this is empty.
    """
    return {}


def _lookup(table: Mapping[Callable[..., Any], Any], float_module_class: Callable[..., Any],
            kind: str) -> Any:
    quantized_class = table.get(float_module_class)
    if quantized_class is None:
        name = getattr(float_module_class, "__name__", repr(float_module_class))
        raise NoQuantizedModuleError(
            f"Floating point module class {name} has no {kind} quantized module class; pass "
            "its quantized class in the additional mapping argument"
        )
    return quantized_class


def get_static_quant_module_class(
    float_module_class: Callable[..., Any],
    additional_static_quant_mapping: Mapping[Callable[..., Any], Any] | None = None,
    is_reference: bool = False,
) -> Any:
    """The statically quantized (or reference) module class for ``float_module_class``.

    Raises:
        NoQuantizedModuleError: the class has no quantized counterpart
            (``additional_static_quant_mapping`` can provide one).
    """
    tables = _tables()
    default = tables.reference if is_reference else tables.static
    combined = get_combined_dict(default, additional_static_quant_mapping or {})
    return _lookup(combined, float_module_class, "reference" if is_reference else "static")


def get_dynamic_quant_module_class(
    float_module_class: Callable[..., Any],
    additional_dynamic_quant_mapping: Mapping[Callable[..., Any], Any] | None = None,
) -> Any:
    """The dynamically quantized module class for ``float_module_class``.

    Raises:
        NoQuantizedModuleError: the class has no dynamic counterpart.
    """
    combined = get_combined_dict(_tables().dynamic, additional_dynamic_quant_mapping or {})
    return _lookup(combined, float_module_class, "dynamic")


def get_default_qat_module_mappings() -> ModuleMapping:
    """Float module class -> QAT module class, for ``prepare_qat``."""
    return dict(_tables().qat)


def get_embedding_qat_module_mappings() -> ModuleMapping:
    """The QAT mappings plus ``nn.Embedding`` / ``nn.EmbeddingBag`` -> QAT embeddings."""
    return get_combined_dict(_tables().qat, _tables().embedding_qat)


def get_default_dynamic_quant_module_mappings() -> ModuleMapping:
    """Float module class -> dynamically quantized module class, for ``quantize_dynamic``."""
    return dict(_tables().dynamic)


def get_default_dynamic_sparse_quant_module_mappings() -> ModuleMapping:
    """Float module class -> dynamic sparse quantized module class (none in fxquant yet)."""
    return {}


def get_default_qconfig_propagation_list() -> set[Callable[..., Any]]:
    """The module classes that ``prepare`` attaches observers to (when they are leaves)."""
    tables = _tables()
    return set(tables.static) | set(tables.qat) | set(tables.dynamic) | set(
        _INCLUDE_QCONFIG_PROPAGATE_LIST
    )


def get_default_compare_output_module_list() -> set[Callable[..., Any]]:
    """Module classes whose outputs the numeric suite records: every float, QAT and quantized
    class of the default mappings."""
    tables = _tables()
    keys = set(tables.static) | set(tables.qat) | set(tables.dynamic)
    values = set(tables.static.values()) | set(tables.qat.values()) | set(tables.dynamic.values())
    return keys | values | set(_INCLUDE_QCONFIG_PROPAGATE_LIST)


def get_default_float_to_quantized_operator_mappings() -> dict[
    Callable[..., Any] | str, Callable[..., Any]
]:
    """Float functional -> quantized operator (``F.elu`` -> ``torch.ops.quantized.elu``, ...)."""
    return dict(_FLOAT_TO_QUANTIZED_OPERATOR)


def get_quantized_operator(float_op: Callable[..., Any] | str) -> Callable[..., Any]:
    """The quantized operator for ``float_op``.

    Raises:
        NoQuantizedModuleError: ``float_op`` has no quantized operator.
    """
    quantized_op = _FLOAT_TO_QUANTIZED_OPERATOR.get(float_op)
    if quantized_op is None:
        raise NoQuantizedModuleError(
            f"Operator {float_op} does not have a corresponding quantized operator"
        )
    return quantized_op


def functional_module_types() -> tuple[type, ...]:
    """The functional-wrapper module classes (``FloatFunctional``, ``QFunctional``)."""
    return _tables().functional


def fused_module_base() -> type:
    """The base class of fused modules (``fxquant.nn.intrinsic._FusedModule``)."""
    return _tables().fused_base


def specialize_for_qconfig(quantized_class: Any, qconfig: Any) -> Any:
    """The class that quantizes a module with ``qconfig`` when the mapping says
    ``quantized_class``: e.g. the per-token dynamic linear for a per-token qconfig."""
    specialization = _tables().specializations.get(quantized_class)
    if specialization is not None and specialization[0](qconfig):
        return specialization[1]
    return quantized_class


def _get_special_act_post_process(module: nn.Module) -> Callable[..., Any] | None:
    """The fixed-qparams fake-quantizer that replaces the qconfig's for ``module``, if any."""
    return _MODULE_TO_ACT_POST_PROCESS.get(type_before_parametrizations(module))


def _has_special_act_post_process(module: nn.Module) -> bool:
    return module.training and type(module) in _MODULE_TO_ACT_POST_PROCESS
