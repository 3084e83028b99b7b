// SPDX-License-Identifier: MPL-2.0
//! The motion metadata `motiondetect` writes and `onnxinfer motion-gate=true` reads.
//!
//! * One `videoai-motion` custom meta on every frame `motiondetect` looked at: `moving`
//!   (boolean: a region moved), `fraction` (double: the share of the watched picture that
//!   moved, ignore zones left out), `regions` (uint) and `shaking` (boolean: more than
//!   `shake-fraction` of the picture moved at once, as when the camera itself moves).
//! * One `GstVideoRegionOfInterestMeta` per moving region, roi type `motion`, with a `motion`
//!   param (`fraction`: the share of the region's cells that moved). They are not detections:
//!   [`is_motion_region`] tells them apart, and every reader of detections
//!   ([`super::detection`]) leaves them out, so `objecttracker`, `raftsink` and
//!   `detectionoverlay` never see them as objects.

/// Name of the per-frame custom meta.
pub const MOTION_META: &str = "videoai-motion";
/// Name of the param structure on each motion region's ROI meta (and its roi type).
pub const MOTION_PARAM: &str = "motion";

/// What `motiondetect` saw on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FrameMotion {
    pub moving: bool,
    pub fraction: f64,
    pub regions: u32,
    pub shaking: bool,
}

/// A moving region: rectangle in frame pixels and the share of its cells that moved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub rect: (u32, u32, u32, u32),
    pub fraction: f64,
}

/// Attaches the frame's motion meta and one ROI meta per region.
pub fn attach(buffer: &mut gst::BufferRef, motion: &FrameMotion, regions: &[Region]) {
    super::detection::register_inference_meta();
    if let Ok(mut meta) = gst::meta::CustomMeta::add(buffer, MOTION_META) {
        let s = meta.mut_structure();
        s.set("moving", motion.moving);
        s.set("fraction", motion.fraction);
        s.set("regions", motion.regions);
        s.set("shaking", motion.shaking);
    }
    for r in regions {
        let mut meta = gst_video::VideoRegionOfInterestMeta::add(buffer, MOTION_PARAM, r.rect);
        meta.add_param(
            gst::Structure::builder(MOTION_PARAM)
                .field("fraction", r.fraction)
                .build(),
        );
    }
}

/// The frame's motion (`None`: no `motiondetect` looked at it).
pub fn read(buffer: &gst::BufferRef) -> Option<FrameMotion> {
    let meta = gst::meta::CustomMeta::from_buffer(buffer, MOTION_META).ok()?;
    let s = meta.structure();
    Some(FrameMotion {
        moving: s.get("moving").ok()?,
        fraction: s.get("fraction").unwrap_or(0.0),
        regions: s.get("regions").unwrap_or(0),
        shaking: s.get("shaking").unwrap_or(false),
    })
}

/// Whether an ROI meta is a motion region (a `motion` param and no `detection` param).
pub fn is_motion_region(meta: &gst_video::VideoRegionOfInterestMeta) -> bool {
    meta.param(MOTION_PARAM).is_some() && meta.param(super::detection::DETECTION_PARAM).is_none()
}

/// The motion regions on a frame, in meta order.
pub fn regions(buffer: &gst::BufferRef) -> Vec<Region> {
    buffer
        .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
        .filter(|m| is_motion_region(m))
        .map(|m| Region {
            rect: m.rect(),
            fraction: m
                .param(MOTION_PARAM)
                .and_then(|p| p.get::<f64>("fraction").ok())
                .unwrap_or(1.0),
        })
        .collect()
}
