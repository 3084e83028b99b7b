// SPDX-License-Identifier: MPL-2.0
//! The chaos run: a site (3 NATS nodes, 3 workers, 6 RTSP test cameras, events keyed by the
//! camera's clock into NATS) hit by a fault every 10 to 30 s, then every camera's stored
//! frames checked: stored twice (by capture time), keys off the camera's frame grid, frames
//! missing outside the declared gaps. `make chaos` runs it for `CHAOS_MINUTES` (10); a
//! 2-minute run is a test (`tests/fleet.rs`).
//!
//! The faults, each in turn from a shuffled cycle (so every kind comes up in a short run):
//!
//! * a worker SIGKILLed, started again 1 to 3 s later (declared gap: that worker's cameras,
//!   from the kill until another worker stored their frames again);
//! * a worker stopped with SIGTERM (it hands its cameras over), started again once it exited;
//! * a worker frozen (SIGSTOP) for twice the lease TTL, then SIGCONT: it wakes believing it still
//!   holds its cameras, which others took meanwhile (declared gap: its cameras, from the freeze
//!   until another worker stored them: the frames of the freeze reached only its sockets, and
//!   resilientsrc's live queue drops the oldest of the burst it finds when it wakes);
//! * a NATS node SIGKILLed, started again 3 to 5 s later;
//! * a camera's server killed and started again (declared gap: that camera, from the kill until
//!   its frames are stored again).
//!
//! Bounded: the faults stop after `minutes` (and at least 3 a minute happened), and every wait
//! has a deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};

use super::fleet::{
    Timeline, Worker, add, now_ns, rtsp_nats_pipeline, running_with_frames, try_status, wait_for,
};
use super::nats::NatsCluster;
use super::rtsp::RtspCamera;

const CAMERAS: usize = 6;
const WORKERS: usize = 3;
const TTL: Duration = Duration::from_secs(3);
const PERIOD_NS: i64 = 1_000_000_000 / 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    KillWorker,
    TermWorker,
    FreezeWorker,
    KillNats,
    RestartCamera,
}

const KINDS: [Kind; 5] = [
    Kind::KillWorker,
    Kind::TermWorker,
    Kind::FreezeWorker,
    Kind::KillNats,
    Kind::RestartCamera,
];

/// One fault: when, what, and the gaps it declares (camera, from, to: capture times).
#[derive(Debug, Clone)]
pub struct Fault {
    pub at_ns: i64,
    pub kind: Kind,
    pub what: String,
    pub declared: Vec<(String, i64, i64)>,
}

/// What one camera's stored frames show.
#[derive(Debug, Clone, Default)]
pub struct CameraResult {
    pub stored: usize,
    pub twice: usize,
    pub off_grid: usize,
    /// Frames missing outside the declared gaps, and within them.
    pub missing: i64,
    pub missing_declared: i64,
    /// The undeclared gaps: (capture time of the last frame before, frames missing).
    pub undeclared: Vec<(i64, i64)>,
    /// Frames stored twice: the first pair's capture times and keys, and their subjects.
    pub first_twice: Option<((i64, i64), (i64, i64))>,
    pub twice_subjects: String,
}

pub struct Report {
    pub seed: u64,
    pub started_ns: i64,
    pub faults: Vec<Fault>,
    pub cameras: BTreeMap<String, CameraResult>,
    pub logs: String,
}

impl Report {
    pub fn twice(&self) -> usize {
        self.cameras.values().map(|c| c.twice).sum()
    }
    pub fn off_grid(&self) -> usize {
        self.cameras.values().map(|c| c.off_grid).sum()
    }
    pub fn missing(&self) -> i64 {
        self.cameras.values().map(|c| c.missing).sum()
    }

    /// The report as markdown tables.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s += &format!(
            "chaos run: seed {}, {} faults\n\n| camera | frames stored | stored twice | off the grid | missing outside declared gaps | missing in declared gaps |\n|---|---:|---:|---:|---:|---:|\n",
            self.seed,
            self.faults.len()
        );
        for (cam, r) in &self.cameras {
            s += &format!(
                "| {cam} | {} | {} | {} | {} | {} |\n",
                r.stored, r.twice, r.off_grid, r.missing, r.missing_declared
            );
        }
        s += "\n| t (s) | fault |\n|---:|---|\n";
        for f in &self.faults {
            s += &format!(
                "| {:.1} | {} |\n",
                (f.at_ns - self.started_ns) as f64 / 1e9,
                f.what
            );
        }
        for (cam, r) in &self.cameras {
            if let Some(((c1, k1), (c2, k2))) = r.first_twice {
                s += &format!(
                    "stored twice: {cam}, {} pairs, the first at {:.2} s: keys {k1} and {k2} {} ns apart, on {}\n",
                    r.twice,
                    (c1 - self.started_ns) as f64 / 1e9,
                    c2 - c1,
                    r.twice_subjects
                );
            }
            for (at, n) in &r.undeclared {
                s += &format!(
                    "undeclared gap: {cam}, {n} frames after {:.2} s\n",
                    (at - self.started_ns) as f64 / 1e9
                );
            }
        }
        s
    }
}

