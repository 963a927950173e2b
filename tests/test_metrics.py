import math

import pytest
import torch

from fxquant.metrics import mean_cosine, sqnr, top1_agreement


def test_sqnr_hand_values():
    ref = torch.tensor([3.0, 4.0])  # |ref|^2 = 25
    assert sqnr(ref, ref) == math.inf
    assert sqnr(ref, torch.tensor([3.0, 3.5])) == pytest.approx(10 * math.log10(25 / 0.25))
    with pytest.raises(ValueError, match="shapes differ"):
        sqnr(ref, torch.zeros(3))


def test_top1_and_cosine():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    b = torch.tensor([[0.9, 0.1], [1.0, 0.0], [2.0, 1.0]])
    assert top1_agreement(a, b) == pytest.approx(2 / 3)
    assert mean_cosine(a, a) == pytest.approx(1.0)
    assert mean_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])) == pytest.approx(0.0)
