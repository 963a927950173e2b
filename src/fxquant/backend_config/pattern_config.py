"""How one op pattern runs on a backend: ``ObservationType`` and ``BackendPatternConfig``.

``BackendPatternConfig`` keeps upstream's builder API (``BackendPatternConfig(nn.Linear)
.set_observation_type(...).add_dtype_config(...)``, each setter returning the config) so
existing backend definitions port by changing an import. The values it holds are data:
dtype configs are frozen, patterns are types/functions/strings.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from torch import nn

from fxquant.backend_config.dtype_config import DTypeConfig
from fxquant.backend_config.patterns import Pattern, reverse_sequential_pattern

__all__ = ["BackendPatternConfig", "ObservationType"]

# ``BackendPatternConfig`` dictionary keys (the same as upstream's)
PATTERN_DICT_KEY = "pattern"
PATTERN_COMPLEX_FORMAT_DICT_KEY = "pattern_complex_format"
OBSERVATION_TYPE_DICT_KEY = "observation_type"
DTYPE_CONFIGS_DICT_KEY = "dtype_configs"
ROOT_MODULE_DICT_KEY = "root_module"
QAT_MODULE_DICT_KEY = "qat_module"
REFERENCE_QUANTIZED_MODULE_DICT_KEY = "reference_quantized_module_for_root"
FUSED_MODULE_DICT_KEY = "fused_module"
FUSER_METHOD_DICT_KEY = "fuser_method"
ROOT_NODE_GETTER_DICT_KEY = "root_node_getter"
EXTRA_INPUTS_GETTER_DICT_KEY = "extra_inputs_getter"
NUM_TENSOR_ARGS_TO_OBSERVATION_TYPE_DICT_KEY = "num_tensor_args_to_observation_type"
INPUT_TYPE_TO_INDEX_DICT_KEY = "input_type_to_index"


class ObservationType(Enum):
    """How the output of a pattern is observed relative to its input.

    * ``OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT``: the output gets its own observer built
      from ``qconfig.activation`` (conv, linear, softmax, ...).
    * ``OUTPUT_SHARE_OBSERVER_WITH_INPUT``: the output reuses the input's observer instance,
      so both carry the same qparams (cat, max_pool, reshape, ...).
    * ``INPUT_OUTPUT_NOT_OBSERVED``: neither is observed; the op returns no tensor
      (``x.shape``, ``x.size()``).
    """

    OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT = 0
    OUTPUT_SHARE_OBSERVER_WITH_INPUT = 1
    INPUT_OUTPUT_NOT_OBSERVED = 2


def _check_module_type(setter: str, value: Any) -> None:
    if value is not None and not (isinstance(value, type) and issubclass(value, nn.Module)):
        raise TypeError(f"BackendPatternConfig.{setter} expects an nn.Module subclass, "
                        f"got {value!r}")


def _check_callable(setter: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"BackendPatternConfig.{setter} expects a callable, got {value!r}")


def _as_dtype_config(obj: Any) -> DTypeConfig:
    if isinstance(obj, DTypeConfig):
        return obj
    if isinstance(obj, dict):
        return DTypeConfig.from_dict(obj)
    raise TypeError(f"expected a DTypeConfig or a dict describing one in "
                    f"'{DTYPE_CONFIGS_DICT_KEY}', got {type(obj).__name__}")


class BackendPatternConfig:
    """Which dtypes a backend supports for one op pattern, how the pattern is observed, and
    its fusion, QAT and reference-module mappings.

    Example::

        >>> BackendPatternConfig(nn.Linear) \\
        ...     .set_observation_type(ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT) \\
        ...     .add_dtype_config(DTypeConfig(input_dtype=torch.quint8,
        ...                                   output_dtype=torch.quint8,
        ...                                   weight_dtype=torch.qint8,
        ...                                   bias_dtype=torch.float)) \\
        ...     .set_root_module(nn.Linear) \\
        ...     .set_qat_module(fxquant.nn.qat.Linear) \\
        ...     .set_reference_quantized_module(fxquant.nn.quantized.reference.Linear)
    """

    def __init__(self, pattern: Pattern | None = None) -> None:
        self.pattern: Pattern | None = None
        self.observation_type = ObservationType.OUTPUT_USE_DIFFERENT_OBSERVER_AS_INPUT
        self.dtype_configs: list[DTypeConfig] = []
        self.root_module: type[nn.Module] | None = None
        self.qat_module: type[nn.Module] | None = None
        self.reference_quantized_module: type[nn.Module] | None = None
        self.fused_module: type[nn.Module] | None = None
        self.fuser_method: Callable[..., Any] | None = None
        # internal: for patterns in the reversed nested tuple format and the FX flow
        self._root_node_getter: Callable[..., Any] | None = None
        self._extra_inputs_getter: Callable[..., Any] | None = None
        self._num_tensor_args_to_observation_type: dict[int, ObservationType] = {}
        self._input_type_to_index: dict[str, int] = {}
        self._pattern_complex_format: Pattern | None = None
        if pattern is not None:
            self.set_pattern(pattern)

    def __repr__(self) -> str:
        fields = {key.lstrip("_"): value for key, value in vars(self).items()
                  if value is not None and not (isinstance(value, (list, dict)) and not value)}
        body = ", ".join(f"{key}={value!r}" for key, value in fields.items())
        return f"BackendPatternConfig({body})"

    def set_pattern(self, pattern: Pattern) -> BackendPatternConfig:
        """Set the pattern: an op, or a 2- or 3-tuple of ops in forward (data-flow) order."""
        if self._pattern_complex_format is not None:
            raise ValueError("set either a pattern or a pattern in the complex format, not both")
        reverse_sequential_pattern(pattern)  # validates the tuple length
        self.pattern = pattern
        return self

    def set_observation_type(self, observation_type: ObservationType) -> BackendPatternConfig:
        """Set how the pattern's output is observed (see :class:`ObservationType`)."""
        if not isinstance(observation_type, ObservationType):
            raise TypeError(f"observation_type must be an ObservationType, "
                            f"got {observation_type!r}")
        self.observation_type = observation_type
        return self

    def add_dtype_config(self, dtype_config: DTypeConfig) -> BackendPatternConfig:
        """Add one supported set of dtypes."""
        if not isinstance(dtype_config, DTypeConfig):
            raise TypeError(f"add_dtype_config expects a DTypeConfig, got {dtype_config!r}")
        self.dtype_configs.append(dtype_config)
        return self

    def set_dtype_configs(self, dtype_configs: list[DTypeConfig]) -> BackendPatternConfig:
        """Replace the supported dtype sets."""
        self.dtype_configs = []
        for dtype_config in dtype_configs:
            self.add_dtype_config(dtype_config)
        return self

    def set_root_module(self, root_module: type[nn.Module] | None) -> BackendPatternConfig:
        """Set the float module at the root of the pattern (``nn.Linear`` for
        ``LinearReLU``); convert swaps it for the reference quantized module."""
        _check_module_type("set_root_module", root_module)
        self.root_module = root_module
        return self

    def set_qat_module(self, qat_module: type[nn.Module] | None) -> BackendPatternConfig:
        """Set the QAT module the pattern's module is swapped for in QAT preparation."""
        _check_module_type("set_qat_module", qat_module)
        self.qat_module = qat_module
        return self

    def set_reference_quantized_module(
        self, reference_quantized_module: type[nn.Module] | None
    ) -> BackendPatternConfig:
        """Set the reference quantized module that replaces the root module in convert."""
        _check_module_type("set_reference_quantized_module", reference_quantized_module)
        self.reference_quantized_module = reference_quantized_module
        return self

    def set_fused_module(self, fused_module: type[nn.Module] | None) -> BackendPatternConfig:
        """Set the module type the pattern is fused into."""
        _check_module_type("set_fused_module", fused_module)
        self.fused_module = fused_module
        return self

    def set_fuser_method(self, fuser_method: Callable[..., Any] | None) -> BackendPatternConfig:
        """Set how to fuse the pattern: ``fuser_method(is_qat, *modules)`` returns the fused
        module, with the modules in the pattern's (forward) order."""
        _check_callable("set_fuser_method", fuser_method)
        self.fuser_method = fuser_method
        return self

    def _set_root_node_getter(self, getter: Callable[..., Any] | None) -> BackendPatternConfig:
        _check_callable("_set_root_node_getter", getter)
        self._root_node_getter = getter
        return self

    def _set_extra_inputs_getter(self, getter: Callable[..., Any] | None) -> BackendPatternConfig:
        _check_callable("_set_extra_inputs_getter", getter)
        self._extra_inputs_getter = getter
        return self

    def _set_num_tensor_args_to_observation_type(
        self, mapping: dict[int, ObservationType]
    ) -> BackendPatternConfig:
        self._num_tensor_args_to_observation_type = mapping
        return self

    def _set_input_type_to_index(self, mapping: dict[str, int]) -> BackendPatternConfig:
        self._input_type_to_index = mapping
        return self

    def _set_pattern_complex_format(self, pattern: Pattern) -> BackendPatternConfig:
        """Set the pattern in the reversed nested tuple format (see ``patterns``)."""
        if self.pattern is not None:
            raise ValueError("set either a pattern or a pattern in the complex format, not both")
        self._pattern_complex_format = pattern
        return self

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> BackendPatternConfig:
        """Build a config from the dictionary :meth:`to_dict` produces (keys ``"pattern"``,
        ``"observation_type"``, ``"dtype_configs"``, ``"root_module"``, ``"qat_module"``,
        ``"reference_quantized_module_for_root"``, ``"fused_module"``, ``"fuser_method"``,
        ``"pattern_complex_format"``, ...; all optional)."""
        conf = cls()
        if PATTERN_DICT_KEY in config_dict:
            conf.set_pattern(config_dict[PATTERN_DICT_KEY])
        if OBSERVATION_TYPE_DICT_KEY in config_dict:
            conf.set_observation_type(config_dict[OBSERVATION_TYPE_DICT_KEY])
        conf.set_dtype_configs(
            [_as_dtype_config(d) for d in config_dict.get(DTYPE_CONFIGS_DICT_KEY, [])])
        conf.set_root_module(config_dict.get(ROOT_MODULE_DICT_KEY))
        conf.set_qat_module(config_dict.get(QAT_MODULE_DICT_KEY))
        conf.set_reference_quantized_module(config_dict.get(REFERENCE_QUANTIZED_MODULE_DICT_KEY))
        conf.set_fused_module(config_dict.get(FUSED_MODULE_DICT_KEY))
        conf.set_fuser_method(config_dict.get(FUSER_METHOD_DICT_KEY))
        conf._set_root_node_getter(config_dict.get(ROOT_NODE_GETTER_DICT_KEY))
        conf._set_extra_inputs_getter(config_dict.get(EXTRA_INPUTS_GETTER_DICT_KEY))
        conf._set_num_tensor_args_to_observation_type(
            config_dict.get(NUM_TENSOR_ARGS_TO_OBSERVATION_TYPE_DICT_KEY, {}))
        conf._set_input_type_to_index(config_dict.get(INPUT_TYPE_TO_INDEX_DICT_KEY, {}))
        if PATTERN_COMPLEX_FORMAT_DICT_KEY in config_dict:
            conf._set_pattern_complex_format(config_dict[PATTERN_COMPLEX_FORMAT_DICT_KEY])
        return conf

    def to_dict(self) -> dict[str, Any]:
        """This config as a dictionary (unset entries left out), readable by :meth:`from_dict`."""
        entries: dict[str, Any] = {
            OBSERVATION_TYPE_DICT_KEY: self.observation_type,
            DTYPE_CONFIGS_DICT_KEY: [c.to_dict() for c in self.dtype_configs],
        }
        optional = {
            PATTERN_DICT_KEY: self.pattern,
            ROOT_MODULE_DICT_KEY: self.root_module,
            QAT_MODULE_DICT_KEY: self.qat_module,
            REFERENCE_QUANTIZED_MODULE_DICT_KEY: self.reference_quantized_module,
            FUSED_MODULE_DICT_KEY: self.fused_module,
            FUSER_METHOD_DICT_KEY: self.fuser_method,
            ROOT_NODE_GETTER_DICT_KEY: self._root_node_getter,
            EXTRA_INPUTS_GETTER_DICT_KEY: self._extra_inputs_getter,
            NUM_TENSOR_ARGS_TO_OBSERVATION_TYPE_DICT_KEY:
                self._num_tensor_args_to_observation_type or None,
            INPUT_TYPE_TO_INDEX_DICT_KEY: self._input_type_to_index or None,
            PATTERN_COMPLEX_FORMAT_DICT_KEY: self._pattern_complex_format,
        }
        entries.update({key: value for key, value in optional.items() if value is not None})
        return entries
