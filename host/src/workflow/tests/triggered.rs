//! Catch-ups: retry classes, a pause on refused credentials, durable post-actions, and
//! a read that breaks the sandbox's limits.

use super::*;

#[tokio::test]
async fn an_input_failure_dead_letters_each_message_after_one_attempt() {
    let f = fixture();
    let mailbox = Arc::new(NumberedMailbox::default());
    let actions = FakeActions {
        inbox: three(),
        fail_send: Some(MailError::InvalidInput(FieldError {
            field: "message.to[0].email".into(),
            reason: "no such address".into(),
        })),
        ..FakeActions::default()
    };
    let report = run_triggered(&f, &actions, &mailbox).await;
    assert_eq!((report.runs, report.dead), (0, 3), "{:?}", report.lines);
    let dead = f
        .store
        .handled_in("triggered", "inbox", crate::store::Handling::Dead, None)
        .unwrap();
    assert_eq!(dead.len(), 3);
    for row in dead {
        assert_eq!(row.attempts, 1, "{row:?}");
        assert!(
            row.last_error
                .as_deref()
                .unwrap()
                .contains("with.message.to[0].email"),
            "{row:?}"
        );
    }
    assert_eq!(*mailbox.flagged.lock().unwrap(), ["1", "2", "3"]);
    assert!(report.paused.is_none());
}

#[tokio::test]
async fn a_dead_letter_action_that_failed_is_done_at_the_next_catch_up() {
    let f = fixture();
    let mailbox = Arc::new(NumberedMailbox::default());
    *mailbox.flags_fail.lock().unwrap() = true;
    let actions = FakeActions {
        inbox: three(),
        fail_send: Some(MailError::InvalidInput(FieldError {
            field: "message.to[0].email".into(),
            reason: "no such address".into(),
        })),
        ..FakeActions::default()
    };
    let report = run_triggered(&f, &actions, &mailbox).await;
    assert_eq!(report.dead, 3, "{:?}", report.lines);
    assert!(mailbox.flagged.lock().unwrap().is_empty());
    let owed = f.store.post_actions_pending("triggered", "inbox").unwrap();
    assert_eq!(
        owed.len(),
        3,
        "dead, with the dead-letter action still owed"
    );

    // The mailbox works again: the next catch-up flags them, and runs nothing again.
    *mailbox.flags_fail.lock().unwrap() = false;
    let report = run_triggered(&f, &actions, &mailbox).await;
    assert_eq!((report.runs, report.dead), (0, 0), "{:?}", report.lines);
    assert_eq!(*mailbox.flagged.lock().unwrap(), ["1", "2", "3"]);
    assert!(
        f.store
            .post_actions_pending("triggered", "inbox")
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_credentials_failure_pauses_keeps_attempts_and_resumes_once_they_work() {
    let f = fixture();
    let mailbox = Arc::new(NumberedMailbox::default());
    let actions = FakeActions {
        inbox: three(),
        failing: Mutex::new(Some(MailError::AuthFailed(
            "account `out` needs authorization: run `flowmail authorize --account out`".into(),
        ))),
        ..FakeActions::default()
    };
    let report = run_triggered(&f, &actions, &mailbox).await;
    let paused = report.paused.as_deref().unwrap();
    assert!(paused.contains("flowmail authorize"), "{paused}");
    assert_eq!((report.runs, report.dead), (0, 0));
    let waiting = f
        .store
        .handled_in("triggered", "inbox", crate::store::Handling::Pending, None)
        .unwrap();
    assert_eq!(waiting.len(), 1, "the trigger stopped at the first failure");
    assert_eq!(waiting[0].attempts, 0, "a pause costs no attempt");
    assert_eq!(
        f.store.cursor("triggered", "inbox").unwrap().as_deref(),
        Some("1")
    );

    // Paused again while the account is still refused: still no attempt is used.
    let again = run_triggered(&f, &actions, &mailbox).await;
    assert!(again.paused.is_some());
    let row = f
        .store
        .handled("triggered", "inbox", "id:1@test")
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.status, row.attempts),
        (crate::store::Handling::Pending, 0)
    );

    // The credentials work again: every message runs, once.
    *actions.failing.lock().unwrap() = None;
    let report = run_triggered(&f, &actions, &mailbox).await;
    assert!(
        report.paused.is_none() && report.failed.is_empty(),
        "{:?}",
        report.lines
    );
    let mut subjects: Vec<String> = actions
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, m)| m.subject.clone())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["one", "three", "two"]);
    let done = f
        .store
        .handled_in("triggered", "inbox", crate::store::Handling::Done, None)
        .unwrap();
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|r| r.attempts == 1), "{done:?}");
    let nothing = run_triggered(&f, &actions, &mailbox).await;
    assert_eq!(nothing.runs, 0);
}

