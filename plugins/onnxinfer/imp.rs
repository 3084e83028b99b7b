// SPDX-License-Identifier: MPL-2.0
//! `onnxinfer` implementation.
//!
//! Every buffer goes one way, whether it is a frame of one stream or a `framesync` batch (a
//! single stream is a batch of one): the per-stream rules ([`super::cursor`]) pick, for each
//! frame, whether it is inferred and by which model; [`Engine::prepare`] preprocesses the frames
//! to infer into jobs, one per model run; the jobs run; their results are decoded and attached
//! ([`super::attach`]).
//!
//! Threads: the streaming thread runs frames. With `pipelining=false` (default) the jobs run on
//! it too (`transform_ip`); with `pipelining=true` they run on the inference thread
//! ([`super::worker`]) while the streaming thread preprocesses the next buffer
//! (`generate_output`), and a buffer leaves when the next one came (or a serialized event,
//! query or EOS drains it). A model set while the element runs is loaded and warmed up on a
//! thread of its own ([`super::models::Loader`]) and switched in by the streaming thread
//! between two buffers; models taken out of use are dropped on a thread of their own. The
//! application thread (properties) never waits for the streaming thread.
//!
//! Lock order: `state`, then `settings`, then `stats`, then the small ones (`swaps`' running
//! models and warm-up size, `warned_formats`). Only the streaming thread (and start/stop) takes `state`, and
//! nobody takes it while holding another lock: the streaming thread copies what it needs from
//! `settings` and releases it before taking `state` (a refused swap, reported from the
//! streaming thread, takes `settings` with `state` held).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use super::CAT;
use super::cursor::{Cursors, Pick, Seen};
use super::engine::{Job, Ran, Timings};
use super::formats::{self, EntryFrame, WarnedOnce};
use super::models::{Models, Role};
use super::preprocess::SUPPORTED_FORMATS;
use super::settings::Settings;
use super::stats::{GateCounts, Stats};
use super::swap::Swaps;
use super::work::{self, FrameWork, InFlight, Work, frame_buffer, roi_regions};
use super::worker::Worker;
use super::{attach, labels};
use crate::formats::batch::{self, Status};
use crate::formats::motion;

/// Created in `start`, dropped in `stop`.
struct State {
    models: Models,
    labels: Vec<String>,
    /// Negotiated video (`None` with batch caps).
    info: Option<gst_video::VideoInfo>,
    stream_id: Option<String>,
    /// Batch caps (`framesync`).
    batch: bool,
    cursors: Cursors,
    worker: Option<Worker>,
    in_flight: Option<InFlight>,
    /// Input tensors written to `input-dump-location` so far.
    dumped: u64,
}

pub struct OnnxInfer {
    settings: Arc<Mutex<Settings>>,
    state: Mutex<Option<State>>,
    stats: Arc<Mutex<Stats>>,
    /// Models set while running, and the canary's fate (shares `settings` and `stats`).
    swaps: Arc<Swaps>,
    /// Between `start` and `stop`.
    running: AtomicBool,
    /// `pipelining=true`: one frame period (ns) added to the latency; 0 when unknown.
    frame_period: AtomicU64,
    /// Formats upstream asked about that we cannot read, and invalid model outputs (warned
    /// about once each per run).
    warned_formats: WarnedOnce,
    warned_invalid: AtomicBool,
    /// `motion-gate=true` on frames without a motion meta (warned about once per run).
    warned_no_motion: AtomicBool,
}

