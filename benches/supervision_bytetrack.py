# SPDX-License-Identifier: MPL-2.0
"""The reference ByteTrack for `make bench-objecttracker`: supervision's sv.ByteTrack run on
the detections the benchmark wrote, timing each update.

    python3 supervision_bytetrack.py IN.json OUT.json

IN: {"frame_rate": 25, "high": 0.5, "lost_frames": 25, "min_hits": 2, "match_iou": 0.2,
     "frames": [[[x, y, w, h, confidence, class_id], ...], ...]}
OUT: {"version": "...", "update_ms": [...], "frames": [[[x, y, w, h, track_id], ...], ...]}
"""
import json
import sys
import time

import numpy as np
import supervision as sv


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        spec = json.load(f)
    tracker = sv.ByteTrack(
        track_activation_threshold=spec["high"],
        lost_track_buffer=spec["lost_frames"],
        minimum_matching_threshold=1.0 - spec["match_iou"],
        frame_rate=spec["frame_rate"],
        minimum_consecutive_frames=spec["min_hits"],
    )
    times, frames = [], []
    for boxes in spec["frames"]:
        a = np.array(boxes, dtype=np.float64).reshape(-1, 6)
        xyxy = np.stack([a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]], axis=1)
        det = sv.Detections(
            xyxy=xyxy.astype(np.float32),
            confidence=a[:, 4].astype(np.float32),
            class_id=a[:, 5].astype(int),
        )
        t0 = time.perf_counter()
        out = tracker.update_with_detections(det)
        times.append((time.perf_counter() - t0) * 1000.0)
        frames.append(
            [
                [float(x1), float(y1), float(x2 - x1), float(y2 - y1), int(i)]
                for (x1, y1, x2, y2), i in zip(out.xyxy.tolist(), out.tracker_id.tolist())
            ]
        )
    with open(dst, "w") as f:
        json.dump({"version": sv.__version__, "update_ms": times, "frames": frames}, f)


if __name__ == "__main__":
    main()
