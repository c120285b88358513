//! A revoked account, end to end with `serve`: the trigger pauses with the fix in
//! `status`, the messages wait with their attempts untouched, and after a
//! re-authorization each of them runs once, without a restart.

use super::*;
use flowmail::store::Handling;
use flowmail::workflow::serve::{Serving, serve};
use flowmail::workflow::{Silent, Workflow};
use flowmail_tests::stack::PASSWORD;

const ALERTS: &str = "alerts@demo.example";

fn alert(subject: &str) -> Vec<u8> {
    format!(
        "From: Monitor <monitor@demo.example>\r\nTo: {ALERTS}\r\nSubject: {subject}\r\n\
         Message-ID: <{}@demo.example>\r\n\r\nbody of {subject}\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn subjects(mails: &[Vec<u8>]) -> Vec<String> {
    let mut all: Vec<String> = mails
        .iter()
        .map(|m| {
            MessageParser::default()
                .parse(m)
                .and_then(|m| m.subject().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_account_pauses_its_trigger_and_each_waiting_message_runs_once_after_reauthorization()
 {
    let oauth = OAuth::start().unwrap();
    let stack = MailStack::start(Some(&oauth)).unwrap();
    let transport = format!(
        "[accounts.o365.transport]\nkind = \"smtp\"\nhost = \"localhost\"\nport = {}\nca_file = \"{}\"",
        stack.ports.submission,
        stack.certs.ca.display()
    );
    let s = authorized(&oauth, &transport).await;
    // The alerts arrive in a mailbox read with a password; they leave through o365.
    let password = s.ws.path().join("alerts-password");
    std::fs::write(&password, PASSWORD).unwrap();
    let mut config = std::fs::read_to_string(s.ws.path().join("flowmail.toml")).unwrap();
    config.push_str(&format!(
        "\n[accounts.box.mailbox]\nkind = \"imap\"\nhost = \"localhost\"\nport = {}\nssl = false\nca_file = \"{}\"\n\
         [accounts.box.auth]\nkind = \"basic\"\nusername = \"{ALERTS}\"\npassword = {{ file = \"{}\" }}\n",
        stack.ports.imap,
        stack.certs.ca.display(),
        password.display()
    ));
    s.ws.write_config(config).unwrap();
    let path = s.ws.path().join("workflows/relay.yaml");
    std::fs::write(
        &path,
        "name: relay\ntrigger:\n  mailbox:\n    account: box\n    retry: { attempts: 2, backoff: 1s }\n\
         steps:\n  - id: send\n    action: send-mail\n    with:\n      account: o365\n      message:\n\
         \x20       to: frank@demo.example\n        subject: \"relayed: ${{ trigger.message.subject }}\"\n        text: hi\n",
    )
    .unwrap();
    let wf = Workflow::load(&path).unwrap();
    wf.check(&s.ws.config().unwrap()).unwrap();
    let (app, store) = s.ws.app(None, Audit::default()).unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let served = tokio::spawn(async move {
        let serving = Serving {
            app,
            events: Arc::new(Silent),
        };
        serve(serving, vec![wf], rx).await.unwrap();
    });

    stack.deliver(ALERTS, &alert("one")).unwrap();
    stack
        .wait_for_mail("frank@demo.example", 1, Duration::from_secs(30))
        .unwrap();

    // The provider revokes the app's tokens; the pooled session goes with postfix.
    oauth.revoke_all().unwrap();
    stack.restart_postfix().unwrap();
    stack.deliver(ALERTS, &alert("two")).unwrap();
    stack.deliver(ALERTS, &alert("three")).unwrap();
    // The first run after the revocation fails on the credentials and pauses the
    // trigger; what arrives after it waits in the mailbox or in the store.
    wait_until("the pause", Duration::from_secs(30), || {
        !store
            .handled_in("relay", "box", Handling::Pending, None)
            .unwrap()
            .is_empty()
            && store.watches().unwrap()[0].paused.is_some()
    })
    .await;
    let status = flowmail::status::collect(&store).unwrap();
    let text = flowmail::status::render(&status);
    assert!(
        text.contains("PAUSED") && text.contains("flowmail authorize --account o365"),
        "{text}"
    );
    for row in store
        .handled_in("relay", "box", Handling::Pending, None)
        .unwrap()
    {
        assert_eq!(
            row.attempts, 0,
            "the account is at fault, not the message: {row:?}"
        );
    }
    assert!(
        store
            .handled_in("relay", "box", Handling::Dead, None)
            .unwrap()
            .is_empty(),
        "nothing burned into the dead letters"
    );
    // Well past the retry backoff, still nothing was sent and nothing gave up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stack
            .wait_for_mail("frank@demo.example", 1, Duration::from_secs(1))
            .unwrap()
            .len(),
        1
    );

    // The user authorizes again; the running serve notices by itself.
    run_flow(s.manager.clone(), |url| {
        http_get(&provider_redirect(&url)).map(drop)
    })
    .await
    .unwrap();
    let got = stack
        .wait_for_mail("frank@demo.example", 3, Duration::from_secs(30))
        .unwrap();
    wait_until("the pause to end", Duration::from_secs(30), || {
        store.watches().unwrap()[0].paused.is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = stack
        .wait_for_mail("frank@demo.example", got.len(), Duration::from_secs(1))
        .unwrap();
    assert_eq!(
        subjects(&got),
        ["relayed: one", "relayed: three", "relayed: two"],
        "each waiting message ran once"
    );
    let status = flowmail::status::render(&flowmail::status::collect(&store).unwrap());
    assert!(!status.contains("PAUSED"), "{status}");

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(15), served)
        .await
        .unwrap()
        .unwrap();
}
