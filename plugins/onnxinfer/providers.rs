// SPDX-License-Identifier: MPL-2.0
//! Execution providers: CPU always; CUDA and TensorRT with the cargo features `cuda` and
//! `tensorrt` and an ONNX Runtime library that has them (the `onnxruntime-gpu` wheel, see
//! `make deps-gpu`). A provider that is not there, or that is there but cannot start (no
//! device, CUDA libraries missing: ONNX Runtime only finds out when the session is created), is
//! an error naming it, or with `provider-fallback` a warning and the CPU.

use ort::session::builder::SessionBuilder;

use super::ExecutionProvider;
use super::model::{LoadOptions, ModelError};

static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
    gst::DebugCategory::new(
        "onnxinfer-providers",
        gst::DebugColorFlags::empty(),
        Some("videoai execution providers"),
    )
});

fn unavailable(provider: ExecutionProvider, why: &str) -> ModelError {
    let lib = crate::ort_runtime::library_choice();
    ModelError::Runtime(format!(
        "execution provider {provider:?} is not available: {why} (ONNX Runtime from '{}'). Use the GPU build \
         (`make deps-gpu`, then ORT_DYLIB_PATH=.deps/onnxruntime-gpu/onnxruntime/capi/libonnxruntime.so.<version>), \
         choose execution-provider=cpu, or set provider-fallback=true to run on the CPU instead",
        lib.path.display()
    ))
}

/// Why a session could not be made.
#[derive(Debug)]
pub enum CommitError {
    /// The model itself: ONNX Runtime's message (the CPU cannot load it either).
    Model(String),
    /// The execution provider (registering it or starting it failed), with the fallback off.
    Provider(ModelError),
}

/// Creates the session with the requested execution provider (`commit` makes a session from a
/// builder). When that fails with a provider other than the CPU, the CPU is tried: if the CPU
/// cannot load the model either, the model is at fault; if it can, the provider is, and then
/// the CPU session is used with a warning (`provider-fallback`) or the provider's failure is
/// the error. Returns the session and the provider it runs on.
pub fn commit<S>(
    builder: SessionBuilder,
    opts: &LoadOptions,
    commit: impl FnMut(&mut SessionBuilder) -> ort::Result<S>,
) -> Result<(S, ExecutionProvider), CommitError> {
    let mut commit = commit;
    commit_with(
        builder,
        opts,
        |b| apply(b, opts),
        |b| commit(b).map_err(|e| e.to_string()),
    )
}

/// [`commit`] over any builder, for testing the decisions without a GPU.
fn commit_with<B: Clone, S>(
    base: B,
    opts: &LoadOptions,
    register: impl FnOnce(B) -> Result<(B, ExecutionProvider), ModelError>,
    mut commit: impl FnMut(&mut B) -> Result<S, String>,
) -> Result<(S, ExecutionProvider), CommitError> {
    let (mut with_provider, provider) = register(base.clone()).map_err(CommitError::Provider)?;
    let provider_failed = match commit(&mut with_provider) {
        Ok(s) => return Ok((s, provider)),
        Err(e) if provider == ExecutionProvider::Cpu => return Err(CommitError::Model(e)),
        Err(e) => e,
    };
    let mut cpu = base;
    match commit(&mut cpu) {
        Err(e) => Err(CommitError::Model(e)),
        Ok(s) if opts.provider_fallback => {
            gst::warning!(
                CAT,
                "execution provider {provider:?} could not start ({provider_failed}); running on the CPU (provider-fallback=true)"
            );
            Ok((s, ExecutionProvider::Cpu))
        }
        Ok(_) => Err(CommitError::Provider(unavailable(
            provider,
            &format!("it is in the library but could not start: {provider_failed}"),
        ))),
    }
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
        gst::warning!(
            CAT,
            "execution provider {:?} is not available ({why}); running on the CPU (provider-fallback=true)",
            opts.provider
        );
        Ok((builder, ExecutionProvider::Cpu))
    } else {
        Err(unavailable(opts.provider, why))
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
                return Err(unavailable(opts.provider, &msg));
            }
        },
        Ok(false) => "this ONNX Runtime library was built without it".to_string(),
        Err(e) => format!("cannot list the providers: {e}"),
    };
    if opts.provider_fallback {
        gst::warning!(CAT, "{why}; running on the CPU (provider-fallback=true)");
        Ok((builder, ExecutionProvider::Cpu))
    } else {
        Err(unavailable(opts.provider, &why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnxinfer::{ModelType, OptimizationLevel};

    /// A builder whose sessions fail as told: with the provider registered (a provider that is
    /// in the library but cannot start), or always (a broken model).
    #[derive(Clone, Debug)]
    struct Fake {
        provider: bool,
        provider_starts: bool,
        model_ok: bool,
    }

    fn opts(provider: ExecutionProvider, fallback: bool) -> LoadOptions {
        LoadOptions {
            model_type: ModelType::Auto,
            threads: 0,
            spinning: false,
            optimization: OptimizationLevel::All,
            provider,
            provider_fallback: fallback,
        }
    }

    fn run(b: Fake, o: &LoadOptions) -> Result<(&'static str, ExecutionProvider), CommitError> {
        commit_with(
            b,
            o,
            |mut b| {
                b.provider = o.provider != ExecutionProvider::Cpu;
                Ok((b, o.provider))
            },
            |b| match (b.model_ok, b.provider, b.provider_starts) {
                (false, _, _) => Err("Load model failed: protobuf parsing failed".into()),
                (true, true, false) => {
                    Err("CUDA failure 100: no CUDA-capable device is detected".into())
                }
                (true, true, true) => Ok("gpu session"),
                (true, false, _) => Ok("cpu session"),
            },
        )
    }

    #[test]
    fn a_provider_that_cannot_start_is_named_and_falls_back_when_asked() {
        gst::init().unwrap();
        let b = Fake {
            provider: false,
            provider_starts: false,
            model_ok: true,
        };
        match run(b.clone(), &opts(ExecutionProvider::Cuda, false)) {
            Err(CommitError::Provider(ModelError::Runtime(m))) => {
                assert!(
                    m.contains("Cuda")
                        && m.contains("could not start")
                        && m.contains("no CUDA-capable device")
                        && m.contains("provider-fallback"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        let (s, p) = run(b, &opts(ExecutionProvider::Cuda, true)).unwrap();
        assert_eq!((s, p), ("cpu session", ExecutionProvider::Cpu));
    }

    #[test]
    fn a_broken_model_is_the_model_whatever_the_provider() {
        let b = Fake {
            provider: false,
            provider_starts: false,
            model_ok: false,
        };
        for fallback in [false, true] {
            match run(b.clone(), &opts(ExecutionProvider::Tensorrt, fallback)) {
                Err(CommitError::Model(m)) => assert!(m.contains("protobuf"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        let good = Fake {
            provider: false,
            provider_starts: true,
            model_ok: true,
        };
        assert_eq!(
            run(good, &opts(ExecutionProvider::Cuda, false)).unwrap(),
            ("gpu session", ExecutionProvider::Cuda)
        );
    }
}
