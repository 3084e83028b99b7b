// SPDX-License-Identifier: MPL-2.0
//! The fleet's key-value buckets in NATS JetStream, and watching them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream};
use futures_util::StreamExt;

pub const CAMERAS: &str = "videoai-cameras";
pub const LEASES: &str = "videoai-leases";
pub const WORKERS: &str = "videoai-workers";
pub const STATUS: &str = "videoai-status";

/// The default lease TTL (the leases' and workers' buckets' `max_age`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3);

pub struct Buckets {
    pub cameras: kv::Store,
    pub leases: kv::Store,
    pub workers: kv::Store,
    pub status: kv::Store,
}

async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    // The stream of a key-value bucket, as `create_key_value` makes it. That call first asks
    // for the account's limits, whose reply from NATS 2.9 async-nats 0.51 cannot read; the
    // stream itself is the same.
    let config = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: replicas.max(1),
        // Within the TTL, not the default two minutes: a lease put again after it aged out is
        // a new message, not a duplicate.
        duplicate_window: if max_age.is_zero() {
            Duration::from_secs(120)
        } else {
            max_age
        },
        ..Default::default()
    };
    match js.create_stream(config).await {
        Ok(_) => {}
        // Another process was quicker.
        Err(e) if js.get_key_value(name).await.is_ok() => drop(e),
        Err(e) => {
            return Err(format!(
                "cannot create the key-value bucket {name} ({replicas} replicas): {e}"
            ));
        }
    }
    // A replicated stream is created before its leader is elected; until then a put finds no
    // one to answer ("no stream found for given subject"). Seen once in the fleet tests:
    // `videoai-fleet add` right after it created the buckets of a new 3-node cluster.
    let stream_name = format!("KV_{name}");
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        let led = match js.get_stream(&stream_name).await {
            Ok(mut s) => s
                .info()
                .await
                .is_ok_and(|i| i.cluster.as_ref().is_none_or(|c| c.leader.is_some())),
            Err(_) => false,
        };
        if led {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the key-value bucket {name} ({replicas} replicas) has no leader {LEADER_WAIT:?} after it was created: are {replicas} NATS servers of the cluster running?"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    js.get_key_value(name)
        .await
        .map_err(|e| format!("cannot open the key-value bucket {name}: {e}"))
}

/// Longest a bucket just created may take to elect its leader.
const LEADER_WAIT: Duration = Duration::from_secs(20);

/// Puts `value` under `key`, sending it again for up to [`LEADER_WAIT`] while no server answers
/// for the bucket's stream ("no stream found for given subject"): right after a replicated
/// bucket is created, the server a client talks to may not yet know where its stream's
/// leader listens.
pub async fn put(store: &kv::Store, key: &str, value: bytes::Bytes) -> Result<u64, kv::PutError> {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        match store.put(key, value.clone()).await {
            Err(e) if no_stream_answered(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => return r,
        }
    }
}

fn no_stream_answered(e: &kv::PutError) -> bool {
    e.kind() == kv::PutErrorKind::Ack
        && std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<jetstream::context::PublishError>())
            .is_some_and(|p| p.kind() == jetstream::context::PublishErrorKind::StreamNotFound)
}

/// Opens the four buckets, creating the missing ones (leases and workers with `ttl` as their
/// `max_age`: the lease TTL is the bucket's, the same for every worker).
pub async fn open(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> Result<Buckets, String> {
    Ok(Buckets {
        cameras: bucket(js, CAMERAS, Duration::ZERO, replicas).await?,
        leases: bucket(js, LEASES, ttl, replicas).await?,
        workers: bucket(js, WORKERS, ttl, replicas).await?,
        status: bucket(js, STATUS, Duration::ZERO, replicas).await?,
    })
}

/// The TTL of an existing leases bucket (its `max_age`).
pub async fn lease_ttl(store: &kv::Store) -> Option<Duration> {
    let mut stream = store.stream.clone();
    stream
        .info()
        .await
        .ok()
        .map(|i| i.config.max_age)
        .filter(|d| !d.is_zero())
}

/// One key's latest value as a watcher last saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub value: bytes::Bytes,
    pub revision: u64,
    /// When this process received it (a renewal shows up as a new value).
    pub at: Instant,
}

/// A bucket's keys and latest values, kept up to date by a watch task; deleted and purged keys
/// are removed. Values older than a TTL may be gone from the bucket already (aged out, which
/// watchers are not told): callers judge by [`Seen::at`].
#[derive(Clone, Default)]
pub struct Mirror(Arc<Mutex<BTreeMap<String, Seen>>>);

impl Mirror {
    pub fn snapshot(&self) -> BTreeMap<String, Seen> {
        self.0.lock().unwrap().clone()
    }

    /// Starts watching every key of `store` (current values first) on the current runtime;
    /// a watch that ends (connection lost) is started again.
    pub fn follow(store: kv::Store) -> Mirror {
        let mirror = Mirror::default();
        let map = mirror.0.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(mut watch) = store.watch_with_history(">").await {
                    while let Some(Ok(entry)) = watch.next().await {
                        let mut m = map.lock().unwrap();
                        match entry.operation {
                            kv::Operation::Put => {
                                m.insert(
                                    entry.key,
                                    Seen {
                                        value: entry.value,
                                        revision: entry.revision,
                                        at: Instant::now(),
                                    },
                                );
                            }
                            kv::Operation::Delete | kv::Operation::Purge => {
                                m.remove(&entry.key);
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        mirror
    }
}
