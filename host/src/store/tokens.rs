//! Sealed OAuth2 tokens, one row per account, written with compare-and-swap.

use super::db::Dialect;
use super::values::{args, get};
use super::{Result, Store};

/// An account's OAuth2 tokens as stored: the tokens sealed, the rest plain.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub version: i64,
    pub access_token: Vec<u8>,
    pub refresh_token: Option<Vec<u8>>,
    pub expires_at: i64,
    pub scope: String,
    pub username: String,
    /// Why the account needs authorizing again, when it does.
    pub needs_reauth: Option<String>,
    pub refreshed_at: i64,
}

impl Store {
    /// Whether any sealed secrets are stored, OAuth2 tokens or the settings page's
    /// passwords (then the key that sealed them is needed).
    pub fn has_sealed_tokens(&self) -> Result<bool> {
        self.conn
            .row(
                "SELECT CAST(CASE WHEN EXISTS (SELECT 1 FROM oauth_tokens)
                    OR EXISTS (SELECT 1 FROM page_accounts WHERE secrets IS NOT NULL)
                    THEN 1 ELSE 0 END AS BIGINT)",
                args![],
                |r| get::<i64>(r, 0),
            )
            .map(|v| v == Some(1))
    }

    /// A value that changes whenever any account's tokens are written: a new
    /// authorization, a refresh, or a mark that one is needed. A paused trigger watches it
    /// to resume as soon as credentials change, in this process or another.
    pub fn credentials_fingerprint(&self) -> Result<String> {
        self.conn
            .row(self.fingerprint_sql(), args![], |r| get::<String>(r, 0))
            .map(Option::unwrap_or_default)
    }

    /// The query of [`Store::credentials_fingerprint`]: one row, one text column.
    pub(super) fn fingerprint_sql(&self) -> &'static str {
        match self.conn.db.dialect {
            Dialect::Sqlite => {
                "SELECT COALESCE(group_concat(account || ':' || version, ','), '')
                 FROM (SELECT account, version FROM oauth_tokens ORDER BY account)"
            }
            Dialect::Postgres => {
                "SELECT COALESCE(string_agg(account || ':' || version, ',' ORDER BY account), '')
                 FROM oauth_tokens"
            }
        }
    }

    /// The sealed OAuth2 tokens of `account`.
    pub fn tokens(&self, account: &str) -> Result<Option<TokenRow>> {
        self.conn.row(
            "SELECT version, access_token, refresh_token, expires_at, scope, username, needs_reauth, refreshed_at
             FROM oauth_tokens WHERE account = $1",
            args![account],
            |r| {
                Ok(TokenRow {
                    version: get(r, 0)?,
                    access_token: get(r, 1)?,
                    refresh_token: get(r, 2)?,
                    expires_at: get(r, 3)?,
                    scope: get(r, 4)?,
                    username: get(r, 5)?,
                    needs_reauth: get(r, 6)?,
                    refreshed_at: get(r, 7)?,
                })
            },
        )
    }

    /// Writes `row` for `account` if the stored version is still `expected` (`None`: a new
    /// authorization, which replaces whatever is there). Returns whether it was written.
    pub fn put_tokens(&self, account: &str, expected: Option<i64>, row: &TokenRow) -> Result<bool> {
        let changed = match expected {
            Some(version) => self.conn.exec(
                "UPDATE oauth_tokens SET version = $3, access_token = $4, refresh_token = $5, expires_at = $6,
                   scope = $7, username = $8, needs_reauth = $9, refreshed_at = $10, refreshing_until = NULL
                 WHERE account = $1 AND version = $2",
                args![
                    account, version, row.version, &row.access_token, &row.refresh_token, row.expires_at,
                    &row.scope, &row.username, &row.needs_reauth, row.refreshed_at
                ],
            ),
            None => self.conn.exec(
                "INSERT INTO oauth_tokens (account, version, access_token, refresh_token, expires_at, scope, username,
                   needs_reauth, refreshed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (account) DO UPDATE SET version = excluded.version, access_token = excluded.access_token,
                   refresh_token = excluded.refresh_token, expires_at = excluded.expires_at, scope = excluded.scope,
                   username = excluded.username, needs_reauth = excluded.needs_reauth,
                   refreshed_at = excluded.refreshed_at, refreshing_until = NULL",
                args![
                    account, row.version, &row.access_token, &row.refresh_token, row.expires_at, &row.scope,
                    &row.username, &row.needs_reauth, row.refreshed_at
                ],
            ),
        }?;
        Ok(changed == 1)
    }

    /// Every account's access-token expiry, and whether it needs authorizing again.
    pub fn token_expiries(&self) -> Result<Vec<(String, i64, bool)>> {
        self.conn.rows(
            "SELECT account, expires_at, needs_reauth FROM oauth_tokens ORDER BY account",
            args![],
            |r| {
                Ok((
                    get(r, 0)?,
                    get(r, 1)?,
                    get::<Option<String>>(r, 2)?.is_some(),
                ))
            },
        )
    }

    /// Claims the refresh of `account`'s tokens at `version` until `until`, for this
    /// process alone among all that share the store; `false` while another holds an
    /// unexpired claim, or when the version moved on.
    pub fn claim_refresh(&self, account: &str, version: i64, until: i64) -> Result<bool> {
        self.conn
            .exec(
                "UPDATE oauth_tokens SET refreshing_until = $3
                 WHERE account = $1 AND version = $2
                   AND (refreshing_until IS NULL OR refreshing_until < $4)",
                args![account, version, until, crate::unix_now()],
            )
            .map(|n| n == 1)
    }

    /// Gives up a refresh claim that did not end in new tokens.
    pub fn release_refresh(&self, account: &str) -> Result<()> {
        self.conn
            .exec(
                "UPDATE oauth_tokens SET refreshing_until = NULL WHERE account = $1",
                args![account],
            )
            .map(drop)
    }
}
