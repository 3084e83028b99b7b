// SPDX-License-Identifier: MPL-2.0
//! One camera's pipeline, on a thread of its own: everything that can block on GStreamer
//! (`parse::launch`, state changes and what they wait for, such as resilientsrc's HTTP probe,
//! EOS, stats reads) happens here, never on the worker's lease tick.
//!
//! The thread builds the pipeline and plays it, watches its bus, and every
//! [`SAMPLE_EVERY`] writes a [`Snapshot`] the tick reads without waiting: its state, the
//! last error or warning, frames through the sinks, whether a `raftsink` still waits for the
//! camera's clock, and how many events it stored. An error or an unexpected EOS ends the
//! pipeline; it is built again after a backoff (`retrying` meanwhile). A stop
//! ([`CameraRun::stop`]) ends it with EOS, once no `raftsink` waits for the camera's clock
//! (at most its `capture-time-wait`), and waits for the EOS to reach the sinks, at most the
//! longest `eos-timeout` of its `raftsink`s (so the events are durable, in NATS with a
//! `nats://` location) plus a margin; or, without EOS, sets it to NULL at once.
//!
//! Lock order: only `Shared::snapshot`, held for copies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gst::prelude::*;

use super::registry::now_ms;
use super::template::{self, Filled};

/// How often the thread samples the pipeline.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Beyond the `eos-timeout` of its raftsinks, how long a stop waits for EOS.
const EOS_MARGIN: Duration = Duration::from_secs(5);
/// raftsink's default `eos-timeout`, for pipelines that have no raftsink.
const DEFAULT_EOS_WAIT: Duration = Duration::from_secs(30);

/// Where a camera's pipeline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Starting,
    Running,
    /// Ended by an error (or the stream ended); built again after a backoff.
    Retrying,
    /// Being stopped (EOS on its way).
    Stopping,
    /// The thread is done.
    Ended,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Retrying => "retrying",
            Phase::Stopping => "stopping",
            Phase::Ended => "ended",
        }
    }
}

/// What the tick knows of the camera's pipeline.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub phase: Phase,
    /// The last error or warning.
    pub detail: String,
    /// Failures in a row (reset once frames flow again).
    pub failures: u32,
    /// A pipeline that could not be built at all: the pipeline file or the camera's
    /// parameters are at fault.
    pub unbuildable: Option<String>,
    /// A raftsink waits for the camera's clock (frames held, or none came yet).
    pub waits_for_clock: bool,
    /// Events its raftsinks stored (in NATS, for a `nats://` location); without a raftsink,
    /// frames through its sinks.
    pub stored: u64,
    /// A raftsink's last NATS error, if any.
    pub store_error: String,
}

/// Frames through the sinks (a pad probe counts them: atomics, no lock).
#[derive(Debug, Default)]
pub struct Frames {
    pub count: AtomicU64,
    /// When the last one arrived (ms since the epoch).
    pub last_ms: AtomicU64,
    /// The camera's capture time of the last one (ms since the epoch; 0: none said).
    pub last_capture_ms: AtomicU64,
}

struct Shared {
    snapshot: Mutex<Snapshot>,
}

/// How to stop.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// EOS first (events durable), then NULL.
    Drain,
    /// NULL at once.
    Now,
}

/// A camera's pipeline thread.
pub struct CameraRun {
    shared: Arc<Shared>,
    stop: Sender<Stop>,
    thread: Option<JoinHandle<()>>,
    pub frames: Arc<Frames>,
}

