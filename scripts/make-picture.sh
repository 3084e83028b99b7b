#!/usr/bin/env bash
# Makes the README pictures (run by `make picture`, after build, sample and objects-clip):
#   scripts/make-picture.sh [CLIP] [OUT.png]            the text demo clip's last frame with
#                                                       onnxinfer's detections drawn
#   scripts/make-picture.sh --tracks [CLIP] [OUT.png]   frame 60 of the object demo clip: COCO
#                                                       detections with track ids and the
#                                                       counting line with its counts so far
set -euo pipefail
cd "$(dirname "$0")/.."
export GST_PLUGIN_PATH=$PWD/target/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ "${1:-}" = "--tracks" ]; then
    clip=${2:-samples/objects.mp4}
    out=${3:-docs/demo-tracks.png}
    lines=$(python3 -c 'import json; print(json.load(open("pipelines/objects-clip.json"))["lines"])')
    # Every frame as a quickly compressed PNG; frame 60 is kept and compressed hard.
    gst-launch-1.0 -q filesrc location="$clip" ! qtdemux ! h264parse ! avdec_h264 ! videoconvert \
        ! onnxinfer model-location=models/yolov3-tiny.onnx labels-location=models/coco.labels \
            model-type=yolov5 iou-threshold=0.2 \
        ! objecttracker "lines=$lines" ! detectionoverlay font-scale=3 line-width=3 \
        ! videoconvert ! pngenc compression-level=1 ! multifilesink location="$tmp/frame-%05d.png"
    frame="$tmp/frame-00060.png"
else
    clip=${1:-samples/demo.mp4}
    out=${2:-docs/demo-detections.png}
    # multifilesink max-files=1 keeps only the newest frame: the last one at EOS.
    gst-launch-1.0 -q filesrc location="$clip" ! qtdemux ! h264parse ! avdec_h264 ! videoconvert \
        ! onnxinfer model-location=models/common_det.onnx labels-location=models/common_det.labels \
        ! detectionoverlay ! videoconvert ! pngenc compression-level=9 \
        ! multifilesink location="$tmp/frame-%05d.png" max-files=1
    frame=$(ls "$tmp"/frame-*.png | tail -1)
fi
mkdir -p "$(dirname "$out")"
gst-launch-1.0 -q filesrc location="$frame" ! pngdec ! videoconvert ! pngenc compression-level=9 \
    ! filesink location="$out"
echo "[picture] $out ($(stat -c %s "$out") bytes)"
