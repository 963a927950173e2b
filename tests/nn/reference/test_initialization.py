"""from_float builds reference modules without the float module's random initialisation (the
weight is replaced at once); built directly, they initialise as the float module does."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxquant.nn.quantized as nnq
import fxquant.nn.quantized.reference as nnqr
from fxquant.nn.quantized.reference.utils import initialization_skipped, skip_initialization

QPARAMS = {"qscheme": torch.per_tensor_affine, "dtype": torch.qint8, "scale": 0.1, "zero_point": 0}


@pytest.mark.parametrize(("ref_class", "make"), [
    (nnqr.Conv2d, lambda: nn.Conv2d(3, 8, 3)),
    (nnqr.ConvTranspose2d, lambda: nn.ConvTranspose2d(3, 8, 3)),
    (nnqr.Linear, lambda: nn.Linear(5, 4)),
], ids=["conv2d", "conv_transpose2d", "linear"])
def test_from_float_takes_the_float_weights_and_direct_construction_initialises(ref_class, make):
    torch.manual_seed(0)
    float_module = make()
    ref = ref_class.from_float(float_module, QPARAMS)
    assert ref.weight.data_ptr() == float_module.weight.data_ptr()
    assert torch.equal(ref.bias, float_module.bias)
    assert not initialization_skipped()  # the block ended
    torch.manual_seed(1)
    built = ref_class.from_float(make(), QPARAMS)
    torch.manual_seed(1)
    direct = make()
    # a directly built reference module draws the same random weights as its float module
    torch.manual_seed(1)
    args = {nnqr.Linear: (5, 4)}.get(ref_class, (3, 8, 3))
    same_draw = ref_class(*args, weight_qparams=QPARAMS)
    assert torch.equal(same_draw.weight, direct.weight)
    assert torch.equal(built.weight, direct.weight)


def test_skip_initialization_is_scoped_and_nests():
    with skip_initialization():
        assert initialization_skipped()
        with skip_initialization():
            assert initialization_skipped()
        assert initialization_skipped()
    assert not initialization_skipped()


def test_quantized_conv_from_reference_packs_only_the_real_weight():
    torch.manual_seed(0)
    ref = nnqr.Conv2d.from_float(nn.Conv2d(3, 8, 3), {
        "qscheme": torch.per_channel_affine, "dtype": torch.qint8,
        "scale": torch.rand(8) / 50 + 0.01, "zero_point": torch.zeros(8, dtype=torch.int), "axis": 0,
    })
    q = nnq.Conv2d.from_reference(ref, 0.05, 64)
    assert torch.equal(q.weight().int_repr(), ref.get_quantized_weight().int_repr())
    direct = nnq.Conv2d(3, 8, 3)  # built directly: a packed (uninitialised) placeholder, as upstream
    assert direct.weight().shape == (8, 3, 3, 3) and direct.weight().dtype == torch.qint8
    assert torch.equal(direct.bias(), torch.zeros(8))