impl CameraRun {
    /// Starts the thread for camera `id`, whose pipeline is `description` (its placeholders
    /// filled, [`template::fill`]).
    pub fn start(id: &str, description: Filled) -> CameraRun {
        let shared = Arc::new(Shared {
            snapshot: Mutex::new(Snapshot::default()),
        });
        let frames = Arc::new(Frames::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let (s, f, name) = (shared.clone(), frames.clone(), id.to_string());
        let thread = std::thread::Builder::new()
            .name(format!("camera-{id}"))
            .spawn(move || run(&name, &description, &s, &f, &rx))
            .expect("a thread can be started");
        CameraRun {
            shared,
            stop: tx,
            thread: Some(thread),
            frames,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot.lock().unwrap().clone()
    }

    /// Asks the thread to stop (it returns at once; [`Self::finished`] says when it is done).
    pub fn stop(&self, how: Stop) {
        let _ = self.stop.send(how);
    }

    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the thread to end.
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set(shared: &Shared, f: impl FnOnce(&mut Snapshot)) {
    f(&mut shared.snapshot.lock().unwrap());
}

fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
}

fn run(
    id: &str,
    description: &Filled,
    shared: &Shared,
    frames: &Arc<Frames>,
    stop: &Receiver<Stop>,
) {
    let mut failures = 0u32;
    loop {
        set(shared, |s| s.phase = Phase::Starting);
        let pipeline = match build(id, description, frames) {
            Ok(p) => p,
            Err(why) => {
                set(shared, |s| {
                    s.unbuildable = Some(why.clone());
                    s.detail = why;
                    s.phase = Phase::Ended;
                });
                return;
            }
        };
        let started = pipeline.set_state(gst::State::Playing).is_ok();
        let mut how = None;
        if started {
            set(shared, |s| s.phase = Phase::Running);
            how = watch(&pipeline, shared, frames, stop, &mut failures);
        } else {
            let why = first_error(&pipeline).unwrap_or_else(|| "cannot start".into());
            failures += 1;
            set(shared, |s| {
                s.detail = format!("{id}: {why}");
                s.phase = Phase::Retrying;
                s.failures = failures;
            });
        }
        match how {
            Some(how) => {
                set(shared, |s| s.phase = Phase::Stopping);
                end(&pipeline, how, frames);
                set(shared, |s| s.phase = Phase::Ended);
                return;
            }
            None => {
                let _ = pipeline.set_state(gst::State::Null);
                // Retry after a backoff, unless told to stop meanwhile.
                match stop.recv_timeout(backoff(failures)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => {
                        set(shared, |s| s.phase = Phase::Ended);
                        return;
                    }
                }
            }
        }
    }
}

/// Builds the pipeline (parameters bound as property values), its sinks counting frames.
fn build(id: &str, filled: &Filled, frames: &Arc<Frames>) -> Result<gst::Pipeline, String> {
    let pipeline = gst::parse::launch(&filled.description)
        .map_err(|e| template::explain(&e.to_string(), &filled.bound))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline".to_string())?;
    template::bind(pipeline.upcast_ref(), &filled.bound)?;
    pipeline.set_property("name", id);
    for sink in pipeline.iterate_sinks().into_iter().flatten() {
        let Some(pad) = sink.static_pad("sink") else {
            continue;
        };
        let f = frames.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            f.count.fetch_add(1, Ordering::Relaxed);
            f.last_ms.store(now_ms(), Ordering::Relaxed);
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data
                && let Some(c) = crate::formats::capture_time::reference_timestamp(b)
            {
                f.last_capture_ms
                    .store(c.nseconds() / 1_000_000, Ordering::Relaxed);
            }
            gst::PadProbeReturn::Ok
        });
    }
    Ok(pipeline)
}

