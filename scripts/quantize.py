#!/usr/bin/env python3
"""An INT8 model calibrated on the camera it will watch, written only if it agrees with FP32.

    quantize.py --model MODEL.onnx --source CLIP --out INT8.onnx [--frames N] ...

1. Frames of SOURCE (a clip recorded from the camera) go through the real pipeline (decodebin ! videoconvert ! onnxinfer), and
   onnxinfer writes each inferred frame's input tensor (`input-dump-location`): calibration sees
   exactly the tensors inference will. 2*N frames are taken, spread over the source (onnxinfer
   `interval`): every other one calibrates, the rest are held back for the check.
2. ONNX Runtime's quantizer (`onnxruntime.quantization.quantize_static`: QDQ, per-channel
   weights, MinMax calibration) quantizes the Conv layers only, and not the last ones (those
   the decoding head reads, whose outputs are the raw box and score values), nor the one the
   heads of a multi-scale model part from, nor the one reading the pixels: the head (sigmoid,
   grid, anchors, boxes in pixels next to scores in [0, 1]) stays in float (--every-op quantizes
   every op, head included: fast nonsense, for the test that the check refuses it).
3. The check: FP32 and INT8 each run through onnxinfer (into raftsink's SQLite log, read back with
   videoai-events dump) on the source; on the held-back frames, FP32's detections are the truth.
   The INT8 model is written to OUT only if recall and precision at IoU 0.5 (same label) are at
   least --min-recall / --min-precision (0.95) and the mean IoU of the matched boxes at least
   --min-iou (0.9). The figures are printed either way (and written beside the model, OUT.json,
   when it passes); a refusal says why, and exits 2.

Also prints the time per inference of both models in ONNX Runtime (1 and 2 threads) on the
calibration tensors. Needs the plugin built (target/release) and set-up's Python packages:
run it through `make quantize MODEL=... SOURCE=... [FRAMES=...]`.
"""
import argparse
import glob
import json
import logging
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# onnxinfer properties the model runs with (--props), in every pipeline.
PROPS = ""


class Refused(Exception):
    """A clear reason to stop (exit status 2)."""


def say(msg):
    print(f"[quantize] {msg}", flush=True)


def gst_env():
    env = dict(os.environ)
    plugin = os.path.join(ROOT, "target", "release")
    env["GST_PLUGIN_PATH"] = plugin + (":" + env["GST_PLUGIN_PATH"] if env.get("GST_PLUGIN_PATH") else "")
    return env


def source_uri(source):
    """A file's URI. A camera is recorded first: the FP32 and INT8 runs must see the same
    frames, and a live source never ends."""
    if "://" in source and not source.startswith("file://"):
        raise Refused(
            f"source '{source}' is live: record a clip of the camera first (e.g. gst-launch-1.0 -e "
            f"rtspsrc location={source} ! rtph264depay ! h264parse ! mp4mux ! filesink location=cam.mp4, "
            "a minute or more) and quantize on the file"
        )
    path = os.path.abspath(source[len("file://"):] if source.startswith("file://") else source)
    if not os.path.isfile(path):
        raise Refused(f"source '{source}' is not a file")
    return pathlib.Path(path).as_uri()


def check_model(path, args_every_op):
    """The model, its input's shape and name; refuses what the quantizer cannot calibrate."""
    import onnx

    if not os.path.isfile(path):
        raise Refused(f"model '{path}' does not exist")
    try:
        model = onnx.load(path)
    except Exception as e:  # noqa: BLE001 (any parse error is the same refusal)
        raise Refused(f"model '{path}' is not an ONNX model: {e}")
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise Refused(f"model '{path}' has {len(inputs)} inputs; onnxinfer feeds one image tensor")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    if len(shape) != 4 or any(not isinstance(d, int) or d <= 0 for d in shape):
        raise Refused(
            f"model '{path}' has a dynamic input shape {shape}: calibration needs a fixed one "
            "(export the model with a fixed batch of 1 and a fixed image size)"
        )
    if not args_every_op and not any(n.op_type == "Conv" for n in model.graph.node):
        raise Refused(
            f"model '{path}' has no Conv layer: the INT8 path quantizes Conv layers only (the "
            "decoding head stays in float), so there is nothing to quantize"
        )
    import numpy as np
    from onnx import numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    for k, n in enumerate(model.graph.node):
        if n.op_type != "Conv":
            continue
        for w in n.input[1:]:
            if w in weights and not np.isfinite(numpy_helper.to_array(weights[w])).all():
                raise Refused(
                    f"model '{path}': Conv layer '{n.name or f'Conv_{k}'}' has weights that are not finite "
                    f"(infinity or NaN in '{w}'): no INT8 scale can hold them (ONNX Runtime's quantizer "
                    "fails with 'scale issue') and the FP32 model's outputs are not numbers either; "
                    "the model file is damaged: export it again"
                )
    return model, shape, inputs[0].name


