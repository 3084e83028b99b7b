#!/usr/bin/env python3
"""The object demo clip: real photos moving across the frame, and the truth it was made from.

    objects-clip.py make OUT.mp4 [--photos DIR]   make the clip (H.264 MP4), skipped if OUT exists
    objects-clip.py truth [--json]                 print each object's label, frames and crossings
                                                   (--json: one object with "objects" and "counts")
    objects-clip.py compare TRACKS COUNTS          print a run's tracks and line counts (JSON lines
                                                   of `videoai-events tracks|counts`) next to the truth

The clip is described by pipelines/objects-clip.json (also read by the pipeline test): each
object is one photo of scikit-image's data set (scripts/setup.sh puts them in .deps/photos),
cropped to one object, scaled to a height, and moved on a straight horizontal path while fully
visible. Frames are composed here (standard library only) and encoded by GStreamer
(pngdec, videocrop, videoscale to read the photos; openh264enc and mp4mux to write the clip).
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "pipelines", "objects-clip.json")


def load_spec():
    with open(SPEC) as f:
        spec = json.load(f)
    for o in spec["objects"]:
        x1, y1, x2, y2 = o["crop"]
        # A multiple of 4 keeps GStreamer's RGB rows unpadded.
        o["width"] = max(4, round((x2 - x1) * o["height"] / (y2 - y1) / 4) * 4)
    return spec


def x_at(o, frame):
    """Left edge of object `o` at `frame` (None when not in the clip then)."""
    if not o["first"] <= frame <= o["last"]:
        return None
    t = (frame - o["first"]) / max(1, o["last"] - o["first"])
    return round(o["x_from"] + (o["x_to"] - o["x_from"]) * t)


def lines(spec):
    out = []
    for item in spec["lines"].split(";"):
        name, coords = item.split(":")
        x1, y1, x2, y2 = (float(v) for v in coords.split(","))
        out.append((name, (x1, y1), (x2, y2)))
    return out


def side(line, p):
    """Positive on the line's right (objecttracker's `in` side: see plugins/objecttracker/lines.rs)."""
    _, a, b = line
    dx, dy = b[0] - a[0], b[1] - a[1]
    return dx * (p[1] - a[1]) - dy * (p[0] - a[0])


def truth(spec):
    """Per object: (label, frames, crossings [(line, direction)]), and the counts per line."""
    objects, counts = [], {}
    for o in spec["objects"]:
        # objecttracker's default anchor: the bottom centre of the box.
        start = (o["x_from"] + o["width"] / 2, o["y"] + o["height"])
        end = (o["x_to"] + o["width"] / 2, o["y"] + o["height"])
        crossed = []
        for line in lines(spec):
            before, after = side(line, start), side(line, end)
            if before * after < 0:
                direction = "in" if after > 0 else "out"
                crossed.append((line[0], direction))
                counts[(line[0], direction)] = counts.get((line[0], direction), 0) + 1
        objects.append((o["label"], o["last"] - o["first"] + 1, crossed))
    for line in lines(spec):
        for direction in ("in", "out"):
            counts.setdefault((line[0], direction), 0)
    return objects, counts


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        sys.exit(f"{path}: not a PNG file")
    return struct.unpack(">II", head[16:24])


def gst(*args, **kw):
    done = subprocess.run(["gst-launch-1.0", "-q", *args], capture_output=True, **kw)
    if done.returncode != 0:
        sys.exit("gst-launch-1.0 " + " ".join(args) + " failed:\n" + done.stderr.decode(errors="replace"))


def read_photo(o, photos, tmp):
    """The object's pixels: `height` rows of RGB bytes, `width` pixels each."""
    path = os.path.join(photos, o["photo"] + ".png")
    if not os.path.isfile(path):
        sys.exit(f"{path} is missing: run scripts/setup.sh (make deps) first")
    pw, ph = png_size(path)
    x1, y1, x2, y2 = o["crop"]
    if not (0 <= x1 < x2 <= pw and 0 <= y1 < y2 <= ph):
        sys.exit(f"{SPEC}: crop {o['crop']} of {o['photo']} is outside the photo ({pw}x{ph})")
    raw = os.path.join(tmp, o["photo"] + ".rgb")
    w, h = o["width"], o["height"]
    gst("filesrc", f"location={path}", "!", "pngdec", "!", "videoconvert", "!",
        "videocrop", f"left={x1}", f"top={y1}", f"right={pw - x2}", f"bottom={ph - y2}", "!",
        "videoscale", "method=lanczos", "!", f"video/x-raw,format=RGB,width={w},height={h}", "!",
        "filesink", f"location={raw}")
    data = open(raw, "rb").read()
    if len(data) != w * h * 3:
        sys.exit(f"{raw}: {len(data)} bytes, expected {w * h * 3}")
    return [data[r * w * 3:(r + 1) * w * 3] for r in range(h)]


