// SPDX-License-Identifier: MPL-2.0
//! Bad input ends the pipeline with an error that names the problem, and never a panic.

use crate::common;
use crate::run_infer;

use std::str::FromStr;
use std::time::Duration;

use gst::prelude::*;

#[test]
fn missing_model_file() {
    let out = run_infer(
        "model-location=/nonexistent/dir/model.onnx",
        "video/x-raw,format=RGB,width=64,height=64",
    );
    let e = out.first_error();
    assert!(!out.eos, "{out:?}");
    assert!(
        e.contains("/nonexistent/dir/model.onnx") && e.contains("does not exist"),
        "{e}"
    );
    assert!(e.contains("onnxinfer"), "error names the element: {e}");
}

#[test]
fn no_model_set() {
    let out = run_infer("", "video/x-raw,format=RGB,width=64,height=64");
    let e = out.first_error();
    assert!(
        e.contains("no model set") && e.contains("model-location"),
        "{e}"
    );
}

#[test]
fn not_an_onnx_file() {
    let dir = common::TempDir::new("notonnx");
    let bogus = dir.join("bogus.onnx");
    std::fs::write(&bogus, "this is not a protobuf model\n").unwrap();
    let out = run_infer(
        &format!("model-location=\"{}\"", bogus.display()),
        "video/x-raw,format=RGB,width=64,height=64",
    );
    let e = out.first_error();
    assert!(!out.eos, "{out:?}");
    assert!(
        e.contains(&bogus.display().to_string()) && e.contains("not a valid ONNX model"),
        "{e}"
    );
}

#[test]
fn missing_labels_file() {
    let out = run_infer(
        &format!(
            "model-location=\"{}\" labels-location=/nonexistent/labels.txt",
            common::model().display()
        ),
        "video/x-raw,format=RGB,width=64,height=64",
    );
    let e = out.first_error();
    assert!(
        e.contains("/nonexistent/labels.txt") && e.contains("labels"),
        "{e}"
    );
}

#[test]
fn unsupported_caps_format_at_link_time() {
    // With caps written between the elements, gst-launch syntax refuses the link itself.
    common::init();
    let err = gst::parse::launch(&format!(
        "videotestsrc num-buffers=3 ! video/x-raw,format=YUY2,width=64,height=64 ! onnxinfer model-location=\"{}\" ! fakesink",
        common::model().display()
    ))
    .expect_err("YUY2 cannot link to onnxinfer")
    .to_string();
    assert!(err.contains("onnxinfer") && err.contains("YUY2"), "{err}");
}

#[test]
fn unsupported_caps_format_at_negotiation() {
    // The format is only known once data flows (as with a decoder): linking succeeds,
    // negotiation fails, and onnxinfer says why.
    common::init();
    let p = common::parse(&format!(
        "videotestsrc num-buffers=3 ! capsfilter name=cf ! onnxinfer model-location=\"{}\" ! fakesink",
        common::model().display()
    ));
    p.by_name("cf").unwrap().set_property(
        "caps",
        gst::Caps::from_str("video/x-raw,format=YUY2,width=64,height=64").unwrap(),
    );
    let out = common::run(&p, Duration::from_secs(30));
    assert!(!out.eos, "{out:?}");
    assert!(out.first_error().contains("not-negotiated"), "{out:?}");
    // The caps query is only a probe, so onnxinfer warns (once) rather than failing the
    // pipeline itself; the warning says what is wrong and what to do.
    let said: Vec<_> = out
        .warnings
        .iter()
        .filter(|w| w.contains("onnxinfer") && w.contains("YUY2"))
        .collect();
    assert_eq!(said.len(), 1, "{out:?}");
    assert!(
        said[0].contains("not supported") && said[0].contains("videoconvert"),
        "{said:?}"
    );
}

#[test]
fn refused_probe_is_not_fatal_when_upstream_has_another_format() {
    // Upstream asks about a format onnxinfer cannot read, then settles on one it can.
    common::init();
    let p = common::parse(&format!(
        "videotestsrc num-buffers=3 ! video/x-raw,width=64,height=64 ! onnxinfer model-location=\"{}\" ! fakesink",
        common::model().display()
    ));
    let infer = p
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "onnxinfer"))
        .unwrap();
    let probe = gst::Caps::from_str("video/x-raw,format=YUY2,width=64,height=64").unwrap();
    assert!(
        infer
            .static_pad("sink")
            .unwrap()
            .query_caps(Some(&probe))
            .is_empty()
    );
    let out = common::run(&p, Duration::from_secs(30));
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
}

#[test]
fn videoconvert_in_front_fixes_the_format() {
    let out = run_infer(
        &format!("model-location=\"{}\"", common::model().display()),
        "video/x-raw,format=YUY2,width=64,height=64 ! videoconvert",
    );
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
}

#[test]
fn onnx_runtime_missing_is_reported() {
    // The library is loaded once per process, so this runs in a child process of its own with
    // ORT_DYLIB_PATH pointing nowhere.
    if std::env::var_os("VIDEOAI_TEST_CHILD").is_some() {
        let out = run_infer(
            &format!("model-location=\"{}\"", common::model().display()),
            "video/x-raw,format=RGB,width=64,height=64",
        );
        let e = out.first_error();
        assert!(
            e.contains("ONNX Runtime library not found")
                && e.contains("/nonexistent/libonnxruntime.so"),
            "{e}"
        );
        assert!(e.contains("ORT_DYLIB_PATH"), "{e}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new(exe)
        .args([
            &common::test_name(module_path!(), "onnx_runtime_missing_is_reported"),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VIDEOAI_TEST_CHILD", "1")
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .status()
        .unwrap();
    assert!(status.success(), "child test failed: {status}");
}

#[test]
fn zero_std_is_refused_at_start() {
    let out = run_infer(
        &format!(
            "model-location=\"{}\" std=\"<0.0,0.0,0.0>\"",
            common::model().display()
        ),
        "video/x-raw,format=RGB,width=64,height=64",
    );
    let e = out.first_error();
    assert!(!out.eos, "{out:?}");
    assert!(e.contains("std") && e.contains("0"), "{e}");
}

#[test]
fn mean_with_two_values_is_refused_at_start() {
    let out = run_infer(
        &format!(
            "model-location=\"{}\" mean=\"<0.5,0.5>\"",
            common::model().display()
        ),
        "video/x-raw,format=RGB,width=64,height=64",
    );
    let e = out.first_error();
    assert!(!out.eos, "{out:?}");
    assert!(
        e.contains("mean") && e.contains("2 values") && e.contains("one or three"),
        "{e}"
    );
}

#[test]
fn empty_labels_file_is_warned_about() {
    let dir = common::TempDir::new("emptylabels");
    let labels = dir.join("empty.txt");
    std::fs::write(&labels, "\n\n").unwrap();
    let out = run_infer(
        &format!(
            "model-location=\"{}\" labels-location=\"{}\"",
            common::model().display(),
            labels.display()
        ),
        "video/x-raw,format=RGB,width=64,height=64",
    );
    assert!(out.eos && out.errors.is_empty(), "{out:?}");
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains(&labels.display().to_string()) && w.contains("no labels")),
        "{out:?}"
    );
}
