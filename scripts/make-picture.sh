#!/usr/bin/env bash
# Makes docs/demo-detections.png: the last frame of the demo clip with onnxinfer's detections
# drawn by detectionoverlay (what the README shows).
#   scripts/make-picture.sh [CLIP] [OUT.png]     (run by `make picture`, after build and sample)
set -euo pipefail
cd "$(dirname "$0")/.."
clip=${1:-samples/demo.mp4}
out=${2:-docs/demo-detections.png}
export GST_PLUGIN_PATH=$PWD/target/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# multifilesink max-files=1 keeps only the newest frame: the last one at EOS.
gst-launch-1.0 -q filesrc location="$clip" ! qtdemux ! h264parse ! avdec_h264 ! videoconvert \
    ! onnxinfer model-location=models/common_det.onnx labels-location=models/common_det.labels \
    ! detectionoverlay ! videoconvert ! pngenc compression-level=9 \
    ! multifilesink location="$tmp/frame-%05d.png" max-files=1
mkdir -p "$(dirname "$out")"
mv "$(ls "$tmp"/frame-*.png | tail -1)" "$out"
echo "[picture] $out ($(stat -c %s "$out") bytes)"
