// SPDX-License-Identifier: MPL-2.0
//! The reconnect loop of `resilientsrc`, on a thread of its own per element.
//!
//! Each attempt builds an inner pipeline `uridecodebin uri=… ! appsink` (plus an audio
//! appsink with `audio=true`), with the decoder kinds allowed by `decoder` and not found broken.
//! With `encoded=true` a probe on the video parser decodebin plugs (h264parse & co.) copies its
//! access units to the encoded output: the stream as the camera sent it, from the same
//! connection, starting at a keyframe on every connection.
//! Frames are handed to the element's `appsrc`; the loop watches the inner bus and the time
//! since the last frame:
//!
//! * error, EOS of a live source, or no frame for `stall-timeout` → tear down, wait the backoff
//!   delay (status `retrying`), rebuild; a success (first frame) resets the backoff;
//! * a hardware decoder failing → that kind is dropped and the next is tried at once;
//! * EOS of a non-live source → EOS downstream (status `ended`); its errors are final;
//! * `max-attempts` failed attempts in a row → status `failed` and an element error.
//!
//! Timestamps: a live source's frames are stamped with the outer pipeline's running time at
//! hand-over (so running time keeps increasing across reconnects), a non-live source keeps its
//! own running time. The first frame after a gap carries `DISCONT`. The encoded output follows
//! the same rules (its DTS is the hand-over time, its PTS keeps the stream's PTS − DTS offset);
//! an access unit it cannot queue is dropped with the rest of its GOP (counted), never leaving
//! a gap a decoder would have to conceal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;

use super::decoders::{self, Kind};
use super::{DecoderChoice, Status, uri};
use crate::formats::capture_time;
use crate::util::backoff::{self, Backoff};

/// What the loop was given at start (the properties, frozen for the run).
#[derive(Debug, Clone)]
pub struct Config {
    pub uri: String,
    pub live: bool,
    pub stall_timeout: Duration,
    pub backoff: Backoff,
    pub max_attempts: u32,
    pub decoder: DecoderChoice,
    pub decoder_fallback: bool,
    pub latency_ms: u32,
    pub protocols: Option<String>,
}

/// What the element reads (`status`, `stats`, messages).
#[derive(Debug, Default, Clone)]
pub struct Info {
    pub status: Status,
    pub attempts: u32,
    pub reconnects: u64,
    pub container: Option<String>,
    pub codec: Option<String>,
    pub decoder: Option<String>,
    pub decoder_kind: Option<Kind>,
    pub frames: u64,
    pub dropped: u64,
    /// Access units out of the encoded output.
    pub encoded_frames: u64,
    /// Access units skipped at a connection's start until its first keyframe.
    pub encoded_before_keyframe: u64,
    /// Access units dropped while the encoded output's queue was full (to the next keyframe).
    pub encoded_dropped: u64,
    pub last_error: Option<String>,
    pub retry_in: Option<Duration>,
}

/// Hooks into the element: status changes and messages.
pub trait Host: Send + Sync + 'static {
    fn status_changed(&self, info: &Info, reason: &str);
    fn stream_found(&self, info: &Info);
    fn fail(&self, msg: &str);
    fn warn(&self, msg: &str);
    /// No state change of the pipeline is under way (see [`fail`]).
    fn state_settled(&self) -> bool;
}

#[derive(Default)]
struct Control {
    stopping: bool,
}

/// The element's outputs the loop feeds.
pub struct Outputs {
    pub video: gst_app::AppSrc,
    pub audio: Option<gst_app::AppSrc>,
    /// The encoded output and the element's pad for it: fed only while that pad is linked.
    pub encoded: Option<(gst_app::AppSrc, gst::Pad)>,
}

/// Which output a buffer goes to (its index in `last_pts`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Video = 0,
    Audio = 1,
    Encoded = 2,
}

/// The encoded output's state in this attempt.
#[derive(Default)]
struct EncodedState {
    /// The parser's pad is probed (one video parser per attempt).
    tapped: bool,
    /// Access units are skipped until a keyframe (a connection's start, a drop).
    waiting_keyframe: bool,
    /// The next access unit pushed carries DISCONT.
    discont: bool,
}

