"""Read a folder of images as ImageNet-style model inputs: RGB, shorter side resized to
``size / 0.875``, centre crop ``size`` x ``size``, scaled to [0, 1], normalised per channel."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fxquant.cli.errors import BadInputError
from fxquant.cli.progress import progress

__all__ = ["IMAGE_SUFFIXES", "image_files", "load_image_folder"]

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# The usual evaluation crop: resize to 256 for a 224 crop.
_CROP_FRACTION = 0.875


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside ``folder`` (by suffix, case-insensitive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_image_folder(
    folder: Path,
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    limit: int | None = None,
    show_progress: bool = False,
) -> Tensor:
    """Every image of ``folder`` (the first ``limit`` by name) as a ``[N, 3, size, size]`` batch.

    Raises:
        BadInputError: Pillow is missing, the folder has no images, or an image is unreadable.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise BadInputError(
            'reading an image folder needs Pillow; install it with: pip install "fxquant[models]"'
        ) from e
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise BadInputError(f"--mean and --std take 3 values each (std > 0), got {list(mean)} / {list(std)}")
    files = image_files(folder)
    if not files:
        raise BadInputError(
            f"{folder}: the folder holds no images (looked for {', '.join(IMAGE_SUFFIXES)}); "
            "point --data at a folder of photos"
        )
    files = files[:limit] if limit is not None else files
    images = []
    for path in progress(files, enabled=show_progress, desc="reading images", unit="image"):
        try:
            with Image.open(path) as image:
                images.append(_crop(image.convert("RGB"), size, Image.Resampling.BILINEAR))
        except (UnidentifiedImageError, OSError) as e:
            raise BadInputError(f"{path}: not a readable image ({e}); remove it from the folder") from e
    batch = torch.stack(images)
    mean_t = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t


def _crop(image: object, size: int, resample: object) -> Tensor:
    from PIL import Image

    assert isinstance(image, Image.Image)
    width, height = image.size
    short = round(size / _CROP_FRACTION)
    scale = short / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    resized = image.resize((new_w, new_h), resample=resample)  # type: ignore[arg-type]  # a PIL resampling filter
    left, top = (new_w - size) // 2, (new_h - size) // 2
    cropped = resized.crop((left, top, left + size, top + size))
    pixels = np.asarray(cropped, dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0
