//! Reading a Graph mail folder through its delta query: the cursor names the link to read
//! next (the first delta request, an `@odata.nextLink` or an `@odata.deltaLink`) and the
//! messages of that link's page already returned, so a batch can end mid-page. Only
//! created messages are asked for (`changeType=created`): marking a message read does not
//! bring it back. An expired link (410, `SyncStateNotFound`) restarts from the folder's
//! start, and the batch says `restarted`.

use base64::Engine as _;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::GraphMailbox;
use super::classify::sync_state_lost;
use crate::bindings::MailError;
use crate::bindings::mailbox::{Batch, RawMessage, SizeCap};
use crate::bindings::types::FieldError;
use crate::net::graph::{CONCURRENT_PER_MAILBOX, Call, said};

/// Messages per delta page flowmail asks for (Graph's default is 10).
pub const PAGE: u32 = 50;

/// The properties a delta page carries; the message itself comes from `$value`.
pub const SELECT: &str = "id,receivedDateTime,isRead,isDraft,flag";

/// A reader's place, written into the WIT's opaque cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Place {
    /// The page at `link`, less the messages in `done` that were returned already.
    Delta { link: String, done: Vec<String> },
    /// Just the message `id`, to read one message again for a retry.
    One { id: String },
}

const PREFIX: &str = "graph1.";

impl Place {
    pub fn write(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        )
    }

    /// Reads a cursor this mailbox wrote; a link must lead to `base`, so a cursor can
    /// never send the token elsewhere.
    pub fn read(text: &str, base: &str) -> Result<Self, MailError> {
        let refused = || {
            MailError::InvalidInput(FieldError {
                field: "after".into(),
                reason: format!(
                    "`{}` was not written by this mailbox; pass back a cursor it returned, unchanged",
                    text.escape_debug()
                ),
            })
        };
        let place: Place = text
            .strip_prefix(PREFIX)
            .and_then(|b| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(b)
                    .ok()
            })
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(refused)?;
        match &place {
            Place::Delta { link, .. } if !link.starts_with(&format!("{base}/")) => Err(refused()),
            _ => Ok(place),
        }
    }
}

/// One entry of a delta page.
#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    pub id: String,
    #[serde(rename = "@removed", default)]
    removed: Option<serde_json::Value>,
    #[serde(rename = "receivedDateTime", default)]
    received: Option<String>,
    #[serde(rename = "isRead", default)]
    is_read: Option<bool>,
    #[serde(rename = "isDraft", default)]
    is_draft: Option<bool>,
    #[serde(default)]
    flag: Option<FlagStatus>,
}

#[derive(Debug, Clone, Deserialize)]
struct FlagStatus {
    #[serde(rename = "flagStatus", default)]
    status: Option<String>,
}

impl Item {
    /// The message's flags, IMAP style.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if self.is_read == Some(true) {
            flags.push("\\Seen".to_owned());
        }
        if self
            .flag
            .as_ref()
            .and_then(|f| f.status.as_deref())
            .is_some_and(|s| s.eq_ignore_ascii_case("flagged"))
        {
            flags.push("\\Flagged".to_owned());
        }
        if self.is_draft == Some(true) {
            flags.push("\\Draft".to_owned());
        }
        flags
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    value: Vec<Item>,
    #[serde(rename = "@odata.nextLink", default)]
    next: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    delta: Option<String>,
}

impl GraphMailbox {
    /// The first delta request of the folder.
    async fn start_link(&self) -> Result<String, MailError> {
        let folder = self.folder_id().await?;
        Ok(format!(
            "{}?changeType=created&$select={SELECT}",
            self.api.url(&format!(
                "/mailFolders/{}/messages/delta",
                crate::net::graph::path_segment(&folder)
            ))
        ))
    }

    /// Reads the page at `link`: `None` when Graph no longer honours the link.
    async fn page(&self, link: &str) -> Result<Option<Page>, MailError> {
        let mut call = Call::get("delta", link.to_owned());
        call.headers
            .push(("prefer", format!("odata.maxpagesize={PAGE}")));
        let mut token = self.api.token().await?;
        let answer = self.call(call, &mut token).await?;
        if !(200..300).contains(&answer.status) {
            let (code, text) = said(answer.status, &answer.headers, &answer.body);
            if sync_state_lost(answer.status, &code) {
                tracing::warn!(
                    "Graph no longer honours the delta link of {} ({text}); reading the folder again from its start",
                    self.api.user
                );
                return Ok(None);
            }
        }
        let page: Page = serde_json::from_slice(&answer.body).map_err(|e| {
            MailError::Transient(format!(
                "Graph's delta page for {} could not be read ({e}); it is read again later",
                self.api.user
            ))
        })?;
        for link in page.next.iter().chain(page.delta.iter()) {
            if !link.starts_with(&format!("{}/", self.api.base)) {
                return Err(MailError::Permanent(format!(
                    "Graph's delta page for {} links outside {}; check `graph_url`",
                    self.api.user, self.api.base
                )));
            }
        }
        Ok(Some(page))
    }

