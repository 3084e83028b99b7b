// SPDX-License-Identifier: MPL-2.0
//! One connection to the broker with rumqttc, MQTT 5 or 3.1.1 behind one face: publish, and the
//! few things the delivery task needs to hear (connected, a publish sent with its packet id, a
//! publish acknowledged, the connection gone). rumqttc's event loop runs as a task of its own
//! that forwards those on a channel, so the delivery task never cancels a poll half-way.
//!
//! A session is clean (no state kept by the broker): after a lost connection the delivery task
//! starts a new one and publishes again from the log's mark whatever was not acknowledged.

use std::time::Duration;

use rumqttc::v5;
use tokio::sync::mpsc;

use super::config::{Protocol, Target};

/// What the connection reports.
#[derive(Debug)]
pub enum Heard {
    Connected,
    /// The next publish asked for went out with this packet id (0: QoS 0).
    Sent(u16),
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2).
    Acked(u16),
    /// The broker refused this publish (MQTT 5 reason code in PUBACK or PUBREC: not authorized
    /// for the topic, a quota, …): not delivered, and it will not be by trying again.
    Refused(u16, String),
    /// The connection ended: why, and whether retrying will not help (the broker refused the
    /// client's credentials, or TLS failed: an untrusted certificate).
    Lost {
        why: String,
        refused: bool,
    },
}

