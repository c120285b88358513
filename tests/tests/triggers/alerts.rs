//! Alerts by mail: a trigger made silent raises its alert again and again, and the alert
//! mail goes out once.

use flowmail::workflow::Silent;
use flowmail::workflow::alert_mail::AlertMail;
use flowmail_tests::stack::PASSWORD;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_trigger_is_mailed_once_however_often_it_alerts() {
    let stack = MailStack::start(None).unwrap();
    let proxy = flowmail_tests::FreezableProxy::start(stack.ports.imap).unwrap();
    let ws = Workspace::with_config("").unwrap();
    let password = ws.path().join("mailer-password");
    std::fs::write(&password, PASSWORD).unwrap();
    let mut config = stack
        .imap_config(ws.path(), USER, proxy.port, false, "INBOX", "")
        .unwrap()
        .replace("timeout_secs = 10", "timeout_secs = 2");
    config.push_str(&stack.account(
        "mailer",
        "alerts@demo.example",
        stack.ports.submission,
        false,
        &format!(
            "[accounts.mailer.auth]\nkind = \"basic\"\nusername = \"alerts@demo.example\"\npassword = {{ file = \"{}\" }}\n",
            password.display()
        ),
    ));
    ws.write_config(config).unwrap();
    let wf = workflow(
        &ws,
        "    idle_refresh: 1s\n    poll_interval: 1s\n    silence_alert: 2s\n",
        false,
    );
    let (app, store) = ws.app(None, Audit::default()).unwrap();
    let (stop, rx) = watch::channel(false);
    let serving = {
        let app = app.clone();
        tokio::spawn(async move {
            let mailer = AlertMail::new(
                Arc::new(Silent),
                app.clone(),
                "mailer",
                &["oncall@demo.example".to_owned()],
            );
            let serving = Serving {
                app,
                events: Arc::new(mailer),
            };
            serve(serving, vec![wf], rx).await.unwrap();
        })
    };
    wait_until("the first IDLE", Duration::from_secs(20), || {
        store.watches().unwrap().iter().any(|w| w.mode == "idle")
    })
    .await;
    proxy.freeze(true);
    wait_until("three alerts", Duration::from_secs(60), || {
        store.watches().unwrap()[0].alerts >= 3
    })
    .await;
    let got = stack
        .wait_for_mail("oncall@demo.example", 1, Duration::from_secs(30))
        .unwrap();
    // More alerts came and went; still the one mail.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_later = stack
        .wait_for_mail("oncall@demo.example", 1, Duration::from_secs(1))
        .unwrap();
    assert_eq!(got_later.len(), 1, "one mail per kind and account an hour");
    let m = mail_parser::MessageParser::default()
        .parse(&got[0])
        .unwrap();
    assert_eq!(m.subject(), Some("[flowmail] trigger silent: box"));
    let text = m.body_text(0).unwrap();
    assert!(text.contains("silent"), "{text}");
    proxy.freeze(false);
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(15), serving)
        .await
        .unwrap()
        .unwrap();
}