impl Default for OnnxInfer {
    fn default() -> Self {
        let settings = Arc::new(Mutex::new(Settings::default()));
        let stats = Arc::new(Mutex::new(Stats::default()));
        OnnxInfer {
            swaps: Arc::new(Swaps::new(settings.clone(), stats.clone())),
            settings,
            state: Mutex::new(None),
            stats,
            running: AtomicBool::new(false),
            frame_period: AtomicU64::new(0),
            warned_formats: WarnedOnce::default(),
            warned_invalid: AtomicBool::new(false),
            warned_no_motion: AtomicBool::new(false),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for OnnxInfer {
    const NAME: &'static str = "GstOnnxInfer";
    type Type = super::OnnxInfer;
    type ParentType = gst_base::BaseTransform;
}

impl OnnxInfer {
    /// Posts that the primary model failed.
    fn model_failed(&self, e: &str) -> gst::FlowError {
        gst::element_imp_error!(self, gst::LibraryError::Failed, ("{e}"));
        gst::FlowError::Error
    }

    /// The frames of `buf` and what the per-stream rules say for each; switches in models
    /// loaded since the last buffer first.
    fn frames(
        &self,
        state: &mut State,
        settings: &Settings,
        buf: &gst::BufferRef,
    ) -> Result<(Option<Vec<batch::Entry>>, Vec<FrameWork>), gst::FlowError> {
        let events = state.models.apply(&self.swaps.loader, state.info.as_ref());
        self.swaps.report(events);
        let mut frames = Vec::new();
        let entries = if state.batch {
            let Some(entries) = batch::read(buf) else {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    (
                        "a {} buffer without its {}: batches come from framesync",
                        batch::CAPS_NAME,
                        batch::META_NAME
                    )
                );
                return Err(gst::FlowError::Error);
            };
            let mut unreadable = 0u64;
            for (i, e) in entries.iter().enumerate() {
                let Some(buffer) = e.buffer.as_ref().filter(|_| e.status == Status::Fresh) else {
                    continue;
                };
                match self.readable(e, buffer) {
                    Some(info) => frames.push(FrameWork::new(Some(i), e.stream_id.clone(), info)),
                    None => unreadable += 1,
                }
            }
            let mut stats = self.stats.lock().unwrap();
            stats.frames += frames.len() as u64 + unreadable;
            stats.skipped += unreadable;
            stats.batches += 1;
            Some(entries)
        } else {
            let Some(info) = state.info.clone() else {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Negotiation,
                    ("got a buffer before caps")
                );
                return Err(gst::FlowError::NotNegotiated);
            };
            self.stats.lock().unwrap().frames += 1;
            let stream = state.stream_id.clone().unwrap_or_default();
            frames.push(FrameWork::new(None, stream, info));
            None
        };
        let rules = settings.rules(state.models.canary.is_some());
        let mut gate = GateCounts::default();
        for f in &mut frames {
            let b = frame_buffer(buf, entries.as_deref(), f.entry).unwrap_or(buf);
            let seen = Seen {
                pts: b.pts().map(|t| t.nseconds()),
                motion: rules.gate.and_then(|_| motion::read(b)),
            };
            let (pick, why) = state.cursors.pick(&f.stream, &rules, seen);
            f.pick = pick;
            if let Some(why) = why {
                gate.count(why);
            }
            if settings.roi_only && matches!(f.pick, Pick::Infer { .. }) {
                f.regions = roi_regions(b);
            }
        }
        if rules.gate.is_some() {
            self.stats.lock().unwrap().gate.merge(&gate);
            if gate.no_motion_meta > 0 && !self.warned_no_motion.swap(true, Ordering::SeqCst) {
                gst::element_imp_warning!(
                    self,
                    gst::CoreError::Negotiation,
                    ("motion-gate=true, but no motiondetect looked at the frames (no videoai-motion meta): every frame is inferred as without the gate; put motiondetect upstream (before framesync when batching)")
                );
            }
        }
        Ok((entries, frames))
    }

    /// The video info of a batch entry whose frame onnxinfer can read; warns (once per format)
    /// or logs why not.
    fn readable(&self, e: &batch::Entry, buffer: &gst::Buffer) -> Option<gst_video::VideoInfo> {
        match formats::entry_frame(e.caps.as_ref(), buffer) {
            EntryFrame::Readable(info) => Some(info),
            EntryFrame::Damaged(info) => {
                gst::warning!(
                    CAT,
                    imp = self,
                    "batch entry of stream {}: a {} byte buffer is not a {}x{} {} frame; skipped",
                    e.stream_id,
                    buffer.size(),
                    info.width(),
                    info.height(),
                    info.format().to_str()
                );
                None
            }
            EntryFrame::Unreadable(what) => {
                if self.warned_formats.first(&what) {
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Format,
                        (
                            "batch entry of stream {} is {what}, which onnxinfer cannot read; its frames are passed on without inference (put videoconvert before framesync)",
                            e.stream_id
                        )
                    );
                }
                None
            }
        }
    }

