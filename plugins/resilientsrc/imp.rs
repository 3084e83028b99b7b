// SPDX-License-Identifier: MPL-2.0
//! `resilientsrc` implementation: a bin holding one `appsrc` per output (`src`, `audio` with
//! `audio=true`, `encoded` with `encoded=true`) behind ghost pads; the [`Controller`] thread runs the source and decoder
//! in an inner pipeline and feeds them.
//!
//! Lock order: `settings`, then `controller`. The controller thread never takes either; it
//! reports through [`Host`] (messages, notify) and its own `info`.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::CAT;
use super::controller::{self, Controller, Host, Info};
use super::{DecoderChoice, Status, probe, uri};
use crate::util::backoff::Backoff;

const MS: u64 = 1_000_000;
const DEFAULT_STALL_TIMEOUT: u64 = 5000 * MS;
const DEFAULT_BACKOFF_INITIAL: u64 = 500 * MS;
const DEFAULT_BACKOFF_MAX: u64 = 30_000 * MS;
const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
const DEFAULT_JITTER: f64 = 0.2;
const DEFAULT_LATENCY: u64 = 200 * MS;

#[derive(Debug, Clone)]
struct Settings {
    uri: Option<String>,
    audio: bool,
    encoded: bool,
    /// Durations in ns, as the properties.
    stall_timeout: u64,
    backoff_initial: u64,
    backoff_max: u64,
    backoff_multiplier: f64,
    jitter: f64,
    max_attempts: u32,
    decoder: DecoderChoice,
    decoder_fallback: bool,
    latency: u64,
    protocols: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            uri: None,
            audio: false,
            encoded: false,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            backoff_multiplier: DEFAULT_BACKOFF_MULTIPLIER,
            jitter: DEFAULT_JITTER,
            max_attempts: 0,
            decoder: DecoderChoice::Auto,
            decoder_fallback: true,
            latency: DEFAULT_LATENCY,
            protocols: None,
        }
    }
}

pub struct ResilientSrc {
    settings: Mutex<Settings>,
    video: gst_app::AppSrc,
    audio: Mutex<Option<(gst_app::AppSrc, gst::GhostPad)>>,
    encoded: Mutex<Option<(gst_app::AppSrc, gst::GhostPad)>>,
    controller: Mutex<Option<Controller>>,
    /// The last run's info, kept after stop.
    last: Mutex<Info>,
}

#[glib::object_subclass]
impl ObjectSubclass for ResilientSrc {
    const NAME: &'static str = "GstResilientSrc";
    type Type = super::ResilientSrc;
    type ParentType = gst::Bin;

    fn new() -> Self {
        ResilientSrc {
            settings: Mutex::new(Settings::default()),
            video: gst_app::AppSrc::builder()
                .name("video")
                .format(gst::Format::Time)
                .build(),
            audio: Mutex::new(None),
            encoded: Mutex::new(None),
            controller: Mutex::new(None),
            last: Mutex::new(Info::default()),
        }
    }
}

/// The element's side of the controller: messages and notifications.
struct ElementHost(glib::WeakRef<super::ResilientSrc>);

impl Host for ElementHost {
    fn status_changed(&self, info: &Info, reason: &str) {
        let Some(el) = self.0.upgrade() else {
            return;
        };
        gst::info!(CAT, obj = el, "status {:?}: {reason}", info.status);
        let mut b = gst::Structure::builder("resilientsrc-status")
            .field("status", status_nick(info.status))
            .field("reason", reason)
            .field("attempt", info.attempts)
            .field("reconnects", info.reconnects);
        if let Some(d) = info.retry_in {
            b = b.field("retry-in", d.as_millis() as u64);
        }
        let _ = el.post_message(gst::message::Element::builder(b.build()).src(&el).build());
        el.notify("status");
    }

    fn stream_found(&self, info: &Info) {
        let Some(el) = self.0.upgrade() else {
            return;
        };
        gst::info!(
            CAT,
            obj = el,
            "container {:?}, codec {:?}, decoder {:?} ({})",
            info.container,
            info.codec,
            info.decoder,
            info.decoder_kind.map(|k| k.name()).unwrap_or("-")
        );
        let s = gst::Structure::builder("resilientsrc-stream")
            .field("container", info.container.clone().unwrap_or_default())
            .field("codec", info.codec.clone().unwrap_or_default())
            .field("decoder", info.decoder.clone().unwrap_or_default())
            .field(
                "decoder-kind",
                info.decoder_kind.map(|k| k.name()).unwrap_or(""),
            )
            .build();
        let _ = el.post_message(gst::message::Element::builder(s).src(&el).build());
    }

