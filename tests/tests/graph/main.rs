//! Microsoft Graph as a transport, against the stand-in built from Microsoft's documented
//! contract and the test OAuth2 server: client credentials, 202 as queued, Bcc kept,
//! attachments byte for byte, throttling, a refused token, and the errors with their fixes.
//! Graph as a mailbox is in [`mailbox`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod mailbox;

use std::time::Duration;

use flowmail::bindings::MailError;
use flowmail::bindings::transport::DeliveryStatus;
use flowmail::bindings::types::{Address, Attachment};
use flowmail::caps::Audit;
use flowmail::runtime::StepError;
use flowmail_tests::graph::{GraphStandIn, Injected};
use flowmail_tests::oauth::OAuth;
use flowmail_tests::{Workspace, text_message};
use mail_parser::MessageParser;

const USER: &str = "sender@contoso.example";

fn workspace(oauth: &OAuth, graph: &GraphStandIn, secret: &str, extra_auth: &str) -> Workspace {
    let ws = Workspace::with_config("").unwrap();
    std::fs::write(ws.path().join("client-secret"), secret).unwrap();
    ws.write_config(format!(
            "[store]\npath = \"var/flowmail.db\"\n[runtime]\ncache_dir = \"\"\n\
             [accounts.graph]\nfrom = \"Sender <{USER}>\"\n\
             [accounts.graph.transport]\nkind = \"graph\"\ntenant = \"contoso.example\"\nuser = \"{USER}\"\n\
             graph_url = \"{}\"\nmax_wait_secs = 10\n\
             [accounts.graph.auth]\nkind = \"oauth2\"\nusername = \"{USER}\"\nclient_id = \"flowmail-graph\"\n\
             client_secret = {{ file = \"client-secret\" }}\ntoken_url = \"{}/token\"\n{extra_auth}",
            graph.url,
            oauth.url()
        ),
    )
    .unwrap();
    ws
}

/// The OAuth2 server and the Graph stand-in, running.
fn servers() -> (OAuth, GraphStandIn) {
    let oauth = OAuth::start().unwrap();
    let graph = GraphStandIn::start(oauth.port).unwrap();
    (oauth, graph)
}

/// A workspace whose account `graph` uses `secret`, and its application.
fn account_app(
    oauth: &OAuth,
    graph: &GraphStandIn,
    secret: &str,
    extra_auth: &str,
) -> (Workspace, std::sync::Arc<flowmail::app::App>) {
    let ws = workspace(oauth, graph, secret, extra_auth);
    let (app, _) = ws.app(None, Audit::default()).unwrap();
    (ws, app)
}

/// Sends `message` through the account `graph`.
async fn send(
    app: &flowmail::app::App,
    message: &flowmail::bindings::types::OutgoingMessage,
) -> Result<flowmail::bindings::actions::Receipt, StepError> {
    app.runtime()
        .unwrap()
        .send_mail("send", "graph", message)
        .await
}

