// SPDX-License-Identifier: MPL-2.0
//! ONNX Runtime itself: loading the library, the process-wide environment, and making sessions
//! on an execution provider. The rest of onnxinfer does not touch `ort`'s builder; failures
//! come back as a [`RuntimeError`], which `model.rs` wraps.
//!
//! **The library.** `ort` is built with `load-dynamic`: the shared library is opened at run
//! time, once per process. Where it comes from, first match wins:
//!
//! 1. `ORT_DYLIB_PATH` in the environment;
//! 2. the default baked in at build time (`VIDEOAI_ORT_DEFAULT`, see `build.rs`), which is where
//!    `make deps` installs the pinned `onnxruntime` wheel.
//!
//! `ort::init()` panics when the library cannot be loaded, so this module only uses
//! `ort::init_from()` and turns its failure into an error message a person can act on.
//!
//! **Execution providers.** CPU always; CUDA and TensorRT with the cargo features `cuda` and
//! `tensorrt` and an ONNX Runtime library that has them (the `onnxruntime-gpu` wheel, see
//! `make deps-gpu`). A provider that is not there, or that is there but cannot start (no
//! device, CUDA libraries missing: ONNX Runtime only finds out when the session is created), is
//! an error naming it, or with `provider-fallback` a warning and the CPU.

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};

use super::{CAT, ExecutionProvider, OptimizationLevel};

/// Why ONNX Runtime could not give a session. Each message says what to do.
#[derive(Debug, Clone)]
pub enum RuntimeError {
    /// The library is missing or cannot be loaded, or its environment cannot be created.
    Library(String),
    /// A session option was refused.
    Session(String),
    /// The execution provider is not there or cannot start (and `provider-fallback` is off).
    Provider(String),
    /// ONNX Runtime cannot load the model, on the CPU either: the model is at fault.
    Model(String),
}

impl std::fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeError::Library(s)
            | RuntimeError::Session(s)
            | RuntimeError::Provider(s)
            | RuntimeError::Model(s) => f.write_str(s),
        }
    }
}

/// How a session is made.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// Intra-op threads; 0 = ONNX Runtime's default (one per core).
    pub threads: usize,
    /// Let idle intra-op threads spin (busy-wait) for the next run.
    pub spinning: bool,
    pub optimization: OptimizationLevel,
    pub provider: ExecutionProvider,
    /// Use the CPU (with a warning) when the provider is not there.
    pub provider_fallback: bool,
}

/// A session for the model in `bytes`, and the provider it runs on.
pub fn session_from_memory(
    bytes: &[u8],
    config: &SessionConfig,
) -> Result<(Session, ExecutionProvider), RuntimeError> {
    let env = environment().map_err(RuntimeError::Library)?;
    let refused =
        |what: &str, e: &dyn std::fmt::Display| RuntimeError::Session(format!("{what}: {e}"));
    let level = match config.optimization {
        OptimizationLevel::Disable => GraphOptimizationLevel::Disable,
        OptimizationLevel::Basic => GraphOptimizationLevel::Level1,
        OptimizationLevel::Extended => GraphOptimizationLevel::Level2,
        OptimizationLevel::All => GraphOptimizationLevel::All,
    };
    let mut builder = Session::builder(env)
        .map_err(|e| refused("cannot create an ONNX Runtime session", &e))?
        .with_optimization_level(level)
        .map_err(|e| refused("cannot set the optimization level", &e))?
        .with_intra_op_spinning(config.spinning)
        .map_err(|e| refused("cannot set intra-op spinning", &e))?;
    if config.threads > 0 {
        builder = builder.with_intra_threads(config.threads).map_err(|e| {
            refused(
                &format!("cannot set {} inference threads", config.threads),
                &e,
            )
        })?;
    }
    commit(builder, config, |b| b.commit_from_memory(bytes))
}

/// Where the ONNX Runtime library is looked for, and why.
#[derive(Debug, Clone)]
pub struct LibraryChoice {
    pub path: PathBuf,
    pub origin: &'static str,
}

/// The library this process uses (or would use).
pub fn library_choice() -> LibraryChoice {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => LibraryChoice {
            path: PathBuf::from(p),
            origin: "ORT_DYLIB_PATH",
        },
        _ => LibraryChoice {
            path: PathBuf::from(env!("VIDEOAI_ORT_DEFAULT")),
            origin: "the default built into the plugin",
        },
    }
}