#[tokio::test]
async fn a_post_action_that_failed_is_recorded_and_done_at_the_next_catch_up() {
    let f = fixture();
    let mailbox = Arc::new(NumberedMailbox::default());
    *mailbox.flags_fail.lock().unwrap() = true;
    let actions = FakeActions {
        inbox: three(),
        ..FakeActions::default()
    };
    let seen = TRIGGERED.replace("    retry:", "    on_success: seen\n    retry:");
    let report = run_yaml_with(&f, &actions, &mailbox, &seen).await;
    assert_eq!(report.runs, 3);
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("tried again at the next catch-up")),
        "{:?}",
        report.lines
    );
    let pending = f.store.post_actions_pending("triggered", "inbox").unwrap();
    assert_eq!(pending.len(), 3, "done, with the post-action still owed");
    assert!(mailbox.flagged.lock().unwrap().is_empty());

    // The mailbox works again: the next catch-up marks them seen, and runs nothing again.
    *mailbox.flags_fail.lock().unwrap() = false;
    let report = run_yaml_with(&f, &actions, &mailbox, &seen).await;
    assert_eq!(report.runs, 0);
    assert_eq!(*mailbox.flagged.lock().unwrap(), ["1", "2", "3"]);
    assert!(
        f.store
            .post_actions_pending("triggered", "inbox")
            .unwrap()
            .is_empty()
    );
    assert_eq!(actions.sent.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_read_that_breaks_a_limit_is_split_and_the_one_message_passed_over() {
    let f = fixture();
    let mailbox = Arc::new(NumberedMailbox {
        listed: vec![
            ("1".into(), 100),
            ("2".into(), 31_000_000),
            ("3".into(), 100),
        ],
        ..NumberedMailbox::default()
    });
    let actions = FakeActions {
        inbox: three(),
        breaks_on: Some("2".into()),
        ..FakeActions::default()
    };
    let report = run_triggered(&f, &actions, &mailbox).await;
    let mut subjects: Vec<String> = actions
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, m)| m.subject.clone())
        .collect();
    subjects.sort();
    assert_eq!(subjects, ["one", "three"], "{:?}", report.lines);
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("reading 100 message(s)") && l.contains("reading 50 at a time")),
        "{:?}",
        report.lines
    );
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0]["id"], "2");
    let dead = f
        .store
        .handled("triggered", "inbox", "ref:2")
        .unwrap()
        .unwrap();
    assert_eq!(dead.status, crate::store::Handling::Dead);
    let reason = dead.last_error.unwrap();
    assert!(
        reason.contains("time limit") && reason.contains("31000000 bytes"),
        "{reason}"
    );
    assert_eq!(
        f.store.cursor("triggered", "inbox").unwrap().as_deref(),
        Some("3")
    );
    // Nothing is read or passed over twice.
    let again = run_triggered(&f, &actions, &mailbox).await;
    assert_eq!((again.runs, again.skipped.len()), (0, 0));
}

/// Records each line with how many mails the fake had sent when it came.
struct Recorder<'a> {
    actions: &'a FakeActions,
    lines: Mutex<Vec<(usize, String)>>,
}

impl Events for Recorder<'_> {
    fn line(&self, workflow: &str, line: &str) {
        let sent = self.actions.sent.lock().unwrap().len();
        self.lines
            .lock()
            .unwrap()
            .push((sent, format!("{workflow}: {line}")));
    }
}

#[tokio::test]
async fn each_run_is_told_as_it_ends_not_when_the_catch_up_does() {
    let f = fixture();
    std::fs::write(&f.path, TRIGGERED).unwrap();
    let wf = Workflow::load(&f.path).unwrap();
    let mailbox = Arc::new(NumberedMailbox::default());
    let actions = FakeActions {
        inbox: three(),
        ..FakeActions::default()
    };
    let recorder = Recorder {
        actions: &actions,
        lines: Mutex::new(Vec::new()),
    };
    let mailboxes = OneMailbox(mailbox.clone());
    let runner = Runner {
        actions: &actions,
        store: &f.store,
        mailboxes: &mailboxes,
        events: &recorder,
    };
    let report = run_with(&runner, &wf, RunOptions::default()).await.unwrap();
    assert_eq!(report.runs, 3);
    let lines = recorder.lines.lock().unwrap();
    let sent: Vec<(usize, &str)> = lines
        .iter()
        .filter(|(_, l)| l.contains("step send: sent"))
        .map(|(n, l)| (*n, l.as_str()))
        .collect();
    // The line of the first run came while one mail was out, not after all three.
    assert_eq!(
        sent.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [1, 2, 3],
        "{lines:?}"
    );
    assert!(
        sent[0]
            .1
            .starts_with("triggered: step send: sent <m1@fake>"),
        "{lines:?}"
    );
    // Every line was told once, and the report knows it.
    assert_eq!(report.shown, report.lines.len());
    let told = lines.len();
    let worth = report
        .lines
        .iter()
        .filter(|l| !l.starts_with("trigger: 0 new"))
        .count();
    assert_eq!(told, worth, "{lines:?}");
}
