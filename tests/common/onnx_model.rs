// SPDX-License-Identifier: MPL-2.0
//! Writes small ONNX models whose outputs are known constants, for decoder tests.
//!
//! The graph reads its input (so ONNX Runtime keeps it), multiplies its sum by zero and adds
//! that to each constant output: `out_k = const_k + 0 * sum(input)`. With `batch_dependent`,
//! each output gets a leading batch dimension that follows the input's (the constant is
//! repeated per batch entry, entry `b` offset by `b * batch_step`).
//!
//! Only what these tests need of the ONNX protobuf schema is encoded (ModelProto, GraphProto,
//! NodeProto, AttributeProto, TensorProto, ValueInfoProto).
#![allow(dead_code)]

use std::path::Path;

/// Element type of the model input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InputType {
    F32,
    U8,
}

/// One dimension: fixed or named (dynamic).
#[derive(Clone, Debug)]
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

pub struct ConstOutput {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
}

pub struct Spec {
    pub input_name: String,
    pub input_type: InputType,
    pub input_shape: Vec<Dim>,
    pub outputs: Vec<ConstOutput>,
    /// Floats of an unused initializer that only makes the file big and slow to load.
    pub ballast: usize,
}

impl Spec {
    /// An NCHW f32 image input of `w`×`h`, batch 1.
    pub fn image(w: i64, h: i64) -> Spec {
        Spec {
            input_name: "images".into(),
            input_type: InputType::F32,
            input_shape: vec![Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(h), Dim::Fixed(w)],
            outputs: Vec::new(),
            ballast: 0,
        }
    }

    /// An NCHW f32 image input whose batch, height and width are dynamic.
    pub fn dynamic_image() -> Spec {
        Spec {
            input_name: "images".into(),
            input_type: InputType::F32,
            input_shape: vec![
                Dim::Named("batch"),
                Dim::Fixed(3),
                Dim::Named("h"),
                Dim::Named("w"),
            ],
            outputs: Vec::new(),
            ballast: 0,
        }
    }

    pub fn with_ballast(mut self, floats: usize) -> Spec {
        self.ballast = floats;
        self
    }

    pub fn output(mut self, name: &str, shape: &[i64], data: Vec<f32>) -> Spec {
        let n: i64 = shape.iter().product();
        assert_eq!(
            n as usize,
            data.len(),
            "output {name}: shape {shape:?} vs {} values",
            data.len()
        );
        self.outputs.push(ConstOutput {
            name: name.into(),
            shape: shape.to_vec(),
            data,
        });
        self
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.encode()).unwrap();
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut graph = Vec::new();
        let mut x = self.input_name.clone();
        if self.input_type == InputType::U8 {
            field_bytes(
                &mut graph,
                1,
                &node("Cast", &[&x], &["x_f32"], &[attr_int("to", 1)]),
            );
            x = "x_f32".into();
        }
        field_bytes(
            &mut graph,
            1,
            &node("ReduceSum", &[&x], &["sum"], &[attr_int("keepdims", 0)]),
        );
        field_bytes(
            &mut graph,
            1,
            &node("Mul", &["sum", "zero"], &["nothing"], &[]),
        );
        field_bytes(&mut graph, 5, &tensor("zero", &[], &[0.0]));
        for o in &self.outputs {
            let c = format!("{}_const", o.name);
            field_bytes(&mut graph, 5, &tensor(&c, &o.shape, &o.data));
            field_bytes(
                &mut graph,
                1,
                &node("Add", &[&c, "nothing"], &[&o.name], &[]),
            );
        }
        if self.ballast > 0 {
            let data: Vec<f32> = (0..self.ballast).map(|i| i as f32).collect();
            field_bytes(
                &mut graph,
                5,
                &tensor("ballast", &[self.ballast as i64], &data),
            );
        }
        field_str(&mut graph, 2, "videoai-test");
        let elem = match self.input_type {
            InputType::F32 => 1,
            InputType::U8 => 2,
        };
        field_bytes(
            &mut graph,
            11,
            &value_info(&self.input_name, elem, &self.input_shape),
        );
        for o in &self.outputs {
            let dims: Vec<Dim> = o.shape.iter().map(|d| Dim::Fixed(*d)).collect();
            field_bytes(&mut graph, 12, &value_info(&o.name, 1, &dims));
        }

        model_proto(&graph)
    }
}

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn field_varint(buf: &mut Vec<u8>, field: u32, v: u64) {
    varint(buf, (field as u64) << 3); // wire type 0: varint
    varint(buf, v);
}

