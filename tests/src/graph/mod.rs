//! A stand-in for Microsoft Graph, written from Microsoft's documented contract:
//! `POST /v1.0/users/{id}/sendMail` with MIME content (a bearer token the test OAuth2
//! server calls active, `Content-Type: text/plain`, the MIME in base64, `202 Accepted` with
//! an empty body and a `request-id`), and for large messages a draft
//! (`POST .../messages`), attachments (`.../attachments`, `.../createUploadSession` with
//! `PUT` chunks that carry `Content-Range` and no Authorization header) and `.../send`.
//! It serves a mailbox with folders, delta pages and message changes ([`mailbox`]).
//! It checks the token's `roles` claim (Mail.Send to send, Mail.Read or Mail.ReadWrite to
//! read, Mail.ReadWrite to change or draft), answers a fifth concurrent request to one
//! mailbox with 429 as Outlook does, stores what was sent, and answers with the errors a
//! test queues (429 with `Retry-After`, 401, 403, 5xx) before the real answer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;

mod drafts;
mod gate;
mod mailbox;

use self::gate::{RequestId, tracked};
pub use self::mailbox::Stored;

/// One message Graph accepted: its MIME, or for a draft its JSON and attachments.
#[derive(Debug, Clone)]
pub struct Sent {
    pub user: String,
    pub mime: Vec<u8>,
    pub draft: Option<serde_json::Value>,
    /// Each attachment's name and bytes, for a draft.
    pub attachments: Vec<(String, Vec<u8>)>,
    pub at: Instant,
}

/// An answer to give instead of the real one.
#[derive(Debug, Clone)]
pub struct Injected {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub code: &'static str,
}

#[derive(Default)]
struct Inner {
    oauth_port: u16,
    port: u16,
    drafts: Mutex<std::collections::HashMap<String, drafts::Draft>>,
    uploads: Mutex<std::collections::HashMap<String, drafts::Upload>>,
    sent: Mutex<Vec<Sent>>,
    queued: Mutex<VecDeque<Injected>>,
    requests: Mutex<Vec<(Instant, u16)>>,
    next_id: Mutex<u64>,
    mailbox: Mutex<mailbox::MailboxState>,
    /// Requests in flight per mailbox, and the most there ever were.
    in_flight: Mutex<(std::collections::HashMap<String, usize>, usize)>,
    /// Tokens found active, when the stand-in remembers them (see
    /// [`GraphStandIn::remember_tokens`]).
    remembered: Mutex<Option<std::collections::HashSet<String>>>,
}

