"""Calibration/evaluation data as the command line sees it: N samples of each positional model
input, split into equal-size batches (captured graphs have static shapes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fxquant.cli.errors import BadInputError
from fxquant.cli.model_source import InputSignature

__all__ = ["Batch", "Dataset", "as_model_args"]

Batch = tuple[Tensor, ...]


def as_model_args(batch: Batch) -> Tensor | Batch:
    """What the library APIs take as one batch: the tensor itself for one input, else the tuple."""
    return batch[0] if len(batch) == 1 else batch


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """``inputs[i]`` is the i-th positional model input for all samples, ``[N, ...]``."""

    inputs: tuple[Tensor, ...]
    source: str
    kind: str

    def __post_init__(self) -> None:
        if not self.inputs:
            raise BadInputError(f"{self.source}: the data holds no tensors")
        sizes = {int(t.shape[0]) if t.dim() else -1 for t in self.inputs}
        if len(sizes) != 1 or -1 in sizes:
            shapes = [tuple(t.shape) for t in self.inputs]
            raise BadInputError(
                f"{self.source}: every model input must have the same number of samples along "
                f"dimension 0, got shapes {shapes}"
            )
        if len(self) == 0:
            raise BadInputError(f"{self.source}: the data holds no samples")

    def __len__(self) -> int:
        return int(self.inputs[0].shape[0])

    def describe(self) -> str:
        shapes = ", ".join(str(InputSignature(shape=tuple(t.shape[1:]), dtype=t.dtype)) for t in self.inputs)
        return f"{len(self)} {self.kind} samples from {self.source} (per sample: {shapes})"

    def head(self, n: int | None) -> Dataset:
        """The first ``n`` samples (all when ``n`` is ``None``)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise BadInputError(f"the number of samples to use must be positive, got {n}")
        return Dataset(inputs=tuple(t[:n] for t in self.inputs), source=self.source, kind=self.kind)

    def batches(self, batch_size: int) -> list[Batch]:
        """Consecutive batches of exactly ``batch_size`` samples (at most ``len(self)``); the
        remainder that does not fill a batch is left out (see :meth:`dropped`)."""
        size = self.effective_batch_size(batch_size)
        count = len(self) // size
        return [tuple(t[i * size : (i + 1) * size] for t in self.inputs) for i in range(count)]

    def effective_batch_size(self, batch_size: int) -> int:
        if batch_size < 1:
            raise BadInputError(f"--batch-size must be positive, got {batch_size}")
        return min(batch_size, len(self))

    def dropped(self, batch_size: int) -> int:
        """How many trailing samples :meth:`batches` leaves out."""
        return len(self) % self.effective_batch_size(batch_size)

    def check_matches(self, signature: Sequence[InputSignature], what: str) -> None:
        """Raise a clear error unless each sample matches ``signature`` (batch dimension aside)."""
        if len(signature) != len(self.inputs):
            raise BadInputError(
                f"{what} takes {len(signature)} input(s) but {self.source} provides {len(self.inputs)}"
            )
        for i, (sig, data) in enumerate(zip(signature, self.inputs)):
            if tuple(sig.shape[1:]) != tuple(data.shape[1:]) or sig.dtype != data.dtype:
                raise BadInputError(
                    f"input {i}: {what} expects samples of shape {list(sig.shape[1:])} "
                    f"{_dtype(sig.dtype)}, but {self.source} gives {list(data.shape[1:])} "
                    f"{_dtype(data.dtype)}; captured graphs have static shapes, so prepare the "
                    "data at that size (e.g. --image-size, --max-length)"
                )


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