    fn fail(&self, msg: &str) {
        if let Some(el) = self.0.upgrade() {
            gst::element_error!(el, gst::ResourceError::OpenRead, ("{msg}"));
        }
    }

    fn warn(&self, msg: &str) {
        if let Some(el) = self.0.upgrade() {
            gst::element_warning!(el, gst::ResourceError::Settings, ("{msg}"));
        }
    }

    fn state_settled(&self) -> bool {
        let Some(el) = self.0.upgrade() else {
            return true;
        };
        let mut top: gst::Element = el.upcast();
        while let Some(parent) = top.parent().and_then(|p| p.downcast::<gst::Element>().ok()) {
            top = parent;
        }
        // `gst_element_set_state` holds the element's state lock until it returns: free, no
        // state change of the top-level pipeline is under way.
        // SAFETY: `state_lock` is the GRecMutex of an element we hold a reference to; a lock
        // taken here is released at once.
        unsafe {
            let lock = std::ptr::addr_of_mut!((*top.as_ptr()).state_lock);
            if glib::ffi::g_rec_mutex_trylock(lock) != glib::ffi::GFALSE {
                glib::ffi::g_rec_mutex_unlock(lock);
                true
            } else {
                false
            }
        }
    }
}

fn status_nick(s: Status) -> &'static str {
    match s {
        Status::Stopped => "stopped",
        Status::Connecting => "connecting",
        Status::Running => "running",
        Status::Retrying => "retrying",
        Status::Failed => "failed",
        Status::Ended => "ended",
    }
}

impl ResilientSrc {
    fn info(&self) -> Info {
        match self.controller.lock().unwrap().as_ref() {
            Some(c) => c.info(),
            None => self.last.lock().unwrap().clone(),
        }
    }

    /// Before READY→PAUSED: checks the settings and makes the outputs live or not (which
    /// decides whether the bin prerolls).
    fn prepare(&self) -> Result<controller::Config, gst::StateChangeError> {
        let settings = self.settings.lock().unwrap().clone();
        let Some(location) = settings.uri.clone() else {
            gst::element_imp_error!(
                self,
                gst::ResourceError::NotFound,
                ("no uri set. Set uri to a camera or file, e.g. uri=rtsp://cam/stream or uri=/path/to/clip.mp4")
            );
            return Err(gst::StateChangeError);
        };
        let uri = match uri::normalize(&location) {
            Ok(u) => u,
            Err(e) => {
                gst::element_imp_error!(self, gst::ResourceError::NotFound, ("{e}"));
                return Err(gst::StateChangeError);
            }
        };
        if let Some(p) = &settings.protocols
            && let Err(e) = uri::check_protocols(p)
        {
            gst::element_imp_error!(self, gst::ResourceError::Settings, ("{e}"));
            return Err(gst::StateChangeError);
        }
        // What can be known now is said by the state change itself (and not later, from a
        // thread, while the application may not be listening yet).
        if let Err(e) = uri::validate(&uri) {
            let kind = if uri::scheme(&uri) == "file" {
                gst::ResourceError::NotFound
            } else {
                gst::ResourceError::Settings
            };
            gst::element_imp_error!(self, kind, ("{e}"));
            return Err(gst::StateChangeError);
        }
        let live = match uri::liveness(&uri) {
            uri::Liveness::Live => true,
            uri::Liveness::File => false,
            uri::Liveness::AskTheSource => {
                let timeout = Duration::from_nanos(settings.stall_timeout.min(3000 * MS));
                let answer = probe::http_is_live(&uri, timeout);
                gst::info!(
                    CAT,
                    imp = self,
                    "{}: {}",
                    uri::redact(&uri),
                    match answer {
                        Some(true) => "a live stream (multipart, or no length)",
                        Some(false) => "a file (the server gives its length)",
                        None => "no answer yet: taken for a live camera (retried)",
                    }
                );
                answer.unwrap_or(true)
            }
        };
        self.video.set_is_live(live);
        self.video.set_block(!live);
        // Bounded in frames, not bytes (appsrc's 200 000-byte default is less than one frame).
        self.video.set_max_bytes(0);
        self.video.set_max_buffers(if live { 30 } else { 4 });
        self.video
            .set_property_from_str("leaky-type", if live { "downstream" } else { "none" });
        let audio = self.audio.lock().unwrap().as_ref().map(|(a, _)| a.clone());
        if let Some(a) = &audio {
            a.set_is_live(live);
            a.set_block(!live);
            a.set_max_bytes(0);
            a.set_max_buffers(if live { 60 } else { 16 });
            a.set_property_from_str("leaky-type", if live { "downstream" } else { "none" });
        }
        let encoded = self
            .encoded
            .lock()
            .unwrap()
            .as_ref()
            .map(|(e, _)| e.clone());
        if let Some(e) = &encoded {
            // Access units are small: a live camera's 8 s at 15 fps queue before the
            // controller drops (to the next keyframe, counted: never leaky, which would leave
            // a hole in a GOP); a file's output blocks like the decoded one.
            e.set_is_live(live);
            e.set_block(!live);
            e.set_max_bytes(0);
            e.set_max_buffers(if live { 120 } else { 16 });
            e.set_property_from_str("leaky-type", "none");
        }
        let config = controller::Config {
            uri: uri.clone(),
            live,
            stall_timeout: Duration::from_nanos(settings.stall_timeout),
            backoff: Backoff {
                initial: Duration::from_nanos(settings.backoff_initial),
                max: Duration::from_nanos(settings.backoff_max),
                multiplier: settings.backoff_multiplier,
                jitter: settings.jitter,
            },
            max_attempts: settings.max_attempts,
            decoder: settings.decoder,
            decoder_fallback: settings.decoder_fallback,
            latency_ms: u32::try_from(settings.latency / MS).unwrap_or(u32::MAX),
            protocols: settings.protocols.clone(),
        };
        Ok(config)
    }

