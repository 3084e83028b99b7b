// SPDX-License-Identifier: MPL-2.0
//! A NATS JetStream cluster of `nats-server` processes on 127.0.0.1 for tests: temporary store
//! directories, free ports, started and stopped by the test (and killed when dropped).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gstvideoai::eventlog::nats;

struct Node {
    name: String,
    client_port: u16,
    conf: PathBuf,
    /// The server's own log (its stderr), appended to at each start.
    log: PathBuf,
    child: Option<Child>,
}

pub struct NatsCluster {
    _dir: super::TempDir,
    nodes: Vec<Node>,
    binary: String,
}

/// The `nats-server` the tests and benchmarks run: `VIDEOAI_NATS_SERVER` when set (e.g.
/// Debian's, `/usr/sbin/nats-server`), else the pinned one `make deps` unpacks into
/// `.deps/nats-server` (NATS_SERVER_VERSION in scripts/versions.env).
pub fn server_binary() -> String {
    if let Ok(p) = std::env::var("VIDEOAI_NATS_SERVER") {
        return p;
    }
    let pinned = concat!(env!("CARGO_MANIFEST_DIR"), "/.deps/nats-server/nats-server");
    assert!(
        std::path::Path::new(pinned).exists(),
        "{pinned} is missing: `make deps` (scripts/setup.sh) unpacks the pinned nats-server there"
    );
    pinned.to_string()
}

/// The version `binary --version` prints (`2.15.1` of `nats-server: v2.15.1`; empty when it
/// cannot be run).
pub fn server_version(binary: &str) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .map(|o| {
            let out = String::from_utf8_lossy(&o.stdout);
            out.trim().trim_start_matches("nats-server: v").to_string()
        })
        .unwrap_or_default()
}

/// Debian 12's `nats-server` (2.9.10).
pub fn debian_server_binary() -> String {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    "nats-server".to_string()
}

impl NatsCluster {
    /// The version of the servers' binary (see [`server_version`]).
    pub fn version(&self) -> String {
        server_version(&self.binary)
    }

    /// Starts `n` JetStream servers (a cluster when `n` > 1) of [`server_binary`] and waits
    /// until JetStream answers.
    pub fn start(n: usize) -> NatsCluster {
        Self::start_with(n, &server_binary())
    }

    /// [`NatsCluster::start`] with the server `binary`.
    ///
    /// The ports are free when chosen, but another socket of this machine (a client's outgoing
    /// connection takes its local port from the same range) can take one before the server
    /// binds it; that server then exits at once. Such a cluster is started again on other
    /// ports, at most three times; any other failure is said with the servers' logs.
    pub fn start_with(n: usize, binary: &str) -> NatsCluster {
        for attempt in 1.. {
            let c = Self::configure(n, binary);
            // 60 s: three nodes started on a loaded 2-core machine took more than 30 s to place
            // a stream on all of them (once, with the fleet tests running beside).
            match c.try_ready(Duration::from_secs(60)) {
                Ok(()) => return c,
                Err(why) if attempt < 3 && why.contains("address already in use") => {
                    eprintln!("nats cluster, attempt {attempt}: {why}; again on other ports");
                }
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!()
    }

    /// Writes the configuration of `n` servers on ports free now, and starts them.
    fn configure(n: usize, binary: &str) -> NatsCluster {
        let dir = super::TempDir::new("nats");
        // 2n distinct ports (two picks of a free port can give the same one).
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 2 * n {
            let p = super::free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let (client, cluster) = ports.split_at(n);
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("n{i}");
            let store = dir.join(&name);
            std::fs::create_dir_all(&store).unwrap();
            let mut conf = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{}\njetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n",
                client[i],
                store.display()
            );
            if n > 1 {
                let routes: Vec<String> = (0..n)
                    .filter(|j| *j != i)
                    .map(|j| format!("nats-route://127.0.0.1:{}", cluster[j]))
                    .collect();
                conf.push_str(&format!(
                    "cluster {{\n  name: videoai-test\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    cluster[i],
                    routes.join(", ")
                ));
            }
            let path = dir.join(&format!("{name}.conf"));
            std::fs::write(&path, conf).unwrap();
            nodes.push(Node {
                log: dir.join(&format!("{name}.log")),
                name,
                client_port: client[i],
                conf: path,
                child: None,
            });
        }
        let mut c = NatsCluster {
            _dir: dir,
            nodes,
            binary: binary.to_string(),
        };
        for i in 0..n {
            c.start_node(i);
        }
        c
    }

    fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server ({e}); `make deps` installs it"));
        node.child = Some(child);
    }