fn field_bytes(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    varint(buf, ((field as u64) << 3) | 2);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

fn field_str(buf: &mut Vec<u8>, field: u32, s: &str) {
    field_bytes(buf, field, s.as_bytes());
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        field_str(&mut n, 1, i);
    }
    for o in outputs {
        field_str(&mut n, 2, o);
    }
    field_str(&mut n, 3, &format!("{op}_{}", outputs[0]));
    field_str(&mut n, 4, op);
    for a in attrs {
        field_bytes(&mut n, 5, a);
    }
    n
}

fn attr_int(name: &str, v: i64) -> Vec<u8> {
    let mut a = Vec::new();
    field_str(&mut a, 1, name);
    field_varint(&mut a, 3, v as u64);
    field_varint(&mut a, 20, 2); // AttributeType INT
    a
}

fn tensor(name: &str, dims: &[i64], data: &[f32]) -> Vec<u8> {
    let mut t = Vec::new();
    for d in dims {
        field_varint(&mut t, 1, *d as u64);
    }
    field_varint(&mut t, 2, 1); // FLOAT
    field_str(&mut t, 8, name);
    let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    field_bytes(&mut t, 9, &raw);
    t
}

fn value_info(name: &str, elem_type: u64, dims: &[Dim]) -> Vec<u8> {
    let mut shape = Vec::new();
    for d in dims {
        let mut dim = Vec::new();
        match d {
            Dim::Fixed(v) => field_varint(&mut dim, 1, *v as u64),
            Dim::Named(s) => field_str(&mut dim, 2, s),
        }
        field_bytes(&mut shape, 1, &dim);
    }
    let mut tensor_type = Vec::new();
    field_varint(&mut tensor_type, 1, elem_type);
    field_bytes(&mut tensor_type, 2, &shape);
    let mut type_proto = Vec::new();
    field_bytes(&mut type_proto, 1, &tensor_type);
    let mut vi = Vec::new();
    field_str(&mut vi, 1, name);
    field_bytes(&mut vi, 2, &type_proto);
    vi
}

/// A detector whose one box moves with the image's brightness, with a dynamic batch
/// dimension, in the YOLOv5 layout `[N,1,6]` (use `model-type=yolov5`).
///
/// Input `images` `[N,3,size,size]` f32. `layers` stride-2 3×3 convolutions (with ReLU, fixed
/// pseudo-random weights) come first, to give the model real work (benchmarks); with 0 layers
/// `m` is the mean of the input. Each entry gets one box: `cx = 40 + 240·m`, `cy = 160`,
/// `w = h = 40`, objectness 0.9, one class scoring 0.9 (confidence 0.81).
pub fn brightness_box_model(path: &Path, size: i64, layers: usize) {
    write_brightness_box(path, size, layers, false);
}

/// `brightness_box_model` with one convolution whose first weight is infinite, and a fixed
/// batch of 1: ONNX Runtime runs it (its box is NaN), and its quantizer cannot give that layer
/// an INT8 scale.
pub fn damaged_conv_model(path: &Path, size: i64) {
    write_brightness_box(path, size, 1, true);
}

