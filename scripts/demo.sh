#!/usr/bin/env bash
# The main job: calibrate real EfficientNet-Lite0 weights on real photos and report the
# quantization parameters and simulated int8 accuracy (see examples/calibrate_efficientnet.py).
source "$(dirname "$0")/_env.sh"
exec "$PY" examples/calibrate_efficientnet.py "$@"
