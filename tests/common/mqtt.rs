// SPDX-License-Identifier: MPL-2.0
//! A real mosquitto broker on 127.0.0.1 for tests (Debian's `mosquitto`, started by the test,
//! never as a service; killed when dropped), and a subscriber that records what it receives.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::v5;

pub struct Mosquitto {
    dir: super::TempDir,
    pub port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts mosquitto with persistence (subscriptions and queued messages survive a
    /// restart), anonymous clients allowed unless `login` (user, password) is given.
    pub fn start(login: Option<(&str, &str)>) -> Mosquitto {
        Self::start_with(login, false)
    }

    /// With `tls`, the listener is TLS only, its certificate (for IP 127.0.0.1) signed by a test
    /// CA made with openssl: [`Self::ca_file`].
    pub fn start_with(login: Option<(&str, &str)>, tls: bool) -> Mosquitto {
        let dir = super::TempDir::new("mosquitto");
        // Started as root, mosquitto runs as the user mosquitto: it must write its state here.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let port = super::free_port();
        let mut conf = format!(
            "listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 1000000\nlog_dest stderr\n",
            dir.path().display()
        );
        if tls {
            make_certificates(dir.path());
            conf.push_str(&format!(
                "cafile {0}/ca.crt\ncertfile {0}/server.crt\nkeyfile {0}/server.key\n",
                dir.path().display()
            ));
        }
        match login {
            None => conf.push_str("allow_anonymous true\n"),
            Some((user, pass)) => {
                let pw = dir.join("passwords");
                let ok = Command::new("mosquitto_passwd")
                    .args(["-b", "-c"])
                    .arg(&pw)
                    .args([user, pass])
                    .status()
                    .expect("mosquitto_passwd runs (Debian package mosquitto; make setup)");
                assert!(ok.success());
                conf.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    pw.display()
                ));
            }
        }
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf).unwrap();
        let mut m = Mosquitto {
            dir,
            port,
            conf: path,
            child: None,
        };
        m.launch();
        m
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))
            .unwrap();
        let child = Command::new(binary())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto runs (Debian package mosquitto; make setup installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            // Exited (the port taken meanwhile): say so, never talk to another test's broker.
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "mosquitto exited ({status}): see {}",
                    self.dir.join("mosquitto.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker (SIGTERM: it saves its state, as a restarted service does) and waits
    /// for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir` (readable by the
/// mosquitto user).
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (Debian package openssl; make setup)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=videoai-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    use std::os::unix::fs::PermissionsExt;
    for f in ["ca.crt", "server.crt", "server.key"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

pub fn binary() -> &'static str {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    "mosquitto"
}

/// A message as the subscriber received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: String,
    pub retain: bool,
    /// The MQTT 5 user property `idempotency-key`.
    pub key: Option<String>,
}

/// A subscriber (MQTT 5, persistent session, so a broker restart loses nothing queued for it)
/// on `filter`, recording every message.
pub struct Subscriber {
    pub got: Arc<Mutex<Vec<Received>>>,
    client: v5::Client,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    pub fn start(port: u16, filter: &str, login: Option<(&str, &str)>) -> Subscriber {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "test-sub-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let mut o = v5::MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_start(false)
            .set_keep_alive(Duration::from_secs(5));
        let mut props = v5::mqttbytes::v5::ConnectProperties::new();
        props.session_expiry_interval = Some(3600);
        // Events with hundreds of detections (rumqttc takes 10 KiB by default).
        props.max_packet_size = Some(1 << 20);
        o.set_connect_properties(props);
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let (client, mut conn) = v5::Client::new(o, 100);
        let got = Arc::new(Mutex::new(Vec::new()));
        let (g, c, f) = (got.clone(), client.clone(), filter.to_string());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            use v5::mqttbytes::v5::Packet;
            for ev in conn.iter() {
                match ev {
                    Ok(v5::Event::Incoming(Packet::ConnAck(a))) => {
                        if !a.session_present {
                            // QoS 1: rumqttc forgets a QoS 2 receipt half-way when its connection drops
                            // (a broker restart), and then refuses the broker's PUBREL for good.
                            let _ = c.subscribe(f.clone(), v5::mqttbytes::QoS::AtLeastOnce);
                        }
                    }
                    Ok(v5::Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(v5::Event::Incoming(Packet::Publish(p))) => {
                        let key = p.properties.as_ref().and_then(|pr| {
                            pr.user_properties
                                .iter()
                                .find(|(k, _)| k == "idempotency-key")
                                .map(|(_, v)| v.clone())
                        });
                        g.lock().unwrap().push(Received {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            retain: p.retain,
                            key,
                        });
                    }
                    Ok(v5::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(v5::ConnectionError::RequestsDone) => break,
                    Err(_) if st.load(std::sync::atomic::Ordering::SeqCst) => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the subscriber subscribed");
        Subscriber {
            got,
            client,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits (at most `deadline`) until `enough` holds for what was received; returns it.
    pub fn wait_for(
        &self,
        deadline: Duration,
        enough: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let end = Instant::now() + deadline;
        loop {
            let got = self.got.lock().unwrap().clone();
            if enough(&got) || Instant::now() > end {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.client.disconnect();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
