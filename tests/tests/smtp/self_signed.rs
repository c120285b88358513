//! A relay whose certificate is self-signed and also a CA (`CA:TRUE`), as internal relays
//! often have: trusted as exactly itself, with the checks on, and refused with the precise
//! reason otherwise.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_ca_certificate_is_trusted_as_itself_and_nothing_more() {
    let stack = MailStack::start(None).unwrap();
    let port = stack.ports.self_signed;
    let relay = stack.certs.self_signed_ca.display().to_string();
    let ca = stack.certs.ca.display().to_string();
    let (_ws, rt) = runtime(|dir| {
        let auth = basic(dir, "a", "ops@demo.example", PASSWORD, None);
        let account = |name: &str, host: &str, ca_file: &str| {
            stack
                .account(
                    name,
                    "ops@demo.example",
                    port,
                    true,
                    &auth.replace("accounts.a.", &format!("accounts.{name}.")),
                )
                .replace(
                    &format!("ca_file = \"{ca}\""),
                    &format!("ca_file = \"{ca_file}\""),
                )
                .replace("host = \"localhost\"", &format!("host = \"{host}\""))
        };
        [
            account("pinned", "localhost", &relay),
            account("chain", "localhost", &ca),
            account("by_ip", "127.0.0.1", &relay),
        ]
        .concat()
    });
    let runtime = rt.runtime().unwrap();

    // ca_file is exactly the relay's certificate: the mail goes, over verified TLS.
    let receipt = runtime
        .send_mail(
            "send",
            "pinned",
            &message("bob@demo.example", "via the internal relay"),
        )
        .await
        .unwrap();
    assert!(receipt.reference.is_some(), "{receipt:?}");
    let got = stack
        .wait_for_mail("bob@demo.example", 1, Duration::from_secs(20))
        .unwrap();
    let m = MessageParser::default().parse(&got[0]).unwrap();
    assert_eq!(m.subject(), Some("via the internal relay"));

    // Another CA's file does not vouch for it, and the error says what to put there.
    let e = expect_mail_error(
        runtime
            .send_mail("send", "chain", &message("bob@demo.example", "x"))
            .await,
    );
    assert_eq!(e.kind_name(), "permanent", "{e:?}");
    let text = e.message();
    assert!(
        text.contains("CA certificate (CA:TRUE)") && text.contains("ca_file"),
        "{text}"
    );

    // Pinned, the certificate still counts only for the names it lists.
    let e = expect_mail_error(
        runtime
            .send_mail("send", "by_ip", &message("bob@demo.example", "x"))
            .await,
    );
    let text = e.message();
    assert!(
        text.contains("not valid for") && text.contains("127.0.0.1") && text.contains("localhost"),
        "{text}"
    );
    assert_eq!(
        stack
            .wait_for_mail("bob@demo.example", 1, Duration::from_secs(1))
            .unwrap()
            .len(),
        1,
        "nothing more was sent"
    );
}
