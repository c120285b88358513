//! `/metrics` for Prometheus on the web listener: sends by account, transport and
//! outcome, the triggers' lag and last successful poll, and the nodes alive per data
//! center, with no login and no secret in it.

use std::time::{Duration, Instant};

use super::*;

/// The value of the sample whose line starts with `name{` and holds every label.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_sends_and_read_triggers_and_nodes_from_the_store() {
    let ws = Workspace::new("").unwrap();
    std::fs::create_dir_all(ws.path().join("served")).unwrap();
    let digest = std::fs::read_to_string(ws.path().join("workflows/alert-digest.yaml"))
        .unwrap()
        .replace("    per: batch", "    per: batch\n    poll_interval: 200ms");
    std::fs::write(ws.path().join("served/alert-digest.yaml"), digest).unwrap();
    let web = WebServer::serving(ws.path(), "", "served").unwrap();
    let started = Instant::now();
    let text = loop {
        let (status, _, body) = flowmail_tests::http_get(&format!("{}/metrics", web.url)).unwrap();
        assert_eq!(status, 200, "no login is asked: {body}");
        if sample(&body, "flowmail_trigger_last_ok_age_seconds", &[]).is_some()
            && sample(&body, "flowmail_sends_total", &[]).is_some()
        {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "metrics never showed the served trigger: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let sent = sample(
        &text,
        "flowmail_sends_total",
        &[
            "account=\"demo\"",
            "transport=\"outbox\"",
            "outcome=\"queued\"",
        ],
    )
    .unwrap();
    assert_eq!(sent as usize, ws.outbox().len(), "{text}");
    let trigger = ["workflow=\"alert-digest\"", "account=\"demo\""];
    assert!(
        sample(&text, "flowmail_trigger_lag_seconds", &trigger).is_some(),
        "{text}"
    );
    assert!(sample(&text, "flowmail_trigger_last_ok_age_seconds", &trigger).unwrap() < 30.0);
    assert_eq!(
        sample(&text, "flowmail_trigger_paused", &trigger),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "flowmail_nodes_alive", &["data_center=\"default\""]),
        Some(1.0),
        "{text}"
    );
    let sqlite = ["database=\"sqlite\""];
    let commits = sample(&text, "flowmail_store_commits_total", &sqlite);
    let writes = sample(&text, "flowmail_store_writes_total", &sqlite);
    if flowmail_tests::postgres::suite_on_postgres() {
        // PostgreSQL's writers have connections of their own; nothing is shared here.
        assert_eq!((commits, writes), (None, None), "{text}");
    } else {
        let (commits, writes) = (commits.unwrap(), writes.unwrap());
        assert!(commits > 0.0 && commits <= writes, "{text}");
    }
    assert!(!text.to_lowercase().contains("password") && !text.contains("secret"));
}
