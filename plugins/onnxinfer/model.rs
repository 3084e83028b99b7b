// SPDX-License-Identifier: MPL-2.0
//! A loaded ONNX model: the session, what its input looks like, which family decodes its
//! outputs.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};

use super::decode::{Output, shape_string, ssd, yolo};
use super::preprocess::{Elem, Layout};
use super::runtime::{self, RuntimeError, SessionConfig};
use super::{ExecutionProvider, ModelType};

/// Why a model could not be used. Each message names the file and what to do.
#[derive(Debug, Clone)]
pub enum ModelError {
    /// The file does not exist or cannot be read.
    NotFound(String),
    /// ONNX Runtime is missing or broken, or the execution provider is not there.
    Runtime(RuntimeError),
    /// The file is not a model ONNX Runtime can load.
    Invalid(String),
    /// The model loads but its inputs/outputs do not fit the requested family.
    Unsupported(String),
}

impl ModelError {
    /// The error the element posts: the GStreamer domain of each cause.
    pub fn to_gst_error(&self) -> gst::ErrorMessage {
        match self {
            ModelError::NotFound(m) => gst::error_msg!(gst::ResourceError::NotFound, ("{}", m)),
            ModelError::Runtime(m) => gst::error_msg!(gst::LibraryError::Init, ("{}", m)),
            ModelError::Invalid(m) => gst::error_msg!(gst::StreamError::WrongType, ("{}", m)),
            ModelError::Unsupported(m) => gst::error_msg!(gst::StreamError::Format, ("{}", m)),
        }
    }
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::NotFound(s) | ModelError::Invalid(s) | ModelError::Unsupported(s) => {
                f.write_str(s)
            }
            ModelError::Runtime(e) => e.fmt(f),
        }
    }
}

/// The resolved family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Yolov5,
    Yolov8,
    Yolox,
    Ssd(ssd::Layout),
    Classifier,
    Raw,
}

impl Family {
    pub fn name(&self) -> &'static str {
        match self {
            Family::Yolov5 => "yolov5",
            Family::Yolov8 => "yolov8",
            Family::Yolox => "yolox",
            Family::Ssd(_) => "ssd",
            Family::Classifier => "classifier",
            Family::Raw => "raw",
        }
    }

    pub fn is_detector(&self) -> bool {
        matches!(
            self,
            Family::Yolov5 | Family::Yolov8 | Family::Yolox | Family::Ssd(_)
        )
    }
}

/// How to load a model: which family, and how ONNX Runtime runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    pub model_type: ModelType,
    pub session: SessionConfig,
}

/// The model's image input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputInfo {
    pub name: String,
    pub elem: Elem,
    pub layout: Layout,
    /// `None` where the model leaves the size dynamic.
    pub width: Option<usize>,
    pub height: Option<usize>,
    /// `None` for a dynamic batch dimension.
    pub batch: Option<usize>,
}

/// Input data of one `run`.
pub enum TensorInput<'a> {
    F32(&'a [f32], [usize; 4]),
    U8(&'a [u8], [usize; 4]),
}

pub struct Model {
    /// `run` takes the session mutably: one run at a time (a job may run on another thread
    /// than the one that prepared it).
    session: std::sync::Mutex<Session>,
    /// `name@version`: file stem and the first 8 hex digits of a hash of the file's bytes.
    pub id: String,
    pub path: PathBuf,
    pub input: InputInfo,
    pub output_names: Vec<String>,
    pub output_shapes: Vec<Vec<i64>>,
    pub family: Family,
    /// The execution provider in use.
    pub provider: ExecutionProvider,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.id)
            .field("input", &self.input)
            .field("outputs", &self.output_shapes)
            .field("family", &self.family)
            .finish()
    }
}

fn dims(dtype: &ort::value::ValueType) -> Vec<i64> {
    dtype
        .tensor_shape()
        .map(|s| s.iter().copied().collect())
        .unwrap_or_default()
}

