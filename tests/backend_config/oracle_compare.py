"""Compare fxquant backend configs with upstream's (importable as
``backend_config.oracle_compare``).

Upstream configs name ``torch.ao.nn`` classes; :func:`translate` maps them to the fxquant
class of the same name in the mirrored namespace, so that configs compare as objects.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch.ao.nn.intrinsic
import torch.ao.nn.intrinsic.qat
import torch.ao.nn.qat
import torch.ao.nn.quantized.reference
import torch.ao.quantization.backend_config.utils  # noqa: F401  # upstream needs it loaded
from torch.ao.quantization.utils import MatchAllNode as UpstreamMatchAllNode

from fxquant.backend_config.patterns import MatchAllNode

_NAMESPACES = {
    "torch.ao.nn.intrinsic": "fxquant.nn.intrinsic",
    "torch.ao.nn.intrinsic.qat": "fxquant.nn.intrinsic.qat",
    "torch.ao.nn.qat": "fxquant.nn.qat",
    "torch.ao.nn.quantized.reference": "fxquant.nn.quantized.reference",
}


def _class_map() -> dict[Any, Any]:
    mapping: dict[Any, Any] = {UpstreamMatchAllNode: MatchAllNode}
    for upstream_name, ours_name in _NAMESPACES.items():
        upstream, ours = importlib.import_module(upstream_name), importlib.import_module(ours_name)
        for name in dir(upstream):
            obj = getattr(upstream, name)
            if isinstance(obj, type) and hasattr(ours, name):
                mapping[obj] = getattr(ours, name)
    return mapping


UPSTREAM_TO_OURS = _class_map()


def translate(obj: Any) -> Any:
    """``obj`` (a pattern or module type) with upstream classes replaced by fxquant's."""
    if isinstance(obj, tuple):
        return tuple(translate(o) for o in obj)
    if isinstance(obj, type) and obj.__module__.startswith("torch.ao"):
        assert obj in UPSTREAM_TO_OURS, f"no fxquant counterpart of {obj}"
    try:
        return UPSTREAM_TO_OURS.get(obj, obj)
    except TypeError:  # unhashable
        return obj


def constraints_key(c: Any) -> tuple[Any, ...]:
    return (c.dtype, c.quant_min_lower_bound, c.quant_max_upper_bound, c.scale_min_lower_bound,
            c.scale_max_upper_bound, c.scale_exact_match, c.zero_point_exact_match)


def dtype_config_key(dc: Any) -> tuple[Any, ...]:
    return (constraints_key(dc.input_dtype_with_constraints),
            constraints_key(dc.output_dtype_with_constraints),
            constraints_key(dc.weight_dtype_with_constraints), dc.bias_dtype, dc.is_dynamic)


def pattern_config_key(c: Any) -> dict[str, Any]:
    """Everything a pattern config says, with callables reduced to "is set"."""
    return {
        "pattern": translate(c.pattern),
        "pattern_complex_format": translate(c._pattern_complex_format),
        "observation_type": c.observation_type.name,
        "dtype_configs": [dtype_config_key(d) for d in c.dtype_configs],
        "root_module": translate(c.root_module),
        "qat_module": translate(c.qat_module),
        "reference_quantized_module": translate(c.reference_quantized_module),
        "fused_module": translate(c.fused_module),
        "has_fuser_method": c.fuser_method is not None,
        "has_root_node_getter": c._root_node_getter is not None,
        "has_extra_inputs_getter": c._extra_inputs_getter is not None,
        "num_tensor_args_to_observation_type": {
            k: v.name for k, v in c._num_tensor_args_to_observation_type.items()},
        "input_type_to_index": dict(c._input_type_to_index),
    }
