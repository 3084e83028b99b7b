// SPDX-License-Identifier: MPL-2.0
//! ONNX Runtime itself: loading the library, the process-wide environment, and making sessions
//! on an execution provider. The rest of onnxinfer does not touch `ort`'s builder; failures
//! come back as a [`RuntimeError`], which `model.rs` wraps.
//!
//! **The library.** `ort` is built with `load-dynamic`: the shared library is opened at run
//! time, once per process. Where it comes from, first match wins:
//!
//! 1. the copy installed with the plugin: `<the plugin's directory>/../videoai/
//!    libonnxruntime.so.<version>` (`make install`, the .deb and `meson install` put it there,
//!    see scripts/install.sh);
//! 2. `ORT_DYLIB_PATH` in the environment;
//! 3. only for a plugin loaded from the source tree it was built in (or registered statically,
//!    as in the tests): the default baked in at build time (`VIDEOAI_ORT_DEFAULT`, see
//!    `build.rs`), which is where `make deps` installs the pinned `onnxruntime` wheel. An
//!    installed plugin never reaches into a source tree.
//!
//! The choice is logged at INFO (`GST_DEBUG=onnxinfer:4`) when the library is loaded.
//!
//! `ort::init()` panics when the library cannot be loaded, so this module only uses
//! `ort::init_from()` and turns its failure into an error message a person can act on.
//!
//! **Execution providers.** CPU always; CUDA and TensorRT with the cargo features `cuda` and
//! `tensorrt` and an ONNX Runtime library that has them (the `onnxruntime-gpu` wheel, see
//! `make deps-gpu`). A provider that is not there, or that is there but cannot start (no
//! device, CUDA libraries missing: ONNX Runtime only finds out when the session is created), is
//! an error naming it, or with `provider-fallback` a warning and the CPU.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
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

/// The file GStreamer loaded the plugin from (`None` when it was registered statically).
static PLUGIN_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Called at plugin init with `gst::Plugin::filename()`.
pub fn set_plugin_file(path: PathBuf) {
    let _ = PLUGIN_FILE.set(path);
}

const INSTALLED: &str = "the copy installed with the plugin";
const INSTALLED_MISSING: &str =
    "the copy installed with the plugin, which is missing: reinstall videoai or set ORT_DYLIB_PATH";

/// Where the installed copy of ONNX Runtime sits for a plugin at `plugin`.
pub fn installed_library(plugin: &Path) -> PathBuf {
    let dir = plugin.parent().unwrap_or(Path::new("."));
    dir.join("../videoai")
        .join(concat!("libonnxruntime.so.", env!("VIDEOAI_ORT_VERSION")))
}

/// Whether `plugin` lies in the source tree this library was built from (cargo's `target/`,
/// meson's build directory).
fn in_source_tree(plugin: &Path, source: &Path) -> bool {
    plugin.starts_with(source)
        || match (plugin.canonicalize(), source.canonicalize()) {
            (Ok(p), Ok(s)) => p.starts_with(s),
            _ => false,
        }
}

/// The library choice for a plugin loaded from `plugin` (`None`: registered statically), with
/// `ORT_DYLIB_PATH` = `env`; `exists` tells whether a file is there.
fn choose(
    plugin: Option<&Path>,
    env: Option<OsString>,
    source: &Path,
    exists: impl Fn(&Path) -> bool,
) -> LibraryChoice {
    let installed = plugin.map(installed_library);
    if let Some(path) = installed.as_ref().filter(|p| exists(p)) {
        return LibraryChoice {
            path: path.clone(),
            origin: INSTALLED,
        };
    }
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        return LibraryChoice {
            path: PathBuf::from(p),
            origin: "ORT_DYLIB_PATH",
        };
    }
    match (plugin, installed) {
        (Some(p), Some(path)) if !in_source_tree(p, source) => LibraryChoice {
            path,
            origin: INSTALLED_MISSING,
        },
        _ => LibraryChoice {
            path: PathBuf::from(env!("VIDEOAI_ORT_DEFAULT")),
            origin: "the default built into the plugin (the source tree's .deps)",
        },
    }
}

/// The library this process uses (or would use).
pub fn library_choice() -> LibraryChoice {
    choose(
        PLUGIN_FILE.get().map(PathBuf::as_path),
        std::env::var_os("ORT_DYLIB_PATH"),
        Path::new(env!("CARGO_MANIFEST_DIR")),
        Path::is_file,
    )
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
                    "ONNX Runtime library not found: '{}' (from {}) does not exist. Reinstall videoai \
                     (make install, the .deb), run `make deps` in the videoai source tree, or set \
                     ORT_DYLIB_PATH to a libonnxruntime.so.1.x file (for example from `pip install \
                     onnxruntime`: onnxruntime/capi/libonnxruntime.so.1.*)",
                    choice.path.display(),
                    choice.origin
                ));
            }
            gst::info!(
                CAT,
                "loading ONNX Runtime from '{}' ({})",
                choice.path.display(),
                choice.origin
            );
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
    #[test]
    fn the_installed_copy_comes_first_then_the_environment_and_never_a_source_tree() {
        let src = Path::new("/src/videoai");
        let plugin = Path::new("/usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstvideoai.so");
        let copy = installed_library(plugin);
        assert!(copy.starts_with("/usr/lib/x86_64-linux-gnu/gstreamer-1.0/../videoai"));
        let env = || Some(OsString::from("/opt/ort/libonnxruntime.so.1.31.1"));
        // Installed: its copy, even with ORT_DYLIB_PATH set.
        let c = choose(Some(plugin), env(), src, |p| p == copy);
        assert_eq!((c.path, c.origin), (copy.clone(), INSTALLED));
        // Its copy gone: ORT_DYLIB_PATH.
        let c = choose(Some(plugin), env(), src, |_| false);
        assert_eq!(c.path, PathBuf::from("/opt/ort/libonnxruntime.so.1.31.1"));
        // Neither: the missing copy is named, not the source tree's .deps.
        let c = choose(Some(plugin), None, src, |_| false);
        assert_eq!((c.path, c.origin), (copy, INSTALLED_MISSING));
        // A plugin in its source tree, or registered statically: the built-in default.
        let dev = Path::new("/src/videoai/target/release/libgstvideoai.so");
        let built_in = PathBuf::from(env!("VIDEOAI_ORT_DEFAULT"));
        assert_eq!(choose(Some(dev), None, src, |_| false).path, built_in);
        assert_eq!(choose(None, None, src, |_| false).path, built_in);
        assert_eq!(
            choose(None, Some(OsString::new()), src, |_| false).path,
            built_in
        );
    }

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
