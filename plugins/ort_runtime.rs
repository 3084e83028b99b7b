// SPDX-License-Identifier: MPL-2.0
//! Loading ONNX Runtime and the process-wide `ort` environment.
//!
//! `ort` is built with `load-dynamic`: the shared library is opened at run time, once per
//! process. Where it comes from, first match wins:
//!
//! 1. `ORT_DYLIB_PATH` in the environment;
//! 2. the default baked in at build time (`VIDEOAI_ORT_DEFAULT`, see `build.rs`), which is where
//!    `make deps` installs the pinned `onnxruntime` wheel.
//!
//! `ort::init()` panics when the library cannot be loaded, so this module only uses
//! `ort::init_from()` and turns its failure into an error message a person can act on.

use std::path::PathBuf;
use std::sync::OnceLock;

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
pub fn environment() -> Result<&'static ort::environment::Environment, String> {
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
