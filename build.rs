//! Build script: plugin version info (gst-plugin-version-helper) and the default location of
//! the ONNX Runtime library installed by `scripts/setup.sh`, baked in as `VIDEOAI_ORT_DEFAULT`.
//!
//! The default is `<repo>/.deps/onnxruntime/onnxruntime/capi/libonnxruntime.so.<ORT_VERSION>`
//! with the version read from `scripts/versions.env`. Set `VIDEOAI_ORT_DEFAULT` while building
//! to bake another path in; `ORT_DYLIB_PATH` at run time overrides either.

use std::path::PathBuf;

fn main() {
    gst_plugin_version_helper::info();

    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let versions = manifest_dir.join("scripts/versions.env");
    println!("cargo:rerun-if-changed={}", versions.display());
    println!("cargo:rerun-if-env-changed=VIDEOAI_ORT_DEFAULT");

    let default = match std::env::var("VIDEOAI_ORT_DEFAULT") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            let version = ort_version(&versions);
            manifest_dir
                .join(".deps/onnxruntime/onnxruntime/capi")
                .join(format!("libonnxruntime.so.{version}"))
                .display()
                .to_string()
        }
    };
    println!("cargo:rustc-env=VIDEOAI_ORT_DEFAULT={default}");
    // The version of the copy `make install` puts next to the plugin (onnxinfer/runtime.rs).
    println!(
        "cargo:rustc-env=VIDEOAI_ORT_VERSION={}",
        ort_version(&versions)
    );
}

/// `ORT_VERSION=…` of scripts/versions.env.
fn ort_version(versions: &std::path::Path) -> String {
    let text = std::fs::read_to_string(versions).unwrap_or_default();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ORT_VERSION="))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("ORT_VERSION=… missing in {}", versions.display()))
}
