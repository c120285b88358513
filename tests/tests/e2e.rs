//! The real component on the real host: limits, and what crosses the boundary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowmail::bindings::types::OutgoingMessage;
use flowmail::caps::Audit;
use flowmail::runtime::StepError;
use flowmail::workflow::{Runner, Workflow};
use flowmail_tests::{MISBEHAVE_PLUGIN, Workspace};

fn message(subject: &str) -> OutgoingMessage {
    flowmail_tests::text_message("ops@demo.example", subject, "hello")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_plugin_is_stopped_and_the_host_serves_the_next_call() {
    let ws = Workspace::new("").unwrap();
    std::fs::write(
        ws.path().join("flowmail.toml"),
        std::fs::read_to_string(ws.path().join("flowmail.toml"))
            .unwrap()
            .replace("step_timeout_ms = 30000", "step_timeout_ms = 500"),
    )
    .unwrap();
    let (runtime, _) = ws
        .runtime(Some(MISBEHAVE_PLUGIN), Audit::default())
        .unwrap();
    let started = Instant::now();
    let err = runtime
        .send_mail("spin", "demo", &message("loop"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StepError::Timeout(d) if d == Duration::from_millis(500)),
        "{err:?}"
    );
    assert!(err.to_string().contains("time limit"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the deadline must stop it"
    );
    let receipt = runtime
        .send_mail("after", "demo", &message("fine"))
        .await
        .unwrap();
    assert_eq!(receipt.accepted, ["ops@demo.example"]);
    assert_eq!(ws.outbox().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_grows_memory_without_bound_is_stopped() {
    let ws = Workspace::new("").unwrap();
    std::fs::write(
        ws.path().join("flowmail.toml"),
        std::fs::read_to_string(ws.path().join("flowmail.toml"))
            .unwrap()
            .replace("memory_limit_mb = 256", "memory_limit_mb = 32"),
    )
    .unwrap();
    let (runtime, _) = ws
        .runtime(Some(MISBEHAVE_PLUGIN), Audit::default())
        .unwrap();
    let err = runtime
        .send_mail("hog", "demo", &message("hog"))
        .await
        .unwrap_err();
    match &err {
        StepError::Memory { wanted, limit } => {
            assert_eq!(*limit, 32 << 20);
            assert!(*wanted > *limit);
        }
        other => panic!("expected a memory error, got {other:?}"),
    }
    assert!(err.to_string().contains("memory"), "{err}");
    runtime
        .send_mail("after", "demo", &message("fine"))
        .await
        .unwrap();
    assert_eq!(ws.outbox().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_crosses_into_the_guest() {
    const SECRET: &str = "pw-7c1d9e-never-in-the-guest";
    let ws = Workspace::new("").unwrap();
    std::fs::write(ws.path().join("password.txt"), format!("{SECRET}\n")).unwrap();
    let config = std::fs::read_to_string(ws.path().join("flowmail.toml")).unwrap();
    std::fs::write(
        ws.path().join("flowmail.toml"),
        format!("{config}\n[accounts.demo.auth]\nkind = \"basic\"\nusername = \"flowmail@demo.example\"\npassword = {{ file = \"password.txt\" }}\n"),
    )
    .unwrap();
    let crossings = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = crossings.clone();
    let audit = Audit::new(move |line| sink.lock().unwrap().push(line.to_owned()));
    let (runtime, store) = ws.runtime(None, audit).unwrap();

    let config = ws.config().unwrap();
    let creds = format!("{:?}", config.credentials("demo").unwrap());
    assert!(!creds.contains(SECRET), "Debug must redact: {creds}");
    let wf = Workflow::load(&ws.path().join("workflows/alert-digest.yaml")).unwrap();
    wf.check(&config).unwrap();
    let report = Runner {
        runtime: &runtime,
        store: &store,
    }
    .run(&wf)
    .await
    .unwrap();
    assert_eq!(report.sent.len(), 1);

    let all = crossings.lock().unwrap().join("\n");
    for expected in [
        "export actions.read-mailbox",
        "import mailbox.fetch-after",
        "import smtp.send",
        "oncall@demo.example",
        "flowmail@demo.example",
    ] {
        assert!(all.contains(expected), "the audit must see `{expected}`");
    }
    assert!(
        all.lines()
            .any(|l| l.starts_with("import tokens.credential.kind") && l.contains("Basic")),
        "the guest sees the kind of credential"
    );
    assert!(!all.contains(SECRET), "the password crossed the boundary");
}
