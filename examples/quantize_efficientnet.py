"""Quantize EfficientNet-Lite0 (real ImageNet weights) on real photos with the one-call API,
print the per-layer report, save the model, the plot and the HTML page.

    python examples/quantize_efficientnet.py [--calibration 48] [--holdout 64] [--out out/]

The same job from the command line (what ``bash scripts/demo.sh`` runs)::

    python examples/quantize_efficientnet.py --export-photos out/photos
    fxquant quantize fxquant.zoo:efficientnet_lite0 --data out/photos/calibration \\
        --eval-data out/photos/holdout --out out/efficientnet_lite0_int8.fxq --report-dir out

``--export-photos DIR`` only writes the zoo's real photo crops (scikit-learn / scikit-image
pictures, disjoint calibration and held-out splits) as PNG files into ``DIR/calibration`` and
``DIR/holdout``, so that the command line reads an ordinary folder of images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import fxquant
from fxquant.api import quantize_model
from fxquant.metrics import sqnr, top1_agreement
from fxquant.zoo import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite0, imagenet_photos

# Photos are written at 256 px: the folder loader resizes the shorter side to 224 / 0.875 = 256
# and centre-crops 224, as ImageNet evaluation does.
EXPORT_SIZE = 256


def export_photos(folder: Path, *, calibration: int, holdout: int) -> None:
    """Write ``calibration`` and ``holdout`` photo crops as PNGs into two sub-folders."""
    from PIL import Image

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for split, n in (("calibration", calibration), ("holdout", holdout)):
        target = folder / split
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("photo_*.png"):
            old.unlink()
        for i, photo in enumerate(imagenet_photos(n, split=split, size=EXPORT_SIZE)):
            rgb = (photo * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
            Image.fromarray(np.ascontiguousarray(rgb.permute(1, 2, 0).numpy())).save(target / f"photo_{i:03d}.png")
        print(f"wrote {n} {split} photos to {target}/")


def quantize(calibration: int, holdout: int, batch_size: int, out: Path) -> None:
    model = efficientnet_lite0()
    calib = imagenet_photos(calibration, split="calibration")
    held_out = imagenet_photos(holdout, split="holdout")
    batches = list(calib.split(batch_size))
    result = quantize_model(
        model, (batches[0],), batches, backend="x86", eval_data=list(held_out.split(batch_size)),
    )
    print(result.report)
    with torch.no_grad():
        ref = torch.cat([model(b) for b in held_out.split(batch_size)])
        act = torch.cat([result.model(b) for b in held_out.split(batch_size)])
    print(f"held out ({holdout} photos): top-1 agreement {100 * top1_agreement(ref, act):.1f}%, "
          f"logits SQNR {sqnr(ref, act):.1f} dB")
    print("worst layers:", ", ".join(f"{l.name} ({l.recovery_db:+.2f} dB)" for l in result.report.worst(3)))

    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "efficientnet_lite0_int8.fxq")
    result.report.plot(out / "report.png")
    result.report.to_html(out / "report.html")
    result.report.to_json(out / "report.json")
    reloaded = fxquant.load(out / "efficientnet_lite0_int8.fxq")
    same = torch.equal(reloaded(batches[0]), result.model(batches[0]))
    print(f"saved {out}/efficientnet_lite0_int8.fxq (reloaded: bit-identical = {same}), "
          f"{out}/report.png, {out}/report.html")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibration", type=int, default=48, help="calibration photo crops (default: 48)")
    parser.add_argument("--holdout", type=int, default=64, help="held-out photo crops (default: 64)")
    parser.add_argument("--batch-size", type=int, default=8, help="photos per batch (default: 8)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output folder (default: out/)")
    parser.add_argument("--export-photos", type=Path, default=None, metavar="DIR",
                        help="only write the photos as PNG files into DIR/calibration and DIR/holdout")
    args = parser.parse_args()
    if args.export_photos is not None:
        export_photos(args.export_photos, calibration=args.calibration, holdout=args.holdout)
    else:
        quantize(args.calibration, args.holdout, args.batch_size, args.out)


if __name__ == "__main__":
    main()
