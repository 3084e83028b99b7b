// SPDX-License-Identifier: MPL-2.0
//! The real Prometheus for the tests: Debian's `prometheus` server started on 127.0.0.1 with a
//! temporary directory (never as a service) and stopped on drop, its HTTP query API, `promtool
//! check metrics`, a plain HTTP GET and a reader of the text exposition format.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// `GET http://addr{path}`: the status and the body.
pub fn get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head}"))?;
    // HTTP/1.0: the body is never chunked, it ends with the connection.
    Ok((status, body.to_string()))
}

/// One scrape of `addr`'s `/metrics`.
pub fn scrape(addr: &str) -> String {
    let (status, body) = get(addr, "/metrics").expect("the metrics endpoint answers");
    assert_eq!(status, 200, "{body}");
    body
}

/// A thread scraping `addr` every `every` until stopped.
pub struct Scraper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scraper {
    /// `must_answer`: a failed scrape panics the thread (seen at [`Scraper::stop`]); else it
    /// is not counted (an endpoint that comes and goes).
    pub fn start(addr: &str, every: Duration, must_answer: bool) -> Scraper {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread = {
            let (stop, count, addr) = (stop.clone(), count.clone(), addr.to_string());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    match get(&addr, "/metrics") {
                        Ok((200, _)) => {
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        other if must_answer => panic!("scrape of {addr}: {other:?}"),
                        _ => {}
                    }
                    std::thread::sleep(every.saturating_sub(started.elapsed()));
                }
            })
        };
        Scraper {
            stop,
            count,
            thread: Some(thread),
        }
    }

    /// Scrapes answered so far.
    pub fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops scraping; the scrapes answered.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the scraper ran without a failed scrape");
        }
        self.count()
    }
}

/// The samples of a text exposition: (name, labels) -> value.
pub type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

pub fn samples(text: &str) -> Samples {
    let mut out = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        // Label values written by videoai hold no `",` sequence; good enough for the tests.
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").expect("label=value");
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        let value = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().expect("a number"),
        };
        out.insert((name.to_string(), map), value);
    }
    out
}

/// The value of the series `name` whose labels include `labels`, if exactly one matches.
pub fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = samples.iter().filter(|((n, l), _)| {
        n == name
            && labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
    });
    let first = found.next()?;
    assert!(found.next().is_none(), "more than one {name}{labels:?}");
    Some(*first.1)
}

/// The sum of every series `name` (all label values).
pub fn sum(samples: &Samples, name: &str) -> f64 {
    samples
        .iter()
        .filter(|((n, _), _)| n == name)
        .map(|(_, v)| v)
        .sum()
}

/// `promtool check metrics` on `text`: Ok, or what it said.
pub fn promtool_check(text: &str) -> Result<(), String> {
    promtool(&["check", "metrics"], text)
}

/// `promtool ARGS` with `stdin`: Ok when it succeeded (without a lint line for `check
/// metrics`), or what it said.
pub fn promtool(args: &[&str], stdin: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/setup.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lint_free = args != ["check", "metrics"] || said.trim().is_empty();
    if out.status.success() && lint_free {
        Ok(())
    } else {
        Err(said)
    }
}

/// A Prometheus server scraping `targets` every second, evaluating `rules` (a rules file, as
/// `pipelines/videoai.rules.yml`) every second.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    _dir: super::TempDir,
}

impl Prometheus {
    pub fn start(targets: &[String], rules: Option<&std::path::Path>) -> Prometheus {
        let dir = super::TempDir::new("prometheus");
        let config = dir.join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rules = rules
            .map(|r| format!("rule_files:\n  - '{}'\n", r.display()))
            .unwrap_or_default();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: videoai\n    static_configs:\n      - targets: [{}]\n{rules}",
                targets.join(", ")
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", super::free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus; scripts/setup.sh installs it)");
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(get(&p.addr, "/-/ready"), Ok((200, _))) {
            assert!(Instant::now() < deadline, "Prometheus not ready in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    /// An instant query: the vector's values by their labels.
    pub fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let q = utf8_percent_encode(promql, NON_ALPHANUMERIC);
        let (status, body) =
            get(&self.addr, &format!("/api/v1/query?query={q}")).expect("Prometheus answers");
        assert_eq!(status, 200, "{promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{promql}: {body}"))
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// The single value of `promql`, once it has one (waits up to `within`).
    pub fn wait_for(&self, promql: &str, within: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let r = self.query(promql);
            if let [(_, v)] = r.as_slice()
                && ok(*v)
            {
                return *v;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: {r:?} after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