    /// Preprocesses the frames in `only` that are to be inferred into jobs (with whether each
    /// is the canary's). A canary that cannot take its frames is switched off and they go to
    /// the primary.
    #[allow(clippy::too_many_arguments)]
    fn jobs(
        &self,
        state: &mut State,
        roi_only: bool,
        buf: &gst::BufferRef,
        entries: Option<&[batch::Entry]>,
        frames: &mut [FrameWork],
        only: &[usize],
    ) -> Result<Vec<(bool, Job)>, gst::FlowError> {
        let mut jobs = Vec::new();
        for canary in [true, false] {
            let chosen: Vec<usize> = only
                .iter()
                .copied()
                .filter(|&i| frames[i].pick == Pick::Infer { canary })
                .collect();
            if chosen.is_empty() {
                continue;
            }
            let mut mapped = Vec::with_capacity(chosen.len());
            for &i in &chosen {
                let f = &frames[i];
                let b = frame_buffer(buf, entries, f.entry).unwrap_or(buf);
                match gst_video::VideoFrameRef::from_buffer_ref_readable(b, &f.info) {
                    Ok(frame) => mapped.push((i, frame)),
                    Err(_) => {
                        gst::element_imp_error!(
                            self,
                            gst::StreamError::Decode,
                            (
                                "cannot map a {} byte buffer of stream '{}' as {}x{} {}",
                                b.size(),
                                f.stream,
                                f.info.width(),
                                f.info.height(),
                                f.info.format().to_str()
                            )
                        );
                        return Err(gst::FlowError::Error);
                    }
                }
            }
            let items = work::items(frames, &mapped, roi_only);
            let prepared = state.models.engine(canary).prepare(&items);
            drop(items);
            drop(mapped);
            match prepared {
                Ok(j) => jobs.extend(j.into_iter().map(|j| (canary, j))),
                Err(why) if canary => {
                    self.swaps.canary_failed(&mut state.models, &why);
                    for &i in &chosen {
                        frames[i].pick = Pick::Infer { canary: false };
                    }
                }
                Err(why) => return Err(self.model_failed(&why)),
            }
        }
        Ok(jobs)
    }

