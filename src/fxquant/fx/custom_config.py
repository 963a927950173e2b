"""Custom configs of the FX flow (upstream: ``torch.ao.quantization.fx.custom_config``).

Each config is a builder: setters return the config so calls chain, ``from_dict`` / ``to_dict``
read and write upstream's legacy dict format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fxquant.backend_config import BackendConfig
from fxquant.eager.quant_type import QuantType
from fxquant.qconfig.mapping import QConfigMapping

__all__ = ["ConvertCustomConfig", "FuseCustomConfig", "PrepareCustomConfig"]

_NON_TRACEABLE_NAMES = "non_traceable_module_name"
_NON_TRACEABLE_CLASSES = "non_traceable_module_class"
_INPUT_IDXS = "input_quantized_idxs"
_OUTPUT_IDXS = "output_quantized_idxs"
_PRESERVED = "preserved_attributes"
_STANDALONE_NAMES = "standalone_module_name"
_STANDALONE_CLASSES = "standalone_module_class"
_FLOAT_TO_OBSERVED = "float_to_observed_custom_module_class"
_OBSERVED_TO_QUANTIZED = "observed_to_quantized_custom_module_class"
_QUANT_TYPES = ("static", "dynamic", "weight_only", "qat")


def _quant_type_name(quant_type: Any) -> str:
    """``"static"``... for a QuantType or its name; ValueError for anything else."""
    name = quant_type.name.lower() if isinstance(quant_type, QuantType) else quant_type
    if name not in _QUANT_TYPES:
        raise ValueError(f"unknown quant type {quant_type!r}; expected one of {list(_QUANT_TYPES)} or a QuantType")
    return str(name)


def _standalone_entry(qconfig_mapping: Any, example_inputs: Any, custom: Any, backend_config: Any) -> tuple:
    """A standalone-module entry with upstream's dict forms turned into objects."""
    if isinstance(qconfig_mapping, dict):
        qconfig_mapping = QConfigMapping.from_dict(qconfig_mapping)
    if isinstance(custom, dict):
        custom = PrepareCustomConfig.from_dict(custom)
    if isinstance(backend_config, dict):
        backend_config = BackendConfig.from_dict(backend_config)
    return (qconfig_mapping, example_inputs, custom, backend_config)


def _standalone_to_dict(key: Any, entry: tuple) -> tuple:
    qconfig_mapping, example_inputs, custom, backend_config = entry
    return (
        key,
        qconfig_mapping.to_dict() if isinstance(qconfig_mapping, QConfigMapping) else qconfig_mapping,
        example_inputs,
        custom.to_dict() if isinstance(custom, PrepareCustomConfig) else custom,
        backend_config.to_dict() if isinstance(backend_config, BackendConfig) else backend_config,
    )


def _check_keys(d: dict[str, Any], allowed: tuple[str, ...], owner: str) -> None:
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ValueError(f"{owner}.from_dict: unknown keys {unknown}; expected some of {list(allowed)}")


