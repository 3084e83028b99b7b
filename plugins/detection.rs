// SPDX-License-Identifier: MPL-2.0
//! Detection metadata on buffers, as every videoai element writes and reads it.
//!
//! * One `GstVideoRegionOfInterestMeta` per detection: roi type = the label, rectangle in the
//!   frame's pixels, and a param structure named `detection` with `label` (string), `class-id`
//!   (int), `confidence` (double) and `model` (string: `name@version`).
//! * One `videoai-inference` custom meta per frame an inference element handled, so that frames
//!   without detections still say which model looked at them: `model` (string), `fresh`
//!   (boolean: false when the result was carried over from an earlier frame) and `detections`
//!   (uint).

use crate::event::Detection;

/// Name of the param structure attached to each ROI meta.
pub const DETECTION_PARAM: &str = "detection";
/// Name of the per-frame custom meta.
pub const INFERENCE_META: &str = "videoai-inference";

/// Registers the custom meta once per process (called from plugin init and before first use).
pub fn register_inference_meta() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        if !gst::meta::CustomMeta::is_registered(INFERENCE_META) {
            gst::meta::CustomMeta::register(INFERENCE_META, &[]);
        }
    });
}

/// Attaches one detection as a `GstVideoRegionOfInterestMeta` with its `detection` param.
pub fn attach(buffer: &mut gst::BufferRef, det: &Detection, model: &str) {
    let mut meta =
        gst_video::VideoRegionOfInterestMeta::add(buffer, &det.label, (det.x, det.y, det.w, det.h));
    meta.add_param(
        gst::Structure::builder(DETECTION_PARAM)
            .field("label", det.label.as_str())
            .field("class-id", det.class_id)
            .field("confidence", det.confidence)
            .field("model", model)
            .build(),
    );
}

/// Marks the frame as handled by `model`.
pub fn attach_inference(buffer: &mut gst::BufferRef, model: &str, fresh: bool, detections: u32) {
    register_inference_meta();
    let Ok(mut meta) = gst::meta::CustomMeta::add(buffer, INFERENCE_META) else {
        return;
    };
    let s = meta.mut_structure();
    s.set("model", model);
    s.set("fresh", fresh);
    s.set("detections", detections);
}

/// The model named by the frame's `videoai-inference` meta, if any.
pub fn inference_model(buffer: &gst::BufferRef) -> Option<String> {
    let meta = gst::meta::CustomMeta::from_buffer(buffer, INFERENCE_META).ok()?;
    meta.structure().get::<String>("model").ok()
}

/// The detections on a buffer with the model of each, in meta order. ROI metas without a
/// `detection` param (written by other elements) are returned with class id -1 and
/// confidence 1.0, their roi type as label, and no model.
pub fn read(buffer: &gst::BufferRef) -> Vec<(Detection, Option<String>)> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .map(|meta| {
            let (x, y, w, h) = meta.rect();
            let param = meta.param(DETECTION_PARAM);
            let label = param
                .and_then(|p| p.get::<String>("label").ok())
                .unwrap_or_else(|| meta.roi_type().to_string());
            let class_id = param
                .and_then(|p| p.get::<i32>("class-id").ok())
                .unwrap_or(-1);
            let confidence = param
                .and_then(|p| p.get::<f64>("confidence").ok())
                .unwrap_or(1.0);
            let model = param.and_then(|p| p.get::<String>("model").ok());
            (
                Detection {
                    label,
                    class_id,
                    confidence,
                    x,
                    y,
                    w,
                    h,
                },
                model,
            )
        })
        .collect()
}