def gst_launch(option, desc, timeout):
    """`gst-launch-1.0 OPTION -e DESC` with the plugin built here: its standard output, or a
    refusal saying what failed."""
    cmd = ["gst-launch-1.0", option, "-e"] + shlex.split(desc)
    try:
        out = subprocess.run(cmd, env=gst_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Refused(f"the pipeline did not finish within {timeout} s (--timeout): {desc}")
    if out.returncode != 0:
        raise Refused(f"the pipeline failed: {desc}\n{out.stderr.strip() or out.stdout[-500:]}")
    return out.stdout


def run_pipeline(uri, model, model_type, interval, extra, timeout):
    gst_launch(
        "-q",
        f'uridecodebin uri="{uri}" ! videoconvert ! onnxinfer model-location="{model}" '
        f"model-type={model_type} interval={interval} {PROPS} {extra}",
        timeout,
    )


def frame_count(uri, timeout):
    """Video frames in a file, counted by decoding it (fakesink's messages)."""
    out = gst_launch("-v", f'uridecodebin uri="{uri}" ! video/x-raw ! fakesink silent=false sync=false', timeout)
    return sum(1 for line in out.splitlines() if "last-message = chain" in line)


def dump_tensors(args, uri, interval, work):
    out = os.path.join(work, "tensors")
    run_pipeline(uri, args.model, args.model_type, interval, f'input-dump-location="{out}" ! fakesink', args.timeout)
    return sorted(glob.glob(os.path.join(out, "*.npy")))


def downstream(graph):
    """For each node, the names of the nodes its outputs reach (node order is topological)."""
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    reach = {}
    for n in reversed(graph.node):
        r = set()
        for t in n.output:
            for c in consumers.get(t, []):
                r.add(c.name)
                r |= reach.get(c.name, set())
        reach[n.name] = r
    return reach


def head_convs(graph, reach):
    """The Conv layers the decoding head reads (no Conv after them on the way to an output):
    their outputs are the raw box and score values, kept in float."""
    convs = {n.name for n in graph.node if n.op_type == "Conv"}
    return [n.name for n in graph.node if n.op_type == "Conv" and not reach[n.name] & convs]


def neck_convs(graph, reach, heads):
    """The last Conv layer that every head reads through (where a multi-scale detector's
    branches part): its one INT8 scale feeds every branch, and an error there moves objects from
    one scale's anchors to another's (the demo clip's cup got the coarse scale's box, twice as
    big, until this layer stayed in float). Kept in float; it is a cheap 1x1 layer in YOLO
    necks. None for a model with one head."""
    if len(heads) < 2:
        return []
    shared = [n.name for n in graph.node if n.op_type == "Conv" and all(h in reach[n.name] for h in heads)]
    return shared[-1:]


def input_convs(graph):
    """The Conv layers that read the image itself: quantizing the pixels' tensor costs the most
    precision for the least time (3 channels)."""
    inputs = {i.name for i in graph.input}
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input and n.input[0] in inputs]


