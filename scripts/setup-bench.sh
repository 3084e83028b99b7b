#!/usr/bin/env bash
# Installs the Python baseline of the onnxinfer benchmark (numpy, OpenCV, onnxruntime) into
# .deps/bench-py, if missing. Only `make bench-onnxinfer` needs it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/versions.env
DEST=.deps/bench-py
if PYTHONPATH=$DEST python3 -c "import numpy, cv2, onnxruntime" 2>/dev/null; then
    echo "[setup-bench] Python baseline: present ($DEST)"
    exit 0
fi
echo "[setup-bench] installing numpy, opencv-python-headless, onnxruntime into $DEST"
rm -rf "$DEST.partial"
python3 -m pip install -q --disable-pip-version-check --only-binary=:all: --target "$DEST.partial" \
    "numpy==$BENCH_NUMPY_VERSION" "opencv-python-headless==$BENCH_OPENCV_VERSION" "onnxruntime==$ORT_VERSION"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
PYTHONPATH=$DEST python3 -c "import numpy, cv2, onnxruntime; print('[setup-bench] numpy', numpy.__version__, 'cv2', cv2.__version__, 'onnxruntime', onnxruntime.__version__)"
