// SPDX-License-Identifier: MPL-2.0
//! Execution providers: CPU always; CUDA and TensorRT with the cargo features `cuda` and
//! `tensorrt` and an ONNX Runtime library that has them (the `onnxruntime-gpu` wheel, see
//! `make deps-gpu`). A provider that is not there is an error, or with `provider-fallback` a
//! warning (logged) and the CPU.

use ort::session::builder::SessionBuilder;

use super::ExecutionProvider;
use super::model::{LoadOptions, ModelError};

#[cfg(any(feature = "cuda", feature = "tensorrt"))]
static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
    gst::DebugCategory::new(
        "onnxinfer-providers",
        gst::DebugColorFlags::empty(),
        Some("videoai execution providers"),
    )
});

fn unavailable(opts: &LoadOptions, why: &str) -> ModelError {
    let lib = crate::ort_runtime::library_choice();
    ModelError::Runtime(format!(
        "execution provider {:?} is not available: {why} (ONNX Runtime from '{}'). Use the GPU build \
         (`make deps-gpu`, then ORT_DYLIB_PATH=.deps/onnxruntime-gpu/onnxruntime/capi/libonnxruntime.so.<version>), \
         choose execution-provider=cpu, or set provider-fallback=true to run on the CPU instead",
        opts.provider,
        lib.path.display()
    ))
}

/// Registers the requested provider; returns the builder and the provider actually used.
pub fn apply(
    builder: SessionBuilder,
    opts: &LoadOptions,
) -> Result<(SessionBuilder, ExecutionProvider), ModelError> {
    match opts.provider {
        ExecutionProvider::Cpu => Ok((builder, ExecutionProvider::Cpu)),
        ExecutionProvider::Cuda => {
            #[cfg(feature = "cuda")]
            {
                use ort::ep::ExecutionProvider as _;
                register(builder, opts, ort::ep::CUDA::is_available(), || {
                    ort::ep::CUDA::default().build().error_on_failure()
                })
            }
            #[cfg(not(feature = "cuda"))]
            {
                fallback(
                    builder,
                    opts,
                    "this plugin was built without the 'cuda' cargo feature",
                )
            }
        }
        ExecutionProvider::Tensorrt => {
            #[cfg(feature = "tensorrt")]
            {
                use ort::ep::ExecutionProvider as _;
                register(builder, opts, ort::ep::TensorRT::is_available(), || {
                    ort::ep::TensorRT::default().build().error_on_failure()
                })
            }
            #[cfg(not(feature = "tensorrt"))]
            {
                fallback(
                    builder,
                    opts,
                    "this plugin was built without the 'tensorrt' cargo feature",
                )
            }
        }
    }
}

#[cfg(any(not(feature = "cuda"), not(feature = "tensorrt")))]
fn fallback(
    builder: SessionBuilder,
    opts: &LoadOptions,
    why: &str,
) -> Result<(SessionBuilder, ExecutionProvider), ModelError> {
    if opts.provider_fallback {
        Ok((builder, ExecutionProvider::Cpu))
    } else {
        Err(unavailable(opts, why))
    }
}

#[cfg(any(feature = "cuda", feature = "tensorrt"))]
fn register(
    builder: SessionBuilder,
    opts: &LoadOptions,
    available: ort::Result<bool>,
    ep: impl FnOnce() -> ort::ep::ExecutionProviderDispatch,
) -> Result<(SessionBuilder, ExecutionProvider), ModelError> {
    let why = match available {
        Ok(true) => match builder.with_execution_providers([ep()]) {
            Ok(b) => return Ok((b, opts.provider)),
            Err(e) => {
                let msg = format!("registering it failed: {e}");
                let builder = e.recover();
                if opts.provider_fallback {
                    gst::warning!(CAT, "{msg}; running on the CPU (provider-fallback=true)");
                    return Ok((builder, ExecutionProvider::Cpu));
                }
                return Err(unavailable(opts, &msg));
            }
        },
        Ok(false) => "this ONNX Runtime library was built without it".to_string(),
        Err(e) => format!("cannot list the providers: {e}"),
    };
    if opts.provider_fallback {
        gst::warning!(CAT, "{why}; running on the CPU (provider-fallback=true)");
        Ok((builder, ExecutionProvider::Cpu))
    } else {
        Err(unavailable(opts, &why))
    }
}
