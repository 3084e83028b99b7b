// SPDX-License-Identifier: MPL-2.0
//! `videoai-worker` processes and the `videoai-fleet` tool for the fleet tests and benchmark:
//! workers started as children (SIGKILL when dropped), the registry written and the status
//! read through `videoai-fleet`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A worker process; killed (SIGKILL) when dropped.
pub struct Worker {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Worker {
    pub fn start(dir: &Path, name: &str, nats: &str, pipeline: &Path, capacity: usize) -> Worker {
        Self::start_with(dir, name, nats, pipeline, capacity, &[])
    }

    pub fn start_with(
        dir: &Path,
        name: &str,
        nats: &str,
        pipeline: &Path,
        capacity: usize,
        extra: &[&str],
    ) -> Worker {
        let wd = dir.join(name);
        std::fs::create_dir_all(&wd).unwrap();
        let log = wd.join("worker.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_videoai-worker"));
        cmd.current_dir(&wd)
            .args(["--nats", nats, "--pipeline"])
            .arg(pipeline)
            .args(["--capacity", &capacity.to_string(), "--name", name]);
        if !extra.contains(&"--lease-ttl") {
            cmd.args(["--lease-ttl", "3s"]);
        }
        let child = cmd
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Appended: a worker started again under its name keeps the earlier lines.
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        Worker {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    pub fn signal(&mut self, sig: i32) {
        if let Some(c) = &self.child {
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// SIGTERM, then waits (bounded) for the exit.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(60));
    }

    /// Waits (at most `within`) for the process to exit; kills it and fails after that.
    pub fn wait_exit(&mut self, within: Duration) {
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("{} did not stop within {within:?} of SIGTERM", self.name);
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The worker's working directory (its outbox is there).
    pub fn dir(&self) -> PathBuf {
        self.log.parent().expect("in its directory").to_path_buf()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn fleet(nats: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_videoai-fleet"))
        .args(["--nats", nats])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn add(nats: &str, id: &str, uri: &str, params: &[&str]) {
    let mut args = vec!["add", id, uri];
    args.extend(params);
    let (ok, _, err) = fleet(nats, &args);
    assert!(ok, "videoai-fleet add {id}: {err}");
}

/// Per camera, from `videoai-fleet status --json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub worker: String,
    pub state: String,
    pub fps: f64,
    pub detail: String,
    /// When the worker holding it took it (Unix ms).
    pub since_ms: Option<u64>,
    pub last_frame_ms: Option<u64>,
}

pub fn status(nats: &str) -> BTreeMap<String, Status> {
    try_status(nats).unwrap_or_else(|e| panic!("videoai-fleet status: {e}"))
}

/// The status, or why `videoai-fleet status` failed (NATS electing a leader).
pub fn try_status(nats: &str) -> Result<BTreeMap<String, Status>, String> {
    let (ok, out, err) = fleet(nats, &["status", "--json"]);
    if !ok {
        return Err(err);
    }
    Ok(out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["camera"].as_str().unwrap().to_string(),
                Status {
                    worker: v["worker"].as_str().unwrap_or("").to_string(),
                    state: v["state"].as_str().unwrap_or("").to_string(),
                    fps: v["fps"].as_f64().unwrap_or(0.0),
                    detail: v["detail"].as_str().unwrap_or("").to_string(),
                    since_ms: v["since_ms"].as_u64(),
                    last_frame_ms: v["last_frame_ms"].as_u64(),
                },
            )
        })
        .collect())
}

/// Polls the status until `ok` holds (then returns it and how long it took) or `within` passes.
pub fn wait_for(
    nats: &str,
    within: Duration,
    what: &str,
    mut ok: impl FnMut(&BTreeMap<String, Status>) -> bool,
) -> (BTreeMap<String, Status>, Duration) {
    let start = Instant::now();
    loop {
        let s = match try_status(nats) {
            Ok(s) => s,
            Err(e) => {
                assert!(
                    start.elapsed() < within,
                    "{what}: not within {within:?}: {e}"
                );
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        if ok(&s) {
            return (s, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "{what}: not within {within:?}; status: {s:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn running_with_frames(s: &Status) -> bool {
    s.state == "running" && !s.worker.is_empty() && s.fps > 0.0
}

pub fn per_worker(s: &BTreeMap<String, Status>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for st in s.values().filter(|s| !s.worker.is_empty()) {
        *out.entry(st.worker.clone()).or_insert(0) += 1;
    }
    out
}

/// A cheap camera: synthetic frames at 10 fps into a fakesink (coordination, not video, is
/// under test). `${SINK}` lets a camera break its own pipeline.
pub fn cheap_pipeline(dir: &Path) -> PathBuf {
    let p = dir.join("cheap.pipeline");
    std::fs::write(
        &p,
        "# a cheap camera\nvideotestsrc is-live=true ! video/x-raw,width=64,height=48,framerate=10/1 \
         ! ${SINK} name=out-${CAMERA_ID}\n",
    )
    .unwrap();
    p
}

/// An RTSP camera into NATS, keyed by the camera's clock (what `fleet-camera.pipeline` does),
/// written as `name` in `dir`.
pub fn rtsp_nats_pipeline(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        "resilientsrc uri=\"${URI}\" ! raftsink location=\"${NATS}\" stream-id=\"${CAMERA_ID}\" capture-time-wait=10000000000\n",
    )
    .unwrap();
    p
}

/// One camera's stored frames, sorted by capture time: (capture time, seq). What exactly-once
/// is checked on, whatever the keys.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub frames: Vec<(i64, i64)>,
    pub period_ns: i64,
}

/// Keys at or above this are local keys (raftsink's `LOCAL_KEY_BASE`).
const LOCAL: i64 = 1 << 62;

impl Timeline {
    pub fn new(mut frames: Vec<(i64, i64)>, period_ns: i64) -> Timeline {
        frames.sort();
        Timeline { frames, period_ns }
    }

    /// Pairs of events closer than half a frame period: one frame stored twice.
    pub fn stored_twice(&self) -> Vec<((i64, i64), (i64, i64))> {
        self.frames
            .windows(2)
            .filter(|w| w[1].0 - w[0].0 < self.period_ns / 2)
            .map(|w| (w[0], w[1]))
            .collect()
    }

    /// Frames whose key is not on the camera's frame grid: a local key, or a key that is not
    /// the previous frame's plus the frame periods between their capture times.
    pub fn off_grid(&self) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = self
            .frames
            .iter()
            .filter(|f| f.1 >= LOCAL)
            .copied()
            .collect();
        let camera: Vec<&(i64, i64)> = self.frames.iter().filter(|f| f.1 < LOCAL).collect();
        for w in camera.windows(2) {
            let periods = ((w[1].0 - w[0].0) as f64 / self.period_ns as f64).round() as i64;
            if w[1].1 - w[0].1 != periods {
                out.push(*w[1]);
            }
        }
        out
    }

    /// Frames missing among those captured in `[from_ns, to_ns]`: gaps between consecutive
    /// stored keys (camera keys only).
    pub fn missing(&self, from_ns: i64, to_ns: i64) -> i64 {
        let keys: Vec<i64> = self
            .frames
            .iter()
            .filter(|f| f.1 < LOCAL && f.0 >= from_ns && f.0 <= to_ns)
            .map(|f| f.1)
            .collect();
        keys.windows(2).map(|w| (w[1] - w[0] - 1).max(0)).sum()
    }

    /// The biggest gap between consecutive frames (ns) in `[from_ns, to_ns]`, and where it starts.
    pub fn biggest_gap(&self, from_ns: i64, to_ns: i64) -> (i64, i64) {
        let f: Vec<i64> = self
            .frames
            .iter()
            .filter(|f| f.0 >= from_ns && f.0 <= to_ns)
            .map(|f| f.0)
            .collect();
        f.windows(2)
            .map(|w| (w[1] - w[0], w[0]))
            .max()
            .unwrap_or((0, 0))
    }
}

/// Wall-clock time now, ns since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}
