#!/usr/bin/env bash
# Installs the Python baselines of the benchmarks, if missing: numpy, OpenCV and onnxruntime
# into .deps/bench-py (`make bench-onnxinfer`), and the reference ByteTrack, supervision's
# sv.ByteTrack with the packages it imports, into .deps/bench-track (`make bench-objecttracker`;
# it uses numpy and OpenCV from .deps/bench-py).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore
. scripts/versions.env
DEST=.deps/bench-py
TRACK=.deps/bench-track
install_track() {
    if PYTHONPATH=$TRACK:$DEST python3 -c "import supervision; supervision.ByteTrack()" 2>/dev/null; then
        echo "[setup-bench] supervision: present ($TRACK)"
        return
    fi
    echo "[setup-bench] installing supervision $BENCH_SUPERVISION_VERSION into $TRACK"
    rm -rf "$TRACK.partial"
    # No dependency resolution: supervision asks for opencv-python (the GUI build), while the
    # headless one in $DEST serves; the rest is pinned here.
    python3 -m pip install -q --disable-pip-version-check --only-binary=:all: --no-deps \
        --target "$TRACK.partial" "supervision==$BENCH_SUPERVISION_VERSION" $BENCH_TRACK_DEPS
    rm -rf "$TRACK"
    mv "$TRACK.partial" "$TRACK"
    PYTHONPATH=$TRACK:$DEST python3 -W ignore -c "import supervision; supervision.ByteTrack(); print('[setup-bench] supervision', supervision.__version__)"
}
if PYTHONPATH=$DEST python3 -c "import numpy, cv2, onnxruntime" 2>/dev/null; then
    echo "[setup-bench] Python baseline: present ($DEST)"
    install_track
    exit 0
fi
echo "[setup-bench] installing numpy, opencv-python-headless, onnxruntime into $DEST"
rm -rf "$DEST.partial"
python3 -m pip install -q --disable-pip-version-check --only-binary=:all: --target "$DEST.partial" \
    "numpy==$BENCH_NUMPY_VERSION" "opencv-python-headless==$BENCH_OPENCV_VERSION" "onnxruntime==$ORT_VERSION"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
PYTHONPATH=$DEST python3 -c "import numpy, cv2, onnxruntime; print('[setup-bench] numpy', numpy.__version__, 'cv2', cv2.__version__, 'onnxruntime', onnxruntime.__version__)"
install_track
