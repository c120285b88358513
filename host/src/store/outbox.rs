//! The durable outbox: a message of an account with `delivery = "queued"` is stored here
//! once, whole, and a delivery worker of the account's data center claims it with a lease
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so workers of several nodes never take the
//! same message; SQLite serialises its writers). A lease that runs out (its node died)
//! makes the message claimable again, as river and graphile-worker do.

use super::db::Dialect;
use super::values::{args, get};
use super::{Result, Store};

/// A message waiting in, or done with, the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxJob {
    pub id: i64,
    pub account: String,
    pub data_center: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub message: Vec<u8>,
    pub attempts: u32,
    pub created_at: i64,
}

/// How many messages of a data center are in one state, and the oldest one's age.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboxCount {
    pub data_center: String,
    pub status: String,
    pub count: u64,
    pub oldest_created_at: i64,
    /// The bytes of the messages held (none once sent).
    pub bytes: u64,
}

/// Where one message stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxState {
    /// `queued`, `sending`, `sent` or `failed`.
    pub status: String,
    /// The node that sent it.
    pub node: Option<String>,
    /// The server's reply, or the last error.
    pub detail: Option<String>,
    pub attempts: u32,
    /// What the server said it did with a sent message: `delivered` or `queued`.
    pub server_status: Option<String>,
    /// The kind of the last failure (`transient`, `auth-failed`, ...).
    pub error_kind: Option<String>,
    /// The data center it leaves from.
    pub data_center: String,
}

/// A message that failed for good, with why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboxFailure {
    pub id: i64,
    pub account: String,
    pub message_id: Option<String>,
    pub attempts: u32,
    pub error: String,
}

