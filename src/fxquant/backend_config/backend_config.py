"""``BackendConfig``: the set of op patterns a backend can run quantized.

The dtype and pattern configs it is made of live in :mod:`~fxquant.backend_config.dtype_config`
and :mod:`~fxquant.backend_config.pattern_config`; they are re-exported here, where upstream
users import them from.
"""

from __future__ import annotations

from typing import Any

from fxquant.backend_config.dtype_config import DTypeConfig, DTypeWithConstraints
from fxquant.backend_config.pattern_config import BackendPatternConfig, ObservationType
from fxquant.backend_config.patterns import Pattern, pattern_in_reversed_nested_format

__all__ = [
    "BackendConfig",
    "BackendPatternConfig",
    "DTypeConfig",
    "DTypeWithConstraints",
    "ObservationType",
]

NAME_DICT_KEY = "name"
CONFIGS_DICT_KEY = "configs"


class BackendConfig:
    """The op patterns a backend can run quantized, each with a :class:`BackendPatternConfig`
    (supported dtypes, observation type, fusion/QAT/reference modules).

    Configs are keyed by pattern: setting a config for a pattern already present replaces
    it (in its original position).

    Example::

        >>> linear_config = BackendPatternConfig(nn.Linear).add_dtype_config(int8_config)
        >>> backend_config = BackendConfig("my_backend").set_backend_pattern_config(linear_config)
    """

    def __init__(self, name: str = "") -> None:
        self.name = name
        # keyed by the pattern in the reversed nested tuple format, which the matcher uses
        self._pattern_complex_format_to_config: dict[Pattern, BackendPatternConfig] = {}

    def __repr__(self) -> str:
        return f"BackendConfig(name={self.name!r}, configs=<{len(self.configs)} patterns>)"

    def set_name(self, name: str) -> BackendConfig:
        """Set the name of the backend."""
        self.name = name
        return self

    def set_backend_pattern_config(self, config: BackendPatternConfig) -> BackendConfig:
        """Add the config for one pattern, replacing any earlier config for that pattern."""
        if not isinstance(config, BackendPatternConfig):
            raise TypeError(f"BackendConfig {self.name!r}: expected a BackendPatternConfig, "
                            f"got {type(config).__name__}")
        self._pattern_complex_format_to_config[pattern_in_reversed_nested_format(config)] = config
        return self

    def set_backend_pattern_configs(self, configs: list[BackendPatternConfig]) -> BackendConfig:
        """Add several pattern configs (see :meth:`set_backend_pattern_config`)."""
        for config in configs:
            self.set_backend_pattern_config(config)
        return self

    @property
    def configs(self) -> list[BackendPatternConfig]:
        """A new list of the pattern configs, in the order they were first set."""
        return list(self._pattern_complex_format_to_config.values())

    @classmethod
    def from_dict(cls, backend_config_dict: dict[str, Any]) -> BackendConfig:
        """Build a ``BackendConfig`` from ``{"name": str, "configs": [dict or
        BackendPatternConfig, ...]}``."""
        conf = cls(backend_config_dict.get(NAME_DICT_KEY, ""))
        for entry in backend_config_dict.get(CONFIGS_DICT_KEY, []):
            if isinstance(entry, dict):
                entry = BackendPatternConfig.from_dict(entry)
            if not isinstance(entry, BackendPatternConfig):
                raise TypeError(f"each entry of backend_config_dict['{CONFIGS_DICT_KEY}'] must "
                                f"be a dict or a BackendPatternConfig, got {type(entry).__name__}")
            conf.set_backend_pattern_config(entry)
        return conf

    def to_dict(self) -> dict[str, Any]:
        """This config as the dictionary :meth:`from_dict` reads."""
        return {NAME_DICT_KEY: self.name, CONFIGS_DICT_KEY: [c.to_dict() for c in self.configs]}
