// SPDX-License-Identifier: MPL-2.0
//! A loaded ONNX model: the session, what its input looks like, how its output is decoded.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::TensorElementType;
use ort::value::TensorRef;

use super::ModelType;
use super::nms::Candidate;
use super::preprocess::{Anchor, ChannelOrder, Fit, Layout, Preprocessor, TensorSpec};
use super::yolox;

/// Why a model could not be used. Each message names the file and what to do.
#[derive(Debug)]
pub enum ModelError {
    /// The file does not exist or cannot be read.
    NotFound(String),
    /// ONNX Runtime is missing or broken.
    Runtime(String),
    /// The file is not a model ONNX Runtime can load.
    Invalid(String),
    /// The model loads but its inputs/outputs do not fit the requested family.
    Unsupported(String),
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::NotFound(s)
            | ModelError::Runtime(s)
            | ModelError::Invalid(s)
            | ModelError::Unsupported(s) => f.write_str(s),
        }
    }
}

/// How outputs are decoded, resolved from [`ModelType`] and the model's shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    Yolox { classes: usize },
}

pub struct Model {
    session: Session,
    /// `name@version`: file stem and the first 8 hex digits of a hash of the file's bytes.
    pub id: String,
    pub path: PathBuf,
    input_name: String,
    pub input_width: usize,
    pub input_height: usize,
    pub layout: Layout,
    pub decoder: Decoder,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.id)
            .field("path", &self.path)
            .field("input", &(self.input_width, self.input_height, self.layout))
            .field("decoder", &self.decoder)
            .finish()
    }
}

/// FNV-1a, 64 bit, over 8-byte words: a stable content fingerprint for model versions.
fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h ^= u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    for b in words.remainder() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ bytes.len() as u64
}

fn shape_string(shape: &[i64]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| {
            if *d < 0 {
                "?".to_string()
            } else {
                d.to_string()
            }
        })
        .collect();
    format!("[{}]", dims.join(","))
}

/// Input size used where the model leaves height or width dynamic.
const DEFAULT_DYNAMIC_SIZE: usize = 640;

