#!/usr/bin/env bash
# The main job: quantize EfficientNet-Lite0 (real ImageNet weights) on a folder of real photos
# with the fxquant command line, print the per-layer report and the held-out accuracy, save
# out/efficientnet_lite0_int8.fxq, out/report.png, out/report.html (and out/report.json), then
# compare the saved model (reloaded without its class) with the float one on held-out photos.
# Extra arguments go to `fxquant quantize` (e.g. --accuracy-budget 25 or --backend xnnpack).
source "$(dirname "$0")/_env.sh"
OUT=out
# 48 calibration and 64 held-out crops of real photos, written as PNG files: the CLI reads them
# as an ordinary image folder.
"$PY" examples/quantize_efficientnet.py --export-photos "$OUT/photos" --calibration 48 --holdout 64
# The per-layer analysis runs the model many times: it uses 2 of the 8 held-out batches; the
# summary line (top-1 agreement, SQNR) uses all 64 photos.
"$PY" -m fxquant quantize fxquant.zoo:efficientnet_lite0 \
    --data "$OUT/photos/calibration" --eval-data "$OUT/photos/holdout" --report-batches 2 \
    --out "$OUT/efficientnet_lite0_int8.fxq" --report-dir "$OUT" "$@"
# Reload the saved model (no model class needed) and check it against the float model on the
# first 16 held-out photos (the full comparison: drop --num-samples).
"$PY" -m fxquant compare fxquant.zoo:efficientnet_lite0 "$OUT/efficientnet_lite0_int8.fxq" \
    --data "$OUT/photos/holdout" --num-samples 16