/// Watches a playing pipeline until it fails (`None`: retry) or a stop comes (`Some`).
fn watch(
    pipeline: &gst::Pipeline,
    shared: &Shared,
    frames: &Frames,
    stop: &Receiver<Stop>,
    failures: &mut u32,
) -> Option<Stop> {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let frames_at_start = frames.count.load(Ordering::Relaxed);
    loop {
        match stop.recv_timeout(SAMPLE_EVERY) {
            Ok(how) => return Some(how),
            Err(RecvTimeoutError::Disconnected) => return Some(Stop::Drain),
            Err(RecvTimeoutError::Timeout) => {}
        }
        while let Some(msg) = bus.pop() {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    *failures += 1;
                    let (detail, n) = (e.error().to_string(), *failures);
                    set(shared, |s| {
                        s.detail = detail;
                        s.phase = Phase::Retrying;
                        s.failures = n;
                    });
                    return None;
                }
                gst::MessageView::Eos(_) => {
                    *failures += 1;
                    let n = *failures;
                    set(shared, |s| {
                        s.detail = "the stream ended".into();
                        s.phase = Phase::Retrying;
                        s.failures = n;
                    });
                    return None;
                }
                gst::MessageView::Warning(w) => {
                    let detail = w.error().to_string();
                    set(shared, |s| s.detail = detail);
                }
                _ => {}
            }
        }
        // A camera that delivers frames is healthy again.
        if *failures > 0 && frames.count.load(Ordering::Relaxed) > frames_at_start {
            *failures = 0;
        }
        let (waits, stored, error) = match raftsinks(pipeline) {
            (waits, Some(stored), error) => (waits, stored, error),
            (waits, None, error) => (waits, frames.count.load(Ordering::Relaxed), error),
        };
        let n = *failures;
        set(shared, |s| {
            s.waits_for_clock = waits;
            s.stored = stored;
            s.store_error = error;
            s.failures = n;
        });
    }
}

/// The pipeline's raftsinks: whether one waits for the camera's clock (its `stats` field
/// `camera-clock` is `waiting`: frames held, or none arrived yet, so any on their way would be),
/// and the events they stored (acknowledged by NATS for a NATS location, else committed;
/// `None` without a raftsink), and the last NATS error one of them saw.
fn raftsinks(p: &gst::Pipeline) -> (bool, Option<u64>, String) {
    let (mut waits, mut stored, mut error) = (false, None, String::new());
    for e in p.iterate_recurse().into_iter().flatten() {
        if e.factory().is_none_or(|f| f.name() != "raftsink") {
            continue;
        }
        let s = e.property::<gst::Structure>("stats");
        waits |= s.get::<&str>("camera-clock").is_ok_and(|c| c == "waiting");
        let location: Option<String> = e.property("location");
        let get = |f: &str| s.get::<u64>(f).unwrap_or(0);
        if let Ok(e) = s.get::<String>("last-error")
            && !e.is_empty()
        {
            error = e;
        }
        *stored.get_or_insert(0) +=
            if location.is_some_and(|l| l.to_ascii_lowercase().starts_with("nats:")) {
                get("forwarded") + get("already-in-nats")
            } else {
                get("written") + get("duplicates")
            };
    }
    (waits, stored, error)
}

/// The longest `capture-time-wait` and `eos-timeout` of the pipeline's raftsinks.
fn raftsink_waits(p: &gst::Pipeline) -> (Duration, Duration) {
    let (mut clock, mut eos) = (Duration::ZERO, Duration::ZERO);
    let mut any = false;
    for e in p.iterate_recurse().into_iter().flatten() {
        if e.factory().is_none_or(|f| f.name() != "raftsink") {
            continue;
        }
        any = true;
        clock = clock.max(Duration::from_nanos(e.property::<u64>("capture-time-wait")));
        eos = eos.max(Duration::from_nanos(e.property::<u64>("eos-timeout")));
    }
    (clock, if any { eos } else { DEFAULT_EOS_WAIT })
}

/// Longest a stop waits for a pipeline to work off a backlog (a worker frozen for a while
/// finds its camera's frames queued in its sockets when it wakes).
const CATCH_UP_MAX: Duration = Duration::from_secs(15);