def make(out, photos):
    if os.path.exists(out) and os.path.getsize(out) > 0:
        print(f"[objects-clip] {out}: present")
        return
    spec = load_spec()
    width, height, fps = spec["width"], spec["height"], spec["fps"]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pixels = [read_photo(o, photos, tmp) for o in spec["objects"]]
        empty = bytes(spec["background"]) * (width * height)
        enc = subprocess.Popen(
            ["gst-launch-1.0", "-q", "fdsrc", "fd=0", "!", "rawvideoparse", "format=rgb",
             f"width={width}", f"height={height}", f"framerate={fps}/1", "!", "videoconvert", "!",
             "video/x-raw,format=I420", "!", "openh264enc", "bitrate=6000000", "background-detection=false", "!", "h264parse",
             "!", "mp4mux", "!", "filesink", f"location={out}.partial"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for frame in range(spec["frames"]):
            canvas = bytearray(empty)
            for o, rows in zip(spec["objects"], pixels):
                x = x_at(o, frame)
                if x is None:
                    continue
                for r, row in enumerate(rows):
                    at = ((o["y"] + r) * width + x) * 3
                    canvas[at:at + len(row)] = row
            enc.stdin.write(canvas)
        enc.stdin.close()
        err = enc.stderr.read().decode(errors="replace")
        if enc.wait() != 0:
            sys.exit(f"encoding {out} failed:\n{err}")
    os.replace(out + ".partial", out)
    print(f"[objects-clip] {out}: {width}x{height}, {spec['frames']} frames at {fps} fps, "
          f"{len(spec['objects'])} objects (pipelines/objects-clip.json)")


def print_truth(as_json):
    spec = load_spec()
    objects, counts = truth(spec)
    if as_json:
        print(json.dumps({
            "lines": spec["lines"],
            "objects": [dict(o, frames=frames, crossings=[{"line": l, "direction": d} for l, d in crossed])
                        for o, (_, frames, crossed) in zip(spec["objects"], objects)],
            "counts": [{"line": l, "direction": d, "count": n} for (l, d), n in sorted(counts.items())],
        }))
        return
    print(f"[truth] {len(objects)} objects, lines=\"{spec['lines']}\":")
    for o, (label, frames, crossed) in zip(spec["objects"], objects):
        path = f"x {o['x_from']}->{o['x_to']} at y {o['y']}, box {o['width']}x{o['height']}"
        what = ", ".join(f"crosses {line} {d}" for line, d in crossed) or "crosses nothing"
        print(f"  {label:<10} frames {o['first']:>3}-{o['last']:<3} ({frames}), {path}, {what}")
    for (line, direction), n in sorted(counts.items()):
        print(f"  line {line} {direction}: {n}")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def compare(tracks_path, counts_path):
    spec = load_spec()
    objects, counts = truth(spec)
    tracks = read_jsonl(tracks_path)
    print(f"[demo] tracks stored (videoai-events tracks) next to the objects in the clip:")
    print(f"  {'track':>5}  {'label':<10} {'frames':>6}  {'mean conf':>9}   truth")
    expected = sorted(objects, key=lambda o: o[0])
    for t in sorted(tracks, key=lambda t: t["track_id"]):
        match = [o for o in expected if o[0] == t["label"]]
        note = f"{match[0][0]}, {match[0][1]} frames" if match else "not in the clip"
        if match:
            expected.remove(match[0])
        print(f"  {t['track_id']:>5}  {t['label']:<10} {t['frames']:>6}  {t['mean_confidence']:>9.2f}   {note}")
    for label, frames, _ in expected:
        print(f"  {'-':>5}  {'-':<10} {'-':>6}  {'-':>9}   {label}, {frames} frames: no track")
    stored = {}
    for c in read_jsonl(counts_path):
        if "line" in c:
            stored[(c["line"], c["direction"])] = stored.get((c["line"], c["direction"]), 0) + c["count"]
    print("[demo] line counts (videoai-events counts) next to the truth:")
    ok = len(tracks) == len(objects) and not expected
    for key in sorted(set(counts) | set(stored)):
        n, want = stored.get(key, 0), counts.get(key, 0)
        ok &= n == want
        print(f"  {key[0]} {key[1]:<4} counted {n}   truth {want}{'' if n == want else '   <- differs'}")
    print(f"[demo] {'every object one track, every count exact' if ok else 'differs from the truth'}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="make the clip (skipped if OUT exists)")
    m.add_argument("out")
    m.add_argument("--photos", default=os.path.join(ROOT, ".deps", "photos"))
    t = sub.add_parser("truth", help="print what the clip holds")
    t.add_argument("--json", action="store_true", help="as one JSON object")
    c = sub.add_parser("compare", help="print a run's tracks and counts next to the truth")
    c.add_argument("tracks")
    c.add_argument("counts")
    a = p.parse_args()
    if a.cmd == "make":
        make(a.out, a.photos)
    elif a.cmd == "truth":
        print_truth(a.json)
    else:
        compare(a.tracks, a.counts)


if __name__ == "__main__":
    main()
