//! A Microsoft Graph mail folder as a mailbox: new messages through the folder's delta
//! query ([`delta`]), each message's MIME from `/messages/{id}/$value` so the plugin parses
//! it as it parses IMAP, and flags, moves and deletes as Graph's PATCH, move and DELETE.
//! Waiting for news polls: Graph's change notifications need a public HTTPS endpoint.
//! Every request goes through the shared client, at most four at a time per mailbox.

mod classify;
mod delta;

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use self::classify::classify;
use self::delta::{Item, Place, SELECT};
use super::{Backend, WaitPlan, Wake, Watch, strip};
use crate::BoxFuture;
use crate::bindings::MailError;
use crate::bindings::mailbox::{Batch, Content, Flag, Oversize, RawMessage, Search, SizeCap};
use crate::bindings::types::FieldError;
use crate::net::graph::{
    Answer, CONCURRENT_PER_MAILBOX, Call, GraphApi, Token, path_segment, percent_encode,
};

/// Graph's well-known folder names, usable in place of a folder id.
const WELL_KNOWN: &[&str] = &[
    "inbox",
    "archive",
    "deleteditems",
    "drafts",
    "junkemail",
    "outbox",
    "sentitems",
    "clutter",
    "conversationhistory",
    "recoverableitemsdeletions",
    "scheduled",
    "searchfolders",
    "syncissues",
];

/// One account's Graph mail folder.
pub struct GraphMailbox {
    api: GraphApi,
    /// The folder as configured: a well-known name, a display name or an id.
    folder: String,
    /// The folder's id (or well-known name), looked up once.
    folder_id: OnceCell<String>,
}

impl GraphMailbox {
    pub fn new(api: GraphApi, folder: &str) -> Self {
        Self {
            api,
            folder: folder.to_owned(),
            folder_id: OnceCell::new(),
        }
    }

    async fn call(&self, call: Call<'_>, token: &mut Token) -> Result<Answer, MailError> {
        let user = self.api.user.clone();
        let classify = move |what: &str, status, headers: &_, body: &[u8]| {
            classify(what, &user, status, headers, body)
        };
        self.api.call(call, token, &classify).await
    }

    /// The configured folder's id.
    async fn folder_id(&self) -> Result<String, MailError> {
        self.folder_id
            .get_or_try_init(|| self.find_folder(&self.folder))
            .await
            .cloned()
    }

