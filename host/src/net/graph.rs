//! The Microsoft Graph client that the Graph transport and the Graph mailbox share: the
//! bearer token from the token store, throttling waited out (`Retry-After`, up to a cap),
//! a refused token refreshed once, and at most four requests in flight per mailbox
//! (Outlook's limit, across all accounts of this process that use the mailbox). What a
//! failure means is for each capability to say: it passes its own classification.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::auth::TokenSource;
use crate::bindings::MailError;

/// Outlook answers more than four concurrent requests to one mailbox with 429.
pub const CONCURRENT_PER_MAILBOX: usize = 4;

/// The request slots of each mailbox, by Graph base and user.
static SLOTS: LazyLock<Mutex<HashMap<String, Arc<Semaphore>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn slots_for(base: &str, user: &str) -> Arc<Semaphore> {
    let key = format!("{base} {}", user.to_ascii_lowercase());
    match SLOTS.lock() {
        Ok(mut map) => map
            .entry(key)
            .or_insert_with(|| Arc::new(Semaphore::new(CONCURRENT_PER_MAILBOX)))
            .clone(),
        // A poisoned map still limits each client on its own.
        Err(_) => Arc::new(Semaphore::new(CONCURRENT_PER_MAILBOX)),
    }
}

/// What to do after a response that was not a success.
#[derive(Debug)]
pub enum Outcome {
    /// Throttled or briefly unavailable: wait this long, then try again.
    RetryAfter(Duration),
    /// The token was refused: refresh it once, then try again.
    Refresh,
    /// The request failed for good (this attempt's answer is final).
    Fail(MailError),
    /// The caller reads this answer itself (for example an expired delta link).
    Answer,
}

/// A capability's reading of a failed answer: `(what, status, headers, body)` to
/// [`Outcome`].
pub type Classify<'a> = &'a (dyn Fn(&str, u16, &HeaderMap, &[u8]) -> Outcome + Sync);

/// Graph's error body: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Default, Deserialize)]
struct Body {
    #[serde(default)]
    error: GraphError,
}

#[derive(Debug, Default, Deserialize)]
struct GraphError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The `error.code` of a Graph error body, and the whole error as one phrase with the
/// request id (`ErrorAccessDenied: Access is denied. (request id ...)`).
pub fn said(status: u16, headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let parsed: Body = serde_json::from_slice(body).unwrap_or_default();
    let code = parsed.error.code;
    let said = if code.is_empty() && parsed.error.message.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("{code}: {}", parsed.error.message)
    };
    let id = request_id(headers)
        .map(|id| format!(" (request id {id})"))
        .unwrap_or_default();
    (code, format!("{said}{id}"))
}

/// How long Graph says to wait (`Retry-After` in seconds), or a short default.
pub fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(5))
}

/// Graph's request id of a response, for receipts and support cases.
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    ["request-id", "client-request-id"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(str::to_owned)
}

/// One request to Graph.
pub struct Call<'a> {
    pub what: &'a str,
    pub method: reqwest::Method,
    pub url: String,
    pub content_type: &'a str,
    pub body: Vec<u8>,
    /// Upload URLs carry their own authorization: no bearer token goes to them.
    pub authorized: bool,
    pub headers: Vec<(&'static str, String)>,
    /// Keep at most this many bytes of a success's body; the rest is counted, not kept.
    pub keep: Option<u64>,
}

impl<'a> Call<'a> {
    pub fn new(
        what: &'a str,
        method: reqwest::Method,
        url: String,
        content_type: &'a str,
        body: Vec<u8>,
    ) -> Self {
        Self {
            what,
            method,
            url,
            content_type,
            body,
            authorized: true,
            headers: Vec::new(),
            keep: None,
        }
    }

    /// A GET of `url`.
    pub fn get(what: &'a str, url: String) -> Self {
        Self::new(
            what,
            reqwest::Method::GET,
            url,
            "application/json",
            Vec::new(),
        )
    }
}

/// A successful answer.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body, or its first `keep` bytes.
    pub body: Vec<u8>,
    /// The whole body's length, kept or not.
    pub size: u64,
}

/// The access token of one operation, and whether it was refreshed already.
#[derive(Clone)]
pub struct Token {
    secret: crate::secret::Secret,
    at: i64,
    refreshed: bool,
}

/// One mailbox as the Graph API serves it.
pub struct GraphApi {
    /// The API's base, without a trailing slash.
    pub base: String,
    /// The mailbox (user principal name or id).
    pub user: String,
    token: Arc<dyn TokenSource>,
    http: reqwest::Client,
    /// The longest total wait for throttling before an operation fails.
    pub max_wait: Duration,
    slots: Arc<Semaphore>,
}