fn write_brightness_box(path: &Path, size: i64, layers: usize, infinite_weight: bool) {
    let mut graph = Vec::new();
    let mut x = "images".to_string();
    let mut cin = 3i64;
    let mut seed: u32 = 12345;
    let mut rand = move || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        ((seed >> 16) & 0x7fff) as f32 / 32768.0 - 0.5
    };
    for l in 0..layers {
        let cout = 16i64 << l.min(3);
        let mut w: Vec<f32> = (0..cout * cin * 9).map(|_| rand() * 0.5).collect();
        if infinite_weight {
            w[0] = f32::INFINITY;
        }
        let b: Vec<f32> = (0..cout).map(|_| rand() * 0.1).collect();
        let (wn, bn, cn, rn) = (
            format!("w{l}"),
            format!("b{l}"),
            format!("conv{l}"),
            format!("relu{l}"),
        );
        field_bytes(&mut graph, 5, &tensor(&wn, &[cout, cin, 3, 3], &w));
        field_bytes(&mut graph, 5, &tensor(&bn, &[cout], &b));
        field_bytes(
            &mut graph,
            1,
            &node(
                "Conv",
                &[&x, &wn, &bn],
                &[&cn],
                &[
                    attr_ints("kernel_shape", &[3, 3]),
                    attr_ints("strides", &[2, 2]),
                    attr_ints("pads", &[1, 1, 1, 1]),
                ],
            ),
        );
        field_bytes(&mut graph, 1, &node("Relu", &[&cn], &[&rn], &[]));
        x = rn;
        cin = cout;
    }
    field_bytes(
        &mut graph,
        1,
        &node(
            "ReduceMean",
            &[&x],
            &["m4"],
            &[attr_ints("axes", &[1, 2, 3]), attr_int("keepdims", 1)],
        ),
    );
    field_bytes(
        &mut graph,
        1,
        &node(
            "ReduceMean",
            &["m4"],
            &["m3"],
            &[attr_ints("axes", &[3]), attr_int("keepdims", 0)],
        ),
    );
    field_bytes(
        &mut graph,
        5,
        &tensor("gain", &[1, 1, 6], &[240.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
    );
    field_bytes(
        &mut graph,
        5,
        &tensor("bias", &[1, 1, 6], &[40.0, 160.0, 40.0, 40.0, 0.9, 0.9]),
    );
    field_bytes(
        &mut graph,
        1,
        &node("Mul", &["m3", "gain"], &["scaled"], &[]),
    );
    field_bytes(
        &mut graph,
        1,
        &node("Add", &["scaled", "bias"], &["output"], &[]),
    );
    field_str(&mut graph, 2, "videoai-brightness-box");
    // The damaged one has a fixed batch of 1, so that only its weight stands in the way.
    let batch = || {
        if infinite_weight {
            Dim::Fixed(1)
        } else {
            Dim::Named("batch")
        }
    };
    field_bytes(
        &mut graph,
        11,
        &value_info(
            "images",
            1,
            &[batch(), Dim::Fixed(3), Dim::Fixed(size), Dim::Fixed(size)],
        ),
    );
    field_bytes(
        &mut graph,
        12,
        &value_info("output", 1, &[batch(), Dim::Fixed(1), Dim::Fixed(6)]),
    );
    std::fs::write(path, model_proto(&graph)).unwrap();
}

/// A ModelProto (IR 8, opset 13) around `graph`.
fn model_proto(graph: &[u8]) -> Vec<u8> {
    let mut model = Vec::new();
    field_varint(&mut model, 1, 8); // ir_version
    field_str(&mut model, 2, "videoai-tests");
    let mut opset = Vec::new();
    field_str(&mut opset, 1, "");
    field_varint(&mut opset, 2, 13);
    field_bytes(&mut model, 8, &opset);
    field_bytes(&mut model, 7, graph);
    model
}

fn attr_ints(name: &str, v: &[i64]) -> Vec<u8> {
    let mut a = Vec::new();
    field_str(&mut a, 1, name);
    for x in v {
        field_varint(&mut a, 8, *x as u64);
    }
    field_varint(&mut a, 20, 7); // AttributeType INTS
    a
}

/// A model that is slow on purpose: `matmuls` products of a 1024×1024 matrix that depend on
/// the input (so nothing is folded at load time), then one YOLOv5 row `[1,1,6]`
/// (`cx 32, cy 24, w 16, h 16`, objectness and class 0.9). Input `images` `[1,3,64,64]` f32.
/// About `matmuls` × 1 GMAC per frame.
pub fn slow_model(path: &Path, matmuls: usize) {
    let n = 1024i64;
    let mut graph = Vec::new();
    field_bytes(
        &mut graph,
        1,
        &node(
            "ReduceMean",
            &["images"],
            &["m"],
            &[attr_int("keepdims", 0)],
        ),
    );
    let matrix: Vec<f32> = (0..n * n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1e6)
        .collect();
    field_bytes(&mut graph, 5, &tensor("big", &[n, n], &matrix));
    field_bytes(&mut graph, 1, &node("Mul", &["m", "big"], &["y0"], &[]));
    let mut y = "y0".to_string();
    for i in 0..matmuls {
        let next = format!("y{}", i + 1);
        field_bytes(&mut graph, 1, &node("MatMul", &[&y, "big"], &[&next], &[]));
        y = next;
    }
    field_bytes(
        &mut graph,
        1,
        &node("ReduceSum", &[&y], &["s"], &[attr_int("keepdims", 0)]),
    );
    field_bytes(&mut graph, 5, &tensor("zero", &[], &[0.0]));
    field_bytes(
        &mut graph,
        1,
        &node("Mul", &["s", "zero"], &["nothing"], &[]),
    );
    field_bytes(
        &mut graph,
        5,
        &tensor("row", &[1, 1, 6], &[32.0, 24.0, 16.0, 16.0, 0.9, 0.9]),
    );
    field_bytes(
        &mut graph,
        1,
        &node("Add", &["row", "nothing"], &["output0"], &[]),
    );
    field_str(&mut graph, 2, "videoai-slow");
    let image = [Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(64), Dim::Fixed(64)];
    field_bytes(&mut graph, 11, &value_info("images", 1, &image));
    let out = [Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(6)];
    field_bytes(&mut graph, 12, &value_info("output0", 1, &out));
    std::fs::write(path, model_proto(&graph)).unwrap();
}
