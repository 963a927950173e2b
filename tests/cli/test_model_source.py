"""MODEL arguments: callables, saved programs (.pt2, .fxq), and the errors for bad ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxquant
from fxquant.cli.errors import BadInputError
from fxquant.cli.model_source import InputSignature, load_model

FACTORY = '''\
import torch
from torch import nn

def net():
    return nn.Sequential(nn.Linear(4, 3))

def net_with_inputs():
    return nn.Sequential(nn.Linear(4, 3)), torch.zeros(2, 4)

def number():
    return 7
'''


@pytest.fixture()
def factory(tmp_path):
    path = tmp_path / "factory.py"
    path.write_text(FACTORY)
    return path


def test_callable_models(factory):
    plain = load_model(f"{factory}:net")
    assert isinstance(plain.module, nn.Sequential) and not plain.module.training
    assert plain.name == "net" and plain.example_inputs is None and plain.static_inputs is None
    paired = load_model(f"{factory}:net_with_inputs")
    assert paired.example_inputs is not None and paired.example_inputs[0].shape == (2, 4)
    with pytest.raises(BadInputError, match="returned a int; it must return an nn.Module"):
        load_model(f"{factory}:number")


def test_saved_programs_keep_their_static_shapes(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    x = torch.randn(5, 4)
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "m.pt2")
    fxquant.save(model, tmp_path / "m.fxq", example_inputs=(x,))
    for name in ("m.pt2", "m.fxq"):
        loaded = load_model(str(tmp_path / name))
        assert loaded.static_inputs == (InputSignature(shape=(5, 4), dtype=torch.float32),)
        torch.testing.assert_close(loaded.module(x), model(x))


def test_bad_model_files(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    path = tmp_path / "m.fxq"
    fxquant.save(model, path, example_inputs=(torch.randn(2, 4),))
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0x01
    (tmp_path / "tampered.fxq").write_bytes(bytes(raw))
    with pytest.raises(BadInputError, match="checksum mismatch"):
        load_model(str(tmp_path / "tampered.fxq"))
    with pytest.raises(BadInputError, match="no such model file"):
        load_model(str(tmp_path / "missing.fxq"))
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(BadInputError, match="holds no architecture"):
        load_model(str(tmp_path / "weights.pt"))
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(BadInputError, match="cannot load .*junk.pt2 with torch.export.load"):
        load_model(str(tmp_path / "junk.pt2"))
    with pytest.raises(BadInputError, match="neither a saved program"):
        load_model("just_a_word")
