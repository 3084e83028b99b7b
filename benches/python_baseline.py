#!/usr/bin/env python3
"""Baseline for `cargo bench --bench onnxinfer`: the same work as

    filesrc ! qtdemux ! h264parse ! avdec_h264 ! onnxinfer model-type=yolox ! fakesink

done the usual way in Python: OpenCV decodes the file, the frame is letterboxed (top-left,
pad 114, BGR, 0-255, NCHW float32) as the YOLOX model expects, ONNX Runtime runs it, and the
raw YOLOX head is decoded and NMS'ed with numpy/OpenCV.

Usage: python_baseline.py MODEL VIDEO  -> prints one JSON line {frames, seconds, median,
detections} (seconds: the frame loop only, after the model is loaded; median: the median
time per frame).
"""
import json
import sys
import time

import cv2
import numpy as np
import onnxruntime as ort


def grids(size):
    g, s = [], []
    for stride in (8, 16, 32):
        n = size // stride
        xv, yv = np.meshgrid(np.arange(n), np.arange(n))
        g.append(np.stack((xv, yv), 2).reshape(-1, 2))
        s.append(np.full((n * n, 1), stride))
    return np.concatenate(g).astype(np.float32), np.concatenate(s).astype(np.float32)


def main():
    model, video = sys.argv[1], sys.argv[2]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    size = inp.shape[2]
    grid, stride = grids(size)
    cap = cv2.VideoCapture(video)
    if not cap.isOpened():
        sys.exit(f"cannot open {video}")
    frames = detections = 0
    start = time.perf_counter()
    per_frame = []
    last = start
    while True:
        ok, img = cap.read()  # BGR
        if not ok:
            break
        h, w = img.shape[:2]
        r = min(size / h, size / w)
        resized = cv2.resize(img, (int(w * r), int(h * r)), interpolation=cv2.INTER_LINEAR)
        padded = np.full((size, size, 3), 114, dtype=np.uint8)
        padded[: resized.shape[0], : resized.shape[1]] = resized
        tensor = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
        out = session.run(None, {inp.name: tensor})[0][0]
        out[:, :2] = (out[:, :2] + grid) * stride
        out[:, 2:4] = np.exp(out[:, 2:4]) * stride
        scores = out[:, 4:5] * out[:, 5:]
        cls = scores.argmax(1)
        best = scores[np.arange(len(cls)), cls]
        keep = best >= 0.25
        boxes = out[keep, :4] / r
        xywh = np.stack([boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 2], boxes[:, 3]], 1)
        idx = cv2.dnn.NMSBoxes(xywh.tolist(), best[keep].tolist(), 0.25, 0.45)
        detections += len(idx)
        frames += 1
        now = time.perf_counter()
        per_frame.append(now - last)
        last = now
    seconds = time.perf_counter() - start
    per_frame.sort()
    median = per_frame[len(per_frame) // 2] if per_frame else 0.0
    print(json.dumps({"frames": frames, "seconds": seconds, "median": median, "detections": detections}))


if __name__ == "__main__":
    main()
