//! Test Mail: the TLS policy at its TLS stage, and `flowmail test-mail` as a user runs it.

use super::*;

use flowmail::net::{MinTls, TlsInfo, tls_config};
use rustls::ClientConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_policy_is_enforced_at_the_tls_stage() {
    let stack = MailStack::start(None).unwrap();
    let ws = Workspace::with_config("").unwrap();
    let auth = basic(ws.path(), "a", "ops@demo.example", PASSWORD, None);
    let config = format!(
        "{HEAD}{}\nmin_tls = \"1.3\"\n{auth}{}{}{}",
        stack
            .account("strict", "ops@demo.example", stack.ports.tls12, false, "")
            .trim_end(),
        stack.account(
            "lenient",
            "ops@demo.example",
            stack.ports.tls12,
            false,
            &auth.replace("accounts.a.", "accounts.lenient.")
        ),
        stack
            .account(
                "untrusted",
                "ops@demo.example",
                stack.ports.submission,
                false,
                &auth.replace("accounts.a.", "accounts.untrusted.")
            )
            .replace(&format!("ca_file = \"{}\"\n", stack.certs.ca.display()), ""),
        stack.account(
            "trusted",
            "ops@demo.example",
            stack.ports.submission,
            false,
            &auth.replace("accounts.a.", "accounts.trusted.")
        ),
    )
    .replace("[accounts.a.auth]", "[accounts.strict.auth]");
    ws.write_config(&config).unwrap();
    let config = ws.config().unwrap();
    let report = |name: &'static str| {
        let relay = flowmail::app::relay(&config, name, &Default::default()).unwrap();
        async move { test_mail::run(name, &relay, "ops@demo.example", "bob@demo.example").await }
    };

    let strict = report("strict").await;
    assert!(!strict.ok);
    let last = strict.stages.last().unwrap();
    assert_eq!(last.title, "TLS handshake", "{}", strict.render());
    assert!(last.detail.contains("min_tls"), "{}", last.detail);
    assert_eq!(strict.error_kind.as_deref(), Some("permanent"));

    let lenient = report("lenient").await;
    assert!(lenient.ok, "{}", lenient.render());
    let tls = lenient
        .stages
        .iter()
        .find(|s| s.title == "TLS handshake")
        .unwrap();
    assert!(tls.detail.contains("TLSv1_2"), "{}", tls.detail);

    let untrusted = report("untrusted").await;
    let last = untrusted.stages.last().unwrap();
    assert_eq!(last.title, "TLS handshake");
    assert!(
        last.detail.contains("not trusted") && last.detail.contains("ca_file"),
        "{}",
        last.detail
    );

    let trusted = report("trusted").await;
    assert!(trusted.ok, "{}", trusted.render());
    let titles: Vec<&str> = trusted.stages.iter().map(|s| &*s.title).collect();
    assert_eq!(
        titles,
        [
            "DNS",
            "TCP connect",
            "TLS handshake",
            "EHLO",
            "AUTH",
            "MAIL, RCPT, DATA",
            "queue id"
        ]
    );
    let tls = &trusted.stages[2].detail;
    assert!(
        tls.contains("TLSv1_3") && tls.contains("CN=localhost") && tls.contains("flowmail test CA"),
        "{tls}"
    );
    assert!(
        trusted.stages[3].detail.contains("AUTH PLAIN LOGIN"),
        "EHLO lists the capabilities"
    );
    assert!(trusted.queue_id.is_some());
    let json = serde_json::to_value(&trusted).unwrap();
    assert_eq!(json["stages"][6]["stage"], "queue");
    stack
        .wait_for_mail("bob@demo.example", 2, Duration::from_secs(20))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_mail_command_reports_each_stage_as_text_and_json() {
    let stack = MailStack::start(None).unwrap();
    let ws = Workspace::with_config("").unwrap();
    let auth = basic(ws.path(), "a", "ops@demo.example", PASSWORD, None);
    let config = format!(
        "{HEAD}{}{}",
        stack.account(
            "good",
            "ops@demo.example",
            stack.ports.submission,
            false,
            &auth.replace("accounts.a.", "accounts.good.")
        ),
        stack
            .account(
                "untrusted",
                "ops@demo.example",
                stack.ports.submission,
                false,
                &auth.replace("accounts.a.", "accounts.untrusted.")
            )
            .replace(&format!("ca_file = \"{}\"\n", stack.certs.ca.display()), ""),
    )
    .replace("[accounts.a.auth]", "[accounts.good.auth]");
    ws.write_config(&config).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(flowmail_tests::flowmail_bin())
            .current_dir(ws.path())
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let out = run(&[
        "test-mail",
        "--account",
        "good",
        "--to",
        "bob@demo.example",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let stages: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["dns", "tcp", "tls", "ehlo", "auth", "transaction", "queue"]
    );
    let mail = stack
        .wait_for_mail("bob@demo.example", 1, Duration::from_secs(20))
        .unwrap();
    let delivered = String::from_utf8_lossy(&mail[0]).into_owned();
    assert!(delivered.contains("flowmail Test Mail"), "{delivered}");
    assert!(
        delivered
            .lines()
            .any(|l| l.starts_with("Message-ID: <test-mail."))
            && delivered.lines().any(|l| l.starts_with("Date: ")),
        "a test mail carries a Message-ID and a Date: {delivered}"
    );

    let out = run(&[
        "test-mail",
        "--account",
        "untrusted",
        "--to",
        "bob@demo.example",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Test Mail failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("TLS handshake") && stdout.contains("ca_file"),
        "the text report names the stage and the fix: {stdout}"
    );
}

/// Opens implicit TLS to postfix's SMTPS port with `tls` and reads the greeting (the
/// server's session tickets come before it); what the handshake agreed on.
async fn greeting_over(stack: &MailStack, tls: &std::sync::Arc<ClientConfig>) -> TlsInfo {
    use tokio::io::AsyncReadExt;
    let addrs = flowmail::net::resolve("localhost", stack.ports.smtps)
        .await
        .unwrap();
    let tcp = flowmail::net::connect(&addrs, Duration::from_secs(10))
        .await
        .unwrap();
    let mut stream = flowmail::net::handshake(tcp, "localhost", tls.clone())
        .await
        .unwrap();
    let mut greeting = Vec::new();
    while !greeting.ends_with(b"\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "postfix hung up");
        greeting.push(byte[0]);
    }
    assert!(
        greeting.starts_with(b"220 "),
        "{}",
        String::from_utf8_lossy(&greeting)
    );
    TlsInfo::of(&stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_of_one_tls_policy_resume_each_others_sessions_but_test_mail_never_does() {
    let stack = MailStack::start(None).unwrap();
    // Two accounts that name the same CA file (read twice, as each account reads it).
    let ca = std::fs::read(&stack.certs.ca).unwrap();
    let one = tls_config(Some(&ca), MinTls::V12).unwrap();
    let other = tls_config(Some(&std::fs::read(&stack.certs.ca).unwrap()), MinTls::V12).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&one, &other),
        "one policy, one configuration"
    );

    let first = greeting_over(&stack, &one).await;
    assert!(!first.resumed, "nothing to resume yet");
    let second = greeting_over(&stack, &other).await;
    assert!(
        second.resumed,
        "the second account resumes the session the first one's handshake left"
    );
    assert_eq!(
        second.subject, first.subject,
        "the certificate checked then"
    );

    // Another policy keeps its sessions to itself.
    let strict = tls_config(Some(&ca), MinTls::V13).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&one, &strict));
    assert!(!greeting_over(&stack, &strict).await.resumed);

    // postfix gives a session ticket with a full handshake and none with a resumed one:
    // shake hands until one is full, and a fresh ticket waits in the shared cache.
    let mut full = false;
    for _ in 0..10 {
        if !greeting_over(&stack, &one).await.resumed {
            full = true;
            break;
        }
    }
    assert!(full, "every handshake resumed");

    // Test Mail, through an account of the first policy, shakes hands in full although
    // that policy holds a session (the last line shows that it still does).
    let ws = Workspace::with_config("").unwrap();
    let auth = basic(ws.path(), "trusted", "ops@demo.example", PASSWORD, None);
    let account = stack.account(
        "trusted",
        "ops@demo.example",
        stack.ports.smtps,
        true,
        &auth,
    );
    ws.write_config(format!("{HEAD}{account}")).unwrap();
    let config = ws.config().unwrap();
    let relay = flowmail::app::relay(&config, "trusted", &Default::default()).unwrap();
    let report = test_mail::run("trusted", &relay, "ops@demo.example", "bob@demo.example").await;
    assert!(report.ok, "{}", report.render());
    let tls = report
        .stages
        .iter()
        .find(|s| s.title == "TLS handshake")
        .unwrap();
    assert!(
        tls.detail.contains("CN=localhost") && !tls.detail.contains("resumed"),
        "{}",
        tls.detail
    );
    assert!(greeting_over(&stack, &one).await.resumed);
}