impl Store {
    /// Stores a message for delivery from `data_center`; returns its outbox id.
    pub fn enqueue(
        &self,
        account: &str,
        data_center: &str,
        sender: &str,
        recipients: &[String],
        message: &[u8],
        message_id: Option<&str>,
    ) -> Result<i64> {
        let recipients = serde_json::to_string(recipients).unwrap_or_else(|_| "[]".into());
        let now = crate::unix_now();
        self.conn
            .row(
                "INSERT INTO outbox (account, data_center, sender, recipients, message, message_id,
                    status, attempts, created_at, next_attempt)
                 VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7, $7) RETURNING id",
                args![
                    account,
                    data_center,
                    sender,
                    &recipients,
                    &message.to_vec(),
                    message_id,
                    now
                ],
                |r| get::<i64>(r, 0),
            )
            .map(Option::unwrap_or_default)
    }

    /// Claims the oldest message of `data_center` that is due for `owner`, a worker of
    /// node `node`, until `lease_until`, counting the attempt. A message whose lease ran
    /// out is due again, and so is one leased by a node that has since died (three
    /// heartbeats missed) or started again under its name, so that a killed node's
    /// messages move on within seconds rather than at the end of their lease.
    pub fn claim_outbox(
        &self,
        data_center: &str,
        (owner, node): (&str, &str),
        lease_until: i64,
    ) -> Result<Option<OutboxJob>> {
        let skip_locked = match self.conn.db.dialect {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        self.conn.row(
            &format!(
                "UPDATE outbox SET status = 'sending', lease_owner = $2, lease_until = $3,
                    lease_node = $5, leased_at = $4, attempts = attempts + 1
                 WHERE id = (SELECT id FROM outbox WHERE data_center = $1
                    AND ((status = 'queued' AND next_attempt <= $4)
                      OR (status = 'sending' AND (lease_until < $4 OR EXISTS (
                        SELECT 1 FROM nodes n WHERE n.name = outbox.lease_node
                          AND (n.started_at > outbox.leased_at OR n.stopped_at IS NOT NULL
                            OR n.heartbeat_at < $4 - 3 * n.heartbeat_secs)))))
                    ORDER BY id LIMIT 1 {skip_locked})
                 RETURNING id, account, data_center, sender, recipients, message, attempts,
                    created_at"
            ),
            args![data_center, owner, lease_until, crate::unix_now(), node],
            |r| {
                Ok(OutboxJob {
                    id: get(r, 0)?,
                    account: get(r, 1)?,
                    data_center: get(r, 2)?,
                    sender: get(r, 3)?,
                    recipients: serde_json::from_str(&get::<String>(r, 4)?).unwrap_or_default(),
                    message: get(r, 5)?,
                    attempts: get::<i64>(r, 6)? as u32,
                    created_at: get(r, 7)?,
                })
            },
        )
    }

    /// Records that `owner` (node `node`) delivered message `id`, with the server's reply
    /// and what it said it did (`delivered` or `queued`), and drops its bytes: the record
    /// stays, the message is the server's now. `false` when `owner` no longer held the
    /// lease.
    pub fn outbox_sent(
        &self,
        id: i64,
        owner: &str,
        node: &str,
        reply: &str,
        server_status: &str,
    ) -> Result<bool> {
        self.conn
            .exec(
                "UPDATE outbox SET status = 'sent', reply = $3, node = $4, sent_at = $5,
                    server_status = $6, lease_owner = NULL, lease_until = NULL,
                    last_error = NULL, error_kind = NULL, message = $7
                 WHERE id = $1 AND lease_owner = $2 AND status = 'sending'",
                args![
                    id,
                    owner,
                    reply,
                    node,
                    crate::unix_now(),
                    server_status,
                    &Vec::<u8>::new()
                ],
            )
            .map(|n| n == 1)
    }

    /// Puts message `id` back to wait until `next_attempt`, or (`next_attempt` `None`)
    /// marks it failed for good; `error` says why.
    pub fn outbox_not_sent(
        &self,
        id: i64,
        owner: &str,
        (kind, error): (&str, &str),
        next_attempt: Option<i64>,
    ) -> Result<bool> {
        let (status, next) = match next_attempt {
            Some(at) => ("queued", at),
            None => ("failed", 0),
        };
        self.conn
            .exec(
                "UPDATE outbox SET status = $3, last_error = $4, next_attempt = $5,
                    error_kind = $6, lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_owner = $2 AND status = 'sending'",
                args![id, owner, status, error, next, kind],
            )
            .map(|n| n == 1)
    }

    /// The outbox by data center and state, with each group's oldest message.
    pub fn outbox_counts(&self) -> Result<Vec<OutboxCount>> {
        self.conn.rows(
            "SELECT data_center, status, COUNT(*), MIN(created_at),
                CAST(COALESCE(SUM(LENGTH(message)), 0) AS BIGINT)
             FROM outbox GROUP BY data_center, status ORDER BY data_center, status",
            args![],
            |r| {
                Ok(OutboxCount {
                    data_center: get(r, 0)?,
                    status: get(r, 1)?,
                    count: get::<i64>(r, 2)?.max(0) as u64,
                    oldest_created_at: get(r, 3)?,
                    bytes: get::<i64>(r, 4)?.max(0) as u64,
                })
            },
        )
    }

    /// The latest messages that failed for good, newest first.
    pub fn outbox_failures(&self, limit: u32) -> Result<Vec<OutboxFailure>> {
        self.conn.rows(
            "SELECT id, account, message_id, attempts, COALESCE(last_error, '') FROM outbox
             WHERE status = 'failed' ORDER BY id DESC LIMIT $1",
            args![limit],
            |r| {
                Ok(OutboxFailure {
                    id: get(r, 0)?,
                    account: get(r, 1)?,
                    message_id: get(r, 2)?,
                    attempts: get::<i64>(r, 3)? as u32,
                    error: get(r, 4)?,
                })
            },
        )
    }

    /// Forgets the records of messages sent more than `days` ago; how many.
    pub fn prune_outbox(&self, days: u64) -> Result<u64> {
        self.conn.exec(
            "DELETE FROM outbox WHERE status = 'sent' AND sent_at < $1",
            args![crate::unix_now() - (days * 86_400) as i64],
        )
    }

    /// The messages that node `node` is sending now (leased and not yet recorded): their
    /// ids and Message-IDs. After a `kill -9` they are the ones that may be sent twice.
    pub fn outbox_sending(&self, node: &str) -> Result<Vec<(i64, Option<String>)>> {
        self.conn.rows(
            "SELECT id, message_id FROM outbox WHERE status = 'sending' AND lease_node = $1
             ORDER BY id",
            args![node],
            |r| Ok((get(r, 0)?, get(r, 1)?)),
        )
    }

    /// A message's state, its node and the server's reply or the error: for a step that
    /// waits for the outcome, and for tests.
    pub fn outbox_state(&self, id: i64) -> Result<Option<OutboxState>> {
        self.conn.row(
            "SELECT status, node, COALESCE(reply, last_error), attempts, server_status,
                error_kind, data_center
             FROM outbox WHERE id = $1",
            args![id],
            |r| {
                Ok(OutboxState {
                    status: get(r, 0)?,
                    node: get(r, 1)?,
                    detail: get(r, 2)?,
                    attempts: get::<i64>(r, 3)? as u32,
                    server_status: get(r, 4)?,
                    error_kind: get(r, 5)?,
                    data_center: get(r, 6)?,
                })
            },
        )
    }
}
