"""Views of a ``BackendConfig`` that the FX flow looks things up in, and pretty-printing.

Mappings keyed by pattern use the reversed nested tuple format (see
:mod:`~fxquant.backend_config.patterns`), which is what the FX pattern matcher produces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import nn

from fxquant.backend_config.backend_config import BackendConfig
from fxquant.backend_config.dtype_config import DTypeConfig
from fxquant.backend_config.patterns import (
    Pattern,
    fuser_method_in_reversed_nested_format,
    pattern_in_reversed_nested_format,
)

__all__ = [
    "entry_to_pretty_str",
    "get_fused_module_classes",
    "get_fuser_method_mapping",
    "get_fusion_pattern_to_extra_inputs_getter",
    "get_fusion_pattern_to_root_node_getter",
    "get_module_to_qat_module",
    "get_pattern_to_dtype_configs",
    "get_pattern_to_input_type_to_index",
    "get_qat_module_classes",
    "get_root_module_to_quantized_reference_module",
    "pattern_to_human_readable",
    "remove_boolean_dispatch_from_name",
]

# upstream's private names for the format conversions, for code ported from it
_get_pattern_in_reversed_nested_tuple_format = pattern_in_reversed_nested_format
_get_fuser_method_in_reversed_nested_tuple_format = fuser_method_in_reversed_nested_format


def get_pattern_to_dtype_configs(backend_config: BackendConfig) -> dict[Pattern, list[DTypeConfig]]:
    """Pattern -> the dtype configs the backend supports for it."""
    return {pattern: config.dtype_configs
            for pattern, config in backend_config._pattern_complex_format_to_config.items()}


def get_qat_module_classes(backend_config: BackendConfig) -> tuple[type, ...]:
    """Every QAT module type the backend swaps modules for (no duplicates)."""
    return tuple(dict.fromkeys(c.qat_module for c in backend_config.configs
                               if c.qat_module is not None))


def get_fused_module_classes(backend_config: BackendConfig) -> tuple[type, ...]:
    """Every fused module type the backend's fusions produce (no duplicates)."""
    return tuple(dict.fromkeys(c.fused_module for c in backend_config.configs
                               if c.fused_module is not None))


def get_pattern_to_input_type_to_index(
    backend_config: BackendConfig,
) -> dict[Pattern, dict[str, int]]:
    """Pattern -> which argument index holds the weight / bias (for functionals)."""
    return {pattern: config._input_type_to_index
            for pattern, config in backend_config._pattern_complex_format_to_config.items()}


def get_root_module_to_quantized_reference_module(
    backend_config: BackendConfig,
) -> dict[type[nn.Module], type[nn.Module]]:
    """Root float module type -> the reference quantized module type convert swaps in."""
    return {c.root_module: c.reference_quantized_module for c in backend_config.configs
            if c.root_module is not None and c.reference_quantized_module is not None}


def get_fuser_method_mapping(backend_config: BackendConfig) -> dict[Pattern, Callable[..., Any]]:
    """Pattern -> fuser method taking the matched modules in the reversed nested format."""
    return {pattern: fuser_method_in_reversed_nested_format(config)
            for pattern, config in backend_config._pattern_complex_format_to_config.items()
            if config.fuser_method is not None}


def get_module_to_qat_module(backend_config: BackendConfig) -> dict[Pattern, type[nn.Module]]:
    """Pattern (a float or fused module type) -> its QAT module type."""
    return {pattern: config.qat_module
            for pattern, config in backend_config._pattern_complex_format_to_config.items()
            if config.qat_module is not None}


def get_fusion_pattern_to_root_node_getter(
    backend_config: BackendConfig,
) -> dict[Pattern, Callable[..., Any]]:
    """Pattern -> function returning the root node of a match, for patterns whose root is
    not the last node (the default); e.g. conv in ``(add, conv, MatchAllNode)``."""
    return {pattern: config._root_node_getter
            for pattern, config in backend_config._pattern_complex_format_to_config.items()
            if config._root_node_getter is not None}


def get_fusion_pattern_to_extra_inputs_getter(
    backend_config: BackendConfig,
) -> dict[Pattern, Callable[..., Any]]:
    """Pattern -> function returning the match's inputs that the fused module takes besides
    the root node's (e.g. the other operand of ``add`` in conv + add)."""
    return {pattern: config._extra_inputs_getter
            for pattern, config in backend_config._pattern_complex_format_to_config.items()
            if config._extra_inputs_getter is not None}


# functionals wrapped by torch's ``boolean_dispatch``, whose repr names only ``fn``
_BOOLEAN_DISPATCH_NAMES: dict[Callable[..., Any], str] = {
    F.fractional_max_pool2d: "torch.nn.functional.fractional_max_pool2d",
    F.fractional_max_pool3d: "torch.nn.functional.fractional_max_pool3d",
    F.max_pool1d: "torch.nn.functional.max_pool1d",
    F.max_pool2d: "torch.nn.functional.max_pool2d",
    F.max_pool3d: "torch.nn.functional.max_pool3d",
    F.adaptive_max_pool1d: "torch.nn.functional.adaptive_max_pool1d",
    F.adaptive_max_pool2d: "torch.nn.functional.adaptive_max_pool2d",
    F.adaptive_max_pool3d: "torch.nn.functional.adaptive_max_pool3d",
}


def remove_boolean_dispatch_from_name(p: Any) -> Any:
    """``p``, or its qualified name if it is a ``boolean_dispatch`` functional (whose repr
    would be ``<function boolean_dispatch.<locals>.fn ...>``)."""
    name = _BOOLEAN_DISPATCH_NAMES.get(p) if callable(p) else None
    if name is not None:
        return name
    if "boolean_dispatch" in str(p):
        raise ValueError(f"{p} has no human-readable name; add it to _BOOLEAN_DISPATCH_NAMES")
    return p


def pattern_to_human_readable(p: Any) -> Any:
    """``p`` with boolean-dispatch functionals replaced by their names (tuples recursed)."""
    if isinstance(p, tuple):
        return tuple(pattern_to_human_readable(inner) for inner in p)
    if isinstance(p, str):
        return p
    return remove_boolean_dispatch_from_name(p)


def entry_to_pretty_str(entry: dict[str, Any]) -> str:
    """A multi-line, human-readable rendering of one ``BackendPatternConfig.to_dict()``."""
    lines = ["{"]
    if "pattern" in entry:
        lines.append(f"  'pattern': {pattern_to_human_readable(entry['pattern'])},")
    if "dtype_configs" in entry:
        lines.append("  'dtype_configs': [")
        for dtype_config in entry["dtype_configs"]:
            lines.append("    {")
            lines.extend(f"      '{k}': {v}," for k, v in dtype_config.items())
            lines.append("    },")
        lines.append("  ],")
    if "num_tensor_args_to_observation_type" in entry:
        lines.append("  'num_tensor_args_to_observation_type': {")
        lines.extend(f"    {k}: {v},"
                     for k, v in entry["num_tensor_args_to_observation_type"].items())
        lines.append("  },")
    handled = {"pattern", "dtype_configs", "num_tensor_args_to_observation_type"}
    lines.extend(f"  '{k}': {v}," for k, v in entry.items() if k not in handled)
    lines.append("}")
    return "\n".join(lines)
