// SPDX-License-Identifier: MPL-2.0
//! A real RTSP camera for the tests: gst-rtsp-server (through the gstreamer-rtsp-server crate)
//! serving live H.264 on 127.0.0.1, in a child process so that "the camera goes away" is a
//! real process death (SIGKILL: connections reset, nothing said goodbye).
//!
//! The child is the test binary itself, re-run on the test named by `entry`, which calls
//! [`serve_if_child`]. It exits by itself when the parent goes away (its stdin closes).

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gst_rtsp_server::prelude::*;

use super::free_port;

const CHILD_ENV: &str = "VIDEOAI_TEST_RTSP_PORT";
/// `user:password`: the child asks for these (RTSP basic authentication).
const AUTH_ENV: &str = "VIDEOAI_TEST_RTSP_AUTH";
/// The media to serve instead of [`LAUNCH`] (gst-rtsp-server launch syntax).
const LAUNCH_ENV: &str = "VIDEOAI_TEST_RTSP_LAUNCH";
/// How the camera says when its frames were captured ([`Clock`]).
const CLOCK_ENV: &str = "VIDEOAI_TEST_RTSP_CLOCK";

/// How a test camera tells its clients when its frames were captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// RTCP sender reports only (the first one 1 to 3 s after a session starts), as most
    /// cameras.
    SenderReports,
    /// Also the capture time in every RTP packet (RFC 6051's 64-bit NTP header extension,
    /// `urn:ietf:params:rtp-hdrext:ntp-64`), so a client knows it from the first packet.
    Ntp64,
    /// The NTP-64 header extension and no RTCP at all: the first packet is the only way.
    Ntp64WithoutRtcp,
    /// Neither: no RTCP, no header extension (a camera whose frames cannot be placed).
    Nothing,
}

impl Clock {
    fn name(self) -> &'static str {
        match self {
            Clock::SenderReports => "sr",
            Clock::Ntp64 => "ntp64",
            Clock::Ntp64WithoutRtcp => "ntp64-no-rtcp",
            Clock::Nothing => "nothing",
        }
    }
}

/// The media served: a moving ball, 320×240 at 30 fps, H.264.
pub const LAUNCH: &str = "( videotestsrc is-live=true pattern=ball ! \
    video/x-raw,width=320,height=240,framerate=30/1 ! \
    openh264enc gop-size=15 ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )";

pub struct RtspCamera {
    port: u16,
    entry: &'static str,
    child: Option<Child>,
    auth: Option<(String, String)>,
    launch: Option<String>,
    clock: Clock,
}

impl RtspCamera {
    /// Starts a camera serving `rtsp://127.0.0.1:<port>/cam`; `entry` is the name of the test
    /// that calls [`serve_if_child`].
    pub fn start(entry: &'static str) -> RtspCamera {
        Self::start_with_auth(entry, None)
    }

    /// A camera that only serves clients giving `user` and `password` (basic authentication).
    pub fn start_with_auth(entry: &'static str, auth: Option<(&str, &str)>) -> RtspCamera {
        let mut cam = RtspCamera {
            port: free_port(),
            entry,
            child: None,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            launch: None,
            clock: Clock::SenderReports,
        };
        cam.restart();
        cam
    }

    /// A camera ([`RtspCamera::start`]) that says its frames' capture times as `clock` says.
    pub fn start_with_clock(entry: &'static str, clock: Clock) -> RtspCamera {
        let mut cam = RtspCamera {
            port: free_port(),
            entry,
            child: None,
            auth: None,
            launch: None,
            clock,
        };
        cam.restart();
        cam
    }

    /// A camera that sends the H.264 of `mp4` once, in real time (RTP and RTCP as any
    /// camera), then ends its stream.
    pub fn start_file(entry: &'static str, mp4: &std::path::Path) -> RtspCamera {
        let mut cam = RtspCamera {
            port: free_port(),
            entry,
            child: None,
            auth: None,
            launch: Some(format!(
                "( filesrc location=\"{}\" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 \
                 config-interval=-1 )",
                mp4.display()
            )),
            clock: Clock::SenderReports,
        };
        cam.restart();
        cam
    }

