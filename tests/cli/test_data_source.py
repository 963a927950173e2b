"""DATA arguments: image folders, text files, tensor files, callables; batching; clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fxquant.cli.data_source import DataOptions, common_token_length, fit_to_signature, load_data
from fxquant.cli.dataset import Dataset
from fxquant.cli.errors import BadInputError
from fxquant.cli.model_source import InputSignature
from fxquant.zoo import IMAGENET_MEAN, IMAGENET_STD


def _write_png(path, height, width, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def test_image_folder_centre_crop_and_normalisation(tmp_path):
    # 256 x 320: the shorter side is already 224 / 0.875, so the crop is a plain centre crop.
    pixels = _write_png(tmp_path / "b.png", 256, 320, seed=0)
    _write_png(tmp_path / "a.png", 300, 200, seed=1)
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_data(str(tmp_path), DataOptions())
    assert data.kind == "image" and len(data) == 2 and data.inputs[0].shape == (2, 3, 224, 224)
    crop = torch.from_numpy(pixels[16:240, 48:272].copy()).permute(2, 0, 1).float() / 255
    expected = (crop - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(data.inputs[0][1], expected)  # files sorted by name: b.png second


def test_image_folder_options(tmp_path):
    for i in range(3):
        _write_png(tmp_path / f"{i}.jpg", 40, 50, seed=i)
    data = load_data(str(tmp_path), DataOptions(image_size=32, mean=(0, 0, 0), std=(1, 1, 1), limit=2))
    assert data.inputs[0].shape == (2, 3, 32, 32)
    assert 0.0 <= float(data.inputs[0].min()) and float(data.inputs[0].max()) <= 1.0


def test_empty_and_broken_image_folders(tmp_path):
    with pytest.raises(BadInputError, match="holds no images"):
        load_data(str(tmp_path), DataOptions())
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(BadInputError, match="broken.png: not a readable image"):
        load_data(str(tmp_path), DataOptions())


def test_text_file_with_default_tokenizer(tmp_path):
    path = tmp_path / "sentences.txt"
    path.write_text("A man is eating food.\n\n  A cat sleeps on the warm windowsill all afternoon.  \nHi.\n")
    data = load_data(str(path), DataOptions(max_length=8))
    ids, mask = data.inputs
    assert data.kind == "sentence" and ids.shape == mask.shape == (3, 8)  # truncated to 8 tokens
    assert ids.dtype == torch.int64 and mask[2].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]  # [CLS] hi . [SEP]


def test_text_file_with_callable_tokenizer(tmp_path):
    (tmp_path / "tok.py").write_text(
        "import torch\n"
        "def make():\n"
        "    return lambda sentences: {'ids': torch.tensor([[len(s), 1] for s in sentences])}\n"
    )
    (tmp_path / "s.txt").write_text("abc\nde\n")
    data = load_data(str(tmp_path / "s.txt"), DataOptions(tokenizer=f"{tmp_path / 'tok.py'}:make"))
    assert data.inputs[0].tolist() == [[3, 1], [2, 1]]


def test_empty_text_file(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(BadInputError, match="no sentences"):
        load_data(str(tmp_path / "empty.txt"), DataOptions())


@pytest.mark.parametrize("layout", ["tensor", "tuple", "dict"], ids=str)
def test_torch_file_layouts(tmp_path, layout):
    x, m = torch.randn(6, 4), torch.ones(6, 4, dtype=torch.int64)
    obj = {"tensor": x, "tuple": (x, m), "dict": {"x": x, "m": m}}[layout]
    torch.save(obj, tmp_path / "d.pt")
    data = load_data(str(tmp_path / "d.pt"), DataOptions(limit=5))
    expected = (x[:5],) if layout == "tensor" else (x[:5], m[:5])
    assert len(data.inputs) == len(expected) and all(torch.equal(a, b) for a, b in zip(data.inputs, expected))


def test_torch_file_refuses_pickled_objects(tmp_path):
    torch.save({"x": torch.zeros(2), "obj": object()}, tmp_path / "evil.pt")
    with pytest.raises(BadInputError, match="weights_only=True"):
        load_data(str(tmp_path / "evil.pt"), DataOptions())
    torch.save({"x": torch.zeros(2), "n": 3}, tmp_path / "mixed.pt")
    with pytest.raises(BadInputError, match="expected a tensor"):
        load_data(str(tmp_path / "mixed.pt"), DataOptions())
    torch.save((torch.zeros(3, 2), torch.zeros(4, 2)), tmp_path / "ragged.pt")
    with pytest.raises(BadInputError, match="same number of samples"):
        load_data(str(tmp_path / "ragged.pt"), DataOptions())


def test_safetensors_order(tmp_path):
    from safetensors.torch import save_file

    a, b = torch.randn(4, 2), torch.randn(4, 3)
    save_file({"input_ids": a, "attention_mask": b}, str(tmp_path / "o.safetensors"),
              metadata={"inputs": "input_ids,attention_mask"})
    save_file({"x10": b, "x2": a}, str(tmp_path / "n.safetensors"))
    ordered = load_data(str(tmp_path / "o.safetensors"), DataOptions()).inputs
    natural = load_data(str(tmp_path / "n.safetensors"), DataOptions()).inputs
    assert torch.equal(ordered[0], a) and torch.equal(ordered[1], b)
    assert torch.equal(natural[0], a) and torch.equal(natural[1], b)  # x2 before x10


def test_callable_data(tmp_path):
    photos = load_data("fxquant.zoo:imagenet_photos(3, size=16)", DataOptions())
    assert photos.inputs[0].shape == (3, 3, 16, 16)
    (tmp_path / "gen.py").write_text(
        "import torch\n"
        "def batches(n):\n"
        "    for i in range(n):\n"
        "        yield torch.full((2, 3), float(i)), torch.ones(2, dtype=torch.int64)\n"
    )
    data = load_data(f"{tmp_path / 'gen.py'}:batches(3)", DataOptions(limit=5))
    assert data.inputs[0][:, 0].tolist() == [0, 0, 1, 1, 2] and data.inputs[1].shape == (5,)
    with pytest.raises(BadInputError, match="yielded no batches"):
        load_data("builtins:iter([])", DataOptions())


def test_unknown_inputs_are_explained(tmp_path):
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(BadInputError, match="unknown data file type '.csv'"):
        load_data(str(tmp_path / "data.csv"), DataOptions())
    with pytest.raises(BadInputError, match="no such file or folder"):
        load_data(str(tmp_path / "missing"), DataOptions())


def test_batches_are_equal_sized_and_count_the_remainder():
    data = Dataset(inputs=(torch.arange(10).view(10, 1),), source="t", kind="tensor")
    batches = data.batches(4)
    assert [b[0].flatten().tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert data.dropped(4) == 2 and data.dropped(5) == 0
    assert len(data.batches(64)) == 1 and data.batches(64)[0][0].shape[0] == 10


def test_fit_to_signature_pads_token_ids_and_checks_shapes():
    ids = torch.ones(3, 5, dtype=torch.int64)
    data = Dataset(inputs=(ids, ids), source="t", kind="sentence")
    sig = (InputSignature(shape=(2, 7), dtype=torch.int64),) * 2
    fitted = fit_to_signature(data, sig, "model.fxq")
    assert fitted.inputs[0].shape == (3, 7) and fitted.inputs[0][:, 5:].eq(0).all()
    with pytest.raises(BadInputError, match=r"expects samples of shape \[3, 8, 8\] float32"):
        fit_to_signature(Dataset(inputs=(torch.zeros(2, 1, 8, 8),), source="d", kind="tensor"),
                         (InputSignature(shape=(1, 3, 8, 8), dtype=torch.float32),), "model.fxq")


def test_common_token_length_pads_both_text_datasets():
    short = Dataset(inputs=(torch.ones(2, 3, dtype=torch.int64), torch.ones(2, 3, dtype=torch.int64)), source="a", kind="sentence")
    long = Dataset(inputs=(torch.ones(4, 6, dtype=torch.int64), torch.ones(4, 6, dtype=torch.int64)), source="b", kind="sentence")
    a, b = common_token_length(short, long)
    assert [t.shape for t in a.inputs] == [(2, 6), (2, 6)] and a.inputs[1][:, 3:].eq(0).all()
    assert b is not long and [t.shape for t in b.inputs] == [(4, 6), (4, 6)]
    images = Dataset(inputs=(torch.zeros(2, 3, 4, 4),), source="c", kind="image")
    assert common_token_length(images, images) == (images, images)
