"""Match data to a model's inputs and split it into the batches the model will see."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch

from fxquant.cli.data_source import fit_to_signature
from fxquant.cli.dataset import Batch, Dataset
from fxquant.cli.errors import BadInputError
from fxquant.cli.model_source import InputSignature, LoadedModel

__all__ = ["model_batches", "note", "parse_example_input", "signature_of"]

_SHAPE = re.compile(r"^(?P<dims>\d+(?:x\d+)*)(?::(?P<dtype>[a-z0-9]+))?$")


def note(message: str) -> None:
    """A remark for the user on stderr (stdout keeps only results)."""
    print(f"fxquant: {message}", file=sys.stderr)


def signature_of(example_inputs: tuple[object, ...]) -> tuple[InputSignature, ...] | None:
    """Shapes/dtypes of ``example_inputs`` if they are all tensors with a batch dimension."""
    tensors = [t for t in example_inputs if isinstance(t, torch.Tensor) and t.dim()]
    if not tensors or len(tensors) != len(example_inputs):
        return None
    return tuple(InputSignature(shape=tuple(t.shape), dtype=t.dtype) for t in tensors)


def parse_example_input(text: str) -> InputSignature:
    """``"1x3x224x224"`` or ``"1x16:int64"`` (default float32), or a ``.pt`` tensor file."""
    path = Path(text)
    if path.suffix in (".pt", ".pth"):
        if not path.is_file():
            raise BadInputError(f"--example-input {text}: no such file")
        tensor = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(tensor, torch.Tensor) or not tensor.dim():
            raise BadInputError(f"--example-input {text}: the file must hold one tensor with a batch dimension")
        return InputSignature(shape=tuple(tensor.shape), dtype=tensor.dtype)
    match = _SHAPE.match(text.strip().lower())
    dtype = getattr(torch, match["dtype"] or "float32", None) if match else None
    if match is None or not isinstance(dtype, torch.dtype):
        raise BadInputError(
            f"--example-input {text!r}: write a shape such as 1x3x224x224 or 8x128:int64 "
            "(batch first; dtype default float32), or a .pt file holding one tensor"
        )
    return InputSignature(shape=tuple(int(d) for d in match["dims"].split("x")), dtype=dtype)


def model_batches(
    model: LoadedModel,
    data: Dataset,
    batch_size: int,
    *,
    signature: tuple[InputSignature, ...] | None = None,
    what: str = "the model",
) -> list[Batch]:
    """Batches of ``data`` that ``model`` accepts.

    The expected inputs are ``signature`` if given, else the saved program's static inputs
    (whose batch size then replaces ``batch_size``), else the shapes of the example inputs a
    ``module:callable`` returned (batch dimension free).
    """
    static = signature or model.static_inputs
    if static is not None:
        data = fit_to_signature(data, static, what)
        fixed = static[0].shape[0]
        if fixed != batch_size:
            note(f"using batch size {fixed}: {what} was captured with it")
        if len(data) < fixed:
            raise BadInputError(
                f"{what} takes batches of {fixed} samples but {data.source} has only {len(data)}; "
                "give more data"
            )
        batch_size = fixed
    elif model.example_inputs is not None and (expected := signature_of(model.example_inputs)) is not None:
        data.check_matches(expected, what)
    dropped = data.dropped(batch_size)
    if dropped:
        note(
            f"{dropped} of {len(data)} samples left out: they do not fill a batch of "
            f"{data.effective_batch_size(batch_size)} (captured graphs have static shapes)"
        )
    return data.batches(batch_size)