static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// The shared `ort` environment, loading the library on first use.
///
/// The error string names the file tried, where that path came from and what to do.
fn environment() -> Result<&'static ort::environment::Environment, String> {
    ENVIRONMENT
        .get_or_init(|| {
            let choice = library_choice();
            if !choice.path.is_file() {
                return Err(format!(
                    "ONNX Runtime library not found: '{}' (from {}) does not exist. Run `make deps` in \
                     the videoai source tree, or set ORT_DYLIB_PATH to a libonnxruntime.so.1.x file \
                     (for example from `pip install onnxruntime`: onnxruntime/capi/libonnxruntime.so.1.*)",
                    choice.path.display(),
                    choice.origin
                ));
            }
            let builder = ort::init_from(&choice.path).map_err(|e| {
                format!(
                    "could not load ONNX Runtime from '{}' (from {}): {e}. Set ORT_DYLIB_PATH to a \
                     libonnxruntime.so of version 1.31 or newer",
                    choice.path.display(),
                    choice.origin
                )
            })?;
            builder
                .with_name("videoai")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("could not create the ONNX Runtime environment: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn unavailable(provider: ExecutionProvider, why: &str) -> RuntimeError {
    let lib = library_choice();
    RuntimeError::Provider(format!(
        "execution provider {provider:?} is not available: {why} (ONNX Runtime from '{}'). Use the GPU build \
         (`make deps-gpu`, then ORT_DYLIB_PATH=.deps/onnxruntime-gpu/onnxruntime/capi/libonnxruntime.so.<version>), \
         choose execution-provider=cpu, or set provider-fallback=true to run on the CPU instead",
        lib.path.display()
    ))
}

/// Creates the session with the requested execution provider (`commit` makes a session from a
/// builder). When that fails with a provider other than the CPU, the CPU is tried: if the CPU
/// cannot load the model either, the model is at fault; if it can, the provider is, and then
/// the CPU session is used with a warning (`provider-fallback`) or the provider's failure is
/// the error. Returns the session and the provider it runs on.
fn commit<S>(
    builder: SessionBuilder,
    opts: &SessionConfig,
    commit: impl FnMut(&mut SessionBuilder) -> ort::Result<S>,
) -> Result<(S, ExecutionProvider), RuntimeError> {
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
    opts: &SessionConfig,
    register: impl FnOnce(B) -> Result<(B, ExecutionProvider), RuntimeError>,
    mut commit: impl FnMut(&mut B) -> Result<S, String>,
) -> Result<(S, ExecutionProvider), RuntimeError> {
    let (mut with_provider, provider) = register(base.clone())?;
    let provider_failed = match commit(&mut with_provider) {
        Ok(s) => return Ok((s, provider)),
        Err(e) if provider == ExecutionProvider::Cpu => return Err(RuntimeError::Model(e)),
        Err(e) => e,
    };
    let mut cpu = base;
    match commit(&mut cpu) {
        Err(e) => Err(RuntimeError::Model(e)),
        Ok(s) if opts.provider_fallback => {
            gst::warning!(
                CAT,
                "execution provider {provider:?} could not start ({provider_failed}); running on the CPU (provider-fallback=true)"
            );
            Ok((s, ExecutionProvider::Cpu))
        }
        Ok(_) => Err(unavailable(
            provider,
            &format!("it is in the library but could not start: {provider_failed}"),
        )),
    }
}

/// Registers the requested provider; returns the builder and the provider actually used.
fn apply(
    builder: SessionBuilder,
    opts: &SessionConfig,
) -> Result<(SessionBuilder, ExecutionProvider), RuntimeError> {
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
    opts: &SessionConfig,
    why: &str,
) -> Result<(SessionBuilder, ExecutionProvider), RuntimeError> {
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
    opts: &SessionConfig,
    available: ort::Result<bool>,
    ep: impl FnOnce() -> ort::ep::ExecutionProviderDispatch,
) -> Result<(SessionBuilder, ExecutionProvider), RuntimeError> {
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

    /// A builder whose sessions fail as told: with the provider registered (a provider that is
    /// in the library but cannot start), or always (a broken model).
    #[derive(Clone, Debug)]
    struct Fake {
        provider: bool,
        provider_starts: bool,
        model_ok: bool,
    }

    fn opts(provider: ExecutionProvider, fallback: bool) -> SessionConfig {
        SessionConfig {
            threads: 0,
            spinning: false,
            optimization: OptimizationLevel::All,
            provider,
            provider_fallback: fallback,
        }
    }

    fn run(b: Fake, o: &SessionConfig) -> Result<(&'static str, ExecutionProvider), RuntimeError> {
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
            Err(RuntimeError::Provider(m)) => {
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
                Err(RuntimeError::Model(m)) => assert!(m.contains("protobuf"), "{m}"),
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