impl Model {
    /// Loads and inspects `path`, resolving `requested` (`auto` looks at the output shapes).
    pub fn load(path: &Path, requested: ModelType, threads: usize) -> Result<Model, ModelError> {
        let shown = path.display();
        if !path.is_file() {
            return Err(ModelError::NotFound(format!(
                "model file '{shown}' does not exist (or is not a file). Set model-location to an .onnx file; `make deps` puts the demo model in models/common_det.onnx"
            )));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| ModelError::NotFound(format!("cannot read model file '{shown}': {e}")))?;
        let env = crate::ort_runtime::environment().map_err(ModelError::Runtime)?;
        let builder = Session::builder(env).map_err(|e| {
            ModelError::Runtime(format!("cannot create an ONNX Runtime session: {e}"))
        })?;
        let builder = if threads > 0 {
            builder.with_intra_threads(threads).map_err(|e| {
                ModelError::Runtime(format!("cannot set {threads} inference threads: {e}"))
            })?
        } else {
            builder
        };
        let mut builder = builder;
        let session = builder.commit_from_memory(&bytes).map_err(|e| {
            ModelError::Invalid(format!(
                "'{shown}' is not a valid ONNX model ({} bytes): ONNX Runtime says: {}. Check that model-location points to an .onnx file",
                bytes.len(),
                e.to_string().trim_end_matches('.')
            ))
        })?;

        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let id = format!("{stem}@{:08x}", fingerprint(&bytes) >> 32);

        // Input: one image tensor of f32.
        let inputs = session.inputs();
        let Some(input) = inputs.first() else {
            return Err(ModelError::Unsupported(format!(
                "model '{shown}' has no inputs"
            )));
        };
        let input_name = input.name().to_string();
        let in_shape: Vec<i64> = input
            .dtype()
            .tensor_shape()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let in_type = input.dtype().tensor_type();
        if in_type != Some(TensorElementType::Float32) {
            return Err(ModelError::Unsupported(format!(
                "model '{shown}': input '{input_name}' has element type {in_type:?}, expected f32"
            )));
        }
        let (layout, h, w) = match in_shape.as_slice() {
            [_, 3, h, w] => (Layout::Nchw, *h, *w),
            [_, h, w, 3] => (Layout::Nhwc, *h, *w),
            _ => {
                return Err(ModelError::Unsupported(format!(
                    "model '{shown}': input '{input_name}' has shape {}, expected an image [N,3,H,W] or [N,H,W,3]",
                    shape_string(&in_shape)
                )));
            }
        };
        let dim = |d: i64| {
            if d > 0 {
                d as usize
            } else {
                DEFAULT_DYNAMIC_SIZE
            }
        };
        let (input_width, input_height) = (dim(w), dim(h));

        let out_shapes: Vec<Vec<i64>> = session
            .outputs()
            .iter()
            .map(|o| {
                o.dtype()
                    .tensor_shape()
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default()
            })
            .collect();
        let shown_outputs = out_shapes
            .iter()
            .map(|s| shape_string(s))
            .collect::<Vec<_>>()
            .join(", ");
        let yolox_rows = yolox::expected_rows(input_width, input_height);
        let as_yolox = || match out_shapes.as_slice() {
            [s] if s.len() == 3 && s[2] >= 6 && (s[1] < 0 || s[1] as usize == yolox_rows) => {
                Some(Decoder::Yolox {
                    classes: (s[2] - 5) as usize,
                })
            }
            _ => None,
        };
        let decoder = match requested {
            ModelType::Yolox => as_yolox().ok_or_else(|| {
                ModelError::Unsupported(format!(
                    "model '{shown}' does not look like a YOLOX head: expected one output [1,{yolox_rows},5+classes] for input {input_width}x{input_height}, found {shown_outputs}. Check model-type"
                ))
            })?,
            ModelType::Auto => as_yolox().ok_or_else(|| {
                ModelError::Unsupported(format!(
                    "cannot tell the family of model '{shown}' from its outputs {shown_outputs} (input {}); set model-type",
                    shape_string(&in_shape)
                ))
            })?,
        };

        Ok(Model {
            session,
            id,
            path: path.to_path_buf(),
            input_name,
            input_width,
            input_height,
            layout,
            decoder,
        })
    }

    pub fn classes(&self) -> usize {
        match self.decoder {
            Decoder::Yolox { classes } => classes,
        }
    }

    /// The input tensor this model's family expects, with `letterbox` or stretch fitting.
    pub fn tensor_spec(&self, letterbox: bool) -> TensorSpec {
        match self.decoder {
            Decoder::Yolox { .. } => TensorSpec {
                width: self.input_width,
                height: self.input_height,
                layout: self.layout,
                order: ChannelOrder::Bgr,
                mean: [0.0; 3],
                std: [1.0; 3],
                pad_value: 114,
                fit: if letterbox {
                    Fit::Letterbox(Anchor::TopLeft)
                } else {
                    Fit::Stretch
                },
            },
        }
    }

    /// Runs the model on the preprocessed tensor; candidates in tensor coordinates scoring at
    /// least `threshold`, before NMS.
    pub fn detect(&mut self, pre: &Preprocessor, threshold: f32) -> Result<Vec<Candidate>, String> {
        let input = TensorRef::from_array_view((pre.shape(), pre.tensor()))
            .map_err(|e| format!("cannot wrap the input tensor: {e}"))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => input])
            .map_err(|e| format!("inference failed: {e}"))?;
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("output 0 is not an f32 tensor: {e}"))?;
        match self.decoder {
            Decoder::Yolox { classes } => {
                let expected = yolox::expected_rows(self.input_width, self.input_height);
                if data.len() != expected * (5 + classes) {
                    return Err(format!(
                        "YOLOX output has shape {}, expected [1,{expected},{}]",
                        shape_string(shape),
                        5 + classes
                    ));
                }
                Ok(yolox::decode(
                    data,
                    self.input_width,
                    self.input_height,
                    classes,
                    threshold,
                ))
            }
        }
    }
}
