//! Mailbox triggers from the command line: `serve` on the embedded Maildir, SIGTERM,
//! `status`, the checks of trigger settings, and catch-up progress.

use super::*;

const FORWARD: &str = "name: forward\ntrigger:\n  mailbox:\n    account: demo\n    filter:\n      subject_contains: \"[ALERT]\"\n    poll_interval: 200ms\n    on_success: seen\nsteps:\n  - id: fwd\n    action: send-mail\n    with:\n      account: demo\n      message:\n        to: oncall@demo.example\n        subject: \"fwd: ${{ trigger.message.subject }}\"\n        text: \"${{ trigger.message.text }}\"\n";

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn serve_polls_the_maildir_runs_each_message_once_stops_on_sigterm_and_status_tells() {
    let dir = demo("");
    std::fs::create_dir_all(dir.path().join("served")).unwrap();
    std::fs::write(dir.path().join("served/forward.yaml"), FORWARD).unwrap();
    let none = flowmail(dir.path(), &["status"]);
    assert!(none.status.success(), "{}", text(&none.stderr));
    assert!(text(&none.stdout).contains("no mailbox trigger has read a mailbox yet"));

    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args(["serve", "served"])
        .env_remove("RUST_LOG")
        .stdout(log)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The catch-up: one run per alert of the demo mailbox.
    wait_for("the catch-up", || outbox(dir.path()).len() == 4);
    let mail = "From: Grafana <alerts@grafana.demo.example>\r\nTo: oncall@demo.example\r\nSubject: [ALERT] served live\r\nMessage-ID: <live@demo.example>\r\n\r\nnew while serving\r\n";
    let tmp = dir
        .path()
        .join("workflows/demo-mailbox/tmp/2000000000.live.host");
    std::fs::write(&tmp, mail).unwrap();
    std::fs::rename(
        &tmp,
        dir.path()
            .join("workflows/demo-mailbox/new/2000000000.live.host"),
    )
    .unwrap();
    wait_for("the live message's run", || outbox(dir.path()).len() == 5);
    let subjects: Vec<String> = outbox(dir.path())
        .iter()
        .map(|p| {
            MessageParser::default()
                .parse(&std::fs::read(p).unwrap())
                .and_then(|m| m.subject().map(str::to_owned))
                .unwrap()
        })
        .collect();
    assert!(
        subjects.contains(&"fwd: [ALERT] served live".to_owned()),
        "{subjects:?}"
    );

    let status = flowmail(dir.path(), &["status"]);
    let out = text(&status.stdout);
    assert!(out.contains("forward (demo): OK [poll]"), "{out}");
    assert!(
        out.contains("5 handled, 0 waiting for a retry, 0 dead letters"),
        "{out}"
    );
    let json = flowmail(dir.path(), &["status", "--json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed[0]["handled"], 5);
    assert_eq!(parsed[0]["health"], "ok");

    // The workflow belongs to the serving process; a second one may not run it meanwhile.
    let busy = flowmail(dir.path(), &["run", "served/forward.yaml"]);
    assert!(!busy.status.success());
    assert!(
        text(&busy.stderr).contains("is being run by another flowmail process"),
        "{}",
        text(&busy.stderr)
    );

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(15),
            "serve did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}");
    let out = text(&flowmail(dir.path(), &["status"]).stdout);
    assert!(out.contains("forward (demo): STOPPED"), "{out}");
    // Each handled alert was marked seen after its run: Maildir flag S.
    let seen = std::fs::read_dir(dir.path().join("workflows/demo-mailbox/cur"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(":2,S"))
        .count();
    assert_eq!(seen, 5);
    assert_eq!(outbox(dir.path()).len(), 5, "nothing ran twice");
}

#[test]
fn serve_without_a_mailbox_trigger_says_so() {
    let dir = demo("");
    std::fs::create_dir_all(dir.path().join("plain")).unwrap();
    std::fs::write(
        dir.path().join("plain/send.yaml"),
        "name: send\nsteps:\n  - id: s\n    action: send-mail\n    with:\n      account: demo\n      message:\n        to: a@demo.example\n        subject: hi\n        text: x\n",
    )
    .unwrap();
    let out = flowmail(dir.path(), &["serve", "plain"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no workflow with a mailbox trigger in plain"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn trigger_settings_are_checked_with_the_field_and_the_fix() {
    let dir = demo("");
    let cases = [
        (
            "    idle_refresh: 40m\n",
            "failed at `idle_refresh`: must be more than 0 and at most 29m",
        ),
        (
            "    on_success: archive\n",
            "`archive` is not a post-action: use none, seen, flag, delete or { move_to: FOLDER }",
        ),
        (
            "    retry: { attempts: 0 }\n",
            "failed at `retry.attempts`: must be at least 1",
        ),
        (
            "    max_size: lots\n",
            "`lots` is not a size: use 10MB, 512KiB or a number of bytes",
        ),
        (
            "    oversize: truncate\n",
            "`truncate` is not an oversize policy: use skip or without-attachments",
        ),
        (
            "    poll_interval: soon\n",
            "`soon` is not a duration: use 250ms, 30s, 5m or 2h",
        ),
        (
            "    dead_letter: { folder: Failed, flag: seen }\n",
            "failed at `dead_letter`: give either `folder` or `flag`, not both",
        ),
        (
            "    poll_interval: 10m\n    silence_alert: 5m\n",
            "failed at `silence_alert`: must be longer than idle_refresh and poll_interval",
        ),
    ];
    for (extra, expected) in cases {
        std::fs::write(
            dir.path().join("workflows/t.yaml"),
            format!(
                "name: t\ntrigger:\n  mailbox:\n    account: demo\n{extra}{}",
                &FORWARD[FORWARD.find("steps:").unwrap()..]
            ),
        )
        .unwrap();
        let out = flowmail(dir.path(), &["check", "workflows/t.yaml"]);
        assert!(!out.status.success(), "{extra} must be refused");
        assert!(
            text(&out.stderr).contains(expected),
            "expected `{expected}` for {extra}in: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn a_long_catch_up_reports_progress_in_plain_lines_when_not_on_a_terminal() {
    let dir = demo("");
    let wf = std::fs::read_to_string(dir.path().join("workflows/alert-digest.yaml"))
        .unwrap()
        .replace("batch: 100", "batch: 2");
    std::fs::write(dir.path().join("workflows/alert-digest.yaml"), wf).unwrap();
    let out = flowmail(dir.path(), &["run", "workflows/alert-digest.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("alert-digest: catching up on 7 message(s)"),
        "{err}"
    );
    assert!(
        err.contains("alert-digest: caught up on 7 message(s)"),
        "{err}"
    );
    // Four batches of at most two messages; three of them hold alerts.
    assert_eq!(outbox(dir.path()).len(), 3, "{}", text(&out.stdout));
}

#[test]
fn a_step_failing_on_its_input_dead_letters_at_once_and_status_shows_why() {
    let dir = demo("");
    std::fs::create_dir_all(dir.path().join("served")).unwrap();
    // The recipient can never be valid: retrying cannot help.
    std::fs::write(
        dir.path().join("served/bad.yaml"),
        FORWARD
            .replace("name: forward", "name: bad")
            .replace("to: oncall@demo.example", "to: \"not an address\"")
            .replace(
                "on_success: seen",
                "on_success: seen\n    retry: { attempts: 5, backoff: 1s }",
            ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args(["serve", "served"])
        .env_remove("RUST_LOG")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let dead = || {
        let json = flowmail(dir.path(), &["status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&json.stdout)
            .ok()
            .and_then(|v| v[0]["dead_letters"].as_u64())
            .unwrap_or(0)
    };
    let start = std::time::Instant::now();
    while dead() != 4 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the four alerts did not reach the dead letters; status: {}\nserve: {}",
            text(&flowmail(dir.path(), &["status"]).stdout),
            std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The dead-letter action (the flag) follows the record; wait for it, then stay well
    // past the first backoff: no message was tried a second time.
    let flagged = || {
        std::fs::read_dir(dir.path().join("workflows/demo-mailbox/cur"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(":2,F"))
                    .count()
            })
            .unwrap_or(0)
    };
    let start = std::time::Instant::now();
    while flagged() != 4 && start.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let json = flowmail(dir.path(), &["status", "--json"]);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let s = &parsed[0];
    assert_eq!(s["dead_letters"], 4, "{s}");
    assert_eq!(s["waiting_for_retry"], 0, "{s}");
    let letters = s["latest_dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 4, "{s}");
    for d in letters {
        assert_eq!(d["attempts"], 1, "{d}");
        let reason = d["reason"].as_str().unwrap();
        assert!(reason.contains("with.message.to"), "{reason}");
    }
    // Flagged in the mailbox, not marked seen: the dead-letter action, not the post-action.
    assert_eq!(flagged(), 4);
    let text_status = text(&flowmail(dir.path(), &["status"]).stdout);
    assert!(
        text_status.contains("after 1 attempt(s): step `fwd` failed at `with.message.to"),
        "{text_status}"
    );

    // Once the cause is fixed, the dead letters run again, each once.
    let listed = text(&flowmail(dir.path(), &["dead-letters", "list"]).stdout);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    assert!(
        listed
            .lines()
            .all(|l| l.starts_with("bad (demo): ") && l.contains("after 1 attempt(s)")),
        "{listed}"
    );
    let workflow = dir.path().join("served/bad.yaml");
    let fixed = std::fs::read_to_string(&workflow)
        .unwrap()
        .replace("to: \"not an address\"", "to: oncall@demo.example");
    std::fs::write(&workflow, fixed).unwrap();
    let retried = flowmail(dir.path(), &["dead-letters", "retry", "--workflow", "bad"]);
    assert!(
        text(&retried.stdout).contains("4 dead letter(s) of `bad` wait again"),
        "{}",
        text(&retried.stdout)
    );
    let again = flowmail(dir.path(), &["dead-letters", "retry", "--workflow", "bad"]);
    assert!(
        text(&again.stdout).contains("0 dead letter(s)"),
        "each comes back once"
    );
    let run = flowmail(dir.path(), &["run", "served/bad.yaml"]);
    assert!(
        run.status.success(),
        "{}{}",
        text(&run.stdout),
        text(&run.stderr)
    );
    assert_eq!(outbox(dir.path()).len(), 4, "{}", text(&run.stdout));
    let run = flowmail(dir.path(), &["run", "served/bad.yaml"]);
    assert!(run.status.success());
    assert_eq!(outbox(dir.path()).len(), 4, "nothing ran twice");
    assert!(
        text(&flowmail(dir.path(), &["dead-letters", "list"]).stdout).contains("no dead letters")
    );

    // Status reads the store only: a secret it does not need may be missing.
    let config = std::fs::read_to_string(dir.path().join("flowmail.toml")).unwrap();
    std::fs::write(
        dir.path().join("flowmail.toml"),
        format!(
            "{config}\n[accounts.relay]\n[accounts.relay.transport]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\n\
             [accounts.relay.auth]\nkind = \"basic\"\nusername = \"u\"\npassword = {{ env = \"FLOWMAIL_TEST_UNSET_SECRET\" }}\n"
        ),
    )
    .unwrap();
    let status = Command::new(BIN)
        .current_dir(dir.path())
        .args(["status"])
        .env_remove("FLOWMAIL_TEST_UNSET_SECRET")
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", text(&status.stderr));
    // A reader that stops early is no error.
    let piped = Command::new("sh")
        .current_dir(dir.path())
        .arg("-c")
        .arg(format!("{BIN} status --json | head -c 5"))
        .output()
        .unwrap();
    assert!(
        !text(&piped.stderr).contains("panicked"),
        "{}",
        text(&piped.stderr)
    );
}

#[test]
fn a_trigger_caught_up_by_run_alone_shows_in_status_with_its_dead_letters() {
    let dir = demo("");
    std::fs::write(
        dir.path().join("workflows/bad.yaml"),
        FORWARD
            .replace("name: forward", "name: bad")
            .replace("to: oncall@demo.example", "to: \"not an address\""),
    )
    .unwrap();
    let run = flowmail(dir.path(), &["run", "workflows/bad.yaml"]);
    assert!(!run.status.success(), "the runs failed, and run says so");
    let stdout = text(&run.stdout);
    assert!(
        stdout.contains("go to the dead letters now"),
        "each failure is told as it happens: {stdout}"
    );
    let json = flowmail(dir.path(), &["status", "--json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let s = &parsed[0];
    assert_eq!(s["workflow"], "bad", "{s}");
    assert_eq!(
        (&s["mode"], &s["health"]),
        (&"run".into(), &"not served".into())
    );
    assert_eq!(s["dead_letters"], 4, "{s}");
    for d in s["latest_dead_letters"].as_array().unwrap() {
        assert_eq!(d["attempts"], 1, "{d}");
        assert!(
            d["reason"].as_str().unwrap().contains("with.message.to"),
            "{d}"
        );
    }
    let text_status = text(&flowmail(dir.path(), &["status"]).stdout);
    assert!(
        text_status.contains("bad (demo): NOT SERVED [run]") && text_status.contains("last read:"),
        "{text_status}"
    );
}
