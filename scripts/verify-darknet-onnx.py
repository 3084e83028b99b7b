#!/usr/bin/env python3
"""Checks scripts/darknet2onnx.py against an independent reader: OpenCV's darknet importer
(cv2.dnn.readNetFromDarknet) runs the original .cfg/.weights, ONNX Runtime runs the converted
model, on the same input blobs (the demo photos), and every output row is compared.

    verify-darknet-onnx.py CFG WEIGHTS MODEL.onnx PHOTO.png...   (make verify-coco-model)

OpenCV's rows are (y, x, anchor)-ordered per head with boxes relative to the input and class
scores already multiplied by objectness (zeroed below its threshold); the converted model's
rows are (anchor, y, x)-ordered with boxes in input pixels and class probabilities. Needs
numpy, opencv-python-headless and onnxruntime (scripts/setup-bench.sh: .deps/bench-py).
"""
import sys

import cv2
import numpy as np
import onnxruntime as ort


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    cfg, weights, onnx_path, photos = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    _, _, h, w = sess.get_inputs()[0].shape
    worst_box = worst_score = 0.0
    for photo in photos:
        img = cv2.imread(photo)
        if img is None:
            sys.exit(f"{photo}: cannot read")
        blob = cv2.dnn.blobFromImage(img, 1 / 255.0, (w, h), swapRB=True, crop=False)
        net.setInput(blob)
        outs = net.forward(net.getUnconnectedOutLayersNames())
        ours = sess.run(None, {sess.get_inputs()[0].name: blob})[0][0]
        rows, at = [], 0
        for o in outs:
            n = o.shape[0]
            # n = gh * gw * anchors with gw = gh = sqrt(n / 3) for the square YOLOv3 inputs.
            g = int(round((n / 3) ** 0.5))
            part = ours[at:at + n].reshape(3, g, g, -1).transpose(1, 2, 0, 3).reshape(n, -1)
            rows.append(part)
            at += n
        if at != ours.shape[0]:
            sys.exit(f"{onnx_path}: {ours.shape[0]} rows, OpenCV gives {at}")
        ours = np.concatenate(rows)
        ref = np.concatenate(outs)
        boxes = ours[:, :4] / np.array([w, h, w, h], np.float32)
        box_diff = float(np.abs(boxes - ref[:, :4]).max())
        obj_diff = float(np.abs(ours[:, 4] - ref[:, 4]).max())
        kept = ref[:, 5:] > 0
        scores = ours[:, 4:5] * ours[:, 5:]
        score_diff = float(np.abs(scores[kept] - ref[:, 5:][kept]).max()) if kept.any() else 0.0
        best = np.unravel_index(np.argmax(scores), scores.shape)
        print(f"{photo}: {ours.shape[0]} rows; max difference: box {box_diff:.2e} (of the input), "
              f"objectness {obj_diff:.2e}, class score {score_diff:.2e} ({int(kept.sum())} kept "
              f"by OpenCV); best: class {best[1]} at {scores[best]:.3f}")
        worst_box = max(worst_box, box_diff, obj_diff)
        worst_score = max(worst_score, score_diff)
    ok = worst_box < 1e-4 and worst_score < 1e-4
    print(f"{'same' if ok else 'DIFFERENT'}: largest difference {max(worst_box, worst_score):.2e} "
          f"(limit 1e-4)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
