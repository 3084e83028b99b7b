// SPDX-License-Identifier: MPL-2.0
//! `motiondetect` implementation: a BaseTransform working in place (it only adds metas; the
//! pixels are mapped for reading).
//!
//! Threads: the streaming thread runs the detector (`transform_ip`); the application thread
//! sets properties (taken in at start; the thresholds also while playing) and reads `stats`.
//!
//! Lock order: `settings`, then `state`. Neither is held while the other's owner waits.

use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;

use super::detector::{Config, Detector, MAX_CELL};
use crate::formats::motion;
use crate::formats::places::{self, Zone};
use crate::util::histogram::{Histogram, ms};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "motiondetect",
        gst::DebugColorFlags::empty(),
        Some("videoai motion detector"),
    )
});

const DEFAULT_THRESHOLD: f64 = 10.0;
const DEFAULT_CELL: u32 = 8;
const DEFAULT_MIN_AREA: f64 = 0.001;
/// One second.
const DEFAULT_BACKGROUND_TIME: u64 = 1_000_000_000;
const DEFAULT_SHAKE_FRACTION: f64 = 0.5;
/// The frame duration assumed when neither the buffers nor the caps tell it (15 fps).
const FALLBACK_FRAME_NS: u64 = 66_666_667;

/// The formats whose first plane is the luma plane, 8 bits per pixel.
const FORMATS: &[&str] = &["GRAY8", "NV12", "NV21", "I420", "YV12", "Y42B", "Y444"];

#[derive(Debug, Clone)]
struct Settings {
    threshold: f64,
    cell: u32,
    min_area: f64,
    background_time: u64,
    shake_fraction: f64,
    ignore_zones: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            threshold: DEFAULT_THRESHOLD,
            cell: DEFAULT_CELL,
            min_area: DEFAULT_MIN_AREA,
            background_time: DEFAULT_BACKGROUND_TIME,
            shake_fraction: DEFAULT_SHAKE_FRACTION,
            ignore_zones: None,
        }
    }
}