    /// After READY→PAUSED (the outputs accept data now): starts the reconnect loop.
    fn start(&self, config: controller::Config) {
        gst::info!(
            CAT,
            imp = self,
            "starting on {} (live: {})",
            uri::redact(&config.uri),
            config.live
        );
        let audio = self.audio.lock().unwrap().as_ref().map(|(a, _)| a.clone());
        let encoded = self
            .encoded
            .lock()
            .unwrap()
            .as_ref()
            .map(|(e, pad)| (e.clone(), pad.clone().upcast()));
        let host = Box::new(ElementHost(self.obj().downgrade()));
        let outputs = controller::Outputs {
            video: self.video.clone(),
            audio,
            encoded,
        };
        *self.controller.lock().unwrap() = Some(Controller::start(config, outputs, host));
    }

    fn stop(&self) {
        let taken = self.controller.lock().unwrap().take();
        if let Some(mut c) = taken {
            c.stop();
            let mut info = c.info();
            info.status = Status::Stopped;
            *self.last.lock().unwrap() = info;
            self.obj().notify("status");
        }
    }
}

impl ObjectImpl for ResilientSrc {
    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add(&self.video).unwrap();
        let pad = gst::GhostPad::builder_with_target(&self.video.static_pad("src").unwrap())
            .unwrap()
            .name("src")
            .build();
        obj.add_pad(&pad).unwrap();
        obj.set_element_flags(gst::ElementFlags::SOURCE);
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("uri")
                    .nick("URI")
                    .blurb(
                        "What to play: rtsp://, rtsps://, rtmp://, http(s)://, file://, v4l2:// \
                         or a plain path. Container and codec are found from the bytes, not the \
                         name. rtsp/rtmp/v4l2/udp/srt are live (reconnected); http(s) is live when \
                         the server streams without a length or multipart (MJPEG cameras), else \
                         a file; files end with EOS. A malformed URI or a missing file is an \
                         error at start. Credentials (user:password@) go to the source as \
                         user-id/user-pw and are never logged, nor an RTMP stream key. Required. \
                         Default: none",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("audio")
                    .nick("Audio")
                    .blurb("Also output the first audio stream, decoded, on an 'audio' pad (created when set). Default: false")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("encoded")
                    .nick("Encoded output")
                    .blurb(
                        "Also output the video stream as it arrives, before decoding, on an \
                         'encoded' pad (created when set): parsed, whole access units with their \
                         caps (e.g. video/x-h264,stream-format=avc,alignment=au), from the same \
                         connection as the decoded frames, so a recorder needs no second \
                         connection to the camera and no re-encoding. Each connection's first \
                         access unit is a keyframe (those before it are counted in stats as \
                         encoded-before-keyframe); timestamps and DISCONT follow the decoded \
                         output's rules, and the capture-time metas are the same on both. An \
                         unlinked 'encoded' pad costs nothing. Default: false",
                    )
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("stall-timeout")
                    .nick("Stall timeout")
                    .blurb(
                        "Live sources: no frame for this long (ns) counts as a failure and \
                         triggers a reconnect. Any source: the time allowed for the first frame \
                         (at least 2 s); a file that gives none by then is an error. At least \
                         100 ms. Default: 5000000000 (5 s)",
                    )
                    .minimum(100 * MS)
                    .maximum(86_400_000 * MS)
                    .default_value(DEFAULT_STALL_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("backoff-initial")
                    .nick("Initial backoff")
                    .blurb("Wait (ns) before the first reconnect attempt. Default: 500000000 (0.5 s)")
                    .maximum(86_400_000 * MS)
                    .default_value(DEFAULT_BACKOFF_INITIAL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("backoff-max")
                    .nick("Maximum backoff")
                    .blurb("Longest wait (ns) between attempts. Default: 30000000000 (30 s)")
                    .maximum(86_400_000 * MS)
                    .default_value(DEFAULT_BACKOFF_MAX)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("backoff-multiplier")
                    .nick("Backoff multiplier")
                    .blurb("Each failed attempt multiplies the wait by this. Default: 2")
                    .minimum(1.0)
                    .maximum(100.0)
                    .default_value(DEFAULT_BACKOFF_MULTIPLIER)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("jitter")
                    .nick("Jitter")
                    .blurb(
                        "Random spread of each wait: ± this fraction (0 to 1), so cameras that \
                         dropped together do not reconnect in lockstep. Default: 0.2",
                    )
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_JITTER)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-attempts")
                    .nick("Maximum attempts")
                    .blurb(
                        "Give up (status failed, element error) after this many failed attempts \
                         in a row; a success resets the count. 0 = never give up. Default: 0",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("decoder", DecoderChoice::Auto)
                    .nick("Decoder")
                    .blurb(
                        "Video decoder kind: auto (NVDEC, then VA-API, then CPU, checked at run \
                         time), nvdec, vaapi or cpu. The choice is posted ('resilientsrc-stream') \
                         and in stats. Default: auto",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("decoder-fallback")
                    .nick("Decoder fallback")
                    .blurb(
                        "With a forced decoder kind that is missing or fails: warn and use the \
                         next kind (true) or fail with an error (false). Default: true",
                    )
                    .default_value(true)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("latency")
                    .nick("Latency")
                    .blurb(
                        "RTSP: rtspsrc's jitterbuffer latency (ns; rtspsrc takes whole \
                         milliseconds). Default: 200000000 (200 ms)",
                    )
                    .maximum(3_600_000 * MS)
                    .default_value(DEFAULT_LATENCY)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("protocols")
                    .nick("Protocols")
                    .blurb("RTSP: lower transports allowed, as rtspsrc's protocols, e.g. \"tcp\" or \"udp+tcp\". Default: none (rtspsrc's)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("status", Status::Stopped)
                    .nick("Status")
                    .blurb(
                        "Read-only, notified on change (also posted as 'resilientsrc-status' \
                         messages with status, reason, attempt, reconnects, retry-in ms): \
                         stopped, connecting, running, retrying, failed, ended",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "Read-only 'resilientsrc-stats' structure: status, reconnects, attempt \
                         (failed attempts in a row), frames, dropped (live frames dropped while \
                         downstream lagged), encoded-frames, encoded-before-keyframe, \
                         encoded-dropped (the encoded output's), container, codec, decoder, \
                         decoder-kind, last-error",
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
            "uri" => {
                s.uri = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|u| !u.is_empty())
            }
            "audio" => {
                s.audio = value.get().expect("type checked upstream");
                let want = s.audio;
                drop(s);
                self.set_output(&self.audio, "audio", want);
            }
            "encoded" => {
                s.encoded = value.get().expect("type checked upstream");
                let want = s.encoded;
                drop(s);
                self.set_output(&self.encoded, "encoded", want);
            }
            "stall-timeout" => s.stall_timeout = value.get().expect("type checked upstream"),
            "backoff-initial" => s.backoff_initial = value.get().expect("type checked upstream"),
            "backoff-max" => s.backoff_max = value.get().expect("type checked upstream"),
            "backoff-multiplier" => {
                s.backoff_multiplier = value.get().expect("type checked upstream")
            }
            "jitter" => s.jitter = value.get().expect("type checked upstream"),
            "max-attempts" => s.max_attempts = value.get().expect("type checked upstream"),
            "decoder" => s.decoder = value.get().expect("type checked upstream"),
            "decoder-fallback" => s.decoder_fallback = value.get().expect("type checked upstream"),
            "latency" => s.latency = value.get().expect("type checked upstream"),
            "protocols" => {
                s.protocols = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|p| !p.is_empty())
            }
            other => unreachable!("unknown property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "status" => return self.info().status.to_value(),
            "stats" => {
                let i = self.info();
                return gst::Structure::builder("resilientsrc-stats")
                    .field("status", status_nick(i.status))
                    .field("reconnects", i.reconnects)
                    .field("attempt", i.attempts)
                    .field("frames", i.frames)
                    .field("dropped", i.dropped)
                    .field("encoded-frames", i.encoded_frames)
                    .field("encoded-before-keyframe", i.encoded_before_keyframe)
                    .field("encoded-dropped", i.encoded_dropped)
                    .field("container", i.container.unwrap_or_default())
                    .field("codec", i.codec.unwrap_or_default())
                    .field("decoder", i.decoder.unwrap_or_default())
                    .field(
                        "decoder-kind",
                        i.decoder_kind.map(|k| k.name()).unwrap_or(""),
                    )
                    .field("last-error", i.last_error.unwrap_or_default())
                    .build()
                    .to_value();
            }
            _ => {}
        }
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "uri" => s.uri.to_value(),
            "audio" => s.audio.to_value(),
            "encoded" => s.encoded.to_value(),
            "stall-timeout" => s.stall_timeout.to_value(),
            "backoff-initial" => s.backoff_initial.to_value(),
            "backoff-max" => s.backoff_max.to_value(),
            "backoff-multiplier" => s.backoff_multiplier.to_value(),
            "jitter" => s.jitter.to_value(),
            "max-attempts" => s.max_attempts.to_value(),
            "decoder" => s.decoder.to_value(),
            "decoder-fallback" => s.decoder_fallback.to_value(),
            "latency" => s.latency.to_value(),
            "protocols" => s.protocols.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl ResilientSrc {
    /// Adds or removes an optional output (`audio`, `encoded`): its appsrc and ghost pad.
    fn set_output(
        &self,
        slot: &Mutex<Option<(gst_app::AppSrc, gst::GhostPad)>>,
        name: &str,
        want: bool,
    ) {
        let mut output = slot.lock().unwrap();
        let obj = self.obj();
        match (want, output.is_some()) {
            (true, false) => {
                let appsrc = gst_app::AppSrc::builder()
                    .name(name)
                    .format(gst::Format::Time)
                    .build();
                obj.add(&appsrc).unwrap();
                let templ = obj.pad_template(name).expect("a template per output");
                let pad = gst::GhostPad::builder_from_template_with_target(
                    &templ,
                    &appsrc.static_pad("src").unwrap(),
                )
                .unwrap()
                .name(name)
                .build();
                obj.add_pad(&pad).unwrap();
                *output = Some((appsrc, pad));
            }
            (false, true) => {
                if let Some((appsrc, pad)) = output.take() {
                    let _ = obj.remove_pad(&pad);
                    let _ = obj.remove(&appsrc);
                }
            }
            _ => {}
        }
    }
}

impl GstObjectImpl for ResilientSrc {}

impl ElementImpl for ResilientSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Self-healing decoded video source",
                "Source/Video",
                "Plays any URI (RTSP, RTMP, HTTP, file, V4L2, or a path) to decoded raw video, \
                 finding container and codec from the bytes. Live sources that fail, stall or \
                 end are reconnected with exponential backoff and jitter while downstream sees \
                 one continuous stream (stable caps, running time always increasing, DISCONT \
                 after a gap). Decoder: NVDEC, VA-API or CPU, with fallback. Posts \
                 'resilientsrc-status' and 'resilientsrc-stream' element messages",
                "videoai developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &gst::Caps::builder("video/x-raw").any_features().build(),
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "audio",
                    gst::PadDirection::Src,
                    gst::PadPresence::Sometimes,
                    &gst::Caps::builder("audio/x-raw").build(),
                )
                .unwrap(),
                // Whatever the camera sends: video/x-h264, video/x-h265, image/jpeg, …
                gst::PadTemplate::new(
                    "encoded",
                    gst::PadDirection::Src,
                    gst::PadPresence::Sometimes,
                    &gst::Caps::new_any(),
                )
                .unwrap(),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        let config = if transition == gst::StateChange::ReadyToPaused {
            Some(self.prepare()?)
        } else {
            None
        };
        let res = self.parent_change_state(transition);
        if let (Some(config), Ok(_)) = (config, &res) {
            self.start(config);
        }
        if transition == gst::StateChange::PausedToReady {
            self.stop();
        }
        res
    }
}

impl BinImpl for ResilientSrc {}
