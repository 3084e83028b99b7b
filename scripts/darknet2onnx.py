#!/usr/bin/env python3
"""Converts a darknet YOLOv3(-tiny) network (.cfg + .weights) into ONNX, head decode included.

    darknet2onnx.py CFG WEIGHTS OUT.onnx

The output is the YOLOv5 layout onnxinfer reads (`model-type=yolov5`): one tensor
[1, N, 5 + classes] of rows (cx, cy, w, h in input pixels, objectness, class probabilities),
N = sum over the YOLO heads of grid_w * grid_h * anchors (2535 for yolov3-tiny at 416x416).
Input: "images", [1, 3, H, W] RGB in 0..1 (darknet's own input), letterboxed.

Only what YOLOv3 and YOLOv3-tiny use is supported: convolutional (with or without batch
normalisation, leaky or linear), maxpool (darknet's right/bottom padding, so a 2x2 stride-1 pool
keeps the size), upsample, route and yolo. Anything else stops with an error naming the section.
Batch normalisation is folded into the convolution the way darknet computes it:
(x - mean) / (sqrt(var) + 1e-6) * scale + bias.

Needs numpy and the onnx package only (scripts/setup.sh installs them into .deps/model-py).
The result is deterministic: the same inputs give the same bytes (setup checks its sha256).
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def parse_cfg(path):
    sections = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("["):
                sections.append((line.strip("[]"), {}))
            else:
                key, value = line.split("=", 1)
                sections[-1][1][key.strip()] = value.strip()
    return sections


class Weights:
    def __init__(self, path):
        data = open(path, "rb").read()
        major, minor, _revision = np.frombuffer(data, np.int32, 3)
        seen = 8 if major * 10 + minor >= 2 else 4
        self.values = np.frombuffer(data, np.float32, offset=12 + seen)
        self.pos = 0
        self.path = path

    def take(self, n):
        if self.pos + n > self.values.size:
            sys.exit(f"{self.path}: ends after {self.values.size} values, {self.pos + n} needed")
        out = self.values[self.pos:self.pos + n].copy()
        self.pos += n
        return out


def convert(cfg_path, weights_path, out_path):
    sections = parse_cfg(cfg_path)
    net = sections[0][1]
    width, height, channels = int(net["width"]), int(net["height"]), int(net["channels"])
    weights = Weights(weights_path)
    nodes, inits = [], []
    # Per layer: (tensor name, channels, height, width).
    layers = []
    heads = []
    cur = ("images", channels, height, width)

    def const(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    for i, (kind, opts) in enumerate(sections[1:]):
        name, c, h, w = cur
        out = f"l{i}_{kind}"
        if kind == "convolutional":
            filters, size = int(opts["filters"]), int(opts["size"])
            stride, pad = int(opts.get("stride", 1)), size // 2 if int(opts.get("pad", 0)) else 0
            if "batch_normalize" in opts and int(opts["batch_normalize"]):
                bias = weights.take(filters)
                scale = weights.take(filters)
                mean = weights.take(filters)
                var = weights.take(filters)
                kernel = weights.take(filters * c * size * size).reshape(filters, c, size, size)
                factor = scale / (np.sqrt(var) + 1e-6)
                kernel = kernel * factor[:, None, None, None]
                bias = bias - mean * factor
            else:
                bias = weights.take(filters)
                kernel = weights.take(filters * c * size * size).reshape(filters, c, size, size)
            conv = out if opts["activation"] == "linear" else out + "_conv"
            nodes.append(helper.make_node(
                "Conv", [name, const(f"l{i}_w", kernel.astype(np.float32)),
                         const(f"l{i}_b", bias.astype(np.float32))], [conv],
                kernel_shape=[size, size], strides=[stride, stride], pads=[pad] * 4))
            if opts["activation"] == "leaky":
                nodes.append(helper.make_node("LeakyRelu", [conv], [out], alpha=0.1))
            elif opts["activation"] != "linear":
                sys.exit(f"{cfg_path}: section {i + 1} [{kind}]: activation {opts['activation']} not supported")
            h = (h + 2 * pad - size) // stride + 1
            w = (w + 2 * pad - size) // stride + 1
            cur = (out, filters, h, w)
        elif kind == "maxpool":
            size, stride = int(opts["size"]), int(opts["stride"])
            # darknet pads size-1 in total, all of it after the data (offset -padding/2 = 0 for 2).
            padding = size - 1
            before = padding // 2
            after = padding - before
            nodes.append(helper.make_node(
                "MaxPool", [name], [out], kernel_shape=[size, size], strides=[stride, stride],
                pads=[before, before, after, after]))
            cur = (out, c, (h + padding - size) // stride + 1, (w + padding - size) // stride + 1)
        elif kind == "upsample":
            s = int(opts["stride"])
            nodes.append(helper.make_node(
                "Resize", [name, "", const(f"l{i}_scales", np.array([1, 1, s, s], np.float32))],
                [out], mode="nearest"))
            cur = (out, c, h * s, w * s)
        elif kind == "route":
            refs = [int(x) for x in opts["layers"].split(",")]
            picked = [layers[r if r >= 0 else i + r] for r in refs]
            if len(picked) == 1:
                cur = picked[0]
            else:
                nodes.append(helper.make_node("Concat", [p[0] for p in picked], [out], axis=1))
                cur = (out, sum(p[1] for p in picked), picked[0][2], picked[0][3])
        elif kind == "yolo":
            mask = [int(x) for x in opts["mask"].split(",")]
            flat = [float(x) for x in opts["anchors"].split(",")]
            anchors = np.array([flat[2 * m:2 * m + 2] for m in mask], np.float32)
            classes = int(opts["classes"])
            heads.append(decode_head(nodes, const, i, name, len(mask), classes, anchors, h, w,
                                     width / w, height / h))
            cur = (name, c, h, w)
        else:
            sys.exit(f"{cfg_path}: section {i + 1} [{kind}] is not supported by this converter")
        layers.append(cur)

    if weights.pos != weights.values.size:
        sys.exit(f"{weights_path}: {weights.values.size - weights.pos} values left over: "
                 f"it does not belong to {cfg_path}")
    nodes.append(helper.make_node("Concat", [n for n, _ in heads], ["output"], axis=1))
    rows = sum(r for _, r in heads)
    graph = helper.make_graph(
        nodes, "yolov3-tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, channels, height, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, rows, 5 + classes])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="videoai darknet2onnx")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out_path)
    print(f"{out_path}: input [1,{channels},{height},{width}], output [1,{rows},{5 + classes}]")


def decode_head(nodes, const, i, name, n_anchors, classes, anchors, h, w, stride_x, stride_y):
    """[1, A*(5+C), h, w] raw head -> [1, A*h*w, 5+C] rows of boxes in input pixels."""
    p = f"l{i}_"
    k = 5 + classes
    nodes.append(helper.make_node(
        "Reshape", [name, const(p + "shape5", np.array([1, n_anchors, k, h, w], np.int64))],
        [p + "r"]))
    nodes.append(helper.make_node("Transpose", [p + "r"], [p + "t"], perm=[0, 1, 3, 4, 2]))
    nodes.append(helper.make_node(
        "Split", [p + "t", const(p + "split", np.array([2, 2, k - 4], np.int64))],
        [p + "xy", p + "wh", p + "rest"], axis=4))
    gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                         indexing="ij")
    grid = np.stack([gx, gy], axis=-1).reshape(1, 1, h, w, 2)
    stride = np.array([stride_x, stride_y], np.float32).reshape(1, 1, 1, 1, 2)
    nodes.append(helper.make_node("Sigmoid", [p + "xy"], [p + "xy_s"]))
    nodes.append(helper.make_node("Add", [p + "xy_s", const(p + "grid", grid)], [p + "xy_g"]))
    nodes.append(helper.make_node("Mul", [p + "xy_g", const(p + "stride", stride)], [p + "xy_p"]))
    nodes.append(helper.make_node("Exp", [p + "wh"], [p + "wh_e"]))
    nodes.append(helper.make_node(
        "Mul", [p + "wh_e", const(p + "anchors", anchors.reshape(1, n_anchors, 1, 1, 2))],
        [p + "wh_p"]))
    nodes.append(helper.make_node("Sigmoid", [p + "rest"], [p + "rest_s"]))
    nodes.append(helper.make_node("Concat", [p + "xy_p", p + "wh_p", p + "rest_s"], [p + "cat"],
                                  axis=4))
    rows = n_anchors * h * w
    nodes.append(helper.make_node(
        "Reshape", [p + "cat", const(p + "shape3", np.array([1, rows, k], np.int64))],
        [p + "rows"]))
    return p + "rows", rows


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    convert(*sys.argv[1:])