    /// A folder by well-known name, top-level display name or id.
    async fn find_folder(&self, name: &str) -> Result<String, MailError> {
        if WELL_KNOWN.contains(&name.to_ascii_lowercase().as_str()) {
            return Ok(name.to_ascii_lowercase());
        }
        let quoted = name.replace('\'', "''");
        let url = format!(
            "{}?$filter={}&$select=id,displayName",
            self.api.url("/mailFolders"),
            percent_encode(&format!("displayName eq '{quoted}'"), b"'")
        );
        let mut token = self.api.token().await?;
        let answer = self
            .call(Call::get("listing folders", url), &mut token)
            .await?;
        let found = serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|v| {
                v["value"].as_array()?.iter().find_map(|f| {
                    f["displayName"]
                        .as_str()
                        .is_some_and(|d| d.eq_ignore_ascii_case(name))
                        .then(|| f["id"].as_str().map(str::to_owned))
                        .flatten()
                })
            });
        if let Some(id) = found {
            return Ok(id);
        }
        // Perhaps an id: ask for it directly.
        let url = format!(
            "{}?$select=id",
            self.api
                .url(&format!("/mailFolders/{}", path_segment(name)))
        );
        match self
            .call(Call::get("reading a folder", url), &mut token)
            .await
        {
            Ok(_) => Ok(name.to_owned()),
            Err(MailError::NotFound(_)) => Err(MailError::NotFound(format!(
                "the Graph mailbox {} has no folder `{name}`; give a well-known name (inbox, archive, deleteditems, ...), \
                 a top-level folder's display name, or a folder id",
                self.api.user
            ))),
            Err(e) => Err(e),
        }
    }

    /// The message `id` as a delta page lists it.
    async fn item(&self, id: &str) -> Result<Item, MailError> {
        let url = format!(
            "{}?$select={SELECT}",
            self.api.url(&format!("/messages/{}", path_segment(id)))
        );
        let mut token = self.api.token().await?;
        let answer = self
            .call(Call::get("reading a message", url), &mut token)
            .await?;
        serde_json::from_slice(&answer.body).map_err(|e| {
            MailError::Transient(format!(
                "Graph's answer about message {id} of {} could not be read ({e})",
                self.api.user
            ))
        })
    }

    /// The message of `item` from `$value`, cut down as `cap` says.
    async fn raw(&self, item: Item, cap: Option<SizeCap>) -> Result<RawMessage, MailError> {
        let url = self
            .api
            .url(&format!("/messages/{}/$value", path_segment(&item.id)));
        let mut call = Call::get("reading a message's MIME ($value)", url);
        if let Some(SizeCap {
            max_size,
            oversize: Oversize::Skip,
        }) = cap
        {
            // Past the cap only the size counts: the rest is not kept.
            call.keep = Some(max_size.saturating_add(1));
        }
        let mut token = self.api.token().await?;
        let answer = self.call(call, &mut token).await?;
        let size = answer.size;
        let (data, content) = match cap {
            Some(c) if size > c.max_size => match c.oversize {
                Oversize::Skip => (Vec::new(), Content::Omitted),
                Oversize::WithoutAttachments => (
                    strip::without_attachments(
                        &answer.body,
                        usize::try_from(c.max_size).unwrap_or(usize::MAX),
                    ),
                    Content::WithoutAttachments,
                ),
            },
            _ => (answer.body, Content::Complete),
        };
        Ok(RawMessage {
            flags: item.flags(),
            id: item.id,
            size,
            data,
            content,
        })
    }

    /// Checks that every id names a message, so that a change touches all or none.
    async fn all_exist(&self, ids: &[String]) -> Result<(), MailError> {
        for (i, id) in ids.iter().enumerate() {
            if id.is_empty() || id.len() > 1024 {
                return Err(MailError::InvalidInput(FieldError {
                    field: format!("ids[{i}]"),
                    reason: "not an id this mailbox returned; pass back ids unchanged".into(),
                }));
            }
        }
        let found = futures_util::stream::iter(ids.to_vec())
            .map(|id| async move { self.item(&id).await })
            .buffer_unordered(CONCURRENT_PER_MAILBOX)
            .collect::<Vec<_>>()
            .await;
        found.into_iter().try_for_each(|r| r.map(drop))
    }

    /// Sends one request per id, at most four at a time.
    async fn each(
        &self,
        ids: &[String],
        what: &str,
        method: Method,
        path: impl Fn(&str) -> String,
        body: &Value,
    ) -> Result<(), MailError> {
        let token = self.api.token().await?;
        let body = body.to_string().into_bytes();
        let results = futures_util::stream::iter(ids.to_vec())
            .map(|id| {
                let mut token = token.clone();
                let call = Call::new(
                    what,
                    method.clone(),
                    self.api.url(&path(&path_segment(&id))),
                    "application/json",
                    body.clone(),
                );
                async move { self.call(call, &mut token).await }
            })
            .buffer_unordered(CONCURRENT_PER_MAILBOX)
            .collect::<Vec<_>>()
            .await;
        results.into_iter().try_for_each(|r| r.map(drop))
    }

    async fn change_flags(
        &self,
        ids: Vec<String>,
        add: Vec<Flag>,
        remove: Vec<Flag>,
    ) -> Result<(), MailError> {
        let mut patch = serde_json::Map::new();
        for (field, flags, on) in [("add", &add, true), ("remove", &remove, false)] {
            for flag in flags {
                match flag {
                    Flag::Seen => {
                        patch.insert("isRead".into(), json!(on));
                    }
                    Flag::Flagged => {
                        let status = if on { "flagged" } else { "notFlagged" };
                        patch.insert("flag".into(), json!({ "flagStatus": status }));
                    }
                    other => {
                        return Err(MailError::InvalidInput(FieldError {
                            field: field.into(),
                            reason: format!(
                                "a Graph mailbox keeps no {other:?} flag; use seen or flagged, and move-to or the trigger's delete to remove a message"
                            ),
                        }));
                    }
                }
            }
        }
        if patch.is_empty() || ids.is_empty() {
            return Ok(());
        }
        self.all_exist(&ids).await?;
        self.each(
            &ids,
            "changing flags (PATCH)",
            Method::PATCH,
            |id| format!("/messages/{id}"),
            &Value::Object(patch),
        )
        .await
    }

    async fn move_messages(&self, ids: Vec<String>, folder: String) -> Result<(), MailError> {
        if ids.is_empty() {
            return Ok(());
        }
        let destination = self.find_folder(&folder).await?;
        self.all_exist(&ids).await?;
        self.each(
            &ids,
            "moving messages",
            Method::POST,
            |id| format!("/messages/{id}/move"),
            &json!({ "destinationId": destination }),
        )
        .await
    }

    async fn delete_messages(&self, ids: Vec<String>) -> Result<(), MailError> {
        let results = futures_util::stream::iter(ids)
            .map(|id: String| async move {
                let mut token = self.api.token().await?;
                let call = Call::new(
                    "deleting a message",
                    Method::DELETE,
                    self.api.url(&format!("/messages/{}", path_segment(&id))),
                    "application/json",
                    Vec::new(),
                );
                match self.call(call, &mut token).await {
                    // Gone already: what the delete was for.
                    Ok(_) | Err(MailError::NotFound(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(CONCURRENT_PER_MAILBOX)
            .collect::<Vec<_>>()
            .await;
        results.into_iter().collect()
    }

    /// The folder's message count, for a catch-up from the start.
    async fn count(&self, after: Option<String>) -> Result<u64, MailError> {
        if after.is_some() {
            // A delta link cannot say how much follows it.
            return Ok(0);
        }
        let folder = self.folder_id().await?;
        let url = format!(
            "{}?$select=totalItemCount",
            self.api
                .url(&format!("/mailFolders/{}", path_segment(&folder)))
        );
        let mut token = self.api.token().await?;
        let answer = self
            .call(Call::get("reading the folder", url), &mut token)
            .await?;
        Ok(serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|v| v["totalItemCount"].as_u64())
            .unwrap_or_default())
    }
}

impl Backend for GraphMailbox {
    fn fetch_after(
        &self,
        after: Option<String>,
        limit: u32,
        // Graph's delta query takes no search: the plugin filters every message.
        _search: Search,
        cap: Option<SizeCap>,
    ) -> BoxFuture<'_, Result<Batch, MailError>> {
        Box::pin(self.read_after(after, limit, cap))
    }

    fn fetch(&self, id: String) -> BoxFuture<'_, Result<RawMessage, MailError>> {
        Box::pin(async move {
            let item = self.item(&id).await?;
            self.raw(item, None).await
        })
    }

    fn set_flags(
        &self,
        ids: Vec<String>,
        add: Vec<Flag>,
        remove: Vec<Flag>,
    ) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(self.change_flags(ids, add, remove))
    }

    fn move_to(&self, ids: Vec<String>, folder: String) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(self.move_messages(ids, folder))
    }
}

impl Watch for GraphMailbox {
    fn count_after(&self, after: Option<String>) -> BoxFuture<'_, Result<u64, MailError>> {
        Box::pin(self.count(after))
    }

    fn delete(&self, ids: Vec<String>) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(self.delete_messages(ids))
    }

    fn wait_for_change(&self, plan: WaitPlan) -> BoxFuture<'_, Result<Wake, MailError>> {
        Box::pin(async move {
            tokio::time::sleep(plan.poll_interval.max(Duration::from_secs(1))).await;
            Ok(Wake {
                mode: "poll",
                changed: false,
            })
        })
    }

    fn cursor_after(&self, _id: &str) -> Option<String> {
        // A delta link names no position inside it; messages met again after a crash are
        // recognised by their Message-ID.
        None
    }

    fn cursor_before(&self, id: &str) -> Option<String> {
        Some(Place::One { id: id.to_owned() }.write())
    }
}
