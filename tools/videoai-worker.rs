// SPDX-License-Identifier: MPL-2.0
//! `videoai-worker`: runs cameras of the fleet registry (NATS JetStream key-value buckets) on
//! this machine, one GStreamer pipeline per camera, taken over by other workers when this one
//! dies. See `plugins/fleet/` and the README's "Scaling out".

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use gst::glib;
use gst::prelude::*;
use gstvideoai::fleet::{registry, worker};

#[derive(Parser, Debug)]
#[command(
    name = "videoai-worker",
    version,
    about = "Runs cameras of the videoai fleet registry on this machine (one pipeline per camera)",
    long_about = "Claims up to CAPACITY cameras from the registry in NATS JetStream (bucket \
        videoai-cameras, written by videoai-fleet) and runs one GStreamer pipeline per camera \
        in this process, built from a pipeline description file with ${CAMERA_ID}, ${URI}, \
        ${NATS} and the camera's own KEY=VALUE parameters filled in. Each camera is held by a \
        lease (bucket videoai-leases, TTL --lease-ttl) renewed by compare-and-set; when this \
        worker dies, others take its cameras after the TTL. SIGINT/SIGTERM: every pipeline \
        ends with EOS (its events durable) and the leases are given back at once."
)]
struct Args {
    /// NATS servers: nats://host:port[,host:port…] (retried until one answers).
    #[arg(long)]
    nats: String,
    /// Pipeline description file with placeholders (e.g. pipelines/fleet-camera.pipeline).
    #[arg(long)]
    pipeline: PathBuf,
    /// Most cameras this worker runs at once.
    #[arg(long)]
    capacity: usize,
    /// This worker's name in the fleet (unique). Default: HOSTNAME-PID.
    #[arg(long)]
    name: Option<String>,
    /// Serve Prometheus metrics (videoaitrace exporter) on HOST:PORT: every element's metrics
    /// labelled by camera id (pipeline="CAMERA_ID"), and the worker's own (videoai_worker_*:
    /// leases held, claims, releases, takeovers, each camera's pipeline state, KV requests).
    #[arg(long)]
    metrics: Option<String>,
    /// Lease TTL, e.g. 3s or 1500ms: how long after a worker's death its cameras wait. The
    /// first worker creates the leases bucket with it; later workers use the bucket's.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// A placeholder value for every camera, KEY=VALUE (repeatable; a camera's own wins).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Copies of the fleet's buckets when they are created (default: servers listed, at most 3).
    #[arg(long)]
    replicas: Option<usize>,
    /// Read a dead worker's cameras before their leases lapse (true or false): a camera whose
    /// holder renewed neither its lease nor its heartbeat for half the TTL is read at once by
    /// one worker with room, without the lease (each frame is still stored once), and kept when
    /// its lease lapses; stopped if the holder renews after all. Detections resume about half a
    /// TTL sooner, and a camera that gives only RTCP sender reports sends its first one during
    /// that time, not after. Costs one pipeline start per camera on a false alarm.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    early_start: bool,
}

fn main() {
    let args = Args::parse();
    let urls = gstvideoai::fleet::nats_servers(&args.nats).unwrap_or_else(|e| fail(&e));
    let vars: BTreeMap<String, String> = match registry::parse_params(&args.set) {
        Ok(v) => v,
        Err(why) => fail(&format!("--set: {why}")),
    };
    if args.capacity == 0 {
        fail("--capacity: at least 1");
    }
    if args.lease_ttl < Duration::from_millis(300) {
        fail("--lease-ttl: at least 300ms");
    }
    let text = match std::fs::read_to_string(&args.pipeline) {
        Ok(t) => t,
        Err(_) if args.pipeline.is_dir() => fail(&format!(
            "--pipeline {}: is a directory; give a pipeline description file (e.g. pipelines/fleet-camera.pipeline)",
            args.pipeline.display()
        )),
        Err(e) => fail(&format!("--pipeline {}: {e}", args.pipeline.display())),
    };
    // The pipeline file is checked now, not once per camera.
    let used = gstvideoai::fleet::template::placeholders(&text)
        .unwrap_or_else(|e| fail(&format!("--pipeline {}: {e}", args.pipeline.display())));
    if let Some(k) = vars.keys().find(|k| !used.contains(k)) {
        fail(&format!(
            "--set {k}: {} has no ${{{k}}} (its placeholders: {})",
            args.pipeline.display(),
            used.iter()
                .map(|u| format!("${{{u}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    gst::init().unwrap_or_else(|e| fail(&format!("GStreamer: {e}")));
    gstvideoai::plugin_register_static().unwrap_or_else(|e| fail(&format!("videoai plugin: {e}")));
    // The videoaitrace tracer with its Prometheus exporter, made here (GST_TRACERS is read at
    // gst::init, before the statically registered tracer exists); kept for the whole run.
    if args.metrics.as_ref().is_some_and(|m| m.trim().is_empty()) {
        fail("--metrics: an address to serve on is needed, HOST:PORT (e.g. 127.0.0.1:9464)");
    }
    let _tracer = args.metrics.as_ref().map(|addr| {
        let tracer = glib::Object::with_type(gstvideoai::videoaitrace::VideoAiTrace::static_type());
        tracer.set_property("prometheus", addr);
        let served: Option<String> = tracer.property("prometheus-address");
        let Some(served) = served.filter(|s| !s.is_empty()) else {
            let why: Option<String> = tracer.property("prometheus-error");
            fail(&format!(
                "--metrics {addr}: {}",
                why.unwrap_or_else(|| "cannot serve Prometheus metrics there".into())
            ));
        };
        eprintln!("videoai-worker: metrics on http://{served}/metrics");
        tracer
    });
    let name = args.name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    if let Err(why) = registry::check_id(&name) {
        fail(&format!(
            "--name: {}",
            why.replace("camera id", "worker name")
        ));
    }
    let replicas = args.replicas.unwrap_or(urls.len().min(3));
    let cfg = worker::Config {
        nats: urls,
        pipeline: args.pipeline,
        capacity: args.capacity,
        name: name.clone(),
        lease_ttl: args.lease_ttl,
        vars,
        replicas,
        early_start: args.early_start,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let w = match worker::Worker::connect(cfg).await {
            Ok(w) => w,
            Err(why) => fail(&why),
        };
        if args.metrics.is_some()
            && let Err(e) = w.metrics().register(prometheus::default_registry())
        {
            fail(&format!("--metrics: the worker's series: {e}"));
        }
        worker::say(&name, &format!("running (capacity {})", args.capacity));
        // SIGTERM, SIGINT and SIGHUP (a closed terminal) all stop the worker the same way:
        // cameras handed over or drained, leases given back.
        let stop = async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
            let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
                _ = hup.recv() => {},
            }
        };
        if let Err(why) = w.run(stop).await {
            fail(&why);
        }
        worker::say(&name, "stopped, leases given back");
    });
}

fn fail(why: &str) -> ! {
    eprintln!("videoai-worker: {why}");
    std::process::exit(2)
}