    /// Up to `limit` messages after `after`, as the WIT's `fetch-after` says.
    pub(super) async fn read_after(
        &self,
        after: Option<String>,
        limit: u32,
        cap: Option<SizeCap>,
    ) -> Result<Batch, MailError> {
        let place = match &after {
            Some(text) => Place::read(text, &self.api.base)?,
            None => Place::Delta {
                link: self.start_link().await?,
                done: Vec::new(),
            },
        };
        let (mut link, mut done) = match place {
            Place::One { id } => {
                let messages = match self.one(&id, cap).await {
                    Ok(m) => m.into_iter().collect(),
                    Err(MailError::NotFound(_)) => Vec::new(),
                    Err(e) => return Err(e),
                };
                return Ok(Batch {
                    messages,
                    more: false,
                    next: after.unwrap_or_default(),
                    restarted: false,
                });
            }
            Place::Delta { link, done } => (link, done),
        };
        let mut restarted = false;
        let mut items: Vec<Item> = Vec::new();
        let limit = limit.max(1) as usize;
        let (next, more) = loop {
            let Some(page) = self.page(&link).await? else {
                if restarted {
                    return Err(MailError::Transient(format!(
                        "Graph refused even a new delta query of {}; it is tried again later",
                        self.api.user
                    )));
                }
                restarted = true;
                items.clear();
                link = self.start_link().await?;
                done.clear();
                continue;
            };
            let mut fresh: Vec<Item> = page
                .value
                .into_iter()
                .filter(|i| i.removed.is_none() && !done.contains(&i.id))
                .collect();
            // Oldest first within the page; Graph names no order for delta pages.
            fresh.sort_by(|a, b| a.received.cmp(&b.received));
            let room = limit - items.len();
            if fresh.len() > room {
                done.extend(fresh[..room].iter().map(|i| i.id.clone()));
                items.extend(fresh.into_iter().take(room));
                break (Place::Delta { link, done }, true);
            }
            items.extend(fresh);
            match (page.next, page.delta) {
                (Some(next), _) => {
                    link = next;
                    done = Vec::new();
                    if items.len() == limit {
                        break (Place::Delta { link, done }, true);
                    }
                }
                (None, Some(delta)) => {
                    break (
                        Place::Delta {
                            link: delta,
                            done: Vec::new(),
                        },
                        false,
                    );
                }
                (None, None) => {
                    return Err(MailError::Transient(format!(
                        "Graph's delta page for {} has neither a next link nor a delta link; it is read again later",
                        self.api.user
                    )));
                }
            }
        };
        let messages = futures_util::stream::iter(items)
            .map(|item| self.raw(item, cap))
            .buffered(CONCURRENT_PER_MAILBOX)
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            match m {
                Ok(m) => out.push(m),
                // Removed since the page was read: nothing to run.
                Err(MailError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Batch {
            messages: out,
            more,
            next: next.write(),
            restarted,
        })
    }

    /// The message `id` with its flags, or `None` after a 404.
    async fn one(&self, id: &str, cap: Option<SizeCap>) -> Result<Option<RawMessage>, MailError> {
        let item = self.item(id).await?;
        self.raw(item, cap).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_cursor_reads_back_and_may_only_lead_to_the_api() {
        let base = "https://graph.microsoft.com/v1.0";
        let place = Place::Delta {
            link: format!("{base}/users/u/mailFolders/inbox/messages/delta?$deltatoken=x"),
            done: vec!["AAMk=".into()],
        };
        assert_eq!(Place::read(&place.write(), base).unwrap(), place);
        let elsewhere = Place::Delta {
            link: "https://evil.example/v1.0/users/u/messages".into(),
            done: Vec::new(),
        };
        let Err(MailError::InvalidInput(e)) = Place::read(&elsewhere.write(), base) else {
            panic!()
        };
        assert_eq!(e.field, "after");
        assert!(Place::read("42:7", base).is_err());
        let one = Place::One { id: "AAMk=".into() };
        assert_eq!(Place::read(&one.write(), base).unwrap(), one);
    }
}