    /// The frames of `buf` and the jobs for them.
    fn prepare(
        &self,
        state: &mut State,
        settings: &Settings,
        buf: &gst::BufferRef,
    ) -> Result<Work, gst::FlowError> {
        let (entries, mut frames) = self.frames(state, settings, buf)?;
        let all: Vec<usize> = (0..frames.len()).collect();
        let jobs = self.jobs(
            state,
            settings.roi_only,
            buf,
            entries.as_deref(),
            &mut frames,
            &all,
        )?;
        if let Some(dir) = &settings.input_dump_location {
            for (_, job) in &jobs {
                state.dumped += job.dump_inputs(dir, state.dumped).map_err(|e| {
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::Write,
                        (
                            "input-dump-location '{}': cannot write input tensor {}: {e} (is the disk full?)",
                            dir.display(),
                            state.dumped
                        )
                    );
                    gst::FlowError::Error
                })?;
            }
        }
        Ok(Work {
            entries,
            frames,
            jobs,
        })
    }

    /// Decodes what the jobs gave and attaches it: the frame's results, carried results on the
    /// frames `interval` skips and on repeated batch entries; records the statistics.
    fn finish(
        &self,
        state: &mut State,
        settings: &Settings,
        buf: &mut gst::BufferRef,
        mut work: Work,
        ran: Vec<(bool, Ran)>,
    ) -> Result<(), gst::FlowError> {
        let params = settings.decode_params(&state.labels);
        let mut timings = vec![Timings::default(); work.frames.len()];
        let mut invalid = 0;
        let mut runs = 0u64;
        let mut canary_failed = None;
        let mut pending = ran;
        loop {
            for (canary, r) in pending.drain(..) {
                let (decoded, tensor) = r.decode(&params);
                let engine = state.models.engine(canary);
                match decoded {
                    Ok(d) => {
                        if engine.model.id == d.model {
                            engine.recycle(tensor);
                        }
                        runs += 1;
                        invalid += d.invalid;
                        work.store(d, &mut timings);
                    }
                    Err(why) if canary => canary_failed = Some(why),
                    Err(why) => return Err(self.model_failed(&why)),
                }
            }
            // A canary that failed on its frames: switched off, and its frames go to the
            // primary now.
            let Some(why) = canary_failed.take() else {
                break;
            };
            self.swaps.canary_failed(&mut state.models, &why);
            let redo = work.canary_frames_to_primary(&mut timings);
            let jobs = self.jobs(
                state,
                settings.roi_only,
                buf,
                work.entries.as_deref(),
                &mut work.frames,
                &redo,
            )?;
            pending = jobs.into_iter().map(|(c, j)| (c, j.run())).collect();
        }
        if invalid > 0 {
            self.stats.lock().unwrap().invalid_outputs += invalid as u64;
            if !self.warned_invalid.swap(true, Ordering::SeqCst) {
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Decode,
                    ("the model gave non-finite or out-of-range values ({invalid} candidates in this buffer); they are dropped, never stored as detections, and counted in stats invalid-outputs")
                );
            }
        }

        // Attach.
        let keep_last = settings.interval > 1 || settings.motion_gate || state.batch;
        let mut entries = work.entries.take();
        let models = &state.models;
        let attached = attach::frames(
            buf,
            entries.as_deref_mut(),
            &mut work.frames,
            &timings,
            &state.labels,
            &mut state.cursors,
            settings.roi_only,
            keep_last,
            |canary| models.engine_ref(canary).model.id.clone(),
        );
        if let Some(entries) = entries.as_mut() {
            if !settings.roi_only {
                attach::repeated(entries, &state.labels, &state.cursors);
            }
            batch::write(buf, entries).map_err(|e| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Failed,
                    ("cannot update the batch: {e}")
                );
                gst::FlowError::Error
            })?;
        }
        let mut stats = self.stats.lock().unwrap();
        stats.skipped += attached.skipped;
        if state.batch {
            stats.batch_runs += runs;
        }
        for (model, canary, t, n) in attached.records {
            let role = if canary { Role::Canary } else { Role::Primary };
            stats.record(&model, role.name(), &t, n);
        }
        Ok(())
    }

    /// `pipelining=true`: waits for the in-flight buffer's jobs, finishes it and returns it.
    fn complete(
        &self,
        state: &mut State,
        settings: &Settings,
        f: InFlight,
    ) -> Result<gst::Buffer, gst::FlowError> {
        let ran = match state.worker.as_mut() {
            Some(w) => w.wait().map_err(|e| self.model_failed(&e))?,
            None => Vec::new(),
        };
        let ran = f.canary.iter().copied().zip(ran).collect();
        let mut buffer = f.buffer;
        self.finish(state, settings, buffer.make_mut(), f.work, ran)?;
        Ok(buffer)
    }

    /// `pipelining=true`: the buffer still in flight goes out now (before a serialized event
    /// or query, at EOS).
    fn drain(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        let buffer = {
            let mut guard = self.state.lock().unwrap();
            let Some(state) = guard.as_mut() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let Some(f) = state.in_flight.take() else {
                return Ok(gst::FlowSuccess::Ok);
            };
            self.complete(state, &settings, f)?
        };
        self.obj().src_pad().push(buffer)
    }
}

