"""Which dtypes (and which ranges of quantization parameters) a backend accepts for one op.

``DTypeWithConstraints`` names one dtype plus optional bounds on the qconfig's observer for
it; ``DTypeConfig`` groups the four of them (input activation, output activation, weight,
bias) with whether the op is dynamically quantized. Both are frozen values: they can be
shared between many pattern configs, compared and hashed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["DTypeConfig", "DTypeWithConstraints"]

# ``DTypeConfig`` dictionary keys (the same as upstream's)
INPUT_DTYPE_DICT_KEY = "input_dtype"
OUTPUT_DTYPE_DICT_KEY = "output_dtype"
WEIGHT_DTYPE_DICT_KEY = "weight_dtype"
BIAS_DTYPE_DICT_KEY = "bias_dtype"
IS_DYNAMIC_DICT_KEY = "is_dynamic"


def _check_bounds(owner: str, low_name: str, low: float | None, high_name: str,
                  high: float | None) -> None:
    if low is not None and high is not None and low > high:
        raise ValueError(f"{owner}: {low_name} ({low}) is above {high_name} ({high})")


@dataclass(frozen=True)
class DTypeWithConstraints:
    """A dtype and the constraints a backend puts on the qconfig's observer for it.

    * ``quant_min_lower_bound`` / ``quant_max_upper_bound``: the observer's ``quant_min`` /
      ``quant_max`` must lie inside ``[quant_min_lower_bound, quant_max_upper_bound]``.
    * ``scale_min_lower_bound``: the observer's smallest scale (its ``eps``) must be at least
      this. ``scale_max_upper_bound`` is recorded but, as upstream, not enforced.
    * ``scale_exact_match`` / ``zero_point_exact_match``: ops with fixed quantization
      parameters (sigmoid, tanh, ...) need a ``FixedQParamsObserver`` or
      ``FixedQParamsFakeQuantize`` with exactly this scale and zero point.

    Example::

        >>> DTypeWithConstraints(dtype=torch.qint8, quant_min_lower_bound=-127,
        ...                      quant_max_upper_bound=127, scale_min_lower_bound=2**-12)
    """

    dtype: torch.dtype | None = None
    quant_min_lower_bound: int | float | None = None
    quant_max_upper_bound: int | float | None = None
    scale_min_lower_bound: int | float | None = None
    scale_max_upper_bound: int | float | None = None
    scale_exact_match: float | None = None
    zero_point_exact_match: int | None = None

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in vars(self).items()
                           if value is not None)
        return f"DTypeWithConstraints({fields})"

    def _short_repr(self) -> str:
        """The bare dtype when there are no constraints, else the full repr."""
        unconstrained = all(value is None for name, value in vars(self).items() if name != "dtype")
        return repr(self.dtype) if unconstrained else repr(self)

    def __post_init__(self) -> None:
        owner = "DTypeWithConstraints"
        if self.dtype is not None and not isinstance(self.dtype, torch.dtype):
            raise TypeError(f"{owner}: dtype must be a torch.dtype or None, got {self.dtype!r}")
        _check_bounds(owner, "quant_min_lower_bound", self.quant_min_lower_bound,
                      "quant_max_upper_bound", self.quant_max_upper_bound)
        _check_bounds(owner, "scale_min_lower_bound", self.scale_min_lower_bound,
                      "scale_max_upper_bound", self.scale_max_upper_bound)
        for name in ("scale_min_lower_bound", "scale_max_upper_bound", "scale_exact_match"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{owner}: {name} must be positive, got {value}")


def _with_constraints(name: str, value: Any) -> DTypeWithConstraints:
    """``value`` (a dtype, a ``DTypeWithConstraints`` or None) as a ``DTypeWithConstraints``."""
    if isinstance(value, DTypeWithConstraints):
        return value
    if value is None or isinstance(value, torch.dtype):
        return DTypeWithConstraints(dtype=value)
    raise TypeError(
        f"DTypeConfig: {name} must be a torch.dtype, a DTypeWithConstraints or None, "
        f"got {value!r}"
    )


@dataclass(frozen=True, init=False)
class DTypeConfig:
    """The dtypes a backend supports for one op, as passed to the quantize ops of the
    reference model (``quant - [dequant - op - quant] - dequant``).

    ``input_dtype`` / ``output_dtype`` are the dtypes of the activation observers around the
    op, ``weight_dtype`` / ``bias_dtype`` those of its parameters. For dynamic quantization
    (``is_dynamic=True``) the input dtype is the dtype the activation is quantized to at run
    time, and the output dtype is ``torch.float``. Each dtype may carry constraints
    (:class:`DTypeWithConstraints`); a qconfig that violates them is not honoured.

    Example::

        >>> DTypeConfig(input_dtype=torch.quint8, output_dtype=torch.quint8,
        ...             weight_dtype=torch.qint8, bias_dtype=torch.float)
    """

    input_dtype_with_constraints: DTypeWithConstraints = field(
        default_factory=DTypeWithConstraints)
    output_dtype_with_constraints: DTypeWithConstraints = field(
        default_factory=DTypeWithConstraints)
    weight_dtype_with_constraints: DTypeWithConstraints = field(
        default_factory=DTypeWithConstraints)
    bias_dtype: torch.dtype | None = None
    is_dynamic: bool | None = None

    def __init__(
        self,
        input_dtype: torch.dtype | DTypeWithConstraints | None = None,
        output_dtype: torch.dtype | DTypeWithConstraints | None = None,
        weight_dtype: torch.dtype | DTypeWithConstraints | None = None,
        bias_dtype: torch.dtype | None = None,
        is_dynamic: bool | None = None,
    ) -> None:
        if bias_dtype is not None and not isinstance(bias_dtype, torch.dtype):
            raise TypeError(f"DTypeConfig: bias_dtype must be a torch.dtype or None, "
                            f"got {bias_dtype!r}")
        if is_dynamic is not None and not isinstance(is_dynamic, bool):
            raise TypeError(f"DTypeConfig: is_dynamic must be a bool or None, "
                            f"got {is_dynamic!r}")
        # frozen dataclass: assign through object.__setattr__ once, here
        object.__setattr__(self, "input_dtype_with_constraints",
                           _with_constraints("input_dtype", input_dtype))
        object.__setattr__(self, "output_dtype_with_constraints",
                           _with_constraints("output_dtype", output_dtype))
        object.__setattr__(self, "weight_dtype_with_constraints",
                           _with_constraints("weight_dtype", weight_dtype))
        object.__setattr__(self, "bias_dtype", bias_dtype)
        object.__setattr__(self, "is_dynamic", is_dynamic)

    def __repr__(self) -> str:
        parts = [f"{name}={constrained._short_repr()}" for name, constrained in (
            ("input_dtype", self.input_dtype_with_constraints),
            ("output_dtype", self.output_dtype_with_constraints),
            ("weight_dtype", self.weight_dtype_with_constraints),
        ) if constrained.dtype is not None or constrained != DTypeWithConstraints()]
        if self.bias_dtype is not None:
            parts.append(f"bias_dtype={self.bias_dtype!r}")
        if self.is_dynamic is not None:
            parts.append(f"is_dynamic={self.is_dynamic!r}")
        return f"DTypeConfig({', '.join(parts)})"

    @property
    def input_dtype(self) -> torch.dtype | None:
        """The input activation dtype (without its constraints)."""
        return self.input_dtype_with_constraints.dtype

    @property
    def output_dtype(self) -> torch.dtype | None:
        """The output activation dtype (without its constraints)."""
        return self.output_dtype_with_constraints.dtype

    @property
    def weight_dtype(self) -> torch.dtype | None:
        """The weight dtype (without its constraints)."""
        return self.weight_dtype_with_constraints.dtype

    @classmethod
    def from_dict(cls, dtype_config_dict: dict[str, Any]) -> DTypeConfig:
        """Build a ``DTypeConfig`` from a dictionary with the optional keys ``"input_dtype"``,
        ``"output_dtype"``, ``"weight_dtype"`` (each a ``torch.dtype`` or a
        ``DTypeWithConstraints``), ``"bias_dtype"`` and ``"is_dynamic"``."""
        return cls(
            input_dtype=dtype_config_dict.get(INPUT_DTYPE_DICT_KEY),
            output_dtype=dtype_config_dict.get(OUTPUT_DTYPE_DICT_KEY),
            weight_dtype=dtype_config_dict.get(WEIGHT_DTYPE_DICT_KEY),
            bias_dtype=dtype_config_dict.get(BIAS_DTYPE_DICT_KEY),
            is_dynamic=dtype_config_dict.get(IS_DYNAMIC_DICT_KEY),
        )

    def to_dict(self) -> dict[str, Any]:
        """This config as the dictionary :meth:`from_dict` reads (unset entries left out)."""
        entries: dict[str, Any] = {}
        for key, constrained in ((INPUT_DTYPE_DICT_KEY, self.input_dtype_with_constraints),
                                 (OUTPUT_DTYPE_DICT_KEY, self.output_dtype_with_constraints),
                                 (WEIGHT_DTYPE_DICT_KEY, self.weight_dtype_with_constraints)):
            if constrained.dtype is not None:
                entries[key] = constrained
        if self.bias_dtype is not None:
            entries[BIAS_DTYPE_DICT_KEY] = self.bias_dtype
        if self.is_dynamic is not None:
            entries[IS_DYNAMIC_DICT_KEY] = self.is_dynamic
        return entries