/// Picks the family from the outputs (`auto`), or checks the requested one fits.
fn resolve_family(
    requested: ModelType,
    names: &[&str],
    shapes: &[Vec<i64>],
    input: &InputInfo,
    shown: &str,
) -> Result<Family, ModelError> {
    let outputs = shapes
        .iter()
        .map(|s| shape_string(s))
        .collect::<Vec<_>>()
        .join(", ");
    let single3 = match shapes {
        [s] if s.len() == 3 => Some((s[1], s[2])),
        _ => None,
    };
    let yolox_rows = match (input.width, input.height) {
        (Some(w), Some(h)) => Some(yolo::yolox_rows(w, h) as i64),
        _ => None,
    };
    let unsupported = |family: &str, expected: &str| {
        ModelError::Unsupported(format!(
            "model '{shown}' does not look like {family}: expected {expected}, found outputs {outputs}. Check model-type"
        ))
    };
    let family = match requested {
        ModelType::Raw => Family::Raw,
        ModelType::Yolox => match single3 {
            Some((n, k)) if k >= 6 && (n < 0 || yolox_rows.is_none_or(|r| r == n)) => Family::Yolox,
            _ => {
                return Err(unsupported(
                    "a YOLOX head",
                    &format!(
                        "one output [1,{},5+classes]",
                        yolox_rows.map_or("?".into(), |r| r.to_string())
                    ),
                ));
            }
        },
        ModelType::Yolov5 => match single3 {
            Some((_, k)) if !(0..6).contains(&k) => Family::Yolov5,
            _ => return Err(unsupported("YOLOv5", "one output [1,N,5+classes]")),
        },
        ModelType::Yolov8 => match single3 {
            Some((a, _)) if !(0..5).contains(&a) => Family::Yolov8,
            _ => return Err(unsupported("YOLOv8", "one output [1,4+classes,N]")),
        },
        ModelType::Ssd => Family::Ssd(ssd::layout(names, shapes).ok_or_else(|| {
            unsupported(
                "an SSD-style detector",
                "outputs boxes [1,N,4], scores [1,N], classes [1,N]",
            )
        })?),
        ModelType::Classifier => match shapes {
            [s] if s.len() == 2 || (s.len() == 4 && s[2] == 1 && s[3] == 1) => Family::Classifier,
            _ => return Err(unsupported("a classifier", "one output [1,classes]")),
        },
        ModelType::Auto => {
            if let [s] = shapes
                && s.len() == 2
            {
                Family::Classifier
            } else if let Some((a, b)) = single3 {
                // [1,N,5+C] (v5) or [1,4+C,N] (v8): whichever reading fits; when both do, the
                // larger dimension is the number of candidates. Unknown (-1) counts as large.
                let big = |d: i64| if d < 0 { i64::MAX } else { d };
                let v5 = b >= 6;
                let v8 = a >= 5;
                if b >= 6 && a > 0 && Some(a) == yolox_rows {
                    Family::Yolox
                } else if v5 && (!v8 || big(a) > big(b)) {
                    Family::Yolov5
                } else if v8 {
                    Family::Yolov8
                } else {
                    return Err(ModelError::Unsupported(format!(
                        "cannot tell the family of model '{shown}' from its output {outputs}; set model-type (yolov5, yolov8, yolox, ssd, classifier or raw)"
                    )));
                }
            } else if let Some(l) = ssd::layout(names, shapes) {
                Family::Ssd(l)
            } else {
                return Err(ModelError::Unsupported(format!(
                    "cannot tell the family of model '{shown}' from its outputs {outputs}; set model-type (yolov5, yolov8, yolox, ssd, classifier, or raw to attach the tensors for a decoder of your own)"
                )));
            }
        }
    };
    Ok(family)
}

impl Model {
    /// Loads and inspects `path`.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model, ModelError> {
        let shown = path.display().to_string();
        if !path.is_file() {
            return Err(ModelError::NotFound(format!(
                "model file '{shown}' does not exist (or is not a file). Set model-location to an .onnx file; `make deps` puts the demo model in models/common_det.onnx"
            )));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| ModelError::NotFound(format!("cannot read model file '{shown}': {e}")))?;
        let (session, provider) =
            runtime::session_from_memory(&bytes, &opts.session).map_err(|e| match e {
                RuntimeError::Model(e) => ModelError::Invalid(format!(
                    "'{shown}' is not a valid ONNX model ({} bytes): ONNX Runtime says: {}. Check that model-location points to an .onnx file",
                    bytes.len(),
                    e.trim_end_matches('.')
                )),
                RuntimeError::Provider(msg) => {
                    ModelError::Runtime(RuntimeError::Provider(format!("'{shown}': {msg}")))
                }
                other => ModelError::Runtime(other),
            })?;

        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let id = format!(
            "{stem}@{:08x}",
            crate::util::hash::fingerprint(&bytes) >> 32
        );

        let Some(input) = session.inputs().first() else {
            return Err(ModelError::Unsupported(format!(
                "model '{shown}' has no inputs"
            )));
        };
        if session.inputs().len() > 1 {
            return Err(ModelError::Unsupported(format!(
                "model '{shown}' has {} inputs; onnxinfer feeds one image input",
                session.inputs().len()
            )));
        }
        let input_name = input.name().to_string();
        let in_shape = dims(input.dtype());
        let elem = match input.dtype().tensor_type() {
            Some(TensorElementType::Float32) => Elem::F32,
            Some(TensorElementType::Uint8) => Elem::U8,
            other => {
                return Err(ModelError::Unsupported(format!(
                    "model '{shown}': input '{input_name}' has element type {other:?}; onnxinfer feeds f32 or u8"
                )));
            }
        };
        let (layout, b, h, w) = match in_shape.as_slice() {
            [b, 3, h, w] => (Layout::Nchw, *b, *h, *w),
            [b, h, w, 3] => (Layout::Nhwc, *b, *h, *w),
            _ => {
                return Err(ModelError::Unsupported(format!(
                    "model '{shown}': input '{input_name}' has shape {}, expected an image [N,3,H,W] or [N,H,W,3]",
                    shape_string(&in_shape)
                )));
            }
        };
        let known = |d: i64| (d > 0).then_some(d as usize);
        let input = InputInfo {
            name: input_name,
            elem,
            layout,
            width: known(w),
            height: known(h),
            batch: known(b),
        };

