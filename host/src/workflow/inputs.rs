//! Step inputs from YAML into the WIT types, and action outputs into JSON for later steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Action;
use crate::bindings::actions::{Filter, MailboxPage, Receipt};
use crate::bindings::transport::DeliveryStatus;
use crate::bindings::types::{
    Address, Attachment, AttachmentRef, Header, OutgoingMessage, ReceivedMessage,
};
use crate::config::parse_address;

type FieldResult<T> = Result<T, (String, String)>;

/// `send-mail`'s inputs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMailInput {
    pub account: String,
    pub message: MessageInput,
}

/// `read-mailbox`'s inputs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadMailboxInput {
    pub account: String,
    #[serde(default)]
    pub filter: FilterInput,
    #[serde(default = "default_limit")]
    pub limit: u32,
}

fn default_limit() -> u32 {
    100
}

/// A message as a workflow writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    #[serde(default, alias = "from")]
    sender: Option<AddressInput>,
    #[serde(default)]
    to: AddressList,
    #[serde(default)]
    cc: AddressList,
    #[serde(default)]
    bcc: AddressList,
    #[serde(default)]
    reply_to: AddressList,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    attachments: Vec<AttachmentInput>,
    /// Received messages (as `read-mailbox` outputs them) or `{account, id, index}`.
    #[serde(default)]
    forward_attachments: Vec<ForwardInput>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AddressInput {
    Text(String),
    Full { name: Option<String>, email: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum AddressList {
    #[default]
    None,
    One(AddressInput),
    Many(Vec<AddressInput>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachmentInput {
    name: String,
    #[serde(default)]
    content_type: Option<String>,
    /// A file, relative to the workflow's folder.
    #[serde(default)]
    path: Option<PathBuf>,
    /// Text content, as UTF-8.
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    content_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ForwardInput {
    account: String,
    /// The message's id in the mailbox, as `read-mailbox` gave it.
    id: String,
    #[serde(default)]
    index: Option<u32>,
}

/// The `read-mailbox` filter as a workflow writes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterInput {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    subject_contains: Option<String>,
    #[serde(default)]
    has_attachment: Option<bool>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    unseen: Option<bool>,
}

/// Deserializes `value`, naming the exact field on failure.
pub fn parse<T: DeserializeOwned>(value: &Value, prefix: &str) -> FieldResult<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            prefix.to_owned()
        } else {
            format!("{prefix}.{path}")
        };
        (field, e.into_inner().to_string())
    })
}

/// Checks the parts of `with` that are known before running: its keys.
pub fn check_shape(action: Action, with: &Value) -> FieldResult<()> {
    let Some(map) = with.as_object() else {
        return Err((
            "with".into(),
            "must be a mapping of the action's inputs".into(),
        ));
    };
    let allowed: &[&str] = match action {
        Action::SendMail => &["account", "message"],
        Action::ReadMailbox => &["account", "filter", "limit"],
    };
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err((
                format!("with.{key}"),
                format!("unknown input; this action takes {}", allowed.join(", ")),
            ));
        }
    }
    if !map.contains_key("account") {
        return Err((
            "with.account".into(),
            "is missing; name the account to use".into(),
        ));
    }
    if action == Action::SendMail && !map.contains_key("message") {
        return Err(("with.message".into(), "is missing".into()));
    }
    Ok(())
}

/// Builds the WIT filter.
pub fn filter(f: &FilterInput) -> FieldResult<Filter> {
    if let Some(since) = &f.since
        && since.trim().is_empty()
    {
        return Err(("since".into(), "is empty".into()));
    }
    Ok(Filter {
        sender_contains: f.from.clone(),
        subject_contains: f.subject_contains.clone(),
        has_attachment: f.has_attachment,
        since: f.since.clone(),
        unseen: f.unseen,
    })
}

fn address(a: &AddressInput, field: &str) -> FieldResult<Address> {
    match a {
        AddressInput::Text(s) => parse_address(s).map_err(|e| (field.to_owned(), e.to_string())),
        AddressInput::Full { name, email } => Ok(Address {
            name: name.clone(),
            email: email.clone(),
        }),
    }
}

fn addresses(list: &AddressList, field: &str) -> FieldResult<Vec<Address>> {
    match list {
        AddressList::None => Ok(Vec::new()),
        AddressList::One(a) => Ok(vec![address(a, &format!("{field}[0]"))?]),
        AddressList::Many(v) => v
            .iter()
            .enumerate()
            .map(|(i, a)| address(a, &format!("{field}[{i}]")))
            .collect(),
    }
}

