"""Symbolic tracing for FX quantization: standard ``torch.nn`` (and ``fxquant.nn``) modules
stay leaves, the non-traceable modules of the custom config stay opaque calls, and every
node remembers the module scope whose forward created it (for qconfig resolution)."""

from __future__ import annotations

import linecache
import traceback
from collections.abc import Callable
from typing import Any

from torch import nn
from torch.fx import GraphModule, Node, Tracer

__all__ = ["SCOPE_META_KEY", "FxTraceError", "QuantizationTracer", "trace_for_quantization"]

# node.meta[SCOPE_META_KEY] = (module path, module type) of the forward that made the call
SCOPE_META_KEY = "fxquant_scope"

_LEAF_PREFIXES = ("torch.nn", "fxquant.nn")


class FxTraceError(RuntimeError):
    """``symbolic_trace`` could not trace the model."""


class QuantizationTracer(Tracer):
    """A tracer whose leaves are library modules plus the configured non-traceable ones."""

    def __init__(self, skipped_module_names: list[str], skipped_module_classes: list[type]) -> None:
        super().__init__()
        self.skipped_module_names = set(skipped_module_names)
        self.skipped_module_classes = tuple(skipped_module_classes)
        self._quant_scope: tuple[str, type | None] = ("", None)
        self.error_scope: tuple[str, type | None] | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.skipped_module_names:
            return True
        if self.skipped_module_classes and isinstance(m, self.skipped_module_classes):
            return True
        is_library = type(m).__module__.startswith(_LEAF_PREFIXES)
        return is_library and not isinstance(m, nn.Sequential)

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        outer = self._quant_scope
        self._quant_scope = (self.path_of_module(m), type(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.error_scope is None:  # the innermost module that failed
                self.error_scope = self._quant_scope
            raise
        finally:
            self._quant_scope = outer

    def create_node(self, *args: Any, **kwargs: Any) -> Node:
        node = super().create_node(*args, **kwargs)
        node.meta[SCOPE_META_KEY] = self._quant_scope
        return node


def _user_frame(error: BaseException) -> str:
    """'file:line (code)' of the innermost frame outside torch, or '' if none."""
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        if "/torch/" not in frame.filename and "/fxquant/fx/" not in frame.filename:
            code = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
            return f"{frame.filename}:{frame.lineno} ({code})"
    return ""


def _innermost_module(tracer: QuantizationTracer) -> str:
    name, klass = tracer.error_scope or tracer._quant_scope
    return f"{name or '<root>'} ({klass.__name__ if klass else type(tracer.root).__name__})"


def trace_for_quantization(
    model: nn.Module, skipped_module_names: list[str], skipped_module_classes: list[type]
) -> GraphModule:
    """Trace ``model``; raise :class:`FxTraceError` naming the module and source line that
    could not be traced, and suggesting the non-traceable config."""
    tracer = QuantizationTracer(skipped_module_names, skipped_module_classes)
    try:
        graph = tracer.trace(model)
    except Exception as e:  # any tracing failure is reported with where it happened
        where = _user_frame(e)
        module = _innermost_module(tracer)
        raise FxTraceError(
            f"symbolic_trace could not trace module {module}"
            + (f" at {where}" if where else "")
            + f": {type(e).__name__}: {e}. Make the code traceable, or keep that module out "
            "of tracing with PrepareCustomConfig().set_non_traceable_module_names([...]) or "
            "set_non_traceable_module_classes([...])"
        ) from e
    gm = GraphModule(model, graph, type(model).__name__)
    # Node objects are kept by the new GraphModule, so scopes stay in node.meta.
    return gm


