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
    ws.write_config(
        std::fs::read_to_string(ws.path().join("flowmail.toml"))
            .unwrap()
            .replace("step_timeout_ms = 30000", "step_timeout_ms = 500"),
    )
    .unwrap();
    let (runtime, _) = ws.app(Some(MISBEHAVE_PLUGIN), Audit::default()).unwrap();
    let started = Instant::now();
    let err = runtime
        .runtime()
        .unwrap()
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
        .runtime()
        .unwrap()
        .send_mail("after", "demo", &message("fine"))
        .await
        .unwrap();
    assert_eq!(receipt.accepted, ["ops@demo.example"]);
    assert_eq!(ws.outbox().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_grows_memory_without_bound_is_stopped() {
    let ws = Workspace::new("").unwrap();
    ws.write_config(
        std::fs::read_to_string(ws.path().join("flowmail.toml"))
            .unwrap()
            .replace("memory_limit_mb = 256", "memory_limit_mb = 32"),
    )
    .unwrap();
    let (runtime, _) = ws.app(Some(MISBEHAVE_PLUGIN), Audit::default()).unwrap();
    let err = runtime
        .runtime()
        .unwrap()
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
        .runtime()
        .unwrap()
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
    ws.write_config(format!("{config}\n[accounts.demo.auth]\nkind = \"basic\"\nusername = \"flowmail@demo.example\"\npassword = {{ file = \"password.txt\" }}\n"),
    )
    .unwrap();
    let crossings = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = crossings.clone();
    let audit = Audit::new(move |line| sink.lock().unwrap().push(line.to_owned()));
    let (runtime, _store) = ws.app(None, audit).unwrap();

    let config = ws.config().unwrap();
    let creds = format!("{:?}", config.credentials("demo").unwrap());
    assert!(!creds.contains(SECRET), "Debug must redact: {creds}");
    let wf = Workflow::load(&ws.path().join("workflows/alert-digest.yaml")).unwrap();
    wf.check(&config).unwrap();
    let report = flowmail::workflow::run(&Runner::new(&runtime).unwrap(), &wf)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_read_files_see_the_environment_or_open_sockets() {
    let ws = Workspace::new("").unwrap();
    // A socket the plugin is told to reach: nothing may ever connect to it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(
        std::env::var("PATH").is_ok(),
        "the host itself has an environment to hide"
    );
    let (app, _) = ws.app(Some(MISBEHAVE_PLUGIN), Audit::default()).unwrap();
    let started = Instant::now();
    let receipt = app
        .runtime()
        .unwrap()
        .send_mail(
            "probe",
            "demo",
            &flowmail_tests::text_message("ops@demo.example", "probe", &port.to_string()),
        )
        .await
        .unwrap();
    let report = receipt.reference.unwrap();
    let line = |prefix: &str| {
        report
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in {report}"))
            .to_owned()
    };
    for prefix in [
        "file read: denied",
        "dir list: denied",
        "file write: denied",
    ] {
        line(prefix);
    }
    assert_eq!(line("env: "), "env: 0 variable(s) []");
    assert_eq!(line("env PATH: "), "env PATH: absent");
    assert!(line("socket: ").starts_with("socket: denied"), "{report}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the plugin reached the host's socket"
    );
    // Stdout goes nowhere: 64 MiB vanish without filling memory or the host's output,
    // and the step ends well within its limit.
    assert!(line("stdout: ").starts_with("stdout: 67108864 bytes written"));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(ws.outbox().is_empty());
}

#[test]
fn the_plugin_flag_loads_and_runs_another_component() {
    let ws = Workspace::new("").unwrap();
    std::fs::write(
        ws.path().join("workflows/probe.yaml"),
        "name: probe\nsteps:\n  - id: send\n    action: send-mail\n    with:\n      account: demo\n      message: { to: ops@demo.example, subject: probe, text: \"1\" }\n",
    )
    .unwrap();
    let run = |plugin: Option<&str>| {
        let mut cmd = std::process::Command::new(flowmail_tests::flowmail_bin());
        cmd.current_dir(ws.path()).env_remove("RUST_LOG");
        if let Some(p) = plugin {
            cmd.args(["--plugin", p]);
        }
        cmd.args(["run", "workflows/probe.yaml"]).output().unwrap()
    };
    // The misbehaving plugin answers `probe` itself, through no transport.
    let out = run(Some(MISBEHAVE_PLUGIN));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sent <probe@example.com> to 0 recipient(s) via probe"),
        "{stdout}"
    );
    assert!(ws.outbox().is_empty());
    // The embedded plugin sends it to the outbox.
    let out = run(None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("via outbox"));
    assert_eq!(ws.outbox().len(), 1);

    // A core module, not a component; and an empty component, which implements nothing.
    for (file, bytes, says) in [
        (
            "core.wasm",
            &b"\0asm\x01\0\0\0"[..],
            "is not a WebAssembly component this host can load",
        ),
        (
            "empty.wasm",
            &b"\0asm\x0d\0\x01\0"[..],
            "does not implement the world flowmail:mail/mail-plugin",
        ),
    ] {
        let path = ws.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let out = run(Some(path.to_str().unwrap()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{file}: {err}");
    }
    assert_eq!(ws.outbox().len(), 1, "nothing ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reaches_only_the_accounts_its_step_names_and_runaway_plugins_are_contained() {
    // A second account the steps below never name.
    let ws = Workspace::new(
        "[accounts.payroll]\nfrom = \"payroll@demo.example\"\n[accounts.payroll.transport]\n\
         kind = \"outbox\"\ndir = \"var/payroll\"\n",
    )
    .unwrap();
    let crossings = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = crossings.clone();
    let audit = Audit::new(move |line| sink.lock().unwrap().push(line.to_owned()));
    let (app, _) = ws.app(Some(MISBEHAVE_PLUGIN), audit).unwrap();
    let rt = app.runtime().unwrap();

    // A step of account `demo` whose plugin sends through `payroll`: access denied.
    let err = rt
        .send_mail("sneak", "demo", &message("other:payroll"))
        .await
        .unwrap_err();
    let StepError::Mail(flowmail::bindings::MailError::AccessDenied(text)) = &err else {
        panic!("{err:?}");
    };
    assert!(
        text.contains("account `payroll`") && text.contains("names only `demo`"),
        "{text}"
    );
    assert!(!ws.path().join("var/payroll").exists(), "nothing was sent");
    // Named by the step, the same account is served.
    rt.send_mail("named", "payroll", &message("other:payroll"))
        .await
        .unwrap();

    // Runaway recursion: stopped with a clear error, and the next call is served.
    let err = rt
        .send_mail("recurse", "demo", &message("recurse"))
        .await
        .unwrap_err();
    assert!(matches!(err, StepError::StackOverflow), "{err:?}");
    assert!(err.to_string().contains("call stack"), "{err}");

    // A huge return value: refused with what was wrong with it, and the next call runs.
    let err = rt
        .send_mail("huge", "demo", &message("huge"))
        .await
        .unwrap_err();
    assert!(matches!(err, StepError::Oversized(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("a receipt accepting 1000000 recipients, more than the step's 1"),
        "{err}"
    );

    // A flood of 200,000 log lines: the step ends, and the host keeps the first 1,000.
    crossings.lock().unwrap().clear();
    let err = rt
        .send_mail("flood", "demo", &message("flood"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("flooded"), "{err}");
    let logged = crossings
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("import log.log"))
        .count();
    assert_eq!(logged, flowmail::caps::log::MAX_LINES as usize);

    let receipt = rt
        .send_mail("after", "demo", &message("fine"))
        .await
        .unwrap();
    assert_eq!(receipt.accepted, ["ops@demo.example"]);
}

/// The demo workspace with a pool of one plugin instance (`runtime.max_instances = 1`).
fn pool_of_one() -> Workspace {
    let ws = Workspace::new("").unwrap();
    let config = std::fs::read_to_string(ws.path().join("flowmail.toml"))
        .unwrap()
        .replace("[runtime]\n", "[runtime]\nmax_instances = 1\n");
    assert!(config.contains("max_instances = 1"));
    ws.write_config(config).unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_steps_than_instance_slots_wait_for_a_slot_and_all_run() {
    let ws = pool_of_one();
    let (app, _) = ws.app(None, Audit::default()).unwrap();
    // Twelve steps on two threads and a pool of one instance: a step that finds the slot
    // taken waits for it; without the wait, the pool refuses the second instance.
    let steps: Vec<_> = (0..12)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                app.runtime()
                    .unwrap()
                    .send_mail("burst", "demo", &message(&format!("m{i}")))
                    .await
            })
        })
        .collect();
    for step in steps {
        step.await.unwrap().unwrap();
    }
    assert_eq!(ws.outbox().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_one_step_reaches_the_next_through_a_reused_slot() {
    // A pool of one: every step runs in the same slot, reset in between (by PAGEMAP_SCAN
    // where the kernel has it, else by madvise).
    let ws = pool_of_one();
    let (app, _) = ws.app(Some(MISBEHAVE_PLUGIN), Audit::default()).unwrap();
    for step in 0..20 {
        let receipt = app
            .runtime()
            .unwrap()
            .send_mail("remember", "demo", &message("remember"))
            .await
            .unwrap();
        assert_eq!(
            receipt.reference.as_deref(),
            Some("calls 0, static bytes marked 0, heap bytes marked 0"),
            "step {step} found what an earlier step left"
        );
    }
}
