// SPDX-License-Identifier: MPL-2.0
//! videoai-worker benchmark: `cargo bench --bench fleet` (or `make bench-fleet`), with real
//! `nats-server` and `videoai-worker` processes on 127.0.0.1.
//!
//! 1. Handover: one NATS server, lease TTL 3 s, one cheap camera and two workers. `BENCH_KILLS`
//!    (20) times the worker holding the camera is SIGKILLed and a new one started in its place;
//!    the handover is the time from the kill to the other worker's claim (its lease's
//!    `since_ms`: the pipeline is started in the same step), checked to be running with frames
//!    before the next kill. Prints p50, p99 and max. A lease ages out a TTL after its last
//!    renewal (every third of the TTL), so a handover takes from ⅔ of the TTL up to the TTL plus
//!    the NATS expiry check and one tick of the other worker.
//! 2. Detections after a takeover: one RTSP camera into NATS, keyed by the camera's clock
//!    (`capture-time-wait`), two workers; `BENCH_RESUME_KILLS` (10) times the holder is
//!    SIGKILLed: the time from the kill until NATS holds an event captured after it. A taker
//!    whose RTP session has the SSRC of the last stored event keys frames from its first one
//!    (the event carries the camera's clock). This test camera, like most cameras, starts a new
//!    session with a new SSRC and RTP origin when its only client is gone, so the taker waits
//!    for the camera's first RTCP sender report (2.0 to 2.7 s after connecting here): the time
//!    is the lease TTL, the claim, the RTSP connection and that report. Run again with another
//!    reader (gst-launch-1.0 rtspsrc) keeping the camera's session, whose SSRC the taker then
//!    shares, and with a camera that writes each frame's capture time into its RTP packets
//!    (RFC 6051's NTP-64 header extension), which the taker reads from its first packet;
//!    and, for sender reports only, with workers started with `--early-start false` (by
//!    default a silent holder's camera is read from half a TTL on, so the wait for the first
//!    sender report overlaps the wait for the lease). Goal: TTL + 2 s.
//! 3. Coordination cost: one worker with N cameras (`BENCH_FLEET_CAMERAS`, default 1,10,25,50)
//!    running a cheap pipeline (videotestsrc 320×240 ball at 15 fps into a fakesink). Over
//!    `BENCH_FLEET_WINDOW_S` (10) seconds once all run: the worker's key-value requests per
//!    second (its `videoai_worker_kv_operations_total`; the bucket watches it follows come on
//!    top, one message per change) and its CPU time, against the same N pipelines in one
//!    `gst-launch-1.0` process measured the same way right after (the video work alone). The
//!    coordination cost is worker CPU − pipelines-alone CPU, per camera (in % of one core) and
//!    as a share of the pipelines-alone CPU. These pipelines are far cheaper than a real
//!    camera's (decode + inference), so the share is an upper bound.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fleet::{
    Worker, add, rtsp_nats_pipeline, running_with_frames, status, try_status, wait_for,
};
use common::nats::NatsCluster;
use common::rtsp::{Clock, RtspCamera};

const FRAME: &str = "video/x-raw,width=320,height=240,framerate=15/1";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the first, utime the
    // 12th and stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// CPU share (1.0 = one core) of `pid` over `window`.
