// SPDX-License-Identifier: MPL-2.0
//! The Prometheus endpoint: an HTTP server (tiny_http) on a thread of its own answering
//! `GET /metrics` with the text exposition format (version 0.0.4, what `promtool check
//! metrics` reads). Requests are served one at a time on that thread; rendering reads the
//! tracer's atomics and the elements' `stats` snapshots, so nothing here runs on, or holds a
//! lock of, a streaming thread. Dropping the [`Exporter`] stops the server and joins its
//! thread.

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus::Encoder;
use prometheus::proto::MetricFamily;

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Exporter {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: std::net::SocketAddr,
}

/// The exposition of `families`.
pub fn encode(families: &[MetricFamily]) -> String {
    let mut out = Vec::new();
    // Encoding only fails on invalid families (e.g. a metric with the wrong kind of value),
    // which the builders never make; say so in the output rather than serve nothing.
    if let Err(e) = prometheus::TextEncoder::new().encode(families, &mut out) {
        out.extend_from_slice(format!("# encoding failed: {e}\n").as_bytes());
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Exporter {
    /// Serves what `render` gives on `http://addr/metrics`. `addr` is `HOST:PORT` (port 0: any
    /// free port, see [`Exporter::addr`]).
    pub fn start(
        addr: &str,
        render: impl Fn() -> String + Send + 'static,
    ) -> Result<Exporter, String> {
        let resolved = addr
            .to_socket_addrs()
            .map_err(|e| {
                format!(
                    "'{addr}' is not an address to listen on (HOST:PORT, e.g. 127.0.0.1:9464): {e}"
                )
            })?
            .next()
            .ok_or_else(|| format!("'{addr}' resolves to no address"))?;
        let server = tiny_http::Server::http(resolved).map_err(|e| {
            format!("cannot serve Prometheus metrics on {addr}: {e}. Choose a free port, e.g. GST_TRACERS=\"videoaitrace(prometheus=127.0.0.1:9465)\"")
        })?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| format!("{addr} is not an IP address"))?;
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("videoai-metrics".into())
            .spawn(move || serve(&serving, &render))
            .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
        Ok(Exporter {
            server,
            thread: Some(thread),
            addr: bound,
        })
    }

    /// The address served (with the port chosen when asked for port 0).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

fn serve(server: &tiny_http::Server, render: &dyn Fn() -> String) {
    // `recv` fails once the server is unblocked (the exporter dropped).
    while let Ok(request) = server.recv() {
        let path = request.url().split('?').next().unwrap_or("");
        // HEAD is answered as GET (tiny_http leaves the body out).
        let readable = matches!(
            request.method(),
            tiny_http::Method::Get | tiny_http::Method::Head
        );
        let response = match (readable, path) {
            (true, "/metrics") => text(200, render(), CONTENT_TYPE),
            (true, "/") => text(
                200,
                "videoai metrics: GET /metrics (Prometheus text format)\n".into(),
                "text/plain; charset=utf-8",
            ),
            (true, _) => text(404, "not found: try /metrics\n".into(), "text/plain"),
            _ => text(405, "only GET and HEAD are served\n".into(), "text/plain"),
        };
        // A client that went away is not an error of ours.
        let _ = request.respond(response);
    }
}

fn text(
    status: u16,
    body: String,
    content_type: &str,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header =
        tiny_http::Header::from_bytes("Content-Type", content_type).expect("a valid header");
    tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header)
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