impl Settings {
    fn config(&self) -> Config {
        Config {
            cell: self.cell,
            threshold: self.threshold as f32,
            min_area: self.min_area,
            shake_fraction: self.shake_fraction,
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    frames: u64,
    moving: u64,
    shaking: u64,
    regions: u64,
    time: Histogram,
}

/// Created in `start`, dropped in `stop` (the counts stay for `stats`).
struct State {
    zones: Vec<Zone>,
    info: Option<gst_video::VideoInfo>,
    detector: Option<Detector>,
    /// PTS of the previous frame (for the frame's share of the background time).
    last_pts: Option<gst::ClockTime>,
}

#[derive(Default)]
pub struct MotionDetect {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    counts: Mutex<Counts>,
}

#[glib::object_subclass]
impl ObjectSubclass for MotionDetect {
    const NAME: &'static str = "GstMotionDetect";
    type Type = super::MotionDetect;
    type ParentType = gst_base::BaseTransform;
}

impl MotionDetect {
    fn stats(&self) -> gst::Structure {
        let c = self.counts.lock().unwrap();
        gst::Structure::builder("motiondetect-stats")
            .field("frames", c.frames)
            .field("moving-frames", c.moving)
            .field("still-frames", c.frames - c.moving)
            .field("shaking-frames", c.shaking)
            .field("regions", c.regions)
            .field("mean-ms", ms(c.time.mean()))
            .field("p99-ms", ms(c.time.percentile(0.99)))
            .build()
    }

    /// The frame's duration in ns: its own, the gap since the previous frame, the caps' frame
    /// rate, or 15 fps.
    fn frame_ns(state: &State, buf: &gst::BufferRef) -> u64 {
        if let Some(d) = buf.duration().filter(|d| !d.is_zero()) {
            return d.nseconds();
        }
        if let (Some(now), Some(last)) = (buf.pts(), state.last_pts)
            && now > last
        {
            return (now - last).nseconds();
        }
        state
            .info
            .as_ref()
            .map(|i| i.fps())
            .filter(|f| f.numer() > 0)
            .and_then(|f| gst::ClockTime::SECOND.mul_div_floor(f.denom() as u64, f.numer() as u64))
            .map(|d| d.nseconds())
            .unwrap_or(FALLBACK_FRAME_NS)
    }
}

impl ObjectImpl for MotionDetect {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecDouble::builder("threshold")
                    .nick("Threshold")
                    .blurb(
                        "Luma levels (0-255) a cell's mean must differ from the background's \
                         to count, after the change of light over the whole picture is taken \
                         out. Lower finds fainter objects and lets more noise through. \
                         Default: 10",
                    )
                    .minimum(1.0)
                    .maximum(255.0)
                    .default_value(DEFAULT_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("cell-size")
                    .nick("Cell size")
                    .blurb(
                        "Side in pixels of the cells the luma plane is averaged over (the \
                         detector's resolution; the averaging is what hides sensor noise). \
                         Pixels past the last whole cell on the right and bottom are not \
                         watched. Default: 8",
                    )
                    .minimum(2)
                    .maximum(MAX_CELL)
                    .default_value(DEFAULT_CELL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("min-area")
                    .nick("Minimum area")
                    .blurb(
                        "Share of the picture (0-1) a moving region must cover to count; \
                         smaller ones (a leaf, noise) are ignored. Default: 0.001",
                    )
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_MIN_AREA)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("background-time")
                    .nick("Background time")
                    .blurb(
                        "How long (ns) the running background takes to learn a change. \
                         Something that stopped (or the ghost of something that left) is not \
                         motion from the next frame, as nothing changes there, and leaves the \
                         foreground in a few times this (a running average: longer for a high \
                         contrast); moving regions are learnt 8 times slower. Default: \
                         1000000000 (1 s)",
                    )
                    .minimum(1_000_000)
                    .default_value(DEFAULT_BACKGROUND_TIME)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("shake-fraction")
                    .nick("Shake fraction")
                    .blurb(
                        "Share of the watched picture (0-1) moving at once above which the \
                         frame is marked shaking (the camera itself moves; counted in stats \
                         shaking-frames; every such frame has motion, so a gated onnxinfer \
                         infers it). Default: 0.5",
                    )
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_SHAKE_FRACTION)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("ignore-zones")
                    .nick("Ignore zones")
                    .blurb(
                        "Polygons in frame pixels where motion is ignored (a clock, trees, a \
                         road outside the site): NAME:x1,y1,x2,y2,x3,y3[,...] separated by ';', \
                         as objecttracker's zones. A cell is ignored when its centre is inside \
                         one. Default: none",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "Read-only motiondetect-stats: frames, moving-frames, still-frames, \
                         shaking-frames, regions (moving regions found), mean-ms and p99-ms \
                         (time per frame)",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "threshold" => s.threshold = value.get().expect("type checked upstream"),
            "cell-size" => s.cell = value.get().expect("type checked upstream"),
            "min-area" => s.min_area = value.get().expect("type checked upstream"),
            "background-time" => s.background_time = value.get().expect("type checked upstream"),
            "shake-fraction" => s.shake_fraction = value.get().expect("type checked upstream"),
            "ignore-zones" => s.ignore_zones = value.get().expect("type checked upstream"),
            other => unreachable!("unknown property {other}"),
        }
        let config = s.config();
        drop(s);
        // Thresholds set while playing apply from the next frame; the background stays.
        if let Some(d) = self
            .state
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|st| st.detector.as_mut())
        {
            gst::debug!(CAT, imp = self, "new settings while running: {config:?}");
            d.set_config(config);
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "threshold" => s.threshold.to_value(),
            "cell-size" => s.cell.to_value(),
            "min-area" => s.min_area.to_value(),
            "background-time" => s.background_time.to_value(),
            "shake-fraction" => s.shake_fraction.to_value(),
            "ignore-zones" => s.ignore_zones.to_value(),
            "stats" => {
                drop(s);
                self.stats().to_value()
            }
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for MotionDetect {}

impl ElementImpl for MotionDetect {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Motion detector",
                "Filter/Analyzer/Video",
                "Finds where the picture of a fixed camera moves (luma plane, running \
                 background, light changes and noise ignored, ignore zones) and marks it with \
                 a videoai-motion meta and motion regions, so onnxinfer motion-gate=true infers \
                 only when something moves",
                "videoai developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list(
                    FORMATS
                        .iter()
                        .map(|f| gst_video::VideoFormat::from_string(f)),
                )
                .build();
            [gst::PadDirection::Src, gst::PadDirection::Sink]
                .into_iter()
                .map(|direction| {
                    let name = if direction == gst::PadDirection::Src {
                        "src"
                    } else {
                        "sink"
                    };
                    gst::PadTemplate::new(name, direction, gst::PadPresence::Always, &caps).unwrap()
                })
                .collect()
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for MotionDetect {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let zones =
            places::parse_zones(settings.ignore_zones.as_deref().unwrap_or("")).map_err(|e| {
                gst::error_msg!(
                    gst::ResourceError::Settings,
                    ("ignore-zones: {e}; expected NAME:x1,y1,x2,y2,x3,y3[,...] separated by ';'")
                )
            })?;
        *self.counts.lock().unwrap() = Counts::default();
        *self.state.lock().unwrap() = Some(State {
            zones,
            info: None,
            detector: None,
            last_pts: None,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = None;
        Ok(())
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "not raw video: {incaps}"))?;
        let (w, h) = (info.width() as f64, info.height() as f64);
        let outside: Vec<String> = {
            let mut guard = self.state.lock().unwrap();
            let Some(st) = guard.as_mut() else {
                return Err(gst::loggable_error!(CAT, "caps before start"));
            };
            st.info = Some(info);
            st.detector = None;
            st.zones
                .iter()
                .filter(|z| !z.meets_frame(w, h))
                .map(|z| z.name.clone())
                .collect()
        };
        for zone in outside {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                ("ignore zone '{zone}' lies entirely outside the {w}x{h} frame: it ignores nothing (its coordinates are frame pixels)")
            );
        }
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        // A seek or a new stream: the background is learnt again from the next frame.
        if matches!(
            event.view(),
            gst::EventView::FlushStop(_) | gst::EventView::StreamStart(_)
        ) && let Some(st) = self.state.lock().unwrap().as_mut()
        {
            if let Some(d) = st.detector.as_mut() {
                d.reset();
            }
            st.last_pts = None;
        }
        self.parent_sink_event(event)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        let started = Instant::now();
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("not started"));
            return Err(gst::FlowError::NotNegotiated);
        };
        let Some(info) = state.info.clone() else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("a buffer before caps"));
            return Err(gst::FlowError::NotNegotiated);
        };
        if state.detector.is_none() {
            let d = Detector::new(settings.config(), info.width(), info.height(), &state.zones)
                .map_err(|e| {
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::Settings,
                        (
                            "cannot watch the {}x{} frames: {e}",
                            info.width(),
                            info.height()
                        )
                    );
                    gst::FlowError::Error
                })?;
            state.detector = Some(d);
        }
        // A gap or an empty buffer has no picture to look at: passed on as it is.
        if buf.flags().contains(gst::BufferFlags::GAP) || buf.size() == 0 {
            return Ok(gst::FlowSuccess::Ok);
        }
        let rate = (Self::frame_ns(state, buf) as f64 / settings.background_time as f64) as f32;
        state.last_pts = buf.pts().or(state.last_pts);
        let result = {
            let frame = match gst_video::VideoFrameRef::from_buffer_ref_readable(&*buf, &info) {
                Ok(f) => f,
                Err(_) => {
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::Format,
                        (
                            "cannot map a {} byte buffer as a {}x{} {} frame",
                            buf.size(),
                            info.width(),
                            info.height(),
                            info.format().to_str()
                        )
                    );
                    return Err(gst::FlowError::Error);
                }
            };
            let stride = gst_video::prelude::VideoFrameExt::plane_stride(&frame)[0] as usize;
            let luma = frame.plane_data(0).map_err(|_| gst::FlowError::Error)?;
            let detector = state.detector.as_mut().expect("made above");
            detector.analyse(luma, stride, rate)
        };
        drop(guard);
        let (frame_motion, regions) = result;
        motion::attach(buf, &frame_motion, &regions);
        let mut c = self.counts.lock().unwrap();
        c.frames += 1;
        c.moving += frame_motion.moving as u64;
        c.shaking += frame_motion.shaking as u64;
        c.regions += frame_motion.regions as u64;
        c.time.record(started.elapsed());
        Ok(gst::FlowSuccess::Ok)
    }
}
