"""Capture a float model as the graph the PT2E flow quantizes, with an error that says where
capture failed and what to do about it."""

from __future__ import annotations

import os
import traceback
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule

from fxquant.engine.errors import CaptureError

__all__ = ["CaptureError", "capture"]

_LIBRARY_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))

_REMEDIES = (
    "data-dependent Python control flow (if/for on tensor values): rewrite it with torch.cond, "
    "or move it out of forward; dynamic shapes: pass dynamic_shapes=...; an unsupported "
    "Python construct in a submodule: capture the submodules that do export and quantize those"
)


def _user_frame(error: BaseException) -> str | None:
    """The innermost traceback frame in the user's code (not torch's, not fxquant's)."""
    frames = traceback.extract_tb(error.__traceback__)
    user = [f for f in frames if not f.filename.startswith(_LIBRARY_DIRS)]
    if not user:
        return None
    f = user[-1]
    return f"{f.filename}:{f.lineno} in {f.name}: {f.line}"


def capture(
    model: nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    dynamic_shapes: Any = None,
    strict: bool = False,
) -> GraphModule:
    """``torch.export.export(model, example_inputs).module()`` for ``prepare_pt2e`` /
    ``prepare_qat_pt2e`` (put the model in eval mode for PTQ, train mode for QAT), raising :class:`CaptureError` naming the failing line and the
    usual remedies when export cannot capture the model.

    >>> gm = capture(model.eval(), (torch.randn(1, 3, 224, 224),))
    """
    if not isinstance(example_inputs, tuple):
        raise TypeError(
            f"example_inputs must be a tuple of positional inputs, got {type(example_inputs).__name__}; "
            "wrap a single tensor as (x,)"
        )
    try:
        program = torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes, strict=strict)
    except Exception as e:  # torch raises many types here; all mean "could not capture"
        where = _user_frame(e)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaptureError(
            f"torch.export could not capture {type(model).__name__}: {first_line}"
            + (f"\n  at {where}" if where else "")
            + f"\n  Remedies: {_REMEDIES}"
        ) from e
    return program.module()