        let output_names: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let output_shapes: Vec<Vec<i64>> =
            session.outputs().iter().map(|o| dims(o.dtype())).collect();
        for o in session.outputs() {
            if o.dtype().tensor_type() != Some(TensorElementType::Float32) {
                return Err(ModelError::Unsupported(format!(
                    "model '{shown}': output '{}' has element type {:?}; onnxinfer decodes f32 outputs",
                    o.name(),
                    o.dtype().tensor_type()
                )));
            }
        }
        let names: Vec<&str> = output_names.iter().map(String::as_str).collect();
        let family = resolve_family(opts.model_type, &names, &output_shapes, &input, &shown)?;
        Ok(Model {
            session: std::sync::Mutex::new(session),
            id,
            path: path.to_path_buf(),
            input,
            output_names,
            output_shapes,
            family,
            provider,
        })
    }

    /// Number of classes, where the output shapes say it.
    pub fn classes(&self) -> Option<usize> {
        let s = self.output_shapes.first()?;
        let n = match self.family {
            Family::Yolov5 | Family::Yolox => *s.get(2)? - 5,
            Family::Yolov8 => *s.get(1)? - 4,
            Family::Classifier => *s.get(1)?,
            Family::Ssd(_) | Family::Raw => return None,
        };
        (n > 0).then_some(n as usize)
    }

    /// The input size for frames of `frame_w`×`frame_h`: the model's own, else `override_`
    /// (where non-zero), else the frame size rounded up to a multiple of 32.
    pub fn input_size(
        &self,
        frame_w: usize,
        frame_h: usize,
        override_: (usize, usize),
    ) -> (usize, usize) {
        let round = |v: usize| v.div_ceil(32).max(1) * 32;
        let w = self.input.width.unwrap_or(if override_.0 > 0 {
            override_.0
        } else {
            round(frame_w)
        });
        let h = self.input.height.unwrap_or(if override_.1 > 0 {
            override_.1
        } else {
            round(frame_h)
        });
        (w, h)
    }

    /// Runs the model once on zeros shaped like `spec`, so the first real frame does not pay
    /// for ONNX Runtime's lazy initialisation.
    pub fn warm_up(&self, spec: &super::preprocess::TensorSpec) -> Result<(), String> {
        let batch = self.input.batch.unwrap_or(1);
        let shape = spec.shape(batch);
        let n = batch * spec.entry_len();
        match spec.elem {
            Elem::F32 => {
                let zeros = vec![0.0f32; n];
                self.run(TensorInput::F32(&zeros, shape), |_| ())
            }
            Elem::U8 => {
                let zeros = vec![0u8; n];
                self.run(TensorInput::U8(&zeros, shape), |_| ())
            }
        }
    }

    /// Runs the model and hands the outputs to `f`.
    pub fn run<R>(
        &self,
        input: TensorInput<'_>,
        f: impl FnOnce(&[Output<'_>]) -> R,
    ) -> Result<R, String> {
        let value = match input {
            TensorInput::F32(data, shape) => {
                TensorRef::from_array_view((shape, data)).map(|t| t.into_dyn())
            }
            TensorInput::U8(data, shape) => {
                TensorRef::from_array_view((shape, data)).map(|t| t.into_dyn())
            }
        }
        .map_err(|e| format!("cannot wrap the input tensor: {e}"))?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| "an earlier run of this model panicked".to_string())?;
        let outputs = session
            .run(ort::inputs![self.input.name.as_str() => value])
            .map_err(|e| format!("inference failed: {e}"))?;
        let mut extracted = Vec::with_capacity(outputs.len());
        for (i, name) in self.output_names.iter().enumerate().take(outputs.len()) {
            let (shape, data) = outputs[i]
                .try_extract_tensor::<f32>()
                .map_err(|e| format!("output '{name}' is not an f32 tensor: {e}"))?;
            extracted.push((
                name.as_str(),
                shape.iter().copied().collect::<Vec<i64>>(),
                data,
            ));
        }
        let views: Vec<Output<'_>> = extracted
            .iter()
            .map(|(name, shape, data)| Output { name, shape, data })
            .collect();
        Ok(f(&views))
    }
}
