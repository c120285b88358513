//! Probes: a Test Mail (or the validation mail of Validate and Save) that a process asks
//! a node of the account's data center to send, because only there is the account's
//! server reachable. The asker writes the probe and waits; a node of that data center
//! claims it, sends, and writes the report back. Page settings travel with their secrets
//! sealed, and the secrets are erased once the probe is claimed.

use super::db::Dialect;
use super::values::{args, get};
use super::{Result, Store};

/// A probe, as the node that runs it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeJob {
    pub id: i64,
    pub account: String,
    pub recipient: String,
    /// The settings page's form (JSON), when the test is of unsaved settings.
    pub settings: Option<String>,
    /// Their secrets, sealed.
    pub secrets: Option<String>,
}

impl Store {
    /// Asks a node of `data_center` to run a probe; its id.
    pub fn put_probe(
        &self,
        data_center: &str,
        account: &str,
        recipient: &str,
        page: Option<(&str, &str)>,
    ) -> Result<i64> {
        let (settings, secrets) = page.unzip();
        self.conn
            .row(
                "INSERT INTO probes (data_center, account, recipient, settings, secrets, status,
                    created_at)
                 VALUES ($1, $2, $3, $4, $5, 'queued', $6) RETURNING id",
                args![
                    data_center,
                    account,
                    recipient,
                    settings,
                    secrets,
                    crate::unix_now()
                ],
                |r| get::<i64>(r, 0),
            )
            .map(Option::unwrap_or_default)
    }

    /// Claims the oldest waiting probe of `data_center` for `node`, erasing its secrets
    /// from the store as it hands them over. Probes older than `max_age_secs` are left:
    /// their asker has stopped waiting.
    pub fn claim_probe(
        &self,
        data_center: &str,
        node: &str,
        max_age_secs: i64,
    ) -> Result<Option<ProbeJob>> {
        let skip_locked = match self.conn.db.dialect {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let now = crate::unix_now();
        let name = self.conn.name.clone();
        let (data_center, node) = (data_center.to_owned(), node.to_owned());
        // The secrets are read and erased in one transaction; the update counts only if
        // the probe was still waiting, so two nodes never both take it (PostgreSQL skips
        // the locked row; SQLite serialises the writers).
        self.conn.transaction(move |db, mut tx| async move {
            let err = |source| super::StoreError::Sql {
                path: name.clone(),
                source,
            };
            let job = super::values::bind(
                sqlx::query(db.sql(&format!(
                    "SELECT id, account, recipient, settings, secrets FROM probes
                     WHERE data_center = $1 AND status = 'queued' AND created_at >= $2
                     ORDER BY id LIMIT 1 {skip_locked}"
                ))),
                args![&data_center, now - max_age_secs],
            )
            .fetch_optional(&mut *tx)
            .await
            .map_err(err)?;
            let Some(row) = job else {
                return Ok((None, tx));
            };
            let job = ProbeJob {
                id: get(&row, 0).map_err(err)?,
                account: get(&row, 1).map_err(err)?,
                recipient: get(&row, 2).map_err(err)?,
                settings: get(&row, 3).map_err(err)?,
                secrets: get(&row, 4).map_err(err)?,
            };
            let taken = super::values::bind(
                sqlx::query(db.sql(
                    "UPDATE probes SET status = 'running', node = $2, claimed_at = $3,
                        secrets = NULL WHERE id = $1 AND status = 'queued'",
                )),
                args![job.id, &node, now],
            )
            .execute(&mut *tx)
            .await
            .map_err(err)?
            .rows_affected();
            Ok(((taken == 1).then_some(job), tx))
        })
    }

    /// Records probe `id`'s report (JSON).
    pub fn finish_probe(&self, id: i64, report: &str) -> Result<()> {
        self.conn
            .exec(
                "UPDATE probes SET status = 'done', report = $2 WHERE id = $1",
                args![id, report],
            )
            .map(drop)
    }

    /// Probe `id`'s state (`queued`, `running`, `done`, `cancelled`) and report.
    pub fn probe(&self, id: i64) -> Result<Option<(String, Option<String>)>> {
        self.conn.row(
            "SELECT status, report FROM probes WHERE id = $1",
            args![id],
            |r| Ok((get(r, 0)?, get(r, 1)?)),
        )
    }

    /// Withdraws probe `id` if no node has claimed it yet; whether it was withdrawn.
    pub fn cancel_probe(&self, id: i64) -> Result<bool> {
        self.conn
            .exec(
                "UPDATE probes SET status = 'cancelled', secrets = NULL
                 WHERE id = $1 AND status = 'queued'",
                args![id],
            )
            .map(|n| n == 1)
    }

    /// Forgets probes older than `secs`.
    pub fn prune_probes(&self, secs: i64) -> Result<u64> {
        self.conn.exec(
            "DELETE FROM probes WHERE created_at < $1",
            args![crate::unix_now() - secs],
        )
    }
}