fn cpu_share(pid: u32, window: Duration) -> f64 {
    let before = cpu_time(pid);
    let t = Instant::now();
    std::thread::sleep(window);
    (cpu_time(pid) - before).as_secs_f64() / t.elapsed().as_secs_f64()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn handover(dir: &common::TempDir, kills: usize) {
    let cluster = NatsCluster::start(1);
    cluster.wait_ready(Duration::from_secs(30));
    let nats = cluster.url();
    let pipeline = dir.join("handover.pipeline");
    std::fs::write(
        &pipeline,
        format!("videotestsrc is-live=true ! {FRAME} ! fakesink\n"),
    )
    .unwrap();
    add(&nats, "cam-0", "test://", &[]);
    let mut workers: Vec<Worker> = (0..2)
        .map(|i| Worker::start(dir.path(), &format!("w{i}"), &nats, &pipeline, 4))
        .collect();
    let mut times = Vec::new();
    for round in 0..kills {
        let (s, _) = wait_for(&nats, Duration::from_secs(30), "cam-0 running", |s| {
            s.get("cam-0").is_some_and(running_with_frames)
        });
        // The replacement started last round has announced itself by now (a tick).
        let holder = s["cam-0"].worker.clone();
        let i = workers
            .iter()
            .position(|w| w.name == holder)
            .unwrap_or_else(|| panic!("cam-0 held by unknown {holder}"));
        // Killed at a different moment of the renewal period each round (renewals are a third
        // of the TTL apart): spread over 1 s in steps of 370 ms modulo 1 s.
        std::thread::sleep(Duration::from_millis((round as u64 * 370) % 1000));
        let killed_at = now_ms();
        workers[i].kill();
        workers.remove(i);
        let (s, _) = wait_for(&nats, Duration::from_secs(30), "cam-0 taken over", |s| {
            s.get("cam-0")
                .is_some_and(|c| c.worker != holder && !c.worker.is_empty())
        });
        let since = s["cam-0"].since_ms.expect("a lease's since_ms");
        let took = since.saturating_sub(killed_at) as f64 / 1000.0;
        eprintln!(
            "  kill {:>2}: {holder} → {}: {took:.2} s",
            round + 1,
            s["cam-0"].worker
        );
        times.push(took);
        workers.push(Worker::start(
            dir.path(),
            &format!("w{}", round + 2),
            &nats,
            &pipeline,
            4,
        ));
        std::thread::sleep(Duration::from_millis(1500));
    }
    times.sort_by(f64::total_cmp);
    println!(
        "handover (SIGKILL → claimed and started elsewhere), {} kills, lease TTL 3 s: p50 {:.2} s, p99 {:.2} s, max {:.2} s (ratio to the TTL: p50 {:.2}, p99 {:.2})",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().unwrap(),
        percentile(&times, 0.5) / 3.0,
        percentile(&times, 0.99) / 3.0,
    );
}

/// The newest capture time NATS holds for `camera` (its subject's last event), if any.
/// Connects anew each time: a client lives on the runtime it was made on, and `block_on` makes
/// one per call.
fn last_capture_in_nats(urls: &[String], camera: &str) -> Option<i64> {
    use gstvideoai::eventlog::nats;
    nats::block_on(async {
        let client = nats::connect(urls, "bench", Duration::from_secs(5), false)
            .await
            .ok()?;
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream(nats::DEFAULT_STREAM).await.ok()?;
        nats::last_event_on_subject(&stream, &nats::subject(camera))
            .await
            .ok()
            .flatten()
            .map(|e| e.capture_ns)
    })
}

/// `other_reader`: a gst-launch-1.0 rtspsrc reads the camera throughout, so the camera's session
/// (its SSRC and RTP origin) outlives each killed worker. `clock`: how the camera says when
/// its frames were captured (sender reports only, or RFC 6051's NTP-64 in every RTP packet).
fn resume(dir: &common::TempDir, kills: usize, other_reader: bool, clock: Clock, early: bool) {
    let extra: &[&str] = &["--early-start", if early { "true" } else { "false" }];
    let cluster = NatsCluster::start(1);
    cluster.wait_ready(Duration::from_secs(30));
    let nats = cluster.url();
    let cam = RtspCamera::start_with_clock("rtsp_server_child", clock);
    let pipeline = rtsp_nats_pipeline(dir.path(), "resume.pipeline");
    let mut reader = other_reader.then(|| {
        Command::new("gst-launch-1.0")
            .args(["-q", "rtspsrc", &format!("location={}", cam.uri())])
            .args(["!", "fakesink"])
            .stdout(Stdio::null())
            .spawn()
            .expect("gst-launch-1.0 runs")
    });
    add(&nats, "rcam", &cam.uri(), &[]);
    let urls = gstvideoai::eventlog::nats::parse_location(&nats)
        .unwrap()
        .unwrap();
    let mut workers: Vec<Worker> = (0..2)
        .map(|i| Worker::start_with(dir.path(), &format!("r{i}"), &nats, &pipeline, 2, extra))
        .collect();
    let mut times = Vec::new();
    for round in 0..kills {
        // Held by a live worker: with early reads, events after a kill are stored before the
        // dead holder's lease lapses.
        let (s, _) = wait_for(&nats, Duration::from_secs(60), "rcam running", |s| {
            s.get("rcam").is_some_and(|st| {
                running_with_frames(st) && workers.iter().any(|w| w.name == st.worker)
            })
        });
        let holder = s["rcam"].worker.clone();
        let i = workers
            .iter()
            .position(|w| w.name == holder)
            .unwrap_or_else(|| panic!("rcam held by unknown {holder}"));
        std::thread::sleep(Duration::from_millis(2000 + (round as u64 * 370) % 1000));
        let killed_ns = common::fleet::now_ns();
        let killed = Instant::now();
        workers[i].kill();
        workers.remove(i);
        let deadline = Instant::now() + Duration::from_secs(60);
        let took = loop {
            if last_capture_in_nats(&urls, "rcam").is_some_and(|c| c > killed_ns) {
                break killed.elapsed().as_secs_f64();
            }
            assert!(
                Instant::now() < deadline,
                "no event after the kill within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        eprintln!(
            "  kill {:>2}: events captured after it stored {took:.2} s later",
            round + 1
        );
        times.push(took);
        workers.push(Worker::start_with(
            dir.path(),
            &format!("r{}", round + 2),
            &nats,
            &pipeline,
            2,
            extra,
        ));
    }
    if let Some(r) = reader.as_mut() {
        let _ = r.kill();
        let _ = r.wait();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "detections after a takeover (SIGKILL → an event captured after it stored in NATS), {}{}, {} kills, lease TTL 3 s: p50 {:.2} s, p99 {:.2} s, max {:.2} s (goal: TTL + 2 s = 5 s)",
        match (other_reader, clock) {
            (true, _) => "another reader keeps the camera's RTP session",
            (false, Clock::Ntp64) =>
                "the worker is the camera's only reader (a new RTP session for the taker), the camera writes capture times into its RTP packets (RFC 6051)",
            (false, _) =>
                "the worker is the camera's only reader (a new RTP session for the taker), sender reports only",
        },
        if early {
            ""
        } else {
            ", workers with --early-start false"
        },
        kills,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().unwrap(),
    );
}

fn coordination(dir: &common::TempDir, n: usize, window: Duration) -> (f64, f64, f64) {
    let cluster = NatsCluster::start(1);
    cluster.wait_ready(Duration::from_secs(30));
    let nats = cluster.url();
    let pipeline = dir.join("cost.pipeline");
    std::fs::write(
        &pipeline,
        format!("videotestsrc is-live=true pattern=ball ! {FRAME} ! fakesink\n"),
    )
    .unwrap();
    for i in 0..n {
        add(&nats, &format!("cam-{i}"), "test://", &[]);
    }
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut w = Worker::start_with(
        dir.path(),
        &format!("cost-{n}"),
        &nats,
        &pipeline,
        n,
        &["--metrics", &addr],
    );
    wait_for(&nats, Duration::from_secs(90), "all running", |s| {
        s.len() == n && s.values().all(running_with_frames)
    });
    std::thread::sleep(Duration::from_secs(2));
    let pid = w.pid().unwrap();
    let kv_ops = || {
        let samples = common::prometheus::samples(&common::prometheus::scrape(&addr));
        common::prometheus::sum(&samples, "videoai_worker_kv_operations_total")
    };
    let ops_before = kv_ops();
    let t = Instant::now();
    let worker_cpu = cpu_share(pid, window);
    let ops = kv_ops() - ops_before;
    let ops_per_s = ops / t.elapsed().as_secs_f64();
    assert!(
        try_status(&nats).is_ok_and(|s| s.values().all(running_with_frames)),
        "a camera stopped during the window: {:?}",
        status(&nats)
    );
    w.stop();

    // The same pipelines, no coordination.
    let mut args: Vec<String> = vec!["-q".into()];
    for _ in 0..n {
        for part in
            format!("videotestsrc is-live=true pattern=ball ! {FRAME} ! fakesink").split(' ')
        {
            args.push(part.into());
        }
    }
    let mut alone = Command::new("gst-launch-1.0")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gst-launch-1.0");
    std::thread::sleep(Duration::from_secs(3));
    let alone_cpu = cpu_share(alone.id(), window);
    let _ = alone.kill();
    let _ = alone.wait();
    (ops_per_s, worker_cpu, alone_cpu)
}

fn main() {
    // The RTSP camera of the takeover part is this binary again, in a child process.
    common::rtsp::serve_if_child();
    common::init();
    let kills = common::env_u64("BENCH_KILLS", 20) as usize;
    let resume_kills = common::env_u64("BENCH_RESUME_KILLS", 10) as usize;
    let window = Duration::from_secs(common::env_u64("BENCH_FLEET_WINDOW_S", 10));
    let steps: Vec<usize> = std::env::var("BENCH_FLEET_CAMERAS")
        .unwrap_or_else(|_| "1,10,25,50".into())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let dir = common::TempDir::new("bench-fleet");

    // A part with no kills is left out (BENCH_KILLS=0 runs the takeover part alone).
    if kills > 0 {
        handover(&dir, kills);
    }
    if resume_kills > 0 {
        resume(&dir, resume_kills, false, Clock::SenderReports, false);
        resume(&dir, resume_kills, false, Clock::SenderReports, true);
        resume(&dir, resume_kills, false, Clock::Ntp64, true);
        resume(&dir, resume_kills, true, Clock::SenderReports, true);
    }

    println!(
        "coordination cost, one worker, cheap cameras ({FRAME}, videotestsrc pattern=ball), {} s windows:",
        window.as_secs()
    );
    println!(
        "{:>8} {:>10} {:>13} {:>11} {:>16} {:>21} {:>19}",
        "cameras",
        "kv ops/s",
        "kv ops/s/cam",
        "worker CPU",
        "pipelines alone",
        "coordination CPU/cam",
        "coordination share"
    );
    for n in steps {
        let (ops, worker, alone) = coordination(&dir, n, window);
        println!(
            "{n:>8} {ops:>10.1} {:>13.2} {:>10.1}% {:>15.1}% {:>20.2}% {:>18.1}%",
            ops / n as f64,
            worker * 100.0,
            alone * 100.0,
            (worker - alone) / n as f64 * 100.0,
            (worker - alone) / alone * 100.0
        );
    }
}
