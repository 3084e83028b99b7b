// SPDX-License-Identifier: MPL-2.0
//! raftsink's webhook delivery against a local HTTP receiver: retried with the same key until a
//! 2xx answer, delivered once; a refusal for good is a dead letter that `videoai-events stats`
//! lists.

use crate::common;
use crate::common::webhook::{Reply, WebhookServer};
use crate::events_tool;
use crate::mqtt::{FRAMES, stored_keys, walk};

use std::collections::HashMap;
use std::time::Duration;

/// The keys answered 2xx, with how often.
fn delivered(server: &WebhookServer) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for r in server.requests.lock().unwrap().iter() {
        if matches!(r.reply, Reply::Status(200..=299)) {
            *n.entry(r.key.clone().unwrap()).or_insert(0) += 1;
        }
    }
    n
}

#[test]
fn an_event_answered_500_then_nothing_then_200_is_delivered_once_with_one_key() {
    let server = WebhookServer::start(vec![
        Reply::Status(500),
        Reply::Silence(Duration::from_millis(4000)),
    ]);
    let dir = common::TempDir::new("webhook-retry");
    let db = dir.join("events.db");
    let (stats, warnings) = walk(
        &db,
        // 2 s: every request answers within it, on a loaded machine too; the silence outlasts it.
        &format!("webhook-url={} webhook-timeout=2000000000", server.url()),
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        stats.get::<u64>("webhook-delivered").unwrap(),
        FRAMES,
        "{stats}"
    );
    assert_eq!(stats.get::<u64>("webhook-retries").unwrap(), 2, "{stats}");
    let requests = server.requests.lock().unwrap().clone();
    // The first event: three attempts, one key, one body.
    assert_eq!(requests[0].key.as_deref(), Some("cam/0"));
    assert_eq!(requests[1].key, requests[0].key);
    assert_eq!(requests[2].key, requests[0].key);
    assert_eq!(requests[1].body, requests[0].body);
    assert_eq!(requests[2].reply, Reply::Status(200));
    let ev: serde_json::Value = serde_json::from_str(&requests[2].body).unwrap();
    assert_eq!(
        (ev["stream"].as_str(), ev["seq"].as_i64()),
        (Some("cam"), Some(0))
    );
    let once = delivered(&server);
    let mut keys: Vec<String> = once.keys().cloned().collect();
    keys.sort_by_key(|k| k[4..].parse::<i64>().unwrap());
    assert_eq!(keys, stored_keys(&db));
    assert!(once.values().all(|n| *n == 1), "{once:?}");
    // A replay posts nothing again.
    let before = requests.len();
    walk(&db, &format!("webhook-url={}", server.url()));
    assert_eq!(server.requests.lock().unwrap().len(), before);
}

#[test]
fn an_event_answered_400_is_a_dead_letter_and_the_others_go_on() {
    let server = WebhookServer::start(vec![Reply::Status(200), Reply::Status(400)]);
    let dir = common::TempDir::new("webhook-dead");
    let db = dir.join("events.db");
    let (stats, warnings) = walk(&db, &format!("webhook-url={}", server.url()));
    assert_eq!(
        stats.get::<u64>("webhook-dead-letters").unwrap(),
        1,
        "{stats}"
    );
    assert_eq!(stats.get::<u64>("webhook-retries").unwrap(), 0, "{stats}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("cam/1") && warnings[0].contains("400"),
        "{warnings:?}"
    );
    assert_eq!(delivered(&server).len() as u64, FRAMES - 1);
    let out = events_tool(&["stats", &db.display().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 dead letter"), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("answered 400"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with(&format!("webhook:{}\tcam\t1\t", server.url())),
        "{line}"
    );
    // The delivery column: nothing waits for the webhook.
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains(&format!("not_in webhook:{}", server.url())),
        "{text}"
    );
}

#[test]
fn a_malformed_webhook_url_is_an_error_at_start() {
    common::init();
    let dir = common::TempDir::new("webhook-bad");
    for (url, expected) in [
        ("ftp://127.0.0.1/x", "expected http(s)://host"),
        ("not a url", "is not a URL"),
    ] {
        let p = common::parse(&format!(
            "videotestsrc num-buffers=3 ! raftsink location=\"{}\" webhook-url=\"{url}\"",
            dir.join("events.db").display()
        ));
        let out = common::run(&p, Duration::from_secs(30));
        assert!(!out.eos, "{url}");
        assert!(
            out.first_error().contains(expected),
            "{url}: {}",
            out.first_error()
        );
    }
}
