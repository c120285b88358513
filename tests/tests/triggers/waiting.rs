//! How triggers wait for news: IDLE within seconds, IDLE issued again each refresh,
//! polling a server without IDLE, one IDLE shared by two workflows, and the watchdog
//! against a frozen network path.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_delivers_a_new_message_to_the_workflow_within_seconds() {
    let stack = MailStack::start(None).unwrap();
    let ws = workspace(&stack, "INBOX");
    // Polling every ten minutes could not explain a run within seconds: IDLE must.
    let wf = workflow(&ws, "    poll_interval: 10m\n    on_success: seen\n", false);
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    wait_until(
        "the trigger to wait in IDLE",
        Duration::from_secs(20),
        || {
            store
                .watches()
                .unwrap()
                .iter()
                .any(|w| w.mode == "idle" || w.last_ok.is_some())
        },
    )
    .await;
    // Let the first IDLE begin.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    stack.deliver(USER, &mail("pushed by idle")).unwrap();
    wait_until("the run", Duration::from_secs(10), || {
        ws.outbox().len() == 1
    })
    .await;
    let latency = sent.elapsed();
    assert!(latency < Duration::from_secs(5), "took {latency:?}");
    assert_eq!(handled(&ws), ["handled: pushed by idle"]);
    wait_until(
        "the message to be marked seen",
        Duration::from_secs(10),
        || files(&stack.maildir(USER, "")).iter().all(|f| seen(f)),
    )
    .await;
    let watch = store.watches().unwrap();
    assert_eq!(watch[0].mode, "idle", "{watch:?}");
    stop_serving(stop, handle).await;
    assert_eq!(store.watches().unwrap()[0].mode, "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_is_issued_again_each_refresh_and_still_delivers() {
    let stack = MailStack::start(None).unwrap();
    let ws = workspace(&stack, "INBOX");
    let wf = workflow(&ws, "    idle_refresh: 1s\n    poll_interval: 10m\n", false);
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    wait_until("the first IDLE", Duration::from_secs(20), || {
        store.watches().unwrap().iter().any(|w| w.mode == "idle")
    })
    .await;
    let first = store.watches().unwrap()[0].last_ok.unwrap();
    // Each ended IDLE is a successful wait: the watchdog's clock moves on.
    wait_until("IDLE to be issued again", Duration::from_secs(10), || {
        store.watches().unwrap()[0].last_ok.unwrap() >= first + 2
    })
    .await;
    stack.deliver(USER, &mail("after refreshes")).unwrap();
    wait_until("the run", Duration::from_secs(5), || ws.outbox().len() == 1).await;
    assert_eq!(handled(&ws), ["handled: after refreshes"]);
    stop_serving(stop, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_idle_is_polled_at_the_configured_interval() {
    // This dovecot leaves IDLE out of the capabilities it announces after login.
    let stack = MailStack::start_with(
        None,
        "protocol imap {\n  imap_capability = IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE UIDPLUS MOVE NAMESPACE CHILDREN\n}",
    )
    .unwrap();
    let ws = workspace(&stack, "INBOX");
    let wf = workflow(&ws, "    poll_interval: 1s\n", false);
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    wait_until("the first poll", Duration::from_secs(20), || {
        store.watches().unwrap().iter().any(|w| w.mode == "poll")
    })
    .await;
    stack.deliver(USER, &mail("found by polling")).unwrap();
    wait_until("the run", Duration::from_secs(10), || {
        ws.outbox().len() == 1
    })
    .await;
    assert_eq!(handled(&ws), ["handled: found by polling"]);
    assert_eq!(store.watches().unwrap()[0].mode, "poll");
    stop_serving(stop, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workflows_on_one_mailbox_both_wake_for_each_message() {
    let stack = MailStack::start(None).unwrap();
    let ws = workspace(&stack, "INBOX");
    let first = workflow(&ws, "    poll_interval: 10m\n", false);
    let text = std::fs::read_to_string(ws.path().join("workflows/per-message.yaml"))
        .unwrap()
        .replace("name: per-message", "name: second")
        .replace("handled: ", "second: ");
    std::fs::write(ws.path().join("workflows/second.yaml"), text).unwrap();
    let second = Workflow::load(&ws.path().join("workflows/second.yaml")).unwrap();
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        serve(serving(rt), vec![first, second], rx).await.unwrap();
    });
    wait_until("both triggers to wait", Duration::from_secs(20), || {
        let w = store.watches().unwrap();
        w.len() == 2 && w.iter().all(|w| w.mode == "idle")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for subject in ["first news", "second news"] {
        let before = ws.outbox().len();
        stack.deliver(USER, &mail(subject)).unwrap();
        wait_until("both runs", Duration::from_secs(8), || {
            ws.outbox().len() == before + 2
        })
        .await;
    }
    let mut got = handled(&ws);
    got.sort();
    assert_eq!(
        got,
        [
            "handled: first news",
            "handled: second news",
            "second: first news",
            "second: second news"
        ]
    );
    stop_serving(tx, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_and_the_reads_on_its_mailbox_share_one_connection_and_news_still_wakes_it() {
    let stack = MailStack::start(None).unwrap();
    let ws = workspace(&stack, "INBOX");
    let wf = workflow(&ws, "    poll_interval: 10m\n", false);
    let (app, store) = ws.app(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(app.clone(), store.clone(), wf);
    wait_until("the trigger to idle", Duration::from_secs(20), || {
        store.watches().unwrap().iter().any(|w| w.mode == "idle")
    })
    .await;
    assert_eq!(
        flowmail_tests::connections_to(stack.ports.imap),
        1,
        "one connection while idle"
    );

    // Reads of the same mailbox, as steps of other workflows make them, one after the
    // other while the trigger idles: each ends the IDLE for its turn. A read that waited
    // for the IDLE to end by itself would wait 29 minutes.
    let mailbox = app.mailbox("box").unwrap();
    let reading = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reads = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count =
        |reads: &std::sync::atomic::AtomicU32| reads.load(std::sync::atomic::Ordering::SeqCst);
    let reader = tokio::spawn({
        let (reading, reads) = (reading.clone(), reads.clone());
        async move {
            while reading.load(std::sync::atomic::Ordering::SeqCst) {
                let batch = tokio::time::timeout(
                    Duration::from_secs(10),
                    mailbox.fetch_after(None, 50, flowmail_tests::no_search(), None),
                )
                .await
                .expect("a read waited on the IDLE")
                .unwrap();
                assert!(batch.messages.len() <= 3);
                reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    // dovecot reports new mail to a command at once and to IDLE only after a delay, so
    // with reads this frequent the news mostly reaches a read, not the IDLE: the
    // trigger must still wake for each message.
    for subject in ["one", "two", "three"] {
        let (before, reads_before) = (ws.outbox().len(), count(&reads));
        stack.deliver(USER, &mail(subject)).unwrap();
        wait_until(
            "the run for the new message, and a read after the delivery",
            Duration::from_secs(8),
            || ws.outbox().len() == before + 1 && count(&reads) > reads_before,
        )
        .await;
        assert_eq!(
            flowmail_tests::connections_to(stack.ports.imap),
            1,
            "one connection while reading"
        );
    }
    reading.store(false, std::sync::atomic::Ordering::SeqCst);
    reader.await.unwrap();
    let mut got = handled(&ws);
    got.sort();
    assert_eq!(got, ["handled: one", "handled: three", "handled: two"]);
    stop_serving(stop, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_connection_raises_an_alert_reconnects_and_shows_in_status() {
    let stack = MailStack::start(None).unwrap();
    let proxy = flowmail_tests::FreezableProxy::start(stack.ports.imap).unwrap();
    let ws = Workspace::with_config("").unwrap();
    let config = stack
        .imap_config(ws.path(), USER, proxy.port, false, "INBOX", "")
        .unwrap()
        .replace("timeout_secs = 10", "timeout_secs = 3");
    ws.write_config(config).unwrap();
    let wf = workflow(
        &ws,
        "    idle_refresh: 1s\n    poll_interval: 1s\n    silence_alert: 2s\n",
        false,
    );
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    wait_until("the first IDLE", Duration::from_secs(20), || {
        store.watches().unwrap().iter().any(|w| w.mode == "idle")
    })
    .await;
    // The path goes dead without closing: no error ever comes, only silence.
    proxy.freeze(true);
    wait_until("the watchdog's alert", Duration::from_secs(30), || {
        store.watches().unwrap()[0].alerts > 0
    })
    .await;
    let status = flowmail::status::collect(&store).unwrap();
    assert!(
        status[0]
            .last_alert
            .as_deref()
            .unwrap_or_default()
            .contains("silent"),
        "{status:?}"
    );
    let text = flowmail::status::render(&status);
    assert!(text.contains("alerts:"), "{text}");
    // Once the path works again, the trigger reconnects and mail flows.
    proxy.freeze(false);
    stack.deliver(USER, &mail("after the outage")).unwrap();
    wait_until("the run after recovery", Duration::from_secs(30), || {
        ws.outbox().len() == 1
    })
    .await;
    assert_eq!(handled(&ws), ["handled: after the outage"]);
    // A second outage, this time while news is being read: it must show just the same.
    let alerts = store.watches().unwrap()[0].alerts;
    stack.deliver(USER, &mail("during the outage")).unwrap();
    proxy.freeze(true);
    wait_until("the second alert", Duration::from_secs(30), || {
        store.watches().unwrap()[0].alerts > alerts
    })
    .await;
    proxy.freeze(false);
    wait_until(
        "the run after the second outage",
        Duration::from_secs(30),
        || ws.outbox().len() == 2,
    )
    .await;
    stop_serving(stop, handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_does_not_wait_for_a_server_that_never_answers() {
    let stack = MailStack::start(None).unwrap();
    let proxy = flowmail_tests::FreezableProxy::start(stack.ports.imap).unwrap();
    // The server accepts connections but never says a word, with a generous limit.
    proxy.freeze(true);
    let ws = Workspace::with_config("").unwrap();
    let config = stack
        .imap_config(ws.path(), USER, proxy.port, false, "INBOX", "")
        .unwrap()
        .replace("timeout_secs = 10", "timeout_secs = 60");
    ws.write_config(config).unwrap();
    let wf = workflow(&ws, "", false);
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    wait_until("the trigger to start", Duration::from_secs(20), || {
        store
            .watches()
            .unwrap()
            .iter()
            .any(|w| w.mode == "starting")
    })
    .await;
    // Well into the connect, which would take a minute to give up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = Instant::now();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(50), handle)
        .await
        .expect("serve stops long before the connect's limit")
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        asked.elapsed()
    );
    let watch = &store.watches().unwrap()[0];
    assert_eq!(watch.mode, "stopped");
    assert!(handled(&ws).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_that_never_reaches_its_server_shows_as_not_connected() {
    let stack = MailStack::start(None).unwrap();
    // Nothing listens on the mailbox's port: every connect is refused.
    let dead = flowmail_tests::stack::free_port().unwrap();
    let ws = Workspace::with_config("").unwrap();
    let config = stack
        .imap_config(ws.path(), USER, dead, false, "INBOX", "")
        .unwrap();
    ws.write_config(config).unwrap();
    let wf = workflow(
        &ws,
        "    idle_refresh: 1s\n    poll_interval: 1s\n    silence_alert: 2s\n",
        false,
    );
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    let mut status = Vec::new();
    wait_until(
        "status to say not connected",
        Duration::from_secs(20),
        || {
            status = flowmail::status::collect(&store).unwrap();
            status.first().is_some_and(|s| s.health == "not connected")
        },
    )
    .await;
    assert!(
        status[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("refused")),
        "{status:?}"
    );
    let text = flowmail::status::render(&status);
    assert!(text.contains("NOT CONNECTED"), "{text}");
    stop_serving(stop, handle).await;
}