/// Why a step's message could not be built.
#[derive(Debug)]
pub struct MessageError {
    pub field: String,
    pub reason: String,
    /// True when reading a file failed: the host's own I/O, which a later try may pass.
    pub io: bool,
}

impl From<(String, String)> for MessageError {
    fn from((field, reason): (String, String)) -> Self {
        Self {
            field,
            reason,
            io: false,
        }
    }
}

/// Builds the WIT message; attachment paths are read relative to `dir`.
pub fn message(m: &MessageInput, dir: &Path) -> Result<OutgoingMessage, MessageError> {
    let mut attachments = Vec::with_capacity(m.attachments.len());
    for (i, a) in m.attachments.iter().enumerate() {
        let field = format!("with.message.attachments[{i}]");
        let data = match (&a.path, &a.text) {
            (Some(path), None) => std::fs::read(dir.join(path)).map_err(|e| MessageError {
                field: format!("{field}.path"),
                reason: format!("cannot read {}: {e}", dir.join(path).display()),
                io: true,
            })?,
            (None, Some(text)) => text.clone().into_bytes(),
            _ => return Err((field, "give exactly one of `path` or `text`".into()).into()),
        };
        attachments.push(Attachment {
            name: a.name.clone(),
            content_type: a
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
            data,
            content_id: a.content_id.clone(),
        });
    }
    Ok(OutgoingMessage {
        sender: m
            .sender
            .as_ref()
            .map(|a| address(a, "with.message.sender"))
            .transpose()?,
        to: addresses(&m.to, "with.message.to")?,
        cc: addresses(&m.cc, "with.message.cc")?,
        bcc: addresses(&m.bcc, "with.message.bcc")?,
        reply_to: addresses(&m.reply_to, "with.message.reply_to")?,
        subject: m.subject.clone(),
        text: m.text.clone(),
        html: m.html.clone(),
        attachments,
        forward_attachments: m
            .forward_attachments
            .iter()
            .map(|f| AttachmentRef {
                account: f.account.clone(),
                message: f.id.clone(),
                index: f.index,
            })
            .collect(),
        extra_headers: m
            .headers
            .iter()
            .map(|(name, value)| Header {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    })
}

fn address_json(a: &Address) -> Value {
    json!({ "name": a.name, "email": a.email })
}

/// A received message as later steps see it.
pub fn received_json(account: &str, m: &ReceivedMessage) -> Value {
    json!({
        "account": account,
        "id": m.id,
        "message_id": m.message_id,
        "from": m.sender.as_ref().map(address_json),
        "to": m.to.iter().map(address_json).collect::<Vec<_>>(),
        "cc": m.cc.iter().map(address_json).collect::<Vec<_>>(),
        "date": m.date,
        "subject": m.subject,
        "text": m.text,
        "html": m.html,
        "attachments": m.attachments.iter().map(|a| json!({
            "index": a.index, "name": a.name, "content_type": a.content_type, "size": a.size,
        })).collect::<Vec<_>>(),
        "flags": m.flags,
        "size": m.size,
        "attachments_omitted": m.attachments_omitted,
    })
}

/// A `read-mailbox` result as later steps see it.
pub fn page_json(account: &str, p: &MailboxPage) -> Value {
    json!({
        "account": account,
        "messages": p.messages.iter().map(|m| received_json(account, m)).collect::<Vec<_>>(),
        "count": p.messages.len(),
        "skipped": p.skipped.iter().map(|s| json!({"id": s.id, "reason": s.reason})).collect::<Vec<_>>(),
        "scanned": p.scanned,
        "next_cursor": p.next_cursor,
        "restarted": p.restarted,
        "more": p.more,
    })
}

/// What one triggered run sees as `trigger`: the messages it covers.
pub fn unit_json(account: &str, messages: &[ReceivedMessage]) -> Value {
    json!({
        "account": account,
        "messages": messages.iter().map(|m| received_json(account, m)).collect::<Vec<_>>(),
        "count": messages.len(),
        "skipped": [],
    })
}

/// A `send-mail` receipt as later steps see it.
pub fn receipt_json(r: &Receipt) -> Value {
    json!({
        "message_id": r.message_id,
        "accepted": r.accepted,
        "transport": r.transport,
        "status": match r.status { DeliveryStatus::Queued => "queued", DeliveryStatus::Delivered => "delivered" },
        "reference": r.reference,
        "size": r.size,
    })
}