impl GraphApi {
    /// The mailbox `user` of the Graph API at `base` (for example
    /// `https://graph.microsoft.com/v1.0`).
    pub fn new(
        base: &str,
        user: &str,
        token: Arc<dyn TokenSource>,
        http: reqwest::Client,
        max_wait: Duration,
    ) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        Self {
            slots: slots_for(&base, user),
            base,
            user: user.to_owned(),
            token,
            http,
            max_wait,
        }
    }

    /// `path` under the mailbox: `{base}/users/{user}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/users/{}{path}", self.base, path_segment(&self.user))
    }

    /// The token source, for stages that report on the token itself.
    pub fn token_source(&self) -> &Arc<dyn TokenSource> {
        &self.token
    }

    /// A token for the calls of one operation.
    pub async fn token(&self) -> Result<Token, MailError> {
        Ok(Token {
            secret: self.token.access_token().await?,
            at: crate::unix_now(),
            refreshed: false,
        })
    }

    /// Makes `call` with the bearer token, in one of the mailbox's request slots: waits
    /// out throttling up to the cap, refreshes a refused token once, and lets `classify`
    /// say what any other failure means.
    pub async fn call(
        &self,
        call: Call<'_>,
        token: &mut Token,
        classify: Classify<'_>,
    ) -> Result<Answer, MailError> {
        let started = Instant::now();
        loop {
            let answer = {
                let _slot = self.slots.acquire().await.map_err(|_| {
                    MailError::Transient("the Graph client is shutting down".into())
                })?;
                self.once(&call, token).await?
            };
            if (200..300).contains(&answer.status) {
                return Ok(answer);
            }
            match classify(call.what, answer.status, &answer.headers, &answer.body) {
                Outcome::RetryAfter(wait) => {
                    if started.elapsed() + wait > self.max_wait {
                        return Err(MailError::Transient(format!(
                            "Graph throttled {} for {} and asks to wait {wait:?}, past the limit of {:?} for one operation; \
                             it is tried again later",
                            call.what, self.user, self.max_wait
                        )));
                    }
                    tracing::info!(
                        "Graph throttled {} for {}; waiting {wait:?}",
                        call.what,
                        self.user
                    );
                    tokio::time::sleep(wait).await;
                }
                Outcome::Refresh if call.authorized && !token.refreshed => {
                    token.secret = self.token.refresh_after_rejection(token.at).await?;
                    token.at = crate::unix_now();
                    token.refreshed = true;
                }
                Outcome::Refresh => {
                    return Err(MailError::AuthFailed(format!(
                        "Graph refused the token for {} ({}) again after a refresh; check the app's client ID, secret and tenant",
                        self.user, call.what
                    )));
                }
                Outcome::Fail(e) => return Err(e),
                Outcome::Answer => return Ok(answer),
            }
        }
    }

    async fn once(&self, call: &Call<'_>, token: &Token) -> Result<Answer, MailError> {
        let mut request = self
            .http
            .request(call.method.clone(), &call.url)
            .header(reqwest::header::CONTENT_TYPE, call.content_type)
            .body(call.body.clone());
        if call.authorized {
            request = request.bearer_auth(token.secret.expose());
        }
        for (name, value) in &call.headers {
            request = request.header(*name, value);
        }
        let unreachable = |e: reqwest::Error| {
            MailError::Transient(format!(
                "Graph {} for {} could not be reached: {}",
                call.what,
                self.user,
                http_error(&e)
            ))
        };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let keep = match call.keep {
            Some(keep) if (200..300).contains(&status) => keep,
            _ => u64::MAX,
        };
        let mut body = Vec::new();
        let mut size = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            size += chunk.len() as u64;
            let room = keep.saturating_sub(body.len() as u64);
            let take = chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            body.extend_from_slice(&chunk[..take]);
        }
        Ok(Answer {
            status,
            headers,
            body,
            size,
        })
    }
}

/// A reqwest error with its causes, as one line.
pub fn http_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// `text` as one URL path segment (a user principal name keeps its `@`).
pub fn path_segment(text: &str) -> String {
    percent_encode(text, b"@")
}

/// `text` percent-encoded for a URL: unreserved characters stay, and those in `keep`.
pub fn percent_encode(text: &str, keep: &[u8]) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ if keep.contains(&b) => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
