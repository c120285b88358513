//! Exactly one run per message: through dovecot restarts, failed steps with retries and
//! dead letters, and UIDVALIDITY changes.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_through_two_dovecot_restarts_run_exactly_once_each() {
    let stack = MailStack::start(None).unwrap();
    let ws = workspace(&stack, "INBOX");
    let wf = workflow(
        &ws,
        "    batch: 50\n    poll_interval: 10m\n    on_success: seen\n",
        false,
    );
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    let total = 1000;
    let mut subjects = Vec::new();
    let mut restarted = 0;
    for chunk in 0..20 {
        let batch: Vec<Vec<u8>> = (0..50)
            .map(|i| mail(&format!("msg {}", chunk * 50 + i)))
            .collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        stack.seed(USER, "", &refs).unwrap();
        subjects.extend((0..50).map(|i| format!("handled: msg {}", chunk * 50 + i)));
        if chunk == 6 || chunk == 13 {
            stack.restart_dovecot().unwrap();
            restarted = flowmail::unix_now();
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_until("1000 runs", Duration::from_secs(240), || {
        ws.outbox().len() >= total
    })
    .await;
    // Anything run twice would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = handled(&ws);
    assert_eq!(got.len(), total, "one run per message, no more");
    let distinct: HashSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), total, "no message ran twice");
    let expected: HashSet<&String> = subjects.iter().collect();
    assert_eq!(distinct, expected, "none was lost");
    assert_eq!(store.run_count("per-message", "ok").unwrap(), total as u64);
    let counts = store.handled_counts("per-message", "box").unwrap();
    assert_eq!(counts.done, total as u64);
    // Each restart broke the trigger's connection and it logged in again. A break met
    // during a command is mended by reopening the session once, with no error to record;
    // one met in IDLE, or a reconnect while dovecot was down, is recorded. Either way the
    // watch is healthy after the last restart.
    let logins = stack.imap_logins(USER);
    assert!(
        logins >= 3,
        "logged in again after each restart: {logins} logins"
    );
    let watch = &store.watches().unwrap()[0];
    assert!(
        watch.last_ok.is_some_and(|ok| ok >= restarted)
            && watch.last_error_at.is_none_or(|e| watch.last_ok >= Some(e)),
        "healthy after the restarts: {watch:?}"
    );
    stop_serving(stop, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_leaves_the_message_unseen_and_unmoved_retries_it_and_dead_letters_the_hopeless()
 {
    let stack = MailStack::start(None).unwrap();
    stack.seed(USER, "Done", &[]).unwrap();
    stack.seed(USER, "Failed", &[]).unwrap();
    let ws = workspace(&stack, "INBOX");
    let wf = workflow(
        &ws,
        "    poll_interval: 10m\n    on_success: { move_to: Done }\n    retry: { attempts: 3, backoff: 3s, max_backoff: 3s }\n    dead_letter: { folder: Failed }\n",
        true,
    );
    let gates = ws.path().join("workflows/gates");
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    stack.deliver(USER, &mail("alpha")).unwrap();
    stack.deliver(USER, &mail("beta")).unwrap();
    wait_until("both to fail once", Duration::from_secs(20), || {
        store
            .handled_in("per-message", "box", Handling::Pending, None)
            .unwrap()
            .len()
            == 2
    })
    .await;
    assert!(ws.outbox().is_empty());
    let inbox = files(&stack.maildir(USER, ""));
    assert_eq!(inbox.len(), 2, "both stay in the inbox");
    assert!(inbox.iter().all(|f| !seen(f)), "and unseen: {inbox:?}");
    assert!(files(&stack.maildir(USER, "Done")).is_empty());

    // alpha can succeed now; beta never will.
    std::fs::write(gates.join("alpha"), "ok").unwrap();
    wait_until("alpha's retry", Duration::from_secs(20), || {
        ws.outbox().len() == 1
    })
    .await;
    assert_eq!(handled(&ws), ["handled: alpha"]);
    wait_until("alpha to move to Done", Duration::from_secs(10), || {
        files(&stack.maildir(USER, "Done")).len() == 1
    })
    .await;
    wait_until(
        "beta to go to the dead letters",
        Duration::from_secs(30),
        || files(&stack.maildir(USER, "Failed")).len() == 1,
    )
    .await;
    let dead = store
        .handled_in("per-message", "box", Handling::Dead, None)
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("gates/beta"),
        "{dead:?}"
    );
    // A dead letter does not block what comes after it.
    std::fs::write(gates.join("gamma"), "ok").unwrap();
    stack.deliver(USER, &mail("gamma")).unwrap();
    wait_until("gamma's run", Duration::from_secs(10), || {
        ws.outbox().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(handled(&ws).len(), 2, "beta never ran to success");
    let status = flowmail::status::collect(&store).unwrap();
    assert_eq!(status[0].dead_letters, 1);
    assert_eq!(status[0].handled, 2);
    stop_serving(stop, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_uidvalidity_change_runs_nothing_twice_and_malformed_mail_is_reported() {
    let stack = MailStack::start(None).unwrap();
    let first: Vec<Vec<u8>> = ["one", "two", "three"].iter().map(|s| mail(s)).collect();
    let mut seeded: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
    seeded.insert(1, b"this is not a mail message");
    stack.seed(USER, "Alerts", &seeded).unwrap();
    let ws = workspace(&stack, "Alerts");
    let wf = workflow(&ws, "", false);
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    let runner = Runner::new(&rt).unwrap();
    let report = flowmail::workflow::run_with(&runner, &wf, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.runs, 3);
    assert!(report.failed.is_empty());
    assert_eq!(report.skipped.len(), 1, "{:?}", report.lines);
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.starts_with("skipped message ") && l.contains(":2 of `box`")),
        "{:?}",
        report.lines
    );
    let before = store.cursor("per-message", "box").unwrap().unwrap();

    // The folder is recreated: the same messages come back under a new UIDVALIDITY, with
    // one new message among them. No session may hold the old folder meanwhile (dovecot
    // would write its index of the old folder into the new one), and dovecot takes the
    // clock's second for a new folder's UIDVALIDITY, so the new one is made a second later.
    drop(rt);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::remove_dir_all(stack.maildir(USER, "Alerts")).unwrap();
    let mut again: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
    let four = mail("four");
    again.push(&four);
    stack.seed(USER, "Alerts", &again).unwrap();
    let (rt, _) = ws.app(None, Audit::default()).unwrap();
    let runner = Runner::new(&rt).unwrap();
    let report = flowmail::workflow::run_with(&runner, &wf, RunOptions::default())
        .await
        .unwrap();
    let after = store.cursor("per-message", "box").unwrap().unwrap();
    // The cursor is the IMAP backend's own `<uidvalidity>:<uid>`.
    let validity = |c: &str| c.split_once(':').unwrap().0.to_owned();
    assert_ne!(
        validity(&before),
        validity(&after),
        "UIDVALIDITY changed: {before} {after} {:?}",
        report.lines
    );
    assert!(
        report.lines.iter().any(|l| l.contains("UIDVALIDITY")),
        "{:?}",
        report.lines
    );
    assert_eq!(
        report.runs, 1,
        "only the new message runs: {:?}",
        report.lines
    );
    assert_eq!(report.deduplicated, 3);
    let mut got = handled(&ws);
    got.sort();
    assert_eq!(
        got,
        [
            "handled: four",
            "handled: one",
            "handled: three",
            "handled: two"
        ]
    );
    let report = flowmail::workflow::run_with(&runner, &wf, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.runs, 0);
    assert_eq!(ws.outbox().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waiting_for_a_retry_keeps_its_attempts_across_a_uidvalidity_change() {
    let stack = MailStack::start(None).unwrap();
    stack.seed(USER, "Alerts", &[&mail("alpha")]).unwrap();
    let ws = workspace(&stack, "Alerts");
    let wf = workflow(&ws, "    retry: { attempts: 5 }\n", true);
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    let runner = Runner::new(&rt).unwrap();
    let attempts = || {
        store
            .handled_in("per-message", "box", Handling::Pending, None)
            .unwrap()
            .iter()
            .map(|r| r.attempts)
            .collect::<Vec<_>>()
    };
    let report = flowmail::workflow::run_with(&runner, &wf, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(attempts(), [1]);

    // A later second, for a new UIDVALIDITY (see above).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::remove_dir_all(stack.maildir(USER, "Alerts")).unwrap();
    stack.seed(USER, "Alerts", &[&mail("alpha")]).unwrap();
    let report = flowmail::workflow::run_with(&runner, &wf, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(
        report.failed.len(),
        1,
        "one attempt per catch-up: {:?}",
        report.lines
    );
    assert_eq!(attempts(), [2]);

    std::fs::write(ws.path().join("workflows/gates/alpha"), "ok").unwrap();
    let report = flowmail::workflow::run_with(&runner, &wf, RunOptions::default())
        .await
        .unwrap();
    assert_eq!(report.runs, 1);
    assert_eq!(handled(&ws), ["handled: alpha"]);
    let done = store
        .handled_in("per-message", "box", Handling::Done, None)
        .unwrap();
    assert_eq!(done[0].attempts, 3);
}
