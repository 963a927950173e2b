"""Real photos as ImageNet-style model inputs, for calibration and accuracy checks offline.

The photos are the colour pictures that scikit-learn and scikit-image ship inside their
wheels (no download): scikit-learn's ``china.jpg`` and ``flower.jpg`` and scikit-image's
astronaut, chelsea (a cat), coffee, rocket, motorcycle and camera (grayscale, repeated to
three channels). Each returned image is a seeded random-resized crop (random area and aspect
ratio, random horizontal flip) of one of them, resized with antialiasing and normalised with
the ImageNet mean and standard deviation.

The ``"calibration"`` and ``"holdout"`` splits never share a crop: they draw from separate
random streams and, in addition, calibration crops start at an even column and holdout crops
at an odd one, so no (photo, box, flip) can occur in both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PHOTO_NAMES",
    "SPLITS",
    "CropBox",
    "crop_boxes",
    "imagenet_photos",
    "load_photo",
    "photo_names",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

SPLITS: tuple[str, ...] = ("calibration", "holdout")

# Random-resized-crop ranges: fraction of the photo's area, and width / height ratio.
_AREA_RANGE = (0.25, 1.0)
_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
# Mixed with the user's seed so each split gets its own random stream.
_SPLIT_STREAM = {"calibration": 0x5EED_CA1B, "holdout": 0x5EED_401D}


def _sklearn_image(filename: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return np.asarray(load_sample_image(filename))


def _skimage_image(name: str) -> np.ndarray:
    import skimage.data

    if name == "stereo_motorcycle":
        return np.asarray(skimage.data.stereo_motorcycle()[0])
    return np.asarray(getattr(skimage.data, name)())


_SOURCES: dict[str, Callable[[], np.ndarray]] = {
    "china": lambda: _sklearn_image("china.jpg"),
    "flower": lambda: _sklearn_image("flower.jpg"),
    "astronaut": lambda: _skimage_image("astronaut"),
    "chelsea": lambda: _skimage_image("chelsea"),
    "coffee": lambda: _skimage_image("coffee"),
    "rocket": lambda: _skimage_image("rocket"),
    "motorcycle": lambda: _skimage_image("stereo_motorcycle"),
    "camera": lambda: _skimage_image("camera"),
}

PHOTO_NAMES: tuple[str, ...] = tuple(_SOURCES)


def photo_names() -> tuple[str, ...]:
    """Names of the bundled photos, in the order :func:`imagenet_photos` cycles through them."""
    return PHOTO_NAMES


@cache
def _photo_uint8(name: str) -> torch.Tensor:
    pixels = _SOURCES[name]()
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise RuntimeError(
            f"photo {name!r} has unexpected shape/dtype {pixels.shape}/{pixels.dtype}"
        )
    return torch.from_numpy(np.array(pixels, copy=True)).permute(2, 0, 1).contiguous()


def load_photo(name: str) -> torch.Tensor:
    """One whole photo as a ``[3, H, W]`` float32 tensor in ``[0, 1]`` (RGB, not normalised).

    Raises:
        KeyError: ``name`` is not one of :func:`photo_names`.
    """
    if name not in _SOURCES:
        raise KeyError(f"unknown photo {name!r}; choose one of {PHOTO_NAMES}")
    return _photo_uint8(name).float() / 255.0


@dataclass(frozen=True, kw_only=True)
class CropBox:
    """A crop of photo ``name``: rows ``[top, top + height)``, columns ``[left, left + width)``."""

    name: str
    top: int
    left: int
    height: int
    width: int
    flip: bool


def _sample_box(name: str, parity: int, gen: torch.Generator) -> CropBox:
    _, photo_h, photo_w = _photo_uint8(name).shape
    u = torch.rand(5, generator=gen, dtype=torch.float64).tolist()
    # Area fraction uniform in _AREA_RANGE; aspect ratio log-uniform in _ASPECT_RANGE.
    area = photo_h * photo_w * (_AREA_RANGE[0] + u[0] * (_AREA_RANGE[1] - _AREA_RANGE[0]))
    log_lo, log_hi = math.log(_ASPECT_RANGE[0]), math.log(_ASPECT_RANGE[1])
    aspect = math.exp(log_lo + u[1] * (log_hi - log_lo))
    # width * height = area and width / height = aspect, clipped to the photo; the width is
    # kept below the photo's so an odd/even starting column always exists.
    width = min(max(round(math.sqrt(area * aspect)), 2), photo_w - 1)
    height = min(max(round(math.sqrt(area / aspect)), 2), photo_h)
    top = int(u[2] * (photo_h - height + 1))
    # Columns with the split's parity in [0, photo_w - width]: parity, parity + 2, ...
    n_lefts = (photo_w - width - parity) // 2 + 1
    left = parity + 2 * min(int(u[3] * n_lefts), n_lefts - 1)
    return CropBox(name=name, top=top, left=left, height=height, width=width, flip=u[4] < 0.5)


def crop_boxes(n: int, *, split: str = "calibration", seed: int = 0) -> list[CropBox]:
    """The ``n`` crop boxes :func:`imagenet_photos` uses (cycling through the photos in order).

    Raises:
        ValueError: ``n`` is negative or ``split`` is not ``"calibration"``/``"holdout"``.
    """
    if split not in _SPLIT_STREAM:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    gen = torch.Generator().manual_seed((seed * 1_000_003 + _SPLIT_STREAM[split]) % 2**63)
    parity = SPLITS.index(split)
    return [_sample_box(PHOTO_NAMES[i % len(PHOTO_NAMES)], parity, gen) for i in range(n)]


def _render(box: CropBox, size: int) -> torch.Tensor:
    photo = load_photo(box.name)
    crop = photo[:, box.top : box.top + box.height, box.left : box.left + box.width]
    if box.flip:
        crop = crop.flip(-1)
    resized = F.interpolate(
        crop.unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return resized.squeeze(0).clamp_(0.0, 1.0)


def imagenet_photos(
    n: int, *, split: str = "calibration", size: int = 224, seed: int = 0
) -> torch.Tensor:
    """``n`` real-photo crops as an ImageNet-normalised ``[n, 3, size, size]`` float32 batch.

    Deterministic for a given ``(n, split, size, seed)``; the first ``k`` crops do not depend
    on ``n``. ``"calibration"`` and ``"holdout"`` never share a crop, so a model can be
    calibrated on one and measured on the other. Works offline.

    ``x = (rgb - IMAGENET_MEAN) / IMAGENET_STD`` per channel, with ``rgb`` in ``[0, 1]``.

    Example::

        >>> from fxquant.zoo import imagenet_photos
        >>> calib = imagenet_photos(48, split="calibration")
        >>> held_out = imagenet_photos(128, split="holdout")
        >>> calib.shape
        torch.Size([48, 3, 224, 224])

    Raises:
        ValueError: bad ``n``, ``size`` or ``split``.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    boxes = crop_boxes(n, split=split, seed=seed)
    if not boxes:
        return torch.empty(0, 3, size, size)
    batch = torch.stack([_render(box, size) for box in boxes])
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (batch - mean) / std