    /// `nats://127.0.0.1:p1,127.0.0.1:p2,…`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.client_port))
            .collect();
        format!("nats://{}", hosts.join(","))
    }

    fn urls(&self) -> Vec<String> {
        nats::parse_location(&self.url()).unwrap().unwrap()
    }

    /// Waits until a running server answers JetStream requests (a meta leader exists).
    pub fn wait_ready(&self, timeout: Duration) {
        if let Err(why) = self.try_ready(timeout) {
            panic!("{why}");
        }
    }

    /// The nodes started and not stopped by this struct whose process has exited (a zombie
    /// not yet reaped), with the end of their logs.
    fn exited(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let pid = n.child.as_ref()?.id();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // The state follows the command name in parentheses.
                let state = stat.rsplit_once(") ")?.1.chars().next()?;
                (state == 'Z').then(|| {
                    let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    format!(
                        "{} (port {}) exited: {}",
                        n.name,
                        n.client_port,
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    )
                })
            })
            .collect()
    }

    /// [`Self::wait_ready`], saying why not: a node that exited (with its log), or the time.
    fn try_ready(&self, timeout: Duration) -> Result<(), String> {
        let urls = self.urls();
        let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
        let deadline = Instant::now() + timeout;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let ok = nats::block_on(async {
                let Ok(client) = nats::connect(&urls, "test", Duration::from_secs(2), false).await
                else {
                    return false;
                };
                // Any answer without an error: JetStream (and in a cluster its meta leader) is up.
                match client.request("$JS.API.INFO", "".into()).await {
                    Ok(msg) if !String::from_utf8_lossy(&msg.payload).contains("\"error\"") => {}
                    _ => return false,
                }
                // A meta leader needs a majority only: a replicated bucket created now can
                // still be refused with "no suitable peers for placement" until every running
                // node has joined (seen once in CI). Ready when a stream with a replica on each
                // running node can be placed.
                if running < 2 {
                    return true;
                }
                let js = async_nats::jetstream::new(client);
                let name = format!("READY_PROBE_{}_{attempt}", std::process::id());
                let placed = js
                    .create_stream(async_nats::jetstream::stream::Config {
                        name: name.clone(),
                        subjects: vec![format!("ready-probe.{}.{attempt}", std::process::id())],
                        num_replicas: running,
                        storage: async_nats::jetstream::stream::StorageType::Memory,
                        ..Default::default()
                    })
                    .await
                    .is_ok();
                if placed {
                    let _ = js.delete_stream(&name).await;
                }
                placed
            });
            if ok {
                return Ok(());
            }
            let exited = self.exited();
            if !exited.is_empty() {
                return Err(format!("NATS not ready: {}", exited.join("; ")));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "NATS JetStream not ready within {timeout:?} (a stream on all {running} running nodes could not be placed)"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes node `i` (SIGSTOP): its connections stay open and say nothing, as a hung server's.
    pub fn pause(&self, i: usize) {
        self.signal(i, libc::SIGSTOP);
    }

    /// Lets node `i` go on after [`Self::pause`].
    pub fn resume(&self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        if let Some(c) = &self.nodes[i].child {
            // SAFETY: kill(2) with a pid this struct started and has not yet reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, signal) };
        }
    }

    /// Shuts every node down (SIGTERM, then waits for each to exit). Not SIGKILL: nats-server
    /// acknowledges a write before its file store has written it out (nats-server#7564), so
    /// killing every replica at once can lose writes that NATS already acknowledged, which no
    /// client can prevent. Killing a minority (`kill`) loses nothing: the quorum holds the data.
    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            if let Some(c) = &node.child {
                // SAFETY: kill(2) with a pid this struct started and has not yet reaped. A
                // paused node is let go on first, or it would not hear the SIGTERM.
                unsafe {
                    libc::kill(c.id() as libc::pid_t, libc::SIGCONT);
                    libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                while matches!(c.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Starts every stopped node again with its old data.
    pub fn restart_stopped(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.start_node(i);
            }
        }
    }

    /// The index of the node named `name` (a server's `server_name`).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The index of the node leading JetStream stream `stream`.
    pub fn leader_of(&self, stream: &str) -> Option<usize> {
        let urls = self.urls();
        let leader = nats::block_on(async {
            let client = nats::connect(&urls, "test", Duration::from_secs(2), false)
                .await
                .ok()?;
            let js = async_nats::jetstream::new(client);
            let mut s = js.get_stream(stream).await.ok()?;
            s.info().await.ok()?.cluster.as_ref()?.leader.clone()
        })?;
        self.nodes.iter().position(|n| n.name == leader)
    }

    /// Every event in `stream`, in stream order (retried for a while: after a kill the stream
    /// may still be electing a leader, and a cluster on a loaded CI machine answers slowly).
    pub fn read_all(&self, stream: &str) -> Vec<gstvideoai::eventlog::event::FrameEvent> {
        self.retried(&format!("reading {stream}"), |js| async move {
            nats::read_all(&js, stream).await
        })
    }

    /// The header names of the last message on `subject` of `stream`.
    pub fn header_names_of_last(&self, stream: &str, subject: &str) -> Vec<String> {
        self.retried(&format!("reading {subject}"), |js| async move {
            let s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
            let m = s
                .get_last_raw_message_by_subject(subject)
                .await
                .map_err(|e| e.to_string())?;
            Ok(m.headers.iter().map(|(k, _)| k.to_string()).collect())
        })
    }

    /// Every event of the stream with the subject it is on, in stream order.
    pub fn read_all_with_subjects(
        &self,
        stream: &str,
    ) -> Vec<(String, gstvideoai::eventlog::event::FrameEvent)> {
        self.retried(&format!("reading {stream}"), |js| async move {
            use futures_util::StreamExt;
            let mut s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
            let last = s
                .info()
                .await
                .map_err(|e| e.to_string())?
                .state
                .last_sequence;
            let mut out = Vec::new();
            if last == 0 {
                return Ok(out);
            }
            let consumer = s
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
            // Bounded: a stalled consumer (a server that froze) is an error, retried.
            while let Some(m) = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .map_err(|_| "no message for 5 s".to_string())?
            {
                let m = m.map_err(|e| e.to_string())?;
                let seq = m.info().map(|i| i.stream_sequence).unwrap_or(last);
                if let Ok(e) = serde_json::from_slice(&m.payload) {
                    out.push((m.subject.to_string(), e));
                }
                if seq >= last {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// How many copies the JetStream stream keeps (retried for a while, as [`Self::read_all`]:
    /// after a kill the stream info request times out until a leader is elected).
    pub fn replicas_of(&self, stream: &str) -> usize {
        self.retried(&format!("stream info of {stream}"), |js| async move {
            let mut s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
            Ok(s.info()
                .await
                .map_err(|e| e.to_string())?
                .config
                .num_replicas)
        })
    }

    /// Waits (retried as [`Self::read_all`], up to 60 s) until `stream` has a leader and every
    /// other replica is current: a node started again has caught up with it.
    pub fn wait_replicas_current(&self, stream: &str) {
        let replicas = self.nodes.len() - 1;
        self.retried(&format!("replicas of {stream}"), |js| async move {
            let mut s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
            let info = s.info().await.map_err(|e| e.to_string())?;
            let cluster = info.cluster.as_ref().ok_or("no cluster information")?;
            let current = cluster
                .replicas
                .iter()
                .filter(|p| p.current && !p.offline)
                .count();
            if cluster.leader.is_some() && current == replicas {
                Ok(())
            } else {
                Err(format!(
                    "leader {:?}, {current} of {replicas} other replicas current",
                    cluster.leader
                ))
            }
        })
    }

    /// `request` on a fresh JetStream client, retried every 500 ms for up to 60 s; panics with
    /// `what` and the last error after that.
    fn retried<T, F, Fut>(&self, what: &str, request: F) -> T
    where
        F: Fn(async_nats::jetstream::Context) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let urls = self.urls();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let res = nats::block_on(async {
                let client = nats::connect(&urls, "test", Duration::from_secs(5), false).await?;
                request(async_nats::jetstream::new(client)).await
            });
            match res {
                Ok(v) => return v,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("{what}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
