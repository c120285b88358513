//! Messages per second sent through Microsoft Graph's `sendMail` to the stand-in on
//! loopback, side by side in one run: flowmail's plugin (sandboxed, a fresh instance per
//! message, composing, then the host's Graph transport with its token store) and a plain
//! reqwest loop posting the same kind of request with one token (the native limit). Each
//! client sends one message at a time over keep-alive connections; each message is about
//! 1 KB. The stand-in remembers tokens it has checked, as Graph validates a token itself,
//! so the token issuer is not the bottleneck. The figure is the median of three rounds.
//!
//! `cargo bench -p flowmail-tests --bench graph_send` (FLOWMAIL_BENCH_MESSAGES=N to change
//! the count per round from 2,000). It needs node and the test OAuth2 server, as the tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use base64::Engine as _;
use flowmail::caps::Audit;
use flowmail_tests::graph::GraphStandIn;
use flowmail_tests::oauth::OAuth;
use flowmail_tests::{Workspace, text_message};

const USER: &str = "sender@contoso.example";
const BODY_LINE: &str = "The quick brown fox jumps over the lazy dog, and flowmail measures it.\n";

fn body() -> String {
    BODY_LINE.repeat(1024 / BODY_LINE.len() + 1)[..1024].to_owned()
}

fn workspace(oauth: &OAuth, graph: &GraphStandIn) -> Workspace {
    let ws = Workspace::with_config("").unwrap();
    std::fs::write(ws.path().join("client-secret"), "client-secret-value-93ab").unwrap();
    ws.write_config(format!(
            "[store]\npath = \"var/flowmail.db\"\n[runtime]\ncache_dir = \"\"\n\
             [accounts.graph]\nfrom = \"Sender <{USER}>\"\n\
             [accounts.graph.transport]\nkind = \"graph\"\ntenant = \"contoso.example\"\nuser = \"{USER}\"\n\
             graph_url = \"{}\"\n\
             [accounts.graph.auth]\nkind = \"oauth2\"\nusername = \"{USER}\"\nclient_id = \"flowmail-graph\"\n\
             client_secret = {{ file = \"client-secret\" }}\ntoken_url = \"{}/token\"\n",
            graph.url,
            oauth.url()
        ),
    )
    .unwrap();
    ws
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let count: usize = std::env::var("FLOWMAIL_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let oauth = OAuth::start().unwrap();
    let graph = GraphStandIn::start(oauth.port).unwrap();
    graph.remember_tokens();
    let ws = workspace(&oauth, &graph);
    let (app, _store) = ws.app(None, Audit::default()).unwrap();
    let runtime = app.runtime().unwrap();
    let tokio = tokio::runtime::Runtime::new().unwrap();

    // The native limit: one token, the same request shape, nothing else.
    let (status, token) = oauth
        .http(
            "POST",
            "/token",
            "grant_type=client_credentials&client_id=flowmail-graph&client_secret=client-secret-value-93ab\
             &scope=https%3A%2F%2Fgraph.microsoft.com%2F.default",
        )
        .unwrap();
    assert_eq!(status, 200, "{token}");
    // The body may come chunked: the JSON object is what lies between its braces.
    let json = &token[token.find('{').unwrap()..=token.rfind('}').unwrap()];
    let token = serde_json::from_str::<serde_json::Value>(json).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let url = format!("{}/users/{USER}/sendMail", graph.url);
    let mime = |n: usize| {
        format!(
            "From: Sender <{USER}>\r\nTo: ops@contoso.example\r\nSubject: bench {n}\r\n\
             Message-ID: <bench-{n}@contoso.example>\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{}",
            body()
        )
    };

    let (mut plugin_rates, mut native_rates) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let started = Instant::now();
        tokio.block_on(async {
            for n in 0..count {
                let message = text_message("ops@contoso.example", &format!("bench {n}"), &body());
                runtime.send_mail("send", "graph", &message).await.unwrap();
            }
        });
        plugin_rates.push(count as f64 / started.elapsed().as_secs_f64());

        let started = Instant::now();
        tokio.block_on(async {
            for n in 0..count {
                let encoded = base64::engine::general_purpose::STANDARD.encode(mime(n));
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "text/plain")
                    .body(encoded)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 202);
            }
        });
        native_rates.push(count as f64 / started.elapsed().as_secs_f64());
        eprintln!(
            "round {round}: plugin {:.0} msg/s, reqwest {:.0} msg/s",
            plugin_rates[round], native_rates[round]
        );
    }
    assert_eq!(
        graph.sent().len(),
        6 * count,
        "every message reached the stand-in"
    );
    let (plugin, native) = (median(plugin_rates), median(native_rates));
    println!("Graph sendMail, {count} messages of about 1 KB per round, median of 3 rounds:");
    println!("| client | msg/s | vs reqwest |");
    println!("|---|---:|---:|");
    println!(
        "| flowmail plugin (sandboxed, fresh instance per message) | {plugin:.0} | {:.2} |",
        plugin / native
    );
    println!("| plain reqwest loop, one token | {native:.0} | 1.00 |");
}
