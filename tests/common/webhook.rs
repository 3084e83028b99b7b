// SPDX-License-Identifier: MPL-2.0
//! A webhook receiver on 127.0.0.1 for tests: answers each POST by a script (a status, or no
//! answer for a while), then 200; records every request's `Idempotency-Key`, body and answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// Read the request, answer nothing for this long, close.
    Silence(Duration),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub key: Option<String>,
    pub body: String,
    pub reply: Reply,
}

pub struct WebhookServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookServer {
    pub fn start(script: Vec<Reply>) -> WebhookServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let (r, st) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (r, script) = (r.clone(), script.clone());
                std::thread::spawn(move || {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let (mut key, mut len) = (None, 0usize);
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = l.split_once(':') {
                            match name.to_ascii_lowercase().as_str() {
                                "idempotency-key" => key = Some(value.trim().to_string()),
                                "content-length" => len = value.trim().parse().unwrap_or(0),
                                _ => {}
                            }
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = script
                        .lock()
                        .unwrap()
                        .pop_front()
                        .unwrap_or(Reply::Status(200));
                    r.lock().unwrap().push(Request {
                        key,
                        body: String::from_utf8_lossy(&body).into_owned(),
                        reply,
                    });
                    let mut conn = conn;
                    match reply {
                        Reply::Status(code) => {
                            let _ = write!(
                                conn,
                                "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            );
                        }
                        Reply::Silence(d) => std::thread::sleep(d),
                    }
                });
            }
        });
        WebhookServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