fn mail_error(r: Result<impl std::fmt::Debug, StepError>) -> MailError {
    match r {
        Err(StepError::Mail(e)) => e,
        other => panic!("expected a mail error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_is_queued_with_bcc_and_attachments_byte_for_byte() {
    let (oauth, graph) = servers();
    let (_ws, app) = account_app(&oauth, &graph, "client-secret-value-93ab", "");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut message = text_message("ops@contoso.example", "via Graph ✓", "Grüße");
    message.bcc.push(Address {
        name: None,
        email: "audit@contoso.example".into(),
    });
    message.attachments.push(Attachment {
        name: "dump.bin".into(),
        content_type: "application/octet-stream".into(),
        data: data.clone(),
        content_id: None,
    });
    let receipt = send(&app, &message).await.unwrap();
    assert_eq!(receipt.transport, "graph");
    assert_eq!(
        receipt.status,
        DeliveryStatus::Queued,
        "202 is queued, not delivered"
    );
    assert_eq!(receipt.reference.as_deref(), Some("req-00000001"));
    assert_eq!(oauth.grants("client_credentials").unwrap(), 1);
    let sent = graph.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].user, USER);
    let m = MessageParser::default().parse(&sent[0].mime).unwrap();
    assert_eq!(m.subject(), Some("via Graph ✓"));
    assert_eq!(m.attachment(0).unwrap().contents(), data.as_slice());
    assert_eq!(m.message_id(), Some(receipt.message_id.as_str()));
    let bcc: Vec<&str> = m
        .bcc()
        .unwrap()
        .iter()
        .filter_map(|a| a.address())
        .collect();
    assert_eq!(
        bcc,
        ["audit@contoso.example"],
        "Graph takes Bcc from the MIME"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_waited_out_and_a_refused_token_is_refreshed_once() {
    let (oauth, graph) = servers();
    let (_ws, app) = account_app(&oauth, &graph, "client-secret-value-93ab", "");
    let msg = text_message("ops@contoso.example", "throttled", "x");

    graph.inject(&[Injected {
        status: 429,
        retry_after: Some(2),
        code: "ApplicationThrottled",
    }]);
    send(&app, &msg).await.unwrap();
    let requests = graph.requests();
    assert_eq!(requests.iter().map(|r| r.1).collect::<Vec<_>>(), [429, 202]);
    assert!(
        requests[1].0.duration_since(requests[0].0) >= Duration::from_secs(2),
        "Retry-After: 2 was honoured"
    );

    graph.inject(&[Injected {
        status: 401,
        retry_after: None,
        code: "InvalidAuthenticationToken",
    }]);
    send(&app, &msg).await.unwrap();
    assert_eq!(
        oauth.grants("client_credentials").unwrap(),
        2,
        "one refresh after the 401"
    );
    assert_eq!(graph.sent().len(), 2);

    // Throttling past the limit for one send is transient, with a clear reason.
    graph.inject(&[Injected {
        status: 503,
        retry_after: Some(60),
        code: "ServiceUnavailable",
    }]);
    let e = mail_error(send(&app, &msg).await);
    assert_eq!(e.kind_name(), "transient", "{e:?}");
    assert!(e.message().contains("past the limit"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_graphs_code_the_request_id_and_the_fix() {
    let (oauth, graph) = servers();
    let (_ws, app) = account_app(&oauth, &graph, "client-secret-value-93ab", "");
    let msg = text_message("ops@contoso.example", "refused", "x");

    graph.inject(&[Injected {
        status: 403,
        retry_after: None,
        code: "ErrorAccessDenied",
    }]);
    let e = mail_error(send(&app, &msg).await);
    assert_eq!(e.kind_name(), "access-denied");
    assert!(
        e.message().contains("ErrorAccessDenied")
            && e.message().contains("req-")
            && e.message()
                .contains("Mail.Send application permission with admin consent"),
        "{e:?}"
    );
    graph.inject(&[Injected {
        status: 404,
        retry_after: None,
        code: "ErrorInvalidUser",
    }]);
    let e = mail_error(send(&app, &msg).await);
    assert_eq!(e.kind_name(), "not-found");
    assert!(e.message().contains(USER), "{e:?}");
    // Only what Graph took counts as sent.
    assert!(graph.sent().is_empty());

    // A From other than the configured user is refused before anything is sent.
    let mut spoof = msg.clone();
    spoof.sender = Some(Address {
        name: None,
        email: "ceo@contoso.example".into(),
    });
    let e = mail_error(send(&app, &spoof).await);
    assert!(
        matches!(&e, MailError::InvalidInput(f) if f.field == "message.sender"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_carries_the_aadsts_fix() {
    let (oauth, graph) = servers();
    let (_ws, app) = account_app(&oauth, &graph, "wrong-secret", "");
    let e = mail_error(send(&app, &text_message("ops@contoso.example", "x", "x")).await);
    assert_eq!(e.kind_name(), "auth-failed", "{e:?}");
    assert!(
        e.message().contains("AADSTS7000215") && e.message().contains("not its Secret ID"),
        "{e:?}"
    );
    assert!(graph.sent().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_attachment_goes_through_an_upload_session_byte_for_byte() {
    let (oauth, graph) = servers();
    let (_ws, app) = account_app(&oauth, &graph, "client-secret-value-93ab", "");
    let big: Vec<u8> = (0..10_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let small: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let mut message = text_message("ops@contoso.example", "a large report", "see attached");
    message.html = Some("<p>see <b>attached</b></p>".into());
    message
        .extra_headers
        .push(flowmail::bindings::types::Header {
            name: "X-Ticket".into(),
            value: "T-42".into(),
        });
    for (name, data) in [("report.bin", &big), ("notes.bin", &small)] {
        message.attachments.push(Attachment {
            name: name.into(),
            content_type: "application/octet-stream".into(),
            data: data.clone(),
            content_id: None,
        });
    }
    let receipt = send(&app, &message).await.unwrap();
    assert_eq!(receipt.status, DeliveryStatus::Queued);
    let sent = graph.sent();
    assert_eq!(sent.len(), 1);
    let draft = sent[0]
        .draft
        .as_ref()
        .expect("a large message goes as a draft");
    assert_eq!(draft["subject"], "a large report");
    assert_eq!(draft["body"]["contentType"], "HTML");
    assert_eq!(
        draft["toRecipients"][0]["emailAddress"]["address"],
        "ops@contoso.example"
    );
    assert_eq!(draft["internetMessageHeaders"][0]["name"], "X-Ticket");
    let attachments: std::collections::HashMap<&str, &Vec<u8>> = sent[0]
        .attachments
        .iter()
        .map(|(n, d)| (n.as_str(), d))
        .collect();
    assert!(
        *attachments["report.bin"] == big,
        "the 10 MB attachment arrives byte for byte"
    );
    assert!(*attachments["notes.bin"] == small);
    assert_eq!(graph.drafts(), 0, "the draft was sent");

    // Refused at the draft: access-denied with the permission it needs, and no draft left.
    graph.inject(&[Injected {
        status: 403,
        retry_after: None,
        code: "ErrorAccessDenied",
    }]);
    let e = mail_error(send(&app, &message).await);
    assert_eq!(e.kind_name(), "access-denied");
    assert!(e.message().contains("Mail.ReadWrite"), "{e:?}");
    assert_eq!(graph.drafts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mail_for_a_graph_account_reports_the_token_and_sendmail() {
    let (oauth, graph) = servers();
    let (ws, app) = account_app(&oauth, &graph, "client-secret-value-93ab", "");
    let config = ws.config().unwrap();
    let report = app
        .test_mail(&config, "graph", "ops@contoso.example")
        .await
        .unwrap();
    assert!(report.ok, "{}", report.render());
    let titles: Vec<&str> = report.stages.iter().map(|s| &*s.title).collect();
    assert_eq!(titles, ["token", "sendMail"]);
    let token = &report.stages[0].detail;
    assert!(
        token.contains("tenant contoso.example") && token.contains("Mail.Send"),
        "{token}"
    );
    assert!(report.stages[1].detail.contains("202 Accepted: queued"));
    assert_eq!(report.queue_id.as_deref(), Some("req-00000001"));
    assert_eq!(graph.sent().len(), 1);

    // A wrong secret fails at the token stage, with the AADSTS fix; nothing is sent.
    let (ws, app) = account_app(&oauth, &graph, "wrong-secret", "");
    let report = app
        .test_mail(&ws.config().unwrap(), "graph", "ops@contoso.example")
        .await
        .unwrap();
    assert!(!report.ok);
    assert_eq!(report.stages.len(), 1);
    assert_eq!(report.stages[0].title, "token");
    assert!(
        report.stages[0].detail.contains("AADSTS7000215"),
        "{}",
        report.render()
    );
    assert_eq!(graph.sent().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_mail_send_role_is_access_denied_with_the_fix() {
    // A scope other than Graph's .default: the token carries no application roles.
    let (oauth, graph) = servers();
    let (_ws, app) = account_app(
        &oauth,
        &graph,
        "client-secret-value-93ab",
        "scopes = [\"openid\"]\n",
    );
    let e = mail_error(send(&app, &text_message("ops@contoso.example", "x", "x")).await);
    assert_eq!(e.kind_name(), "access-denied", "{e:?}");
    assert!(e.message().contains("admin consent"), "{e:?}");
    assert!(graph.sent().is_empty());
}