def quantize(args, model, name, calibration, out):
    """Quantizes `model` (loaded by check_model; its input is `name`) into `out`."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.files = iter(calibration)

        def get_next(self):
            f = next(self.files, None)
            return None if f is None else {name: np.load(f)}

    # Nodes need names to be left out by name (darknet2onnx.py's have none).
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    model_path = out + ".named.onnx"
    onnx.save(model, model_path)
    ops = None if args.every_op else ["Conv"]
    reach = downstream(model.graph)
    heads = head_convs(model.graph, reach)
    exclude = [] if args.every_op else heads + neck_convs(model.graph, reach, heads) + input_convs(model.graph)
    # Its advice to run shape pre-processing first concerns models without shape information;
    # the check below is what decides.
    logging.getLogger().setLevel(logging.ERROR)
    try:
        quantize_static(
            model_path,
            out,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=ops,
            nodes_to_exclude=exclude,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile,
            }[args.calibration],
        )
    except Exception as e:  # noqa: BLE001 (whatever the quantizer refuses, it says why)
        raise Refused(f"ONNX Runtime's quantizer refused the model: {type(e).__name__}: {e}")


def detections(args, uri, model, interval, work, tag):
    db = os.path.join(work, f"{tag}.db")
    run_pipeline(
        uri,
        model,
        args.model_type,
        interval,
        (f'labels-location="{args.labels}" ' if args.labels else "")
        + f'! raftsink location="{db}" stream-id={tag}',
        args.timeout,
    )
    tool = os.path.join(ROOT, "target", "release", "videoai-events")
    out = subprocess.run([tool, "dump", db, "--stream", tag], capture_output=True, text=True)
    if out.returncode != 0:
        raise Refused(f"cannot read the {tag} run's events ({tool} dump {db}): {out.stderr.strip()}")
    # By position in the stream (frames in timestamp order), as onnxinfer counted them for
    # `interval` and for the tensors it wrote: whatever the keys (seq) are made of.
    events = sorted((json.loads(line) for line in out.stdout.splitlines()), key=lambda e: e["pts_ns"])
    return {
        i: [(d["label"], (d["x"], d["y"], d["w"], d["h"])) for d in e.get("detections", [])]
        for i, e in enumerate(events)
    }


def iou(a, b):
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def compare(truth, pred, seqs):
    """Recall, precision and the mean IoU of matched boxes over `seqs`, FP32 as the truth."""
    n_truth = n_pred = matched = 0
    ious = []
    for seq in seqs:
        t, p = truth.get(seq, []), list(pred.get(seq, []))
        n_truth += len(t)
        n_pred += len(p)
        # Greedy by IoU, same label, IoU >= 0.5.
        pairs = sorted(
            ((iou(tb, pb), i, j) for i, (tl, tb) in enumerate(t) for j, (pl, pb) in enumerate(p) if tl == pl),
            reverse=True,
        )
        used_t, used_p = set(), set()
        for v, i, j in pairs:
            if v < 0.5 or i in used_t or j in used_p:
                continue
            used_t.add(i)
            used_p.add(j)
            ious.append(v)
        matched += len(used_t)
    recall = matched / n_truth if n_truth else 1.0
    precision = matched / n_pred if n_pred else 1.0
    mean_iou = sum(ious) / len(ious) if ious else (1.0 if n_truth == 0 else 0.0)
    return recall, precision, mean_iou, n_truth, n_pred


def speed(model, tensors, threads):
    import numpy as np
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    s = onnxruntime.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    xs = [np.load(t) for t in tensors[:8]]
    for x in xs[:3]:
        s.run(None, {name: x})
    n, t0 = 0, time.perf_counter()
    while n < 10 or time.perf_counter() - t0 < 1.0:
        s.run(None, {name: xs[n % len(xs)]})
        n += 1
    return (time.perf_counter() - t0) / n * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the FP32 .onnx model")
    ap.add_argument("--source", required=True, help="a video file recorded from the camera (a live camera is recorded first)")
    ap.add_argument("--out", required=True, help="where to write the INT8 model if it passes")
    ap.add_argument("--frames", type=int, default=32, help="calibration frames (as many are held back for the check; default 32)")
    ap.add_argument("--model-type", default="yolov5", help="onnxinfer model-type of the model (default yolov5)")
    ap.add_argument("--labels", help="labels file (onnxinfer labels-location)")
    ap.add_argument("--props", default="", help="onnxinfer properties the model will run with, e.g. 'iou-threshold=0.2 confidence-threshold=0.3' (the check runs with them)")
    ap.add_argument("--calibration", choices=["minmax", "entropy", "percentile"], default="minmax",
                    help="how activation ranges are calibrated (ONNX Runtime's methods; default minmax)")
    ap.add_argument("--min-recall", type=float, default=0.95)
    ap.add_argument("--min-precision", type=float, default=0.95)
    ap.add_argument("--min-iou", type=float, default=0.9)
    ap.add_argument("--every-op", action="store_true", help="quantize every op, the decoding head included (the check refuses the result)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds each pipeline may take (default 600)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (tensors, logs)")
    args = ap.parse_args()
    global PROPS
    PROPS = args.props
    if "interval=" in PROPS or "input-dump-location=" in PROPS:
        raise Refused("--props: interval and input-dump-location are the quantizer's own (it picks the frames)")

    min_frames = 8
    if args.frames < min_frames:
        raise Refused(f"--frames {args.frames}: too few calibration frames; at least {min_frames} (32 or more is better)")
    model, shape, input_name = check_model(args.model, args.every_op)
    uri = source_uri(args.source)
    total = frame_count(uri, args.timeout)
    wanted = 2 * args.frames
    if total < wanted:
        raise Refused(
            f"source '{args.source}' has {total} frames: too few calibration frames for --frames {args.frames} "
            f"({wanted} needed: {args.frames} to calibrate, {args.frames} held back for the check)"
        )
    interval = max(1, total // wanted)
    work = tempfile.mkdtemp(prefix="videoai-quantize-")
    try:
        say(f"model {args.model} (input {shape}); source {args.source}: {total} frames, one in {interval} taken")
        tensors = dump_tensors(args, uri, interval, work)
        if len(tensors) < wanted:
            raise Refused(
                f"too few calibration frames: the source gave {len(tensors)} through onnxinfer, "
                f"{wanted} needed ({args.frames} to calibrate, {args.frames} held back)"
            )
        tensors = tensors[:wanted]
        calibration = tensors[0::2]
        held = [int(os.path.basename(t)[:-4]) for t in tensors[1::2]]
        # The k-th tensor is the k-th inferred frame: frame k * interval of the stream.
        held_seqs = [k * interval for k in held]
        say(f"{len(calibration)} calibration tensors, {len(held_seqs)} frames held back; quantizing "
            + ("every op (head included)" if args.every_op else
               "the Conv layers but the input, neck and head ones (QDQ, per-channel, MinMax)"))
        candidate = os.path.join(work, "int8.onnx")
        quantize(args, model, input_name, calibration, candidate)

        say("checking INT8 against FP32 through onnxinfer on the held-back frames")
        truth = detections(args, uri, args.model, interval, work, "fp32")
        pred = detections(args, uri, candidate, interval, work, "int8")
        recall, precision, mean_iou, n_truth, n_pred = compare(truth, pred, held_seqs)
        fp1, q1 = speed(args.model, calibration, 1), speed(candidate, calibration, 1)
        fp2, q2 = speed(args.model, calibration, 2), speed(candidate, calibration, 2)
        figures = {
            "frames_checked": len(held_seqs), "fp32_detections": n_truth, "int8_detections": n_pred,
            "recall": round(recall, 4), "precision": round(precision, 4), "mean_iou": round(mean_iou, 4),
            "fp32_ms_1_thread": round(fp1, 2), "int8_ms_1_thread": round(q1, 2),
            "fp32_ms_2_threads": round(fp2, 2), "int8_ms_2_threads": round(q2, 2),
        }
        print(json.dumps(figures))
        say(f"recall {recall:.3f}, precision {precision:.3f}, mean IoU {mean_iou:.3f} on {len(held_seqs)} held-back frames "
            f"({n_truth} FP32 detections, {n_pred} INT8); speed {fp1:.1f} -> {q1:.1f} ms (1 thread, {fp1 / q1:.2f}x), "
            f"{fp2:.1f} -> {q2:.1f} ms (2 threads, {fp2 / q2:.2f}x)")
        failed = [
            f"{what} {value:.3f} < {bound}"
            for what, value, bound in (
                ("recall", recall, args.min_recall),
                ("precision", precision, args.min_precision),
                ("mean IoU", mean_iou, args.min_iou),
            )
            if value < bound
        ]
        if n_truth == 0:
            failed.append("FP32 found nothing on the held-back frames: nothing to check against (use a source that shows the objects)")
        if failed:
            raise Refused("INT8 model refused, not written: " + "; ".join(failed))
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        shutil.copyfile(candidate, args.out + ".partial")
        os.replace(args.out + ".partial", args.out)
        # The figures beside it (make demo prints them).
        figures.update(model=os.path.basename(args.model), source=os.path.basename(args.source))
        with open(args.out + ".json", "w") as f:
            json.dump(figures, f)
            f.write("\n")
        say(f"INT8 model written: {args.out}")
    finally:
        if args.keep:
            say(f"working directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except Refused as e:
        print(f"[quantize] {e}", file=sys.stderr, flush=True)
        sys.exit(2)