impl ObjectImpl for OnnxInfer {
    fn constructed(&self) {
        self.parent_constructed();
        self.swaps.set_element(self.obj().upcast_ref());
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> =
            LazyLock::new(super::settings::properties);
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        settings.set(pspec.name(), value);
        let load = match pspec.name() {
            "model-location" => Some((Role::Primary, settings.model_location.clone())),
            "canary-model-location" => Some((Role::Canary, settings.canary_model_location.clone())),
            _ => None,
        };
        drop(settings);
        // While running, a new model is loaded in the background (see `request_load`); the
        // streaming thread is never waited for.
        if self.running.load(Ordering::SeqCst)
            && let Some((role, path)) = load
        {
            if role == Role::Primary && path.is_none() {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Settings,
                    ("model-location cannot be cleared while running; the current model keeps running")
                );
                return;
            }
            self.swaps.request_load(role, path);
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            let s = self.stats.lock().unwrap();
            return s.structure().to_value();
        }
        self.settings.lock().unwrap().get(pspec.name())
    }
}

impl GstObjectImpl for OnnxInfer {}

impl ElementImpl for OnnxInfer {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "ONNX inference",
                "Filter/Analyzer/Video",
                "Runs an ONNX model (ONNX Runtime) on raw video frames. Detectors (YOLOv5, \
                 YOLOv8/v11, YOLOX, SSD) attach one GstVideoRegionOfInterestMeta per detection \
                 (roi type = label) with a 'detection' param (label, class-id, confidence, \
                 model, fresh); classifiers a 'classification' param on a full-frame ROI or on \
                 upstream ROIs (roi-only); raw models a 'videoai-tensors' meta; every handled \
                 frame a 'videoai-inference' meta naming the model. Preprocessing (colour \
                 conversion, letterbox/stretch resize, normalisation, NCHW/NHWC, f32/u8) is one \
                 fused pass from RGB/BGR/RGBA/BGRA/RGBx/BGRx/ARGB/ABGR/xRGB/xBGR/NV12/I420/GRAY8. \
                 The model can be swapped while playing, and a canary model can take a share of \
                 streams or frames. ONNX Runtime is loaded from ORT_DYLIB_PATH or the location \
                 built into the plugin",
                "videoai developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let mut caps = gst_video::VideoCapsBuilder::new()
                .format_list(SUPPORTED_FORMATS.iter().copied())
                .build();
            caps.make_mut()
                .append(gst::Caps::builder(batch::CAPS_NAME).build());
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl OnnxInfer {
    /// Upstream asked whether we take a fixed format we cannot read: say so, naming it.
    fn check_refused_format(&self, filter: Option<&gst::CapsRef>, result: Option<&gst::CapsRef>) {
        let Some(format) = formats::refused_format(filter, result) else {
            return;
        };
        // A caps query is only a probe: upstream may well try other caps next, so this is a
        // warning (posted once per format), not an error. If negotiation then fails, the
        // not-negotiated error that follows has this message right before it.
        let msg = super::preprocess::UnsupportedFormat(format).to_string();
        let filter = filter.map(|f| f.to_string()).unwrap_or_default();
        gst::debug!(CAT, imp = self, "refusing caps {filter}: {msg}");
        if self.warned_formats.first(format.to_str().as_str()) {
            gst::element_imp_warning!(
                self,
                gst::StreamError::Format,
                ("{msg}"),
                ["upstream asked about {filter}"]
            );
        }
    }
}

impl BaseTransformImpl for OnnxInfer {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap().clone();
        let Some(path) = settings.model_location.clone() else {
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                ("no model set. Set model-location to an .onnx file, e.g. onnxinfer model-location=models/common_det.onnx")
            ));
        };
        settings
            .check()
            .map_err(|m| gst::error_msg!(gst::ResourceError::Settings, ("{}", m)))?;
        let labels = match &settings.labels_location {
            Some(p) => labels::load(p)
                .map_err(|m| gst::error_msg!(gst::ResourceError::NotFound, ("{}", m)))?,
            None => Vec::new(),
        };
        if let Some(p) = &settings.labels_location
            && labels::all_unnamed(&labels)
        {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                (
                    "labels file '{}' has no labels (it is empty); classes are named class-N",
                    p.display()
                )
            );
        }
        if let Some(dir) = &settings.input_dump_location {
            std::fs::create_dir_all(dir).map_err(|e| {
                gst::error_msg!(
                    gst::ResourceError::OpenWrite,
                    (
                        "input-dump-location '{}': cannot create the directory: {e}",
                        dir.display()
                    )
                )
            })?;
        }
        self.stats.lock().unwrap().reset();
        self.warned_invalid.store(false, Ordering::SeqCst);
        self.warned_no_motion.store(false, Ordering::SeqCst);
        let (primary, canary) = self
            .swaps
            .start(&settings, &path)
            .map_err(|e| e.to_gst_error())?;
        if let Some(classes) = primary.classes()
            && !labels.is_empty()
            && labels.len() != classes
        {
            gst::warning!(
                CAT,
                imp = self,
                "labels file has {} labels, model {} has {} classes",
                labels.len(),
                primary.id,
                classes
            );
        }
        let worker = if settings.pipelining {
            Some(Worker::start().map_err(|e| gst::error_msg!(gst::CoreError::Thread, ("{}", e)))?)
        } else {
            None
        };
        *self.state.lock().unwrap() = Some(State {
            models: Models::new(
                primary,
                canary,
                settings.overrides(),
                settings.preprocess_threads(),
            ),
            labels,
            info: None,
            stream_id: None,
            batch: false,
            cursors: Cursors::default(),
            worker,
            in_flight: None,
            dumped: 0,
        });
        self.running.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.running.store(false, Ordering::SeqCst);
        // Loads still running finish into a generation nobody waits for.
        self.swaps.loader.reset();
        let state = self.state.lock().unwrap().take();
        if let Some(state) = state {
            // The models (sessions) are dropped on the retiring thread.
            crate::util::retire::retire(state.models);
        }
        self.swaps.set_warm_info(None);
        self.warned_formats.clear();
        gst::debug!(CAT, imp = self, "stopped");
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::FlushStop(_) => {
                // What was in flight belongs to before the flush.
                if let Some(state) = self.state.lock().unwrap().as_mut() {
                    state.in_flight = None;
                    if let Some(w) = state.worker.as_mut() {
                        w.discard();
                    }
                }
            }
            _ if event.is_serialized() => {
                // Pipelining: the buffer in flight goes out before the event.
                if let Err(e) = self.drain() {
                    gst::debug!(
                        CAT,
                        imp = self,
                        "draining before {:?}: {e:?}",
                        event.type_()
                    );
                }
            }
            _ => {}
        }
        if let gst::EventView::StreamStart(s) = event.view()
            && let Some(state) = self.state.lock().unwrap().as_mut()
        {
            state.stream_id = Some(s.stream_id().to_string());
            state.cursors.restart(s.stream_id());
        }
        self.parent_sink_event(event)
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        if direction == gst::PadDirection::Sink
            && query.is_serialized()
            && let Err(e) = self.drain()
        {
            gst::debug!(CAT, imp = self, "draining before a query: {e:?}");
        }
        let res = BaseTransformImplExt::parent_query(self, direction, query);
        match query.view_mut() {
            gst::QueryViewMut::Caps(q) if direction == gst::PadDirection::Sink => {
                self.check_refused_format(q.filter(), q.result());
            }
            gst::QueryViewMut::Latency(q) if res && direction == gst::PadDirection::Src => {
                // Pipelining holds a frame until the next one comes.
                let period = self.frame_period.load(Ordering::SeqCst);
                if period > 0 {
                    let (live, min, max) = q.result();
                    let extra = gst::ClockTime::from_nseconds(period);
                    q.set(live, min + extra, max.map(|m| m + extra));
                }
            }
            _ => {}
        }
        res
    }

    fn set_caps(&self, incaps: &gst::Caps, _outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let pipelining = self.settings.lock().unwrap().pipelining;
        let fps = incaps
            .structure(0)
            .and_then(|s| s.get::<gst::Fraction>("framerate").ok())
            .filter(|f| f.numer() > 0 && f.denom() > 0);
        let period = match fps {
            Some(f) if pipelining => gst::ClockTime::SECOND
                .mul_div_round(f.denom() as u64, f.numer() as u64)
                .map_or(0, |t| t.nseconds()),
            _ => 0,
        };
        self.frame_period.store(period, Ordering::SeqCst);
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            return Err(gst::loggable_error!(CAT, "caps set before start"));
        };
        if batch::is_batch_caps(incaps) {
            gst::debug!(CAT, imp = self, "batches from framesync");
            state.batch = true;
            state.info = None;
            state.cursors.reset();
            self.swaps.set_warm_info(None);
            return Ok(());
        }
        let info = gst_video::VideoInfo::from_caps(incaps)
            .map_err(|_| gst::loggable_error!(CAT, "cannot parse video caps {incaps}"))?;
        let models = &mut state.models;
        for engine in std::iter::once(&mut models.primary).chain(models.canary.as_mut()) {
            let spec = engine.configure(&info).map_err(|e| {
                gst::element_imp_error!(self, gst::StreamError::Format, ("{e}"));
                gst::loggable_error!(CAT, "{e}")
            })?;
            gst::debug!(
                CAT,
                imp = self,
                "{}x{} {} -> {} tensor {:?} ({:?})",
                info.width(),
                info.height(),
                info.format().to_str(),
                engine.model.id,
                spec.shape(engine.model.input.batch.unwrap_or(1)),
                spec
            );
        }
        self.swaps.set_warm_info(Some(info.clone()));
        state.info = Some(info);
        state.cursors.forget_results();
        state.batch = false;
        Ok(())
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("not started"));
            return Err(gst::FlowError::NotNegotiated);
        };
        let mut work = self.prepare(state, &settings, buf)?;
        let ran = std::mem::take(&mut work.jobs)
            .into_iter()
            .map(|(canary, job)| (canary, job.run()))
            .collect();
        self.finish(state, &settings, buf, work, ran)?;
        Ok(gst::FlowSuccess::Ok)
    }

    fn generate_output(
        &self,
    ) -> Result<gst_base::subclass::base_transform::GenerateOutputSuccess, gst::FlowError> {
        use gst_base::subclass::base_transform::GenerateOutputSuccess;
        let pipelined = self
            .state
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|s| s.worker.is_some());
        if !pipelined {
            return self.parent_generate_output();
        }
        let Some(inbuf) = self.take_queued_buffer() else {
            return Ok(GenerateOutputSuccess::NoOutput);
        };
        let settings = self.settings.lock().unwrap().clone();
        let mut guard = self.state.lock().unwrap();
        let Some(state) = guard.as_mut() else {
            return Err(gst::FlowError::Flushing);
        };
        // Preprocess this buffer while the previous one is inferred ...
        let mut work = self.prepare(state, &settings, &inbuf)?;
        // ... then finish the previous one ...
        let out = match state.in_flight.take() {
            Some(f) => Some(self.complete(state, &settings, f)?),
            None => None,
        };
        // ... and start inferring this one.
        let jobs = std::mem::take(&mut work.jobs);
        let canary = jobs.iter().map(|(c, _)| *c).collect();
        if let Some(w) = state.worker.as_mut() {
            w.submit(jobs.into_iter().map(|(_, j)| j).collect())
                .map_err(|e| self.model_failed(&e))?;
        }
        state.in_flight = Some(InFlight {
            buffer: inbuf,
            work,
            canary,
        });
        Ok(match out {
            Some(b) => GenerateOutputSuccess::Buffer(b),
            None => GenerateOutputSuccess::NoOutput,
        })
    }
}