struct Site {
    dir: super::TempDir,
    cluster: NatsCluster,
    nats: String,
    cams: Vec<RtspCamera>,
    workers: Vec<Worker>,
    pipeline: std::path::PathBuf,
}

impl Site {
    fn worker(&self, i: usize) -> Worker {
        Worker::start(
            self.dir.path(),
            &format!("w{i}"),
            &self.nats,
            &self.pipeline,
            3,
        )
    }

    /// The cameras each worker holds (from the status), waiting out a NATS election.
    fn held_by(&self, worker: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = try_status(&self.nats) {
                return s
                    .iter()
                    .filter(|(_, st)| st.worker == worker)
                    .map(|(c, _)| c.clone())
                    .collect();
            }
            if Instant::now() > deadline {
                return Vec::new();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Runs the chaos for `minutes` with faults from `seed`; `entry` is the test (or benchmark
/// argument) that serves the RTSP cameras in child processes.
pub fn run(minutes: f64, seed: u64, entry: &'static str) -> Report {
    super::init();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = super::TempDir::new("chaos");
    let cluster = NatsCluster::start(3);
    cluster.wait_ready(Duration::from_secs(30));
    let nats = cluster.url();
    let cams: Vec<RtspCamera> = (0..CAMERAS).map(|_| RtspCamera::start(entry)).collect();
    let pipeline = rtsp_nats_pipeline(dir.path(), "camera.pipeline");
    for (i, c) in cams.iter().enumerate() {
        add(&nats, &format!("cam-{i}"), &c.uri(), &[]);
    }
    let mut site = Site {
        dir,
        cluster,
        nats,
        cams,
        workers: Vec::new(),
        pipeline,
    };
    site.workers = (0..WORKERS).map(|i| site.worker(i)).collect();
    wait_for(&site.nats, Duration::from_secs(60), "all running", |s| {
        s.len() == CAMERAS && s.values().all(running_with_frames)
    });
    std::thread::sleep(Duration::from_secs(3));
    let started_ns = now_ns();
    let started = Instant::now();
    let mut faults: Vec<Fault> = Vec::new();
    let mut cycle: Vec<Kind> = Vec::new();
    let wanted = (minutes * 3.0).ceil() as usize;
    let mut next = Instant::now() + Duration::from_secs(rng.random_range(10..=30));
    while started.elapsed() < Duration::from_secs_f64(minutes * 60.0) || faults.len() < wanted {
        // Bounded: never more than twice the time asked.
        if started.elapsed() > Duration::from_secs_f64(minutes * 120.0) {
            break;
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next = Instant::now() + Duration::from_secs(rng.random_range(10..=30));
        if cycle.is_empty() {
            cycle = KINDS.to_vec();
            for i in (1..cycle.len()).rev() {
                cycle.swap(i, rng.random_range(0..=i));
            }
        }
        let kind = cycle.pop().expect("refilled");
        let fault = inject(&mut site, kind, &mut rng);
        eprintln!(
            "chaos {:6.1} s: {}",
            (fault.at_ns - started_ns) as f64 / 1e9,
            fault.what
        );
        faults.push(fault);
    }
    // Settle, then stop every worker at once (each drains) and read what NATS holds.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            &site.nats,
            Duration::from_secs(60),
            "all running again",
            |s| s.len() == CAMERAS && s.values().all(running_with_frames),
        )
    }));
    std::thread::sleep(Duration::from_secs(3));
    let stopped_ns = now_ns();
    for w in site.workers.iter_mut() {
        w.signal(libc::SIGTERM);
    }
    for w in site.workers.iter_mut() {
        w.wait_exit(Duration::from_secs(90));
    }
    let logs = site
        .workers
        .iter()
        .map(|w| w.log())
        .collect::<Vec<_>>()
        .join("\n");
    let mut by_cam: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    // Where each (camera, capture time) was stored: which subject (main, .late, .local).
    let mut subjects: BTreeMap<(String, i64), Vec<String>> = BTreeMap::new();
    for (subject, e) in site
        .cluster
        .read_all_with_subjects(gstvideoai::eventlog::nats::DEFAULT_STREAM)
    {
        let kind = subject.rsplit('.').next().unwrap_or("").to_string();
        let kind = if kind == "late" || kind == "local" {
            kind
        } else {
            "main".into()
        };
        subjects
            .entry((e.stream.clone(), e.capture_ns))
            .or_default()
            .push(kind);
        by_cam
            .entry(e.stream)
            .or_default()
            .push((e.capture_ns, e.seq));
    }
    let cameras = by_cam
        .into_iter()
        .map(|(cam, frames)| {
            let t = Timeline::new(frames, PERIOD_NS);
            let declared: Vec<(i64, i64)> = faults
                .iter()
                .flat_map(|f| f.declared.iter())
                .filter(|(c, _, _)| *c == cam)
                .map(|(_, a, b)| (*a, *b))
                .collect();
            let mut r = judge(&t, started_ns, stopped_ns, &declared);
            if let Some(((c1, _), (c2, _))) = r.first_twice {
                let on = |c: i64| subjects.get(&(cam.clone(), c)).cloned().unwrap_or_default();
                r.twice_subjects = format!("{:?} and {:?}", on(c1), on(c2));
            }
            (cam, r)
        })
        .collect();
    Report {
        seed,
        started_ns,
        faults,
        cameras,
        logs,
    }
}

/// One camera's timeline between `from` and `to` against its declared gaps.
fn judge(t: &Timeline, from: i64, to: i64, declared: &[(i64, i64)]) -> CameraResult {
    let twice = t.stored_twice();
    let mut r = CameraResult {
        stored: t.frames.len(),
        twice: twice.len(),
        off_grid: t.off_grid().len(),
        first_twice: twice.first().copied(),
        ..Default::default()
    };
    let keyed: Vec<(i64, i64)> = t
        .frames
        .iter()
        .filter(|f| f.1 < (1 << 62) && f.0 >= from && f.0 <= to)
        .copied()
        .collect();
    for w in keyed.windows(2) {
        let n = w[1].1 - w[0].1 - 1;
        if n <= 0 {
            continue;
        }
        // Declared when the gap lies within a declared stretch (a second of slack on each side).
        let inside = declared
            .iter()
            .any(|(a, b)| w[0].0 >= a - 1_000_000_000 && w[1].0 <= b + 1_000_000_000);
        if inside {
            r.missing_declared += n;
        } else {
            r.missing += n;
            r.undeclared.push((w[0].0, n));
        }
    }
    r
}

/// When every camera of `cams` has frames again at a worker's sink after `since_ns` (its lease
/// says so), at most `within` from now: the end of a declared gap.
fn back_running(site: &Site, cams: &[String], since_ns: i64, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    let since_ms = (since_ns / 1_000_000) as u64;
    while Instant::now() < deadline {
        if let Ok(s) = try_status(&site.nats)
            && cams.iter().all(|c| {
                s.get(c).is_some_and(|st| {
                    running_with_frames(st) && st.last_frame_ms.is_some_and(|l| l > since_ms)
                })
            })
        {
            return now_ns();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    now_ns()
}

fn inject(site: &mut Site, kind: Kind, rng: &mut rand::rngs::StdRng) -> Fault {
    let at_ns = now_ns();
    let mut declared = Vec::new();
    let what = match kind {
        Kind::KillWorker => {
            let i = rng.random_range(0..WORKERS);
            let name = format!("w{i}");
            let held = site.held_by(&name);
            site.workers[i].kill();
            let killed_ns = now_ns();
            std::thread::sleep(Duration::from_millis(rng.random_range(1000..=3000)));
            site.workers[i] = site.worker(i);
            // Until another worker stored them again (lease TTL, then a claim).
            let back = back_running(site, &held, killed_ns, Duration::from_secs(30));
            for c in &held {
                declared.push((c.clone(), at_ns, back + 2_000_000_000));
            }
            format!("SIGKILL {name} (held {held:?}), restarted")
        }
        Kind::TermWorker => {
            let i = rng.random_range(0..WORKERS);
            let name = format!("w{i}");
            let held = site.held_by(&name);
            site.workers[i].signal(libc::SIGTERM);
            site.workers[i].wait_exit(Duration::from_secs(90));
            site.workers[i] = site.worker(i);
            format!("SIGTERM {name} (held {held:?}), restarted once it exited")
        }
        Kind::FreezeWorker => {
            let i = rng.random_range(0..WORKERS);
            let name = format!("w{i}");
            let held = site.held_by(&name);
            site.workers[i].signal(libc::SIGSTOP);
            std::thread::sleep(TTL * 2);
            site.workers[i].signal(libc::SIGCONT);
            let back = back_running(site, &held, at_ns, Duration::from_secs(30));
            for c in &held {
                declared.push((
                    c.clone(),
                    at_ns,
                    back.min(at_ns + (TTL * 3).as_nanos() as i64),
                ));
            }
            format!("SIGSTOP {name} for {:?} (held {held:?}), SIGCONT", TTL * 2)
        }
        Kind::KillNats => {
            let i = rng.random_range(0..3);
            site.cluster.kill(i);
            std::thread::sleep(Duration::from_millis(rng.random_range(3000..=5000)));
            site.cluster.restart_stopped();
            format!("SIGKILL NATS node {i}, restarted")
        }
        Kind::RestartCamera => {
            let i = rng.random_range(0..CAMERAS);
            let cam = format!("cam-{i}");
            site.cams[i].restart();
            let up_ns = now_ns();
            let back = back_running(
                site,
                std::slice::from_ref(&cam),
                up_ns,
                Duration::from_secs(60),
            );
            declared.push((cam.clone(), at_ns, back + 2_000_000_000));
            format!("camera {cam}'s server restarted")
        }
    };
    Fault {
        at_ns,
        kind,
        what,
        declared,
    }
}
