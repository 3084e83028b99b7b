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
        let child = Command::new(env!("CARGO_BIN_EXE_videoai-worker"))
            .current_dir(&wd)
            .args(["--nats", nats, "--pipeline"])
            .arg(pipeline)
            .args([
                "--capacity",
                &capacity.to_string(),
                "--name",
                name,
                "--lease-ttl",
                "3s",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
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
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("{} did not stop within 30 s of SIGTERM", self.name);
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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