    pub fn uri(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server process (SIGSTOP): connections stay open, nothing more is sent, as
    /// with a hung camera. `kill` and `restart` still work.
    pub fn freeze(&mut self) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args(["-STOP", &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -STOP {}", c.id());
        }
    }

    /// Starts the server again on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([self.entry, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, self.port.to_string());
        if let Some((u, p)) = &self.auth {
            cmd.env(AUTH_ENV, format!("{u}:{p}"));
        }
        if let Some(l) = &self.launch {
            cmd.env(LAUNCH_ENV, l);
        }
        cmd.env(CLOCK_ENV, self.clock.name());
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the RTSP server did not listen on 127.0.0.1:{} within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RtspCamera {
    fn drop(&mut self) {
        self.kill();
    }
}

// gstreamer-rtp (the crate) is not among this project's crates; its one function needed here,
// from the library GStreamer's RTP payloaders live in.
#[link(name = "gstrtp-1.0")]
unsafe extern "C" {
    fn gst_rtp_header_extension_set_id(ext: *mut gst::ffi::GstElement, ext_id: u32);
}

/// NTP's epoch (1900) to the Unix epoch, in seconds.
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Makes `media`'s payloader write each frame's capture time (this machine's wall clock when
/// the frame was taken, as NTP time) into every RTP packet: RFC 6051's NTP-64 header
/// extension, which the payloader fills from a `timestamp/x-ntp` reference timestamp on the
/// frame, put there by a probe; the SDP then announces it (`a=extmap`).
fn send_capture_times(media: &gst_rtsp_server::RTSPMedia) {
    use glib::translate::ToGlibPtr;
    let bin = media
        .element()
        .downcast::<gst::Bin>()
        .expect("the media is a bin");
    let pay = bin.by_name("pay0").expect("the media has pay0");
    let ext = gst::ElementFactory::make("rtphdrextntp64")
        .property("every-packet", true)
        .build()
        .expect("rtphdrextntp64 (gst-plugins-good) is installed");
    // SAFETY: `ext` is a live GstRTPHeaderExtension (rtphdrextntp64 derives from it) and the
    // call only sets its id.
    unsafe { gst_rtp_header_extension_set_id(ext.to_glib_none().0, 1) };
    pay.emit_by_name::<()>("add-extension", &[&ext]);
    let caps = gst::Caps::new_empty_simple("timestamp/x-ntp");
    let sink = pay.static_pad("sink").expect("a payloader has a sink pad");
    sink.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(element) = pad.parent_element() else {
            return gst::PadProbeReturn::Ok;
        };
        let (Some(clock), Some(base), Some(pts)) =
            (element.clock(), element.base_time(), buffer.pts())
        else {
            return gst::PadProbeReturn::Ok;
        };
        // The frame's running time on the pipeline's clock, then on the wall clock.
        let now = clock.time();
        let age = now.nseconds() as i128 - (base.nseconds() + pts.nseconds()) as i128;
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128;
        let ntp = wall - age + (NTP_UNIX_OFFSET_S as i128) * 1_000_000_000;
        let b = buffer.make_mut();
        gst::ReferenceTimestampMeta::add(b, &caps, gst::ClockTime::from_nseconds(ntp as u64), None);
        gst::PadProbeReturn::Ok
    });
}

/// In the child process: serves until killed or until the parent closes stdin. Returns at
/// once in the parent.
pub fn serve_if_child() {
    let Ok(port) = std::env::var(CHILD_ENV) else {
        return;
    };
    gst::init().unwrap();
    let server = gst_rtsp_server::RTSPServer::new();
    server.set_address("127.0.0.1");
    server.set_service(&port);
    let factory = gst_rtsp_server::RTSPMediaFactory::new();
    factory.set_launch(&std::env::var(LAUNCH_ENV).unwrap_or_else(|_| LAUNCH.to_string()));
    factory.set_shared(true);
    let clock = std::env::var(CLOCK_ENV).unwrap_or_default();
    if clock == Clock::Ntp64WithoutRtcp.name() || clock == Clock::Nothing.name() {
        factory.set_enable_rtcp(false);
    }
    if clock == Clock::Ntp64.name() || clock == Clock::Ntp64WithoutRtcp.name() {
        factory.connect_media_configure(|_, media| send_capture_times(media));
    }
    if let Some((user, password)) = std::env::var(AUTH_ENV).ok().and_then(|a| {
        a.split_once(':')
            .map(|(u, p)| (u.to_string(), p.to_string()))
    }) {
        let auth = gst_rtsp_server::RTSPAuth::new();
        let token = gst_rtsp_server::RTSPToken::builder()
            .field(gst_rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
            .build();
        auth.add_basic(
            gst_rtsp_server::RTSPAuth::make_basic(&user, &password).as_str(),
            &token,
        );
        server.set_auth(Some(&auth));
        factory.add_role_from_structure(
            &gst::Structure::builder("viewer")
                .field(gst_rtsp_server::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                .field(gst_rtsp_server::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                .build(),
        );
    }
    server.mount_points().unwrap().add_factory("/cam", factory);
    let main_loop = glib::MainLoop::new(None, false);
    let _source = server.attach(None).expect("the RTSP server binds its port");
    std::thread::spawn(|| {
        // The parent went away: stop.
        let mut buf = [0u8; 1];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    main_loop.run();
}