/// Stops a pipeline: with [`Stop::Drain`], EOS once it caught up with its camera (the last
/// frame's capture time within a second of the stop; at most [`CATCH_UP_MAX`]) and no raftsink
/// waits for the camera's clock (at most its `capture-time-wait`), then waits for the EOS (at
/// most the raftsinks' `eos-timeout` and a margin); then NULL. EOS sent into a backlog would
/// drop the frames still queued, which no other reader may have.
fn end(p: &gst::Pipeline, how: Stop, frames: &Frames) {
    if let Stop::Drain = how {
        let asked_ms = now_ms();
        let deadline = Instant::now() + CATCH_UP_MAX;
        while Instant::now() < deadline {
            let capture = frames.last_capture_ms.load(Ordering::Relaxed);
            let arrived = frames.last_ms.load(Ordering::Relaxed);
            // No capture times, caught up, or no frame for a second since the stop was asked
            // (and since the last one): nothing queued.
            let now = now_ms();
            let silent = now > asked_ms + 1000 && arrived + 1000 < now;
            if capture == 0 || capture + 1000 >= asked_ms || silent {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (clock_wait, eos_wait) = raftsink_waits(p);
        let deadline = Instant::now() + clock_wait;
        while raftsinks(p).0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if p.send_event(gst::event::Eos::new()) {
            let _ = p.bus().expect("a bus").timed_pop_filtered(
                gst::ClockTime::from_nseconds((eos_wait + EOS_MARGIN).as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
        }
    }
    let _ = p.set_state(gst::State::Null);
}

fn first_error(p: &gst::Pipeline) -> Option<String> {
    let bus = p.bus()?;
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(e) = msg.view() {
            return Some(format!("{}", e.error()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use std::net::TcpListener;

    fn init() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            gst::init().unwrap();
            crate::plugin_register_static().expect("videoai plugin registers");
        });
    }

    fn filled(description: &str) -> Filled {
        Filled {
            description: description.to_string(),
            bound: Vec::new(),
        }
    }

    /// Polls `cond` every 20 ms, at most `limit`.
    fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cond()
    }

    /// A pipeline stuck in its state change (resilientsrc asking an HTTP server that accepted
    /// the connection and never answers) blocks none of what the worker's lease tick calls:
    /// `start`, `snapshot` and `stop` return while it is stuck, and another camera's pipeline
    /// started meanwhile runs. This is what keeps a slow start from letting the other leases
    /// lapse; the process-level check is the fleet test
    /// `slow_pipeline_starts_do_not_let_the_other_leases_lapse`.
    #[test]
    fn a_pipeline_stuck_starting_blocks_neither_the_caller_nor_other_cameras() {
        init();
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        silent.set_nonblocking(true).unwrap();
        let uri = format!("http://{}/stream", silent.local_addr().unwrap());
        let slow = CameraRun::start(
            "slow",
            filled(&format!(
                "resilientsrc uri={uri} stall-timeout=3000000000 ! fakesink"
            )),
        );
        // The probe connected: the slow camera's thread is inside its state change now, and
        // stays there until the probe gives up (3 s) since the connection is never answered.
        let mut held = None;
        let connected = within(Duration::from_secs(10), || match silent.accept() {
            Ok((c, _)) => {
                held = Some(c);
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        });
        assert!(connected, "resilientsrc never asked {uri}");
        assert_eq!(slow.snapshot().phase, Phase::Starting);

        let good = CameraRun::start("good", filled("videotestsrc is-live=true ! fakesink"));
        let running = within(Duration::from_secs(10), || {
            good.snapshot().phase == Phase::Running && good.frames.count.load(Ordering::Relaxed) > 0
        });
        assert!(running, "good: {:?}", good.snapshot());
        // Not asserted (a loaded machine may take longer than the probe's 3 s to start good):
        // whether slow was still stuck when good ran.
        eprintln!("slow when good ran: {:?}", slow.snapshot().phase);

        // A stop asked while stuck returns at once and is obeyed once the state change is over.
        slow.stop(Stop::Now);
        good.stop(Stop::Drain);
        assert!(
            within(Duration::from_secs(20), || slow.finished()
                && good.finished()),
            "slow {:?}, good {:?}",
            slow.snapshot(),
            good.snapshot()
        );
        assert_eq!(slow.snapshot().phase, Phase::Ended);
        assert_eq!(good.snapshot().phase, Phase::Ended);
        drop(held);
        slow.join();
        good.join();
    }
}
