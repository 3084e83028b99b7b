// SPDX-License-Identifier: MPL-2.0
//! `videoai-fleet`: the camera registry of videoai workers (NATS JetStream key-value buckets):
//! add, remove, list, and where each camera runs.

use std::time::Duration;

use clap::{Parser, Subcommand};
use gstvideoai::fleet::kv;
use gstvideoai::fleet::registry::{self, Camera, CameraStatus, Lease, now_ms};

#[derive(Parser, Debug)]
#[command(
    name = "videoai-fleet",
    version,
    about = "The videoai camera registry: add, remove, list cameras and see where they run"
)]
struct Args {
    /// NATS servers: nats://host:port[,host:port…]
    #[arg(long, global = true, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Copies of the registry buckets when this creates them.
    #[arg(long, global = true)]
    replicas: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Adds (or changes) a camera: a worker with room picks it up within a few seconds.
    Add {
        /// 1 to 64 of A-Z a-z 0-9 _ - (also the stream id of its events).
        camera_id: String,
        /// What the pipeline file's ${URI} becomes (rtsp://…, a file, …).
        uri: String,
        /// The camera's own placeholder values.
        #[arg(value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
    /// Removes a camera: its pipeline stops wherever it runs.
    Remove { camera_id: String },
    /// One JSON line per camera of the registry: camera, uri, params.
    List,
    /// Per camera: worker, state (running/retrying/failed/waiting), frames/s, last frame, detail.
    Status {
        /// JSON lines instead of a table (also: since_ms, when the worker took the camera).
        #[arg(long)]
        json: bool,
    },
}

fn fail(why: &str) -> ! {
    eprintln!("videoai-fleet: {why}");
    std::process::exit(1)
}

fn main() {
    let args = Args::parse();
    let urls = gstvideoai::fleet::nats_servers(&args.nats).unwrap_or_else(|e| fail(&e));
    let replicas = args.replicas.unwrap_or(urls.len().min(3));
    gstvideoai::eventlog::nats::block_on(async move {
        let client = gstvideoai::eventlog::nats::connect(
            &urls,
            "videoai-fleet",
            Duration::from_secs(5),
            false,
        )
        .await
        .unwrap_or_else(|e| fail(&e));
        let js = async_nats::jetstream::new(client);
        let b = kv::open(&js, kv::DEFAULT_TTL, replicas)
            .await
            .unwrap_or_else(|e| fail(&e));
        match args.command {
            Command::Add {
                camera_id,
                uri,
                params,
            } => {
                registry::check_id(&camera_id).unwrap_or_else(|e| fail(&e));
                let params = registry::parse_params(&params).unwrap_or_else(|e| fail(&e));
                let c = Camera::new(&uri, params).unwrap_or_else(|e| fail(&e));
                kv::put(&b.cameras, &camera_id, c.encode().into())
                    .await
                    .unwrap_or_else(|e| fail(&e.to_string()));
                let _ = b.status.delete(&camera_id).await;
                println!("added {camera_id}");
            }
            Command::Remove { camera_id } => {
                if b.cameras.get(&camera_id).await.ok().flatten().is_none() {
                    fail(&format!("no camera {camera_id} in the registry"));
                }
                b.cameras
                    .delete(&camera_id)
                    .await
                    .unwrap_or_else(|e| fail(&e.to_string()));
                let _ = b.status.delete(&camera_id).await;
                println!("removed {camera_id}");
            }
            Command::List => {
                for (id, value) in entries(&b.cameras).await {
                    let line = match Camera::decode(&id, &value) {
                        Ok(c) => {
                            serde_json::json!({"camera": id, "uri": c.uri, "params": c.params})
                        }
                        Err(why) => serde_json::json!({"camera": id, "invalid": why}),
                    };
                    println!("{line}");
                }
            }
            Command::Status { json } => status(&b, json).await,
        }
    });
}

/// Every key and value of a bucket; an error (NATS electing a leader) ends the command.
async fn entries(store: &async_nats::jetstream::kv::Store) -> Vec<(String, bytes::Bytes)> {
    use futures_util::StreamExt;
    let why = |e: &dyn std::fmt::Display| format!("cannot read the bucket {}: {e}", store.name);
    let mut keys = store.keys().await.unwrap_or_else(|e| fail(&why(&e)));
    let mut names = Vec::new();
    while let Some(k) = keys.next().await {
        names.push(k.unwrap_or_else(|e| fail(&why(&e))));
    }
    names.sort();
    let mut out = Vec::new();
    for k in names {
        match store.get(&k).await {
            Ok(Some(v)) => out.push((k, v)),
            Ok(None) => {}
            Err(e) => fail(&why(&e)),
        }
    }
    out
}

async fn status(b: &kv::Buckets, json: bool) {
    let leases = entries(&b.leases).await;
    let statuses = entries(&b.status).await;
    let now = now_ms();
    if !json {
        println!(
            "{:<16} {:<14} {:<10} {:>7} {:>10}  detail",
            "camera", "worker", "state", "fps", "last frame"
        );
    }
    for (id, value) in entries(&b.cameras).await {
        let lease = leases
            .iter()
            .find(|(k, _)| *k == id)
            .and_then(|(_, v)| serde_json::from_slice::<Lease>(v).ok());
        let st = statuses
            .iter()
            .find(|(k, _)| *k == id)
            .and_then(|(_, v)| serde_json::from_slice::<CameraStatus>(v).ok());
        let invalid = Camera::decode(&id, &value).err();
        let (worker, state, fps, last, detail) = match (&lease, &st, &invalid) {
            (_, _, Some(why)) => (
                String::new(),
                "failed".to_string(),
                None,
                None,
                format!("registry entry: {why}"),
            ),
            (Some(l), _, _) => (
                l.worker.clone(),
                l.state.clone(),
                Some(l.fps),
                l.last_frame_ms,
                l.detail.clone(),
            ),
            (None, Some(s), _) => (
                s.worker.clone(),
                s.state.clone(),
                None,
                None,
                s.detail.clone(),
            ),
            (None, None, _) => (
                String::new(),
                "waiting".into(),
                None,
                None,
                "no worker has taken it yet".into(),
            ),
        };
        if json {
            let since = lease.as_ref().map(|l| l.since_ms);
            println!(
                "{}",
                serde_json::json!({"camera": id, "worker": worker, "state": state, "fps": fps,
                    "last_frame_ms": last, "since_ms": since, "detail": detail})
            );
        } else {
            let age = last
                .map(|t| format!("{:.1}s ago", now.saturating_sub(t) as f64 / 1000.0))
                .unwrap_or("-".into());
            let fps = fps.map(|f| format!("{f:.1}")).unwrap_or("-".into());
            println!("{id:<16} {worker:<14} {state:<10} {fps:>7} {age:>10}  {detail}");
        }
    }
}
