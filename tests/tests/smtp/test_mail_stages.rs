//! Test Mail: the TLS policy at its TLS stage, and `flowmail test-mail` as a user runs it.

use super::*;

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