/// The stand-in, serving on a free port until dropped.
pub struct GraphStandIn {
    /// The API's base, as `graph_url` takes it (`http://127.0.0.1:PORT/v1.0`).
    pub url: String,
    inner: Arc<Inner>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl GraphStandIn {
    /// Starts the stand-in; tokens are checked with the OAuth2 server on `oauth_port`.
    pub fn start(oauth_port: u16) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", crate::stack::free_port()?))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let inner = Arc::new(Inner {
            oauth_port,
            port,
            ..Inner::default()
        });
        let app = Router::new()
            .route("/v1.0/users/{user}/sendMail", post(send_mail))
            .route("/v1.0/users/{user}/messages", post(drafts::create))
            .route(
                "/v1.0/users/{user}/messages/{id}",
                get(mailbox::message)
                    .patch(mailbox::patch)
                    .delete(mailbox::delete),
            )
            .route(
                "/v1.0/users/{user}/messages/{id}/$value",
                get(mailbox::value),
            )
            .route(
                "/v1.0/users/{user}/messages/{id}/move",
                post(mailbox::move_message),
            )
            .route("/v1.0/users/{user}/mailFolders", get(mailbox::folders))
            .route(
                "/v1.0/users/{user}/mailFolders/{folder}",
                get(mailbox::folder),
            )
            .route(
                "/v1.0/users/{user}/mailFolders/{folder}/messages/delta",
                get(mailbox::delta),
            )
            .route(
                "/v1.0/users/{user}/messages/{id}/attachments",
                post(drafts::add_attachment),
            )
            .route(
                "/v1.0/users/{user}/messages/{id}/attachments/createUploadSession",
                post(drafts::create_upload),
            )
            .route("/v1.0/users/{user}/messages/{id}/send", post(drafts::send))
            .route("/upload/{session}", axum::routing::put(drafts::upload))
            // Graph takes requests up to 4 MB; this stand-in checks that itself.
            .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024))
            .layer(axum::middleware::from_fn_with_state(inner.clone(), tracked))
            .with_state(inner.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(Self {
            url: format!("http://127.0.0.1:{port}/v1.0"),
            inner,
            stop: Some(stop),
        })
    }

    /// Answers the next requests with these, in order, before answering for real.
    pub fn inject(&self, answers: &[Injected]) {
        if let Ok(mut q) = self.inner.queued.lock() {
            q.extend(answers.iter().cloned());
        }
    }

    /// Puts `mime` into the folder named by id, well-known name or display name, and
    /// returns the message's id.
    pub fn deliver(&self, folder: &str, mime: &[u8]) -> String {
        self.inner
            .mailbox
            .lock()
            .ok()
            .and_then(|mut s| {
                let f = s.folder_by_any(folder)?;
                Some(s.deliver(&f, mime))
            })
            .unwrap_or_default()
    }

    /// Adds a top-level folder with this display name.
    pub fn add_folder(&self, name: &str) -> String {
        self.inner
            .mailbox
            .lock()
            .map(|mut s| s.add_folder(name))
            .unwrap_or_default()
    }

    /// The messages of a folder (named as for [`Self::deliver`]).
    pub fn folder(&self, folder: &str) -> Vec<Stored> {
        self.inner
            .mailbox
            .lock()
            .ok()
            .and_then(|s| Some(s.in_folder(&s.folder_by_any(folder)?)))
            .unwrap_or_default()
    }

    /// From now on, a token found active once is not asked about again, as Graph checks a
    /// token's signature itself instead of asking the issuer each time. For benchmarks,
    /// where the issuer must not be the bottleneck.
    pub fn remember_tokens(&self) {
        if let Ok(mut r) = self.inner.remembered.lock() {
            r.get_or_insert_with(Default::default);
        }
    }

    /// Expires every delta link handed out so far, as Exchange does after some days.
    pub fn expire_delta_links(&self) {
        if let Ok(mut s) = self.inner.mailbox.lock() {
            s.expire();
        }
    }

    /// The most requests to one mailbox that were ever in flight at once.
    pub fn most_in_flight(&self) -> usize {
        self.inner.in_flight.lock().map(|f| f.1).unwrap_or_default()
    }

    /// What was sent, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.inner
            .sent
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// When each request came, with the status it got.
    pub fn requests(&self) -> Vec<(Instant, u16)> {
        self.inner
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

impl Drop for GraphStandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) fn error(status: u16, code: &str, message: &str, request_id: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("request-id"), request_id),
        ],
        serde_json::json!({ "error": { "code": code, "message": message,
            "innerError": { "request-id": request_id } } })
        .to_string(),
    )
        .into_response()
}

async fn send_mail(
    State(inner): State<Arc<Inner>>,
    Extension(RequestId(id)): Extension<RequestId>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&inner, &user, &headers, &body, &id)
}

/// Drafts not sent (a failed send must leave none).
impl GraphStandIn {
    pub fn drafts(&self) -> usize {
        self.inner
            .drafts
            .lock()
            .map(|d| d.len())
            .unwrap_or_default()
    }
}

fn answer(inner: &Inner, user: &str, headers: &HeaderMap, body: &[u8], id: &str) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("text/plain") {
        return error(
            400,
            "ErrorMimeContentInvalid",
            "MIME content must be sent as text/plain in base64.",
            id,
        );
    }
    let text: String = String::from_utf8_lossy(body).split_whitespace().collect();
    let Ok(mime) = base64::engine::general_purpose::STANDARD.decode(text.as_bytes()) else {
        return error(
            400,
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
            id,
        );
    };
    if body.len() > 4 * 1024 * 1024 {
        return error(413, "RequestBodyTooLarge", "The request is over 4 MB.", id);
    }
    if let Ok(mut sent) = inner.sent.lock() {
        sent.push(Sent {
            user: user.to_owned(),
            mime,
            draft: None,
            attachments: Vec::new(),
            at: Instant::now(),
        });
    }
    (
        StatusCode::ACCEPTED,
        [(header::HeaderName::from_static("request-id"), id.to_owned())],
    )
        .into_response()
}