pub struct Shared {
    config: Config,
    video: gst_app::AppSrc,
    audio: Option<gst_app::AppSrc>,
    encoded: Option<(gst_app::AppSrc, gst::Pad)>,
    encoded_state: Mutex<EncodedState>,
    control: Mutex<Control>,
    wake: Condvar,
    pub info: Mutex<Info>,
    /// When the last frame came out of the inner pipeline.
    last_frame: Mutex<Option<Instant>>,
    /// The next video frame gets DISCONT (first frame after a (re)connection).
    discont: Mutex<bool>,
    /// Last live PTS (DTS for the encoded output) pushed, per output (video, audio, encoded):
    /// they never go back.
    last_pts: Mutex<[Option<gst::ClockTime>; 3]>,
    /// This attempt follows one that had frames (its first frame is a reconnection).
    reconnecting: AtomicBool,
    /// This attempt's decoded (video, audio) pads already linked to the outputs.
    linked: Mutex<(bool, bool)>,
    host: Box<dyn Host>,
}

pub struct Controller {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Controller {
    pub fn start(config: Config, outputs: Outputs, host: Box<dyn Host>) -> Controller {
        let shared = Arc::new(Shared {
            config,
            video: outputs.video,
            audio: outputs.audio,
            encoded: outputs.encoded,
            encoded_state: Mutex::new(EncodedState::default()),
            control: Mutex::new(Control::default()),
            wake: Condvar::new(),
            info: Mutex::new(Info::default()),
            last_frame: Mutex::new(None),
            discont: Mutex::new(true),
            last_pts: Mutex::new([None; 3]),
            linked: Mutex::new((false, false)),
            reconnecting: AtomicBool::new(false),
            host,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("resilientsrc".into())
            .spawn(move || run(&s))
            .expect("a thread can be started");
        Controller {
            shared,
            thread: Some(thread),
        }
    }

    pub fn info(&self) -> Info {
        self.shared.info.lock().unwrap().clone()
    }

    pub fn stop(&mut self) {
        self.shared.control.lock().unwrap().stopping = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            // Stopped from the loop's own thread (a state change made from a status
            // callback): it ends by itself once it sees `stopping`.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stopping(s: &Shared) -> bool {
    s.control.lock().unwrap().stopping
}

/// Waits `d`, returning early (true) when the element stops.
fn sleep(s: &Shared, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    let mut c = s.control.lock().unwrap();
    while !c.stopping {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        c = s.wake.wait_timeout(c, left).unwrap().0;
    }
    true
}

fn set_status(s: &Shared, status: Status, reason: &str) {
    let info = {
        let mut i = s.info.lock().unwrap();
        if i.status == status && status != Status::Retrying {
            return;
        }
        i.status = status;
        i.clone()
    };
    gst::info!(super::CAT, "status {:?}: {reason}", info.status);
    s.host.status_changed(&info, reason);
}

/// Time allowed after the pipeline's state change settled before an error is posted.
const SETTLE_GRACE: Duration = Duration::from_millis(100);

/// Posts an error (the run is over), once no state change is under way.
///
/// An application may quit its main loop from the thread that posts an error (gst-launch-1.0
/// does, from its bus sync handler); if that happens before its main loop runs (while
/// `set_state(PAUSED)` is still returning), the quit is lost and it hangs for ever. So the
/// error waits for the pipeline's state change to return, and a moment more. Errors known
/// before the state change (no URI, a missing file, a malformed URI) are returned by the state
/// change itself instead.
fn fail(s: &Shared, msg: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.host.state_settled() && Instant::now() < deadline {
        if sleep(s, Duration::from_millis(10)) {
            // Stopped meanwhile: nobody waits for the error any more.
            return;
        }
    }
    if !sleep(s, SETTLE_GRACE) {
        s.host.fail(msg);
    }
}

/// How an attempt ended.
enum Outcome {
    Stopped,
    /// A non-live source reached its end.
    Ended,
    /// The attempt failed (error, stall, live EOS); `true` when frames had flowed.
    Failed {
        reason: String,
        had_frames: bool,
    },
    /// A hardware decoder of `kind` failed: try without it.
    DecoderFailed {
        kind: Kind,
        reason: String,
    },
    /// Nothing can work (forced decoder missing, non-live error): stop trying.
    Fatal(String),
}

fn run(s: &Arc<Shared>) {
    let cfg = s.config.clone();
    let shown = uri::redact(&cfg.uri);
    let mut excluded: Vec<Kind> = Vec::new();
    let mut failures = 0u32;
    let mut connected_before = false;
    // A forced hardware kind that is not installed at all.
    let forced = match cfg.decoder {
        DecoderChoice::Auto => None,
        DecoderChoice::Nvdec => Some(Kind::Nvdec),
        DecoderChoice::Vaapi => Some(Kind::Vaapi),
        DecoderChoice::Cpu => Some(Kind::Cpu),
    };
    let mut allowed: Vec<Kind> = match forced {
        None => vec![Kind::Nvdec, Kind::Vaapi, Kind::Cpu],
        Some(k) => vec![k],
    };
    if let Some(k) = forced
        && decoders::installed(k).is_empty()
    {
        let msg = format!(
            "decoder={}: no {} video decoder is installed{}",
            k.name(),
            k.name().to_uppercase(),
            match k {
                Kind::Nvdec =>
                    " (nvh264dec & co. come with gstreamer1.0-plugins-bad's nvcodec and need an NVIDIA GPU and driver)",
                Kind::Vaapi =>
                    " (vah264dec & co. come with gstreamer1.0-plugins-bad's va plugin, vaapih264dec with gstreamer1.0-vaapi, and need a VA-API driver)",
                Kind::Cpu => " (install gstreamer1.0-libav)",
            }
        );
        if cfg.decoder_fallback {
            s.host.warn(&format!(
                "{msg}; decoder-fallback=true: using the next decoder available"
            ));
            allowed = vec![Kind::Nvdec, Kind::Vaapi, Kind::Cpu];
            allowed.retain(|x| *x != k);
        } else {
            s.info.lock().unwrap().last_error = Some(msg.clone());
            set_status(s, Status::Failed, &msg);
            fail(
                s,
                &format!("{msg}. Use decoder=auto, or decoder-fallback=true to fall back"),
            );
            return;
        }
    }

    loop {
        if stopping(s) {
            return;
        }
        let kinds: Vec<Kind> = allowed
            .iter()
            .copied()
            .filter(|k| !excluded.contains(k))
            .collect();
        if kinds.is_empty() {
            let msg = format!(
                "{shown}: no usable video decoder left (tried {:?})",
                excluded
            );
            set_status(s, Status::Failed, &msg);
            fail(s, &msg);
            return;
        }
        set_status(
            s,
            Status::Connecting,
            if connected_before {
                "reconnecting"
            } else {
                "connecting"
            },
        );
        *s.discont.lock().unwrap() = true;
        if stopping(s) {
            return;
        }
        match attempt(s, &kinds, connected_before) {
            Outcome::Stopped => return,
            Outcome::Ended => {
                // Status first: whoever stops at EOS has seen it.
                set_status(s, Status::Ended, "end of stream");
                let _ = s.video.end_of_stream();
                if let Some(a) = &s.audio {
                    let _ = a.end_of_stream();
                }
                if let Some((e, _)) = &s.encoded {
                    let _ = e.end_of_stream();
                }
                return;
            }
            Outcome::Fatal(msg) => {
                s.info.lock().unwrap().last_error = Some(msg.clone());
                set_status(s, Status::Failed, &msg);
                fail(s, &msg);
                return;
            }
            Outcome::DecoderFailed { kind, reason } => {
                let can_fall_back = forced.is_none() || cfg.decoder_fallback;
                s.info.lock().unwrap().last_error = Some(reason.clone());
                if kind == Kind::Cpu || !can_fall_back {
                    let msg = format!("{} decoder failed: {reason}", kind.name());
                    set_status(s, Status::Failed, &msg);
                    fail(s, &msg);
                    return;
                }
                s.host.warn(&format!(
                    "{} decoder failed ({reason}); falling back",
                    kind.name()
                ));
                excluded.push(kind);
                continue;
            }
            Outcome::Failed { reason, had_frames } => {
                s.info.lock().unwrap().last_error = Some(reason.clone());
                if had_frames {
                    connected_before = true;
                    failures = 0;
                }
                if !cfg.live {
                    let msg = format!("{shown}: {reason}");
                    set_status(s, Status::Failed, &msg);
                    fail(s, &msg);
                    return;
                }
                failures += 1;
                if cfg.max_attempts > 0 && failures >= cfg.max_attempts {
                    let msg = format!(
                        "{shown}: giving up after {failures} failed attempts; last: {reason}"
                    );
                    set_status(s, Status::Failed, &msg);
                    fail(s, &msg);
                    return;
                }
                let delay = cfg.backoff.delay(failures, backoff::random_unit());
                gst::debug!(
                    super::CAT,
                    "attempt {failures} failed ({reason}); reconnecting in {delay:?}"
                );
                {
                    let mut i = s.info.lock().unwrap();
                    i.attempts = failures;
                    i.retry_in = Some(delay);
                }
                set_status(s, Status::Retrying, &reason);
                if sleep(s, delay) {
                    return;
                }
                s.info.lock().unwrap().retry_in = None;
            }
        }
    }
}

/// One attempt: build, play, watch until it ends. `reconnecting`: an earlier attempt had frames.
fn attempt(s: &Arc<Shared>, kinds: &[Kind], reconnecting: bool) -> Outcome {
    let pipeline = match build(s, kinds) {
        Ok(p) => p,
        Err(e) => return Outcome::Fatal(e),
    };
    *s.last_frame.lock().unwrap() = None;
    s.reconnecting.store(reconnecting, Ordering::SeqCst);
    let started = Instant::now();
    let outcome = watch(s, &pipeline, kinds, started);
    // Tear down; a source stuck in I/O gets the stop it needs from the state change.
    let _ = pipeline.set_state(gst::State::Null);
    outcome
}

fn watch(s: &Arc<Shared>, pipeline: &gst::Pipeline, kinds: &[Kind], started: Instant) -> Outcome {
    let cfg = &s.config;
    if pipeline.set_state(gst::State::Playing).is_err() {
        // The bus says why.
    }
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let mut had_frames = false;
    let mut announced = false;
    let announce = |announced: &mut bool| {
        if !*announced && s.last_frame.lock().unwrap().is_some() {
            *announced = true;
            first_frame(s);
        }
    };
    loop {
        if stopping(s) {
            return Outcome::Stopped;
        }
        // The first frame is announced from here, not from the streaming thread that brought
        // it: an application that stops the element from the status notification would
        // otherwise wait for that very thread.
        announce(&mut announced);
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) {
            // Frames that came with this message (a short file's frames and its EOS) are
            // announced before what the message ends.
            announce(&mut announced);
            match msg.view() {
                gst::MessageView::Error(e) => {
                    let reason = uri::scrub(
                        &format!(
                            "{}{}",
                            e.error(),
                            e.debug().map(|d| format!(" ({d})")).unwrap_or_default()
                        ),
                        &cfg.uri,
                    );
                    // A hardware decoder's failure: drop that kind and try the next.
                    if let Some(src) = e.src().and_then(|o| o.downcast_ref::<gst::Element>())
                        && let Some(f) = src.factory()
                        && decoders::is_video_decoder(&f)
                    {
                        let kind = decoders::kind_of(&f.name());
                        if kind != Kind::Cpu {
                            return Outcome::DecoderFailed { kind, reason };
                        }
                    }
                    let missing = e.error().matches(gst::CoreError::MissingPlugin)
                        || e.error().matches(gst::StreamError::CodecNotFound);
                    if missing {
                        return Outcome::Fatal(format!(
                            "{}: no decoder for this stream among the allowed kinds ({}): {reason}",
                            uri::redact(&cfg.uri),
                            kinds
                                .iter()
                                .map(|k| k.name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    return Outcome::Failed { reason, had_frames };
                }
                gst::MessageView::Eos(_) => {
                    if cfg.live {
                        return Outcome::Failed {
                            reason: "the live source ended (EOS)".into(),
                            had_frames,
                        };
                    }
                    return Outcome::Ended;
                }
                _ => {}
            }
        }
        let last = *s.last_frame.lock().unwrap();
        match last {
            Some(t) => {
                had_frames = true;
                if cfg.live && t.elapsed() > cfg.stall_timeout {
                    return Outcome::Failed {
                        reason: format!(
                            "no frame for {} ms (stall-timeout)",
                            cfg.stall_timeout.as_millis()
                        ),
                        had_frames,
                    };
                }
            }
            None => {
                // No first frame. For a file too: decodebin drops an error a demuxer posts
                // while it is still being plugged (a truncated MP4 can do that on a busy
                // machine), which would otherwise leave the stream waiting for ever.
                let limit = cfg.stall_timeout.max(Duration::from_secs(2));
                if started.elapsed() > limit {
                    let what = if cfg.live {
                        "of connecting"
                    } else {
                        "of opening it: damaged, incomplete or without video?"
                    };
                    return Outcome::Failed {
                        reason: format!(
                            "no frame within {} ms {what} (stall-timeout)",
                            limit.as_millis()
                        ),
                        had_frames,
                    };
                }
            }
        }
    }
}

/// Puts [`capture_time::RTP_REFERENCE`] on every RTP packet leaving `pad` (one of rtspsrc's).
fn stamp_rtp_times(pad: &gst::Pad) {
    let stamper: Mutex<Option<capture_time::RtpStamper>> = Mutex::new(None);
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |pad, info| {
            let mut stamper = stamper.lock().unwrap();
            if stamper.is_none() {
                let rate = pad.current_caps().and_then(|c| {
                    let s = c.structure(0)?;
                    (s.name() == "application/x-rtp").then_some(())?;
                    s.get::<i32>("clock-rate").ok()
                });
                match rate {
                    Some(r) if r > 0 => *stamper = Some(capture_time::RtpStamper::new(r as u32)),
                    _ => return gst::PadProbeReturn::Ok,
                }
            }
            let stamper = stamper.as_mut().expect("made above");
            match &mut info.data {
                Some(gst::PadProbeData::Buffer(b)) => stamper.stamp(b.make_mut()),
                Some(gst::PadProbeData::BufferList(l)) => l.make_mut().foreach_mut(|mut b, _| {
                    stamper.stamp(b.make_mut());
                    std::ops::ControlFlow::Continue(Some(b))
                }),
                _ => {}
            }
            gst::PadProbeReturn::Ok
        },
    );
}

/// `uridecodebin uri=… ! appsink` with decoder kinds `kinds` (in preference order).
fn build(s: &Arc<Shared>, kinds: &[Kind]) -> Result<gst::Pipeline, String> {
    let cfg = &s.config;
    *s.linked.lock().unwrap() = (false, false);
    *s.encoded_state.lock().unwrap() = EncodedState {
        tapped: false,
        waiting_keyframe: true,
        discont: true,
    };
    let pipeline = gst::Pipeline::with_name("resilientsrc-inner");
    let (location, credentials) = uri::source_uri(&cfg.uri);
    let dec = gst::ElementFactory::make("uridecodebin")
        .property("uri", &location)
        .build()
        .map_err(|_| "uridecodebin is missing: install gstreamer1.0-plugins-base".to_string())?;
    pipeline.add(&dec).map_err(|e| e.to_string())?;

    // Source settings: rtspsrc's, and the credentials.
    let (latency, protocols, timeout_us) = (
        cfg.latency_ms,
        cfg.protocols.clone(),
        cfg.stall_timeout.as_micros() as u64,
    );
    dec.connect("source-setup", false, move |args| {
        let src = args[1].get::<gst::Element>().ok()?;
        if src.factory().is_some_and(|f| f.name() == "rtspsrc") {
            src.set_property("latency", latency);
            src.set_property("tcp-timeout", timeout_us);
            src.set_property("teardown-timeout", 100_000_000u64);
            // The camera's capture time (NTP, from its RTCP sender reports) on every frame
            // once it is known: what framesync aligns on and raftsink numbers frames by.
            if src.has_property("add-reference-timestamp-meta") {
                src.set_property("add-reference-timestamp-meta", true);
            }
            // And each packet's RTP time, exact from the first packet on (before the first
            // sender report): raftsink keys the frames that come before it by it.
            src.connect_pad_added(|_, pad| stamp_rtp_times(pad));
            if let Some(p) = &protocols {
                src.set_property_from_str("protocols", p);
            }
        }
        if let Some((user, password)) = &credentials
            && src.has_property("user-id")
            && src.has_property("user-pw")
        {
            src.set_property("user-id", user);
            src.set_property("user-pw", password);
        }
        None
    });

    // MJPEG cameras (multipart/x-mixed-replace): multipartdemux exposes its pad only once it
    // knows no other part type comes, which for a camera stream is never; told that there is
    // one stream, it exposes it at once.
    pipeline.connect_deep_element_added(|_, _, element| {
        if element
            .factory()
            .is_some_and(|f| f.name() == "multipartdemux")
        {
            element.set_property("single-stream", true);
        }
    });

    // The encoded output: what the video parser hands the decoder.
    if s.encoded.is_some() {
        let weak = Arc::downgrade(s);
        pipeline.connect_deep_element_added(move |_, _, element| {
            if let Some(s) = weak.upgrade() {
                tap_parser(&s, element);
            }
        });
    }

    // Decoder choice: only the allowed kinds, preferred first.
    let order: Vec<Kind> = kinds.to_vec();
    dec.connect("autoplug-sort", false, move |args| {
        let factories = args[3].get::<glib::ValueArray>().ok()?;
        let mut list: Vec<gst::ElementFactory> =
            factories.iter().filter_map(|v| v.get().ok()).collect();
        let rank = |f: &gst::ElementFactory| {
            if decoders::is_video_decoder(f) {
                order
                    .iter()
                    .position(|k| *k == decoders::kind_of(&f.name()))
                    .unwrap_or(usize::MAX)
            } else {
                0
            }
        };
        list.retain(|f| rank(f) != usize::MAX);
        list.sort_by_key(rank);
        Some(glib::ValueArray::new(list.iter().map(|f| f.to_value())).to_value())
    });

    // Container and codec, from what decodebin plugs.
    let weak = Arc::downgrade(s);
    dec.connect("autoplug-select", false, move |args| {
        let caps = args[2].get::<gst::Caps>().ok();
        let factory = args[3].get::<gst::ElementFactory>().ok();
        if let (Some(s), Some(caps), Some(factory)) = (weak.upgrade(), caps, factory) {
            let name = caps
                .structure(0)
                .map(|st| st.name().to_string())
                .unwrap_or_default();
            let klass = factory.klass();
            let mut info = s.info.lock().unwrap();
            if klass.contains("Demuxer") && info.container.is_none() {
                info.container = Some(name);
            } else if decoders::is_video_decoder(&factory) {
                info.codec = Some(name);
                info.decoder = Some(factory.name().to_string());
                info.decoder_kind = Some(decoders::kind_of(&factory.name()));
                let snapshot = info.clone();
                drop(info);
                s.host.stream_found(&snapshot);
            }
        }
        // GST_AUTOPLUG_SELECT_TRY: the enum's zero value.
        glib::Type::from_name("GstAutoplugSelectResult").map(glib::Value::from_type)
    });

    // Decoded pads to appsinks.
    let weak = Arc::downgrade(s);
    let pipe = pipeline.downgrade();
    dec.connect_pad_added(move |_, pad| {
        let (Some(s), Some(pipeline)) = (weak.upgrade(), pipe.upgrade()) else {
            return;
        };
        let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
        let name = caps
            .as_ref()
            .and_then(|c| c.structure(0).map(|st| st.name().to_string()))
            .unwrap_or_default();
        // The first video stream, and the first audio stream with `audio=true`; others are
        // discarded.
        let target = {
            let mut linked = s.linked.lock().unwrap();
            if name.starts_with("video/") && !linked.0 {
                linked.0 = true;
                Some(s.video.clone())
            } else if name.starts_with("audio/") && !linked.1 && s.audio.is_some() {
                linked.1 = true;
                s.audio.clone()
            } else {
                None
            }
        };
        let sink: gst::Element = match target {
            Some(appsrc) => appsink_for(&s, appsrc).upcast(),
            None => gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .build()
                .expect("fakesink is in core"),
        };
        if pipeline.add(&sink).is_ok() {
            let _ = sink.sync_state_with_parent();
            if let Some(sinkpad) = sink.static_pad("sink") {
                let _ = pad.link(&sinkpad);
            }
        }
    });
    // A file without audio: end the audio output, or a prerolling pipeline would wait on it.
    let weak = Arc::downgrade(s);
    dec.connect_no_more_pads(move |_| {
        if let Some(s) = weak.upgrade()
            && !s.config.live
            && !s.linked.lock().unwrap().1
            && let Some(a) = &s.audio
        {
            let _ = a.end_of_stream();
        }
    });
    Ok(pipeline)
}

/// An appsink handing samples to `appsrc` (the video or audio output of the element).
fn appsink_for(s: &Arc<Shared>, appsrc: gst_app::AppSrc) -> gst_app::AppSink {
    let live = s.config.live;
    let out = if appsrc == s.video {
        Output::Video
    } else {
        Output::Audio
    };
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(if live { 4 } else { 2 })
        .build();
    let weak = Arc::downgrade(s);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(s) = weak.upgrade() else {
                    return Err(gst::FlowError::Flushing);
                };
                hand_over(&s, &appsrc, &sample, out, live)
            })
            .build(),
    );
    sink
}

/// The first frame of an attempt: the source runs (again).
fn first_frame(s: &Shared) {
    let reconnecting = s.reconnecting.load(Ordering::SeqCst);
    {
        let mut i = s.info.lock().unwrap();
        i.attempts = 0;
        if reconnecting {
            i.reconnects += 1;
        }
    }
    let reason = if reconnecting {
        "reconnected"
    } else {
        "first frame"
    };
    set_status(s, Status::Running, reason);
}

fn hand_over(
    s: &Shared,
    appsrc: &gst_app::AppSrc,
    sample: &gst::Sample,
    out: Output,
    live: bool,
) -> Result<gst::FlowSuccess, gst::FlowError> {
    let Some(buffer) = sample.buffer_owned() else {
        return Ok(gst::FlowSuccess::Ok);
    };
    let is_video = out == Output::Video;
    let encoded = out == Output::Encoded;
    if let Some(caps) = sample.caps()
        && appsrc.caps().as_deref() != Some(caps)
    {
        appsrc.set_caps(Some(&caps.to_owned()));
    }
    if is_video {
        // The camera delivers (whether or not the frame is wanted): no stall. The controller
        // announces the first frame.
        *s.last_frame.lock().unwrap() = Some(Instant::now());
    }
    let mut buffer = buffer;
    {
        let b = buffer.make_mut();
        // An access unit shown later than it is decoded (B-frames) keeps that offset.
        let shown_later = match (b.pts(), b.dts()) {
            (Some(pts), Some(dts)) if encoded => pts.saturating_sub(dts),
            _ => gst::ClockTime::ZERO,
        };
        if live {
            // The outer pipeline's running time now: continuous across reconnects. Unless it
            // is playing (not yet, or paused) a live source's frames are not wanted, and the
            // running time would not be the one the frames are played at: dropped, and the
            // next frame pushed starts a new run (DISCONT).
            let now = (appsrc.current_state() == gst::State::Playing)
                .then(|| appsrc.current_running_time())
                .flatten();
            let Some(now) = now else {
                if is_video {
                    s.info.lock().unwrap().dropped += 1;
                    *s.discont.lock().unwrap() = true;
                } else if encoded {
                    s.encoded_state.lock().unwrap().waiting_keyframe = true;
                }
                return Ok(gst::FlowSuccess::Ok);
            };
            // A pause is taken before the outputs stop: a frame stamped just then may be
            // ahead of the first ones after resuming.
            let now = {
                let mut last = s.last_pts.lock().unwrap();
                let slot = &mut last[out as usize];
                let now = match *slot {
                    Some(l) if now <= l => l + gst::ClockTime::from_nseconds(1),
                    _ => now,
                };
                *slot = Some(now);
                now
            };
            if encoded {
                b.set_dts(now);
                b.set_pts(now + shown_later);
            } else {
                b.set_pts(now);
                b.set_dts(gst::ClockTime::NONE);
            }
        } else {
            let segment = sample
                .segment()
                .and_then(|seg| seg.downcast_ref::<gst::ClockTime>());
            let running =
                |t: Option<gst::ClockTime>| segment.and_then(|seg| seg.to_running_time(t));
            let (pts, dts) = (running(b.pts()), running(b.dts()));
            b.set_pts(pts);
            b.set_dts(if encoded { dts } else { gst::ClockTime::NONE });
        }
        let discont = match out {
            Output::Video => std::mem::take(&mut *s.discont.lock().unwrap()),
            Output::Encoded => std::mem::take(&mut s.encoded_state.lock().unwrap().discont),
            Output::Audio => false,
        };
        if discont {
            b.set_flags(gst::BufferFlags::DISCONT);
        }
    }
    if is_video {
        let mut info = s.info.lock().unwrap();
        info.frames += 1;
        if live && appsrc.current_level_buffers() >= appsrc.max_buffers() {
            // The oldest queued frame is dropped (leaky) to keep latency down.
            info.dropped += 1;
        }
    }
    if encoded {
        s.info.lock().unwrap().encoded_frames += 1;
    }
    match appsrc.push_buffer(buffer) {
        Ok(ok) => Ok(ok),
        // Downstream flushing or stopping: the inner pipeline goes on until torn down.
        Err(gst::FlowError::Flushing) => Ok(gst::FlowSuccess::Ok),
        Err(e) => Err(e),
    }
}

/// With `encoded=true`: probes the first video (or image) parser decodebin plugs in this
/// attempt, whose output is what the decoder gets: parsed, whole access units with caps.
fn tap_parser(s: &Arc<Shared>, element: &gst::Element) {
    let Some(factory) = element.factory() else {
        return;
    };
    let klass = factory.klass();
    if !(klass.contains("Parser") && (klass.contains("Video") || klass.contains("Image"))) {
        return;
    }
    let Some(src) = element.static_pad("src") else {
        return;
    };
    {
        let mut st = s.encoded_state.lock().unwrap();
        if st.tapped {
            return;
        }
        st.tapped = true;
    }
    gst::debug!(super::CAT, "encoded output from {}", element.name());
    let weak = Arc::downgrade(s);
    src.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let (Some(s), Some(gst::PadProbeData::Buffer(b))) = (weak.upgrade(), &info.data) {
            encoded_out(&s, pad, b);
        }
        gst::PadProbeReturn::Ok
    });
}

/// One access unit from the parser's pad `from` to the encoded output.
fn encoded_out(s: &Shared, from: &gst::Pad, buffer: &gst::Buffer) {
    let Some((appsrc, pad)) = &s.encoded else {
        return;
    };
    // Nobody reads it: not even copied.
    if !pad.is_linked() {
        return;
    }
    let Some(caps) = from.current_caps() else {
        return;
    };
    let live = s.config.live;
    {
        let mut st = s.encoded_state.lock().unwrap();
        let full = live && appsrc.current_level_buffers() >= appsrc.max_buffers();
        if full {
            // Downstream lags: this access unit and the rest of its GOP go, so that what is
            // queued stays decodable; the next keyframe resumes with DISCONT.
            st.waiting_keyframe = true;
            drop(st);
            s.info.lock().unwrap().encoded_dropped += 1;
            return;
        }
        if st.waiting_keyframe {
            if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                drop(st);
                s.info.lock().unwrap().encoded_before_keyframe += 1;
                return;
            }
            st.waiting_keyframe = false;
            st.discont = true;
        }
    }
    let segment = from
        .sticky_event::<gst::event::Segment>(0)
        .map(|e| e.segment().clone());
    let mut sample = gst::Sample::builder().buffer(buffer).caps(&caps);
    if let Some(seg) = &segment {
        sample = sample.segment(seg);
    }
    let _ = hand_over(s, appsrc, &sample.build(), Output::Encoded, live);
}
