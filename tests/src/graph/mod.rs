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
mod drafts;
mod mailbox;

pub use self::mailbox::Stored;

use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;

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

/// The `roles` claim of the request's bearer token.
fn claims_of(headers: &HeaderMap) -> Vec<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| t.split('.').nth(1))
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|c| {
            c["roles"].as_array().map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn next_id(inner: &Inner) -> String {
    let n = inner
        .next_id
        .lock()
        .map(|mut n| {
            *n += 1;
            *n
        })
        .unwrap_or_default();
    format!("req-{n:08}")
}

fn record(inner: &Inner, response: Response) -> Response {
    if let Ok(mut r) = inner.requests.lock() {
        r.push((Instant::now(), response.status().as_u16()));
    }
    response
}

/// The id of a request, given to its handler by [`tracked`].
#[derive(Clone)]
pub(crate) struct RequestId(String);

/// Every request: an id, the token check and queued answers for the API's routes (the
/// upload URL authorizes itself), and a record of the answer.
async fn tracked(State(inner): State<Arc<Inner>>, mut request: Request, next: Next) -> Response {
    let id = next_id(&inner);
    request.extensions_mut().insert(RequestId(id.clone()));
    let path = request.uri().path().to_owned();
    let user = path
        .strip_prefix("/v1.0/users/")
        .and_then(|p| p.split('/').next())
        .map(str::to_ascii_lowercase);
    // Outlook serves at most four requests to one mailbox at a time. The count drops
    // when the request ends, also when its client went away (then the handler is
    // dropped, not finished).
    let slot = user.as_ref().map(|u| InFlight::enter(&inner, u));
    let crowded = slot.as_ref().is_some_and(|s| s.count > 4);
    let gated = if crowded {
        let mut r = error(
            429,
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
            &id,
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        Some(r)
    } else if path.starts_with("/v1.0/") {
        let role = role_for(request.method(), &path);
        gate(&inner, request.headers(), &id, role).await
    } else {
        None
    };
    let response = match gated {
        Some(refused) => refused,
        None => next.run(request).await,
    };
    drop(slot);
    record(&inner, response)
}

/// One request in flight to a mailbox, counted until dropped.
struct InFlight {
    inner: Arc<Inner>,
    user: String,
    /// How many were in flight with this one.
    count: usize,
}

impl InFlight {
    fn enter(inner: &Arc<Inner>, user: &str) -> Self {
        let count = inner
            .in_flight
            .lock()
            .map(|mut f| {
                let n = f.0.entry(user.to_owned()).or_default();
                *n += 1;
                let now = *n;
                f.1 = f.1.max(now);
                now
            })
            .unwrap_or_default();
        Self {
            inner: inner.clone(),
            user: user.to_owned(),
            count,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut f) = self.inner.in_flight.lock()
            && let Some(n) = f.0.get_mut(&self.user)
        {
            *n = n.saturating_sub(1);
        }
    }
}

/// The application permissions a request needs: Mail.Send to send, Mail.Read (or
/// Mail.ReadWrite) to read, Mail.ReadWrite to change messages or make drafts.
fn role_for(method: &axum::http::Method, path: &str) -> &'static [&'static str] {
    if path.ends_with("/sendMail") || path.ends_with("/send") {
        &["Mail.Send"]
    } else if method == axum::http::Method::GET {
        &["Mail.Read", "Mail.ReadWrite"]
    } else {
        &["Mail.ReadWrite"]
    }
}

/// The bearer token's check and the queued answers, as every authorized call has them.
async fn gate(inner: &Inner, headers: &HeaderMap, id: &str, role: &[&str]) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(token) = token else {
        return Some(error(
            401,
            "InvalidAuthenticationToken",
            "Access token is empty.",
            id,
        ));
    };
    let port = inner.oauth_port;
    let known = inner
        .remembered
        .lock()
        .ok()
        .and_then(|r| r.as_ref().map(|r| r.contains(&token)));
    let active = match known {
        Some(true) => true,
        remembering => {
            let checked = token.clone();
            let active =
                tokio::task::spawn_blocking(move || crate::oauth::active_on(port, &checked))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(false);
            if active
                && remembering.is_some()
                && let Ok(mut r) = inner.remembered.lock()
                && let Some(r) = r.as_mut()
            {
                r.insert(token);
            }
            active
        }
    };
    if !active {
        return Some(error(
            401,
            "InvalidAuthenticationToken",
            "Access token has expired or is not yet valid.",
            id,
        ));
    }
    // Application permissions: a token without the role is refused, as Graph refuses it.
    let roles = claims_of(headers);
    if !roles.iter().any(|r| role.contains(&r.as_str())) {
        return Some(error(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
            id,
        ));
    }
    let queued = inner.queued.lock().ok().and_then(|mut q| q.pop_front());
    queued.map(|q| {
        let mut r = error(q.status, q.code, "injected by the test", id);
        if let Some(secs) = q.retry_after
            && let Ok(v) = secs.to_string().parse()
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    })
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
