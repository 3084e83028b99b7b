// SPDX-License-Identifier: MPL-2.0
//! A real HTTP camera for the tests: a server on 127.0.0.1 that streams what cheap IP cameras
//! serve, for as long as the client reads: MJPEG as `multipart/x-mixed-replace` (a JPEG per
//! part), or an MPEG-TS byte stream without a length. `stop` closes the listener and every
//! connection at once (the camera goes away); `start` serves again on the same port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

#[derive(Clone)]
pub enum Content {
    /// JPEG pictures served in turn, `fps` a second.
    Mjpeg { jpegs: Arc<Vec<Vec<u8>>>, fps: u32 },
    /// A byte stream sent in `chunk`-sized pieces, `chunks_per_second` a second.
    Stream {
        content_type: &'static str,
        bytes: Arc<Vec<u8>>,
        chunk: usize,
        chunks_per_second: u32,
    },
}

pub struct HttpCamera {
    port: u16,
    content: Content,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

/// `frames` JPEG pictures of a moving ball, `width`×`height`.
pub fn jpegs(frames: u32, width: u32, height: u32) -> Vec<Vec<u8>> {
    encoded(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width={width},height={height},framerate=15/1 ! jpegenc"
    ))
}

/// `seconds` of 320×240 H.264 at 15 fps in MPEG-TS.
pub fn mpegts(seconds: u32) -> Vec<u8> {
    encoded(&format!(
        "videotestsrc num-buffers={} pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 \
         ! videoconvert ! openh264enc gop-size=15 ! h264parse ! mpegtsmux",
        seconds * 15
    ))
    .concat()
}

/// The buffers `desc ! appsink` produces.
fn encoded(desc: &str) -> Vec<Vec<u8>> {
    let p = super::parse(&format!("{desc} ! appsink name=out sync=false"));
    let sink = p
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut out = Vec::new();
    while let Ok(s) = sink.pull_sample() {
        out.push(s.buffer().unwrap().map_readable().unwrap().to_vec());
    }
    p.set_state(gst::State::Null).unwrap();
    out
}

impl HttpCamera {
    pub fn start_with(content: Content) -> HttpCamera {
        let mut cam = HttpCamera {
            port: super::free_port(),
            content,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            connections: Arc::new(Mutex::new(Vec::new())),
        };
        cam.start();
        cam
    }

    pub fn uri(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// Serves (again) on the camera's port.
    pub fn start(&mut self) {
        self.stop();
        self.stop.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "bind 127.0.0.1:{}: {e}",
                        self.port
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        listener.set_nonblocking(true).unwrap();
        let (stop, content, conns) = (
            self.stop.clone(),
            self.content.clone(),
            self.connections.clone(),
        );
        self.threads.push(std::thread::spawn(move || {
            let mut clients = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        conns.lock().unwrap().push(c.try_clone().unwrap());
                        let (stop, content) = (stop.clone(), content.clone());
                        clients.push(std::thread::spawn(move || serve(c, &content, &stop)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in clients {
                let _ = c.join();
            }
        }));
    }

    /// Goes away: the listener closes and every connection is cut.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.connections.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for HttpCamera {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(mut c: TcpStream, content: &Content, stop: &AtomicBool) {
    // The request: read up to the blank line.
    let mut req = Vec::new();
    let mut byte = [0u8; 1];
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while !req.ends_with(b"\r\n\r\n") {
        match c.read(&mut byte) {
            Ok(1) => req.push(byte[0]),
            _ => return,
        }
    }
    let result = match content {
        Content::Mjpeg { jpegs, fps } => (|| -> std::io::Result<()> {
            c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=videoaiframe\r\n\
                  Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
            )?;
            for jpeg in jpegs.iter().cycle() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                write!(
                    c,
                    "--videoaiframe\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    jpeg.len()
                )?;
                c.write_all(jpeg)?;
                c.write_all(b"\r\n")?;
                std::thread::sleep(Duration::from_secs(1) / *fps);
            }
            Ok(())
        })(),
        Content::Stream {
            content_type,
            bytes,
            chunk,
            chunks_per_second,
        } => (|| -> std::io::Result<()> {
            write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n"
            )?;
            for piece in bytes.chunks(*chunk) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                c.write_all(piece)?;
                std::thread::sleep(Duration::from_secs(1) / *chunks_per_second);
            }
            // A live stream does not end: hold the connection until the camera goes away.
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })(),
    };
    let _ = result;
    let _ = c.shutdown(std::net::Shutdown::Both);
}