enum Client {
    V311(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

pub struct Session {
    client: Client,
    pub heard: mpsc::UnboundedReceiver<Heard>,
    poller: tokio::task::JoinHandle<()>,
}

/// MQTT 3.1.1 cannot learn how many unacknowledged messages the broker takes (MQTT 5 says so
/// in CONNACK, receive maximum): keep to mosquitto's default `max_inflight_messages`, past which
/// it let QoS 2 messages of a 3.1.1 client go (acknowledged, never delivered: seen here with
/// 30 in flight, 20 delivered).
pub const V311_INFLIGHT: u16 = 20;

/// The largest packet sent or taken (rumqttc's own default for 3.1.1 is 10 KiB: a frame with
/// a hundred detections). Larger events are dead letters ([`MAX_PAYLOAD`]).
pub const MAX_PACKET: usize = 1 << 20;
/// The largest payload published: the packet's limit less room for the topic and properties.
pub const MAX_PAYLOAD: usize = MAX_PACKET - 16 * 1024;

/// Requests the client may hold before its event loop takes them: more than the window.
pub const REQUEST_CAPACITY: usize = 4096;

fn qos4(qos: u8) -> rumqttc::QoS {
    match qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(qos: u8) -> v5::mqttbytes::QoS {
    match qos {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        1 => v5::mqttbytes::QoS::AtLeastOnce,
        _ => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// Why a connection ended, the same for both protocol versions.
enum Ended {
    BadLogin,
    NotAuthorized,
    Refused(String),
    Tls(String),
    Other(String),
}

/// What it means for a person (never the options: they hold the password), and whether
/// retrying will not help.
fn describe(e: Ended) -> Heard {
    let (why, refused) = match e {
        Ended::BadLogin => ("the broker refused the user name or password".into(), true),
        Ended::NotAuthorized => (
            "the broker refused the client: not authorized (a wrong user name or password, or not allowed to connect)".into(),
            true,
        ),
        Ended::Refused(code) => (format!("the broker refused the connection ({code})"), false),
        // A certificate nobody trusts stays untrusted; a handshake cut short (a broker
        // restarting) is tried again.
        Ended::Tls(e) => {
            let fatal = e.contains("certificate");
            (format!("TLS: {e} (check mqtt-ca-file)"), fatal)
        }
        Ended::Other(e) => (e, false),
    };
    Heard::Lost { why, refused }
}

/// rumqttc's event loop of either version, reduced to what the delivery task hears.
trait EventLoop: Send + 'static {
    /// The next thing worth reporting; a [`Heard::Lost`] ends the loop.
    fn next(&mut self) -> impl std::future::Future<Output = Heard> + Send;
}

/// The reason an MQTT 5 PUBACK or PUBREC refuses its publish with (≥ 0x80), if it does.
trait Reason {
    fn refusal(&self) -> Option<String>;
}

impl Reason for rumqttc::PubAck {
    fn refusal(&self) -> Option<String> {
        None
    }
}

impl Reason for rumqttc::PubRec {
    fn refusal(&self) -> Option<String> {
        None
    }
}

impl Reason for v5::mqttbytes::v5::PubAck {
    fn refusal(&self) -> Option<String> {
        use v5::mqttbytes::v5::PubAckReason as R;
        match self.reason {
            R::Success | R::NoMatchingSubscribers => None,
            r => Some(format!("{r:?}")),
        }
    }
}

impl Reason for v5::mqttbytes::v5::PubRec {
    fn refusal(&self) -> Option<String> {
        use v5::mqttbytes::v5::PubRecReason as R;
        match self.reason {
            R::Success | R::NoMatchingSubscribers => None,
            r => Some(format!("{r:?}")),
        }
    }
}

/// The same reduction for both versions: their types differ, not their shape.
macro_rules! event_loop {
    ($($events:ident)::+ ; $($codes:ident)::+) => {
        impl EventLoop for $($events)::+::EventLoop {
            async fn next(&mut self) -> Heard {
                use rumqttc::Outgoing;
                use $($codes)::+::ConnectReturnCode as C;
                use $($events)::+::{ConnectionError as E, Event, Incoming};
                loop {
                    return match self.poll().await {
                        Ok(Event::Incoming(Incoming::ConnAck(_))) => Heard::Connected,
                        Ok(Event::Incoming(Incoming::PubAck(a))) => match Reason::refusal(&a) {
                            Some(why) => Heard::Refused(a.pkid, why),
                            None => Heard::Acked(a.pkid),
                        },
                        Ok(Event::Incoming(Incoming::PubRec(r))) => match Reason::refusal(&r) {
                            Some(why) => Heard::Refused(r.pkid, why),
                            None => continue,
                        },
                        Ok(Event::Incoming(Incoming::PubComp(a))) => Heard::Acked(a.pkid),
                        Ok(Event::Outgoing(Outgoing::Publish(p))) => Heard::Sent(p),
                        Ok(_) => continue,
                        Err(E::ConnectionRefused(C::BadUserNamePassword)) => {
                            describe(Ended::BadLogin)
                        }
                        Err(E::ConnectionRefused(C::NotAuthorized)) => describe(Ended::NotAuthorized),
                        Err(E::ConnectionRefused(c)) => describe(Ended::Refused(format!("{c:?}"))),
                        Err(E::Tls(e)) => describe(Ended::Tls(e.to_string())),
                        Err(e) => describe(Ended::Other(e.to_string())),
                    };
                }
            }
        }
    };
}

event_loop!(rumqttc; rumqttc);
event_loop!(rumqttc::v5; rumqttc::v5::mqttbytes::v5);

/// Runs `ev` as a task, sending what it hears until the connection ends or nobody listens.
fn poll_on(
    mut ev: impl EventLoop,
    tx: mpsc::UnboundedSender<Heard>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let h = ev.next().await;
            let end = matches!(h, Heard::Lost { .. });
            if tx.send(h).is_err() || end {
                return;
            }
        }
    })
}

impl Session {
    /// Starts connecting (on the current runtime); `will` is the last will's topic and
    /// payload (retained, QoS 1). `inflight`: publishes awaiting acknowledgement at most.
    pub fn open(
        target: &Target,
        client_id: &str,
        will: Option<(String, &'static str)>,
        inflight: u16,
    ) -> Result<Session, String> {
        let transport = if target.tls {
            let tls = super::config::tls_config(target.ca_file.as_deref())?;
            rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(tls))
        } else {
            rumqttc::Transport::Tcp
        };
        let (tx, heard) = mpsc::unbounded_channel();
        let keep_alive = Duration::from_secs(5);
        let (client, poller) = match target.protocol {
            Protocol::V311 => {
                let mut o = rumqttc::MqttOptions::new(client_id, &target.host, target.port);
                o.set_transport(transport)
                    .set_keep_alive(keep_alive)
                    .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                    .set_clean_session(true)
                    .set_inflight(inflight.min(V311_INFLIGHT));
                if let Some(c) = &target.credentials {
                    o.set_credentials(c.username.clone(), c.password.0.clone());
                }
                if let Some((topic, payload)) = will {
                    o.set_last_will(rumqttc::LastWill::new(
                        topic,
                        payload,
                        rumqttc::QoS::AtLeastOnce,
                        true,
                    ));
                }
                let (client, ev) = rumqttc::AsyncClient::new(o, REQUEST_CAPACITY);
                (Client::V311(client), poll_on(ev, tx))
            }
            Protocol::V5 => {
                let mut o = v5::MqttOptions::new(client_id, &target.host, target.port);
                o.set_transport(transport)
                    .set_keep_alive(keep_alive)
                    .set_max_packet_size(Some(MAX_PACKET as u32))
                    .set_clean_start(true)
                    .set_outgoing_inflight_upper_limit(inflight);
                if let Some(c) = &target.credentials {
                    o.set_credentials(c.username.clone(), c.password.0.clone());
                }
                if let Some((topic, payload)) = will {
                    o.set_last_will(v5::mqttbytes::v5::LastWill::new(
                        topic,
                        payload,
                        v5::mqttbytes::QoS::AtLeastOnce,
                        true,
                        None,
                    ));
                }
                let (client, ev) = v5::AsyncClient::new(o, REQUEST_CAPACITY);
                (Client::V5(client), poll_on(ev, tx))
            }
        };
        Ok(Session {
            client,
            heard,
            poller,
        })
    }

    /// Asks for a publish; `key` (`stream/seq`) goes in an MQTT 5 user property
    /// `idempotency-key`. Never waits: the caller keeps fewer requests than
    /// [`REQUEST_CAPACITY`] outstanding.
    pub fn publish(
        &self,
        topic: String,
        qos: u8,
        retain: bool,
        payload: Vec<u8>,
        key: Option<&str>,
    ) -> Result<(), String> {
        match &self.client {
            Client::V311(c) => c
                .try_publish(topic, qos4(qos), retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => {
                let props = v5::mqttbytes::v5::PublishProperties {
                    user_properties: key
                        .map(|k| vec![("idempotency-key".to_string(), k.to_string())])
                        .unwrap_or_default(),
                    ..Default::default()
                };
                c.try_publish_with_properties(topic, qos5(qos), retain, payload, props)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Sends DISCONNECT (the last will is then not published) and ends the session.
    pub async fn close(mut self, wait: Duration) {
        let _ = match &self.client {
            Client::V311(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
        let _ = tokio::time::timeout(wait, &mut self.poller).await;
        self.poller.abort();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.poller.abort();
    }
}
