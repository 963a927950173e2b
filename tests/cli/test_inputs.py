"""Matching data to a model's inputs: example-input shapes, static batch sizes, notes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fxquant.cli.dataset import Dataset
from fxquant.cli.errors import BadInputError
from fxquant.cli.inputs import model_batches, parse_example_input
from fxquant.cli.model_source import InputSignature, LoadedModel


@pytest.mark.parametrize(
    "text, shape, dtype",
    [("1x3x224x224", (1, 3, 224, 224), torch.float32), ("8x128:int64", (8, 128), torch.int64), ("4", (4,), torch.float32)],
    ids=["image", "tokens", "vector"],
)
def test_parse_example_input(text, shape, dtype):
    assert parse_example_input(text) == InputSignature(shape=shape, dtype=dtype)


@pytest.mark.parametrize("text", ["1x3xabc", "2x3:nonsense", "x3", ""], ids=["letters", "bad-dtype", "no-batch", "empty"])
def test_parse_example_input_rejects(text):
    with pytest.raises(BadInputError, match="write a shape such as"):
        parse_example_input(text)


def test_example_input_from_a_tensor_file(tmp_path):
    torch.save(torch.zeros(2, 5, dtype=torch.int32), tmp_path / "x.pt")
    assert parse_example_input(str(tmp_path / "x.pt")) == InputSignature(shape=(2, 5), dtype=torch.int32)


def _model(**kwargs):
    return LoadedModel(module=nn.Identity(), source="m", name="m", **kwargs)


def test_static_program_sets_the_batch_size(capsys):
    data = Dataset(inputs=(torch.arange(20.0).view(10, 2),), source="d", kind="tensor")
    static = (InputSignature(shape=(3, 2), dtype=torch.float32),)
    batches = model_batches(_model(static_inputs=static), data, 8, what="m.fxq")
    assert [b[0].shape[0] for b in batches] == [3, 3, 3]
    err = capsys.readouterr().err
    assert "using batch size 3" in err and "1 of 10 samples left out" in err
    with pytest.raises(BadInputError, match="takes batches of 3 samples but d has only 2"):
        model_batches(_model(static_inputs=static), Dataset(inputs=(torch.zeros(2, 2),), source="d", kind="t"), 8)


def test_callable_example_inputs_check_sample_shapes_not_batch_size():
    model = _model(example_inputs=(torch.zeros(1, 4),))
    ok = Dataset(inputs=(torch.zeros(6, 4),), source="d", kind="tensor")
    assert [b[0].shape for b in model_batches(model, ok, 3)] == [(3, 4), (3, 4)]
    with pytest.raises(BadInputError, match=r"expects samples of shape \[4\] float32, but d gives \[5\]"):
        model_batches(model, Dataset(inputs=(torch.zeros(6, 5),), source="d", kind="tensor"), 3)
    with pytest.raises(BadInputError, match="takes 1 input"):
        model_batches(model, Dataset(inputs=(torch.zeros(6, 4), torch.zeros(6, 4)), source="d", kind="tensor"), 3)
