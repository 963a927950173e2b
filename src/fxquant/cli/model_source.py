"""Load the MODEL argument: a ``module:callable`` / ``file.py:callable`` that builds an
``nn.Module`` (or returns ``(module, example_inputs)``), or a saved program (``.pt2`` written
by ``torch.export.save``, ``.fxq`` written by ``fxquant.save``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import ExportedProgram
from torch.fx import GraphModule

from fxquant.cli.callables import call_ref, is_callable_ref, parse_callable_ref
from fxquant.cli.errors import BadInputError

__all__ = ["InputSignature", "LoadedModel", "load_model", "static_input_signature"]

_PROGRAM_SUFFIXES = (".fxq", ".pt2")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


@dataclass(frozen=True, kw_only=True)
class InputSignature:
    """Shape and dtype of one positional model input."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    def __str__(self) -> str:
        return f"[{', '.join(map(str, self.shape))}] {str(self.dtype).removeprefix('torch.')}"


@dataclass(frozen=True, kw_only=True)
class LoadedModel:
    """A model ready to run, with what is known about its inputs.

    ``static_inputs`` is set for saved programs, whose graphs only accept exactly those
    shapes; ``example_inputs`` is what a ``module:callable`` returned alongside its module.
    """

    module: nn.Module
    source: str
    name: str
    example_inputs: tuple[Any, ...] | None = None
    static_inputs: tuple[InputSignature, ...] | None = None


def static_input_signature(module: nn.Module) -> tuple[InputSignature, ...] | None:
    """The fixed input shapes of a captured graph (``torch.export``), or ``None`` if unknown."""
    if not isinstance(module, GraphModule):
        return None
    signature = []
    for node in module.graph.find_nodes(op="placeholder"):
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            return None
        if not all(isinstance(d, int) for d in value.shape):
            return None
        signature.append(InputSignature(shape=tuple(int(d) for d in value.shape), dtype=value.dtype))
    return tuple(signature) or None


def load_model(spec: str) -> LoadedModel:
    """Load a model from a command-line MODEL argument (see the module docstring).

    Raises:
        BadInputError: the file is missing, unreadable or tampered with, the reference does
            not resolve, or the callable does not return a module.
    """
    path = Path(spec)
    if path.suffix in _PROGRAM_SUFFIXES or path.is_file():
        return _load_program(path)
    if is_callable_ref(spec):
        return _load_from_callable(spec)
    raise BadInputError(
        f"MODEL {spec!r} is neither a saved program (.fxq / .pt2 file) nor a 'module:callable' "
        "reference; e.g. 'fxquant.zoo:efficientnet_lite0', 'models.py:build', or 'model.fxq'"
    )


def _load_program(path: Path) -> LoadedModel:
    if not path.is_file():
        raise BadInputError(f"{path}: no such model file; check the path")
    if path.suffix in _WEIGHT_SUFFIXES:
        raise BadInputError(
            f"{path}: a {path.suffix} weights file holds no architecture; write a function that "
            "builds the model and loads these weights, and pass it as 'file.py:function'"
        )
    if path.suffix == ".fxq":
        loaded = _load_fxq(path)
    elif path.suffix == ".pt2":
        loaded = _load_pt2(path)
    else:
        raise BadInputError(
            f"{path}: unknown model file type {path.suffix!r}; expected a .fxq (fxquant.save) or "
            ".pt2 (torch.export.save) file, or a 'module:callable' reference"
        )
    module = loaded.module() if isinstance(loaded, ExportedProgram) else loaded
    return LoadedModel(
        module=module, source=str(path), name=path.stem,
        static_inputs=static_input_signature(module),
    )


def _load_fxq(path: Path) -> nn.Module | ExportedProgram:
    from fxquant.serialization import FxquantFileError, load

    try:
        return load(path)
    except FxquantFileError as e:
        raise BadInputError(f"cannot load {path}: {e}") from e
    except OSError as e:
        raise BadInputError(f"cannot read {path}: {e}") from e


def _load_pt2(path: Path) -> ExportedProgram:
    try:
        return torch.export.load(path)
    except Exception as e:  # torch.export.load raises many types for a bad archive
        raise BadInputError(
            f"cannot load {path} with torch.export.load ({type(e).__name__}: {e}); is it a "
            "program written by torch.export.save with this torch version?"
        ) from e


def _load_from_callable(spec: str) -> LoadedModel:
    ref = parse_callable_ref(spec)
    result = call_ref(ref, "model")
    example_inputs: tuple[Any, ...] | None = None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module):
        result, example_inputs = result
        if isinstance(example_inputs, torch.Tensor):
            example_inputs = (example_inputs,)
        if not isinstance(example_inputs, tuple):
            raise BadInputError(
                f"'{ref}' returned (module, {type(example_inputs).__name__}); the second item must "
                "be a tuple of example inputs (or one tensor)"
            )
    if not isinstance(result, nn.Module):
        raise BadInputError(
            f"'{ref}' returned a {type(result).__name__}; it must return an nn.Module or a "
            "(module, example_inputs) pair"
        )
    return LoadedModel(
        module=result.eval(), source=spec, name=ref.attr.split(".")[-1],
        example_inputs=example_inputs, static_inputs=static_input_signature(result),
    )