@dataclass
class PrepareCustomConfig:
    """What ``prepare_fx`` should do beyond the qconfig mapping.

    Example::

        config = (PrepareCustomConfig()
                  .set_non_traceable_module_names(["decoder"])
                  .set_input_quantized_indexes([0])
                  .set_preserved_attributes(["version"]))
    """

    standalone_module_names: dict[str, tuple[Any, Any, Any, Any]] = field(default_factory=dict)
    standalone_module_classes: dict[type, tuple[Any, Any, Any, Any]] = field(default_factory=dict)
    float_to_observed_mapping: dict[Any, dict[type, type]] = field(default_factory=dict)
    non_traceable_module_names: list[str] = field(default_factory=list)
    non_traceable_module_classes: list[type] = field(default_factory=list)
    input_quantized_indexes: list[int] = field(default_factory=list)
    output_quantized_indexes: list[int] = field(default_factory=list)
    preserved_attributes: list[str] = field(default_factory=list)

    def set_standalone_module_name(
        self, module_name: str, qconfig_mapping: Any, example_inputs: Any,
        prepare_custom_config: Any, backend_config: Any,
    ) -> PrepareCustomConfig:
        """Prepare and convert submodule ``module_name`` as its own GraphModule with these
        settings (None: the parent's qconfig for it as global qconfig, example inputs captured
        from the parent's, an empty custom config, the parent's backend config). Its custom
        config's input/output quantized indexes set the boundary with the parent."""
        self.standalone_module_names[module_name] = _standalone_entry(
            qconfig_mapping, example_inputs, prepare_custom_config, backend_config
        )
        return self

    def set_standalone_module_class(
        self, module_class: type, qconfig_mapping: Any, example_inputs: Any,
        prepare_custom_config: Any, backend_config: Any,
    ) -> PrepareCustomConfig:
        """Like :meth:`set_standalone_module_name` for every instance of ``module_class``
        (a name entry wins over a class entry)."""
        self.standalone_module_classes[module_class] = _standalone_entry(
            qconfig_mapping, example_inputs, prepare_custom_config, backend_config
        )
        return self

    def set_float_to_observed_mapping(
        self, float_class: type, observed_class: type, quant_type: Any = "static"
    ) -> PrepareCustomConfig:
        """Swap ``float_class`` modules (kept whole by tracing) for
        ``observed_class.from_float(module)`` at prepare (custom modules; ``quant_type`` is
        ``"static"`` or ``QuantType.STATIC``)."""
        self.float_to_observed_mapping.setdefault(_quant_type_name(quant_type), {})[float_class] = observed_class
        return self

    def set_non_traceable_module_names(self, module_names: list[str]) -> PrepareCustomConfig:
        """Keep these submodules as opaque calls (not traced, left in float)."""
        self.non_traceable_module_names = list(module_names)
        return self

    def set_non_traceable_module_classes(self, module_classes: list[type]) -> PrepareCustomConfig:
        """Keep instances of these classes as opaque calls (not traced, left in float)."""
        self.non_traceable_module_classes = list(module_classes)
        return self

    def set_input_quantized_indexes(self, indexes: list[int]) -> PrepareCustomConfig:
        """The model's inputs at these indexes arrive already quantized."""
        self.input_quantized_indexes = list(indexes)
        return self

    def set_output_quantized_indexes(self, indexes: list[int]) -> PrepareCustomConfig:
        """The model's outputs at these indexes stay quantized."""
        self.output_quantized_indexes = list(indexes)
        return self

    def set_preserved_attributes(self, attributes: list[str]) -> PrepareCustomConfig:
        """Copy these attributes of the float model onto the prepared model."""
        self.preserved_attributes = list(attributes)
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrepareCustomConfig:
        """Build from upstream's ``prepare_custom_config_dict`` format."""
        _check_keys(d, (_STANDALONE_NAMES, _STANDALONE_CLASSES, _FLOAT_TO_OBSERVED,
                        _NON_TRACEABLE_NAMES, _NON_TRACEABLE_CLASSES, _INPUT_IDXS, _OUTPUT_IDXS,
                        _PRESERVED), "PrepareCustomConfig")
        config = cls()
        for name, qm, ex, pcc, bc in d.get(_STANDALONE_NAMES, []):
            config.set_standalone_module_name(name, qm, ex, pcc, bc)
        for klass, qm, ex, pcc, bc in d.get(_STANDALONE_CLASSES, []):
            config.set_standalone_module_class(klass, qm, ex, pcc, bc)
        for quant_type, mapping in d.get(_FLOAT_TO_OBSERVED, {}).items():
            for float_class, observed_class in mapping.items():
                config.set_float_to_observed_mapping(float_class, observed_class, quant_type)
        config.set_non_traceable_module_names(d.get(_NON_TRACEABLE_NAMES, []))
        config.set_non_traceable_module_classes(d.get(_NON_TRACEABLE_CLASSES, []))
        config.set_input_quantized_indexes(d.get(_INPUT_IDXS, []))
        config.set_output_quantized_indexes(d.get(_OUTPUT_IDXS, []))
        config.set_preserved_attributes(d.get(_PRESERVED, []))
        return config

    def to_dict(self) -> dict[str, Any]:
        """Upstream's dict format; empty entries are left out."""
        d: dict[str, Any] = {}
        if self.standalone_module_names:
            d[_STANDALONE_NAMES] = [_standalone_to_dict(k, v) for k, v in self.standalone_module_names.items()]
        if self.standalone_module_classes:
            d[_STANDALONE_CLASSES] = [_standalone_to_dict(k, v) for k, v in self.standalone_module_classes.items()]
        if self.float_to_observed_mapping:
            d[_FLOAT_TO_OBSERVED] = self.float_to_observed_mapping
        for key, value in ((_NON_TRACEABLE_NAMES, self.non_traceable_module_names),
                           (_NON_TRACEABLE_CLASSES, self.non_traceable_module_classes),
                           (_INPUT_IDXS, self.input_quantized_indexes),
                           (_OUTPUT_IDXS, self.output_quantized_indexes),
                           (_PRESERVED, self.preserved_attributes)):
            if value:
                d[key] = value
        return d


