"""Calling torch's packed-weight quantized kernels without the per-call probe of the packed
weight for a ``__torch_function__`` override.

When a torch operator is called from Python, torch looks at every argument that is not a
tensor or a plain Python value for a ``__torch_function__`` override. A packed weight
(``torch.ScriptObject``: ``Conv2dPackedParamsBase``, ``LinearPackedParamsBase``,
``EmbeddingPackedParamsBase``) answers that attribute lookup through TorchScript, which throws
and catches a C++ exception: about 7 us per call, as much as a small convolution's or
linear's own work. Inside ``torch._C.DisableTorchFunctionSubclass`` the probe is skipped.
The arguments of these kernels are plain quantized or float tensors and the packed weight,
so no subclass override is lost; torch function *modes* (``TorchFunctionMode``) still see the
call. Calling the C++ operator behind an ``OpOverload`` (``overload._op``) instead of the
overload saves one more Python frame.

:func:`packed_kernel` wraps an overload so; the quantized modules of :mod:`fxquant.nn` hold
such wrappers as their kernels, and :mod:`fxquant.lowering.kernels` builds its graph-level
kernels from :data:`no_subclass_probe` and :func:`native_op`. Same operator, same engine
(the current ``torch.backends.quantized.engine``), same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch._ops import OpOverload

__all__ = ["native_op", "no_subclass_probe", "packed_kernel"]

# the context manager that skips the probe (a C++ type; entering it costs ~0.2 us)
no_subclass_probe = torch._C.DisableTorchFunctionSubclass


def native_op(overload: OpOverload) -> Callable[..., Any]:
    """The C++ operator behind ``overload`` (what ``OpOverload.__call__`` forwards to)."""
    if not isinstance(overload, OpOverload):
        raise TypeError(
            f"native_op needs an operator overload such as torch.ops.quantized.linear.default, "
            f"got {overload!r}; pick the overload of the packet (packet.overloads() lists them)"
        )
    op: Callable[..., Any] = overload._op
    return op


def packed_kernel(overload: OpOverload) -> Callable[..., torch.Tensor]:
    """``overload`` as a function of positional arguments, called without the per-call
    ``__torch_function__`` probe of its packed-weight argument (see the module docstring).

    >>> conv2d = packed_kernel(torch.ops.quantized.conv2d.new)
    >>> y = conv2d(qx, packed_params, scale, zero_point)   # == torch.ops.quantized.conv2d(...)
    """
    op = native_op(overload)

    def call(*args: Any) -> torch.Tensor:
        with no_subclass_probe():
            result: torch.Tensor = op(*args)
            return result

    name = overload.name().replace("::", "_").replace(".", "_")
    call.__name__ = call.__qualname__ = f"packed_{name}"
    call.__doc__ = f"``{overload.name()}`` without the packed weight's ``__torch_function__`` probe."
    return call
