"""Load the DATA argument: a folder of images, a text file (one sentence per line), a tensor
file (``.pt`` / ``.safetensors``), or a ``module:callable`` returning samples or batches."""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fxquant.cli.callables import call_ref, is_callable_ref, parse_callable_ref
from fxquant.cli.dataset import Dataset
from fxquant.cli.errors import BadInputError
from fxquant.cli.images import load_image_folder
from fxquant.cli.model_source import InputSignature
from fxquant.cli.text import load_text_file
from fxquant.zoo.photos import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DataOptions", "common_token_length", "fit_to_signature", "load_data"]

_TEXT_SUFFIXES = (".txt",)
_TORCH_SUFFIXES = (".pt", ".pth")
_SAFETENSORS_SUFFIX = ".safetensors"
# safetensors files may list their tensors' positional order in this metadata entry.
SAFETENSORS_ORDER_KEY = "inputs"


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """How to turn a DATA argument into samples (the command-line options of the same names)."""

    limit: int | None = None
    image_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    tokenizer: str | None = None
    max_length: int = 128
    progress: bool = False


def load_data(spec: str, options: DataOptions) -> Dataset:
    """Load a command-line DATA argument (see the module docstring) as a :class:`Dataset`.

    Raises:
        BadInputError: the path is missing, empty or unreadable, or the callable's result is
            not tensors.
    """
    path = Path(spec)
    if path.is_dir():
        images = load_image_folder(
            path, size=options.image_size, mean=options.mean, std=options.std,
            limit=options.limit, show_progress=options.progress,
        )
        return Dataset(inputs=(images,), source=spec, kind="image")
    if path.is_file():
        return _load_file(path, options).head(options.limit)
    if is_callable_ref(spec):
        result = call_ref(parse_callable_ref(spec), "data")
        return Dataset(inputs=_samples_from_result(result, spec), source=spec, kind="tensor").head(options.limit)
    raise BadInputError(
        f"DATA {spec!r}: no such file or folder, and not a 'module:callable' reference; give a "
        "folder of images, a .txt file, a .pt/.safetensors tensor file or e.g. "
        "'fxquant.zoo:imagenet_photos(64)'"
    )


def _load_file(path: Path, options: DataOptions) -> Dataset:
    suffix = path.suffix.lower()
    if suffix in _TEXT_SUFFIXES:
        tokens = load_text_file(path, tokenizer=options.tokenizer, max_length=options.max_length, limit=options.limit)
        return Dataset(inputs=tokens, source=str(path), kind="sentence")
    if suffix in _TORCH_SUFFIXES:
        return Dataset(inputs=_positional(_load_torch(path), str(path)), source=str(path), kind="tensor")
    if suffix == _SAFETENSORS_SUFFIX:
        return Dataset(inputs=_load_safetensors(path), source=str(path), kind="tensor")
    raise BadInputError(
        f"{path}: unknown data file type {path.suffix!r}; use a folder of images, a .txt file "
        "(one sentence per line), or a .pt / .safetensors tensor file"
    )


def _load_torch(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as e:
        raise BadInputError(
            f"{path}: cannot load it with torch.load(weights_only=True) ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); save plain tensors with torch.save"
        ) from e


def _positional(obj: Any, source: str) -> tuple[Tensor, ...]:
    """A tensor → one input; a list/tuple → positional inputs; a dict → its values in order."""
    if isinstance(obj, Tensor):
        return (obj,)
    if isinstance(obj, Mapping):
        obj = tuple(obj.values())
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(t, Tensor) for t in obj):
        return tuple(obj)
    raise BadInputError(
        f"{source}: expected a tensor [N, ...], a list/tuple of tensors (one per model input) or "
        f"a dict of tensors, got {type(obj).__name__}"
    )


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _load_safetensors(path: Path) -> tuple[Tensor, ...]:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError as e:
        raise BadInputError(f'{path}: reading .safetensors needs safetensors; pip install "fxquant[models]"') from e
    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            order = (f.metadata() or {}).get(SAFETENSORS_ORDER_KEY)
            if order is not None:
                listed = [n.strip() for n in order.split(",")]
                if sorted(listed) != sorted(names):
                    raise BadInputError(
                        f"{path}: metadata {SAFETENSORS_ORDER_KEY!r} lists {listed} but the file "
                        f"holds {names}"
                    )
                names = listed
            else:
                names.sort(key=_natural_key)
            return tuple(f.get_tensor(n) for n in names)
    except (OSError, ValueError, SafetensorError) as e:
        raise BadInputError(f"{path}: not a readable safetensors file ({e})") from e


def _samples_from_result(result: Any, source: str) -> tuple[Tensor, ...]:
    """A tensor or tuple is one set of samples; any other iterable yields batches to concatenate."""
    if isinstance(result, (Tensor, tuple, Mapping)):
        return _positional(result, source)
    if not isinstance(result, Iterable):
        raise BadInputError(
            f"'{source}' returned a {type(result).__name__}; it must return a tensor [N, ...], a "
            "tuple of tensors (one per model input), or an iterable of such batches"
        )
    batches = [_positional(batch, source) for batch in result]
    if not batches:
        raise BadInputError(f"'{source}' yielded no batches")
    if len({len(b) for b in batches}) != 1:
        raise BadInputError(f"'{source}': batches have different numbers of inputs")
    try:
        return tuple(torch.cat(parts) for parts in zip(*batches))
    except RuntimeError as e:
        raise BadInputError(f"'{source}': batches cannot be stacked into one dataset ({e})") from e


def _pad_tokens(data: Dataset, length: int) -> Dataset:
    """Right-pad the 2-D integer inputs (token ids, attention masks) with zeros to ``length``."""
    padded = tuple(
        torch.nn.functional.pad(t, (0, length - t.shape[1]), value=0)
        if t.dim() == 2 and not t.is_floating_point() and t.shape[1] < length else t
        for t in data.inputs
    )
    return Dataset(inputs=padded, source=data.source, kind=data.kind)


def common_token_length(first: Dataset, second: Dataset) -> tuple[Dataset, Dataset]:
    """Pad the token inputs of two text datasets to one sequence length (the longer one), so
    that both run through one captured graph."""
    lengths = [t.shape[1] for d in (first, second) for t in d.inputs if t.dim() == 2 and not t.is_floating_point()]
    if not lengths:
        return first, second
    return _pad_tokens(first, max(lengths)), _pad_tokens(second, max(lengths))


def fit_to_signature(data: Dataset, signature: tuple[InputSignature, ...], what: str) -> Dataset:
    """Right-pad 2-D integer inputs (token ids, masks) with zeros to the sequence length the
    model was captured with, then check every input matches ``signature``."""
    lengths = [sig.shape[1] for sig in signature if len(sig.shape) == 2 and not sig.dtype.is_floating_point]
    if len(signature) == len(data.inputs) and lengths:
        data = _pad_tokens(data, max(lengths))
    data.check_matches(signature, what)
    return data