@dataclass
class ConvertCustomConfig:
    """What ``convert_fx`` should do beyond the prepared model's qconfigs."""

    observed_to_quantized_mapping: dict[Any, dict[type, type]] = field(default_factory=dict)
    preserved_attributes: list[str] = field(default_factory=list)

    def set_observed_to_quantized_mapping(
        self, observed_class: type, quantized_class: type, quant_type: Any = "static"
    ) -> ConvertCustomConfig:
        """Swap observed custom modules of ``observed_class`` for
        ``quantized_class.from_observed(module)`` at convert."""
        self.observed_to_quantized_mapping.setdefault(_quant_type_name(quant_type), {})[observed_class] = quantized_class
        return self

    def set_preserved_attributes(self, attributes: list[str]) -> ConvertCustomConfig:
        """Copy these attributes of the observed model onto the converted model."""
        self.preserved_attributes = list(attributes)
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConvertCustomConfig:
        """Build from upstream's ``convert_custom_config_dict`` format."""
        _check_keys(d, (_OBSERVED_TO_QUANTIZED, _PRESERVED), "ConvertCustomConfig")
        config = cls()
        for quant_type, mapping in d.get(_OBSERVED_TO_QUANTIZED, {}).items():
            for observed_class, quantized_class in mapping.items():
                config.set_observed_to_quantized_mapping(observed_class, quantized_class, quant_type)
        config.set_preserved_attributes(d.get(_PRESERVED, []))
        return config

    def to_dict(self) -> dict[str, Any]:
        """Upstream's dict format; empty entries are left out."""
        d: dict[str, Any] = {}
        if self.observed_to_quantized_mapping:
            d[_OBSERVED_TO_QUANTIZED] = self.observed_to_quantized_mapping
        if self.preserved_attributes:
            d[_PRESERVED] = self.preserved_attributes
        return d


@dataclass
class FuseCustomConfig:
    """What ``fuse_fx`` should do beyond the backend's fusion patterns."""

    preserved_attributes: list[str] = field(default_factory=list)

    def set_preserved_attributes(self, attributes: list[str]) -> FuseCustomConfig:
        """Copy these attributes of the float model onto the fused model."""
        self.preserved_attributes = list(attributes)
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FuseCustomConfig:
        """Build from upstream's ``fuse_custom_config_dict`` format."""
        _check_keys(d, (_PRESERVED,), "FuseCustomConfig")
        return cls().set_preserved_attributes(d.get(_PRESERVED, []))

    def to_dict(self) -> dict[str, Any]:
        """Upstream's dict format; empty entries are left out."""
        return {_PRESERVED: self.preserved_attributes} if self.preserved_attributes else {}
