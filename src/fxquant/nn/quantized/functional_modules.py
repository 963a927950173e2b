"""Module wrappers for functional ops so eager mode can observe and quantize them.

``FloatFunctional`` is what a float model uses instead of ``torch.add`` & co.: its
``activation_post_process`` (an ``Identity`` until ``prepare`` swaps in an observer) sees
every output. ``convert`` turns it into ``QFunctional``, whose methods run the
``torch.ops.quantized`` kernels with the observed output qparams. ``FXFloatFunctional`` is
the observer-free variant that FX graph mode traces through.

Methods: ``add``, ``add_scalar``, ``mul``, ``mul_scalar``, ``cat``, ``add_relu``, ``matmul``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fxquant.nn._errors import check_quantized_input
from fxquant.nn.quantized.utils import FromFloatError, observed_output_qparams

__all__ = ["FXFloatFunctional", "FloatFunctional", "QFunctional"]


def _no_forward(name: str) -> RuntimeError:
    return RuntimeError(
        f"{name} has no forward(); call one of its operations instead "
        f"(add, add_scalar, mul, mul_scalar, cat, add_relu, matmul)"
    )


class FloatFunctional(nn.Module):
    """Float ops whose outputs are observed (``add``/``mul``/``cat``/``add_relu``/``matmul``;
    the ``*_scalar`` ops keep the input's range and are not observed).

    >>> f = FloatFunctional()
    >>> f.add(torch.ones(2), torch.ones(2))
    tensor([2., 2.])
    """

    def __init__(self) -> None:
        super().__init__()
        self.activation_post_process: nn.Module = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        raise _no_forward("FloatFunctional")

    def add(self, x: Tensor, y: Tensor) -> Tensor:
        """``torch.add(x, y)``, observed."""
        return self.activation_post_process(torch.add(x, y))

    def add_scalar(self, x: Tensor, y: float) -> Tensor:
        """``torch.add(x, y)`` with a Python number (not observed)."""
        return torch.add(x, y)

    def mul(self, x: Tensor, y: Tensor) -> Tensor:
        """``torch.mul(x, y)``, observed."""
        return self.activation_post_process(torch.mul(x, y))

    def mul_scalar(self, x: Tensor, y: float) -> Tensor:
        """``torch.mul(x, y)`` with a Python number (not observed)."""
        return torch.mul(x, y)

    def cat(self, x: list[Tensor], dim: int = 0) -> Tensor:
        """``torch.cat(x, dim)``, observed."""
        return self.activation_post_process(torch.cat(x, dim=dim))

    def add_relu(self, x: Tensor, y: Tensor) -> Tensor:
        """``relu(x + y)``, observed."""
        return self.activation_post_process(torch.nn.functional.relu(torch.add(x, y)))

    def matmul(self, x: Tensor, y: Tensor) -> Tensor:
        """``torch.matmul(x, y)``, observed."""
        return self.activation_post_process(torch.matmul(x, y))


class FXFloatFunctional(nn.Module):
    """``FloatFunctional`` without its own observer (FX inserts observers in the graph)."""

    def forward(self, x: Tensor) -> Tensor:
        raise _no_forward("FXFloatFunctional")

    def add(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.add(x, y)

    def add_scalar(self, x: Tensor, y: float) -> Tensor:
        return torch.add(x, y)

    def mul(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.mul(x, y)

    def mul_scalar(self, x: Tensor, y: float) -> Tensor:
        return torch.mul(x, y)

    def cat(self, x: list[Tensor], dim: int = 0) -> Tensor:
        return torch.cat(x, dim=dim)

    def add_relu(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.nn.functional.relu(torch.add(x, y))

    def matmul(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.matmul(x, y)


class QFunctional(nn.Module):
    """Quantized ops with fixed output ``scale`` / ``zero_point`` (from a ``FloatFunctional``).

    The state dict holds ``scale`` and ``zero_point`` as tensors (upstream's layout).
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale = 1.0
        self.zero_point = 0
        self.activation_post_process: nn.Module = nn.Identity()

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "scale"] = torch.tensor(self.scale)
        destination[prefix + "zero_point"] = torch.tensor(self.zero_point)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        self.scale = float(state_dict.pop(prefix + "scale"))
        self.zero_point = int(state_dict.pop(prefix + "zero_point"))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, False, missing_keys, unexpected_keys, error_msgs
        )

    def _get_name(self) -> str:
        return "QFunctional"

    def extra_repr(self) -> str:
        return f"scale={self.scale}, zero_point={self.zero_point}"

    def forward(self, x: Tensor) -> Tensor:
        raise _no_forward("QFunctional")

    def _check(self, *tensors: Tensor) -> None:
        for i, t in enumerate(tensors):
            check_quantized_input(self, t, arg=f"operand {i}")

    def add(self, x: Tensor, y: Tensor) -> Tensor:
        """``torch.ops.quantized.add`` with the output qparams."""
        self._check(x, y)
        r = torch.ops.quantized.add(x, y, scale=self.scale, zero_point=self.zero_point)
        return self.activation_post_process(r)

    def add_scalar(self, x: Tensor, y: float) -> Tensor:
        """``torch.ops.quantized.add_scalar`` (output qparams derived from the input's)."""
        self._check(x)
        return torch.ops.quantized.add_scalar(x, y)

    def mul(self, x: Tensor, y: Tensor) -> Tensor:
        """``torch.ops.quantized.mul`` with the output qparams."""
        self._check(x, y)
        r = torch.ops.quantized.mul(x, y, scale=self.scale, zero_point=self.zero_point)
        return self.activation_post_process(r)

    def mul_scalar(self, x: Tensor, y: float) -> Tensor:
        """``torch.ops.quantized.mul_scalar`` (output qparams derived from the input's)."""
        self._check(x)
        return torch.ops.quantized.mul_scalar(x, y)

    def cat(self, x: list[Tensor], dim: int = 0) -> Tensor:
        """``torch.ops.quantized.cat`` with the output qparams."""
        self._check(*x)
        r = torch.ops.quantized.cat(x, scale=self.scale, zero_point=self.zero_point, dim=dim)
        return self.activation_post_process(r)

    def add_relu(self, x: Tensor, y: Tensor) -> Tensor:
        """``torch.ops.quantized.add_relu`` with the output qparams."""
        self._check(x, y)
        r = torch.ops.quantized.add_relu(x, y, scale=self.scale, zero_point=self.zero_point)
        return self.activation_post_process(r)

    def matmul(self, x: Tensor, y: Tensor) -> Tensor:
        """``torch.ops.quantized.matmul`` with the output qparams."""
        self._check(x, y)
        return torch.ops.quantized.matmul(x, y, scale=self.scale, zero_point=self.zero_point)

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> QFunctional:
        """Build from an observed ``FloatFunctional``."""
        if type(mod) is not FloatFunctional:
            raise FromFloatError(
                f"QFunctional.from_float expects a FloatFunctional, got {type(mod).__name__}"
            )
        new_mod = QFunctional()
        new_mod.scale, new_mod.zero_point = observed_output_qparams(mod)
        return new_mod
