//! The settings page's records: users (argon2id hashes only), sessions (the hash of the
//! cookie's token, never the token), and the accounts made on the page (secrets sealed).

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};

/// A user of the settings page.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    /// What the user logs in with: the email address, or the name of a user without one.
    pub login: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// The argon2id hash in PHC form.
    pub password_hash: String,
    pub created_at: i64,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("login", &self.login)
            .field("email", &self.email)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A logged-in session.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub user: UserRow,
    /// The token every form of this session carries.
    pub csrf: String,
    pub expires_at: i64,
}

/// An account made or edited on the settings page.
#[derive(Clone)]
pub struct PageAccountRow {
    pub name: String,
    /// Everything but the secrets, as JSON.
    pub settings: String,
    /// The secrets, sealed.
    pub secrets: Option<Vec<u8>>,
    /// `active`, or `pending` while an authorization is under way.
    pub state: String,
    pub updated_by: String,
    pub updated_at: i64,
}

impl std::fmt::Debug for PageAccountRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageAccountRow")
            .field("name", &self.name)
            .field("state", &self.state)
            .field("updated_by", &self.updated_by)
            .finish_non_exhaustive()
    }
}

const USER_COLUMNS: &str = "id, login, email, name, password_hash, created_at";

fn user(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(at)?,
        login: r.get(at + 1)?,
        email: r.get(at + 2)?,
        name: r.get(at + 3)?,
        password_hash: r.get(at + 4)?,
        created_at: r.get(at + 5)?,
    })
}

impl Store {
    /// Adds a user; `false` when the login is taken.
    pub fn add_user(
        &self,
        login: &str,
        email: Option<&str>,
        name: Option<&str>,
        password_hash: &str,
    ) -> Result<bool> {
        self.conn()?
            .execute(
                "INSERT INTO users (login, email, name, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (login) DO NOTHING",
                params![login, email, name, password_hash, crate::unix_now()],
            )
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// Every user, by login.
    pub fn users(&self) -> Result<Vec<UserRow>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY login"))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| user(r, 0))
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// The user who logs in as `login`.
    pub fn user(&self, login: &str) -> Result<Option<UserRow>> {
        self.conn()?
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE login = ?1"),
                [login],
                |r| user(r, 0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Removes the user who logs in as `login`, and their sessions; `false` if none.
    pub fn remove_user(&self, login: &str) -> Result<bool> {
        let conn = self.conn()?;
        conn.execute(
            "DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE login = ?1)",
            [login],
        )
        .map_err(|e| self.err(e))?;
        conn.execute("DELETE FROM users WHERE login = ?1", [login])
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// Records a new session under the hash of its token.
    pub fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        csrf: &str,
        expires_at: i64,
    ) -> Result<()> {
        let conn = self.conn()?;
        // Expired sessions go whenever a new one comes.
        conn.execute(
            "DELETE FROM sessions WHERE expires_at <= ?1",
            [crate::unix_now()],
        )
        .map_err(|e| self.err(e))?;
        conn.execute(
            "INSERT INTO sessions (token_hash, user_id, csrf, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token_hash, user_id, csrf, crate::unix_now(), expires_at],
        )
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// The live session whose token hashes to `token_hash`, with its user.
    pub fn session(&self, token_hash: &str) -> Result<Option<SessionRow>> {
        self.conn()?
            .query_row(
                "SELECT s.csrf, s.expires_at, u.id, u.login, u.email, u.name, u.password_hash,
                    u.created_at
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.token_hash = ?1 AND s.expires_at > ?2",
                params![token_hash, crate::unix_now()],
                |r| {
                    Ok(SessionRow {
                        csrf: r.get(0)?,
                        expires_at: r.get(1)?,
                        user: user(r, 2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Ends a session.
    pub fn end_session(&self, token_hash: &str) -> Result<()> {
        self.conn()?
            .execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Writes an account of the settings page.
    pub fn put_page_account(&self, row: &PageAccountRow) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT INTO page_accounts (name, settings, secrets, state, updated_by, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (name) DO UPDATE SET settings = excluded.settings,
                   secrets = excluded.secrets, state = excluded.state,
                   updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                params![
                    row.name,
                    row.settings,
                    row.secrets,
                    row.state,
                    row.updated_by,
                    row.updated_at
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every account of the settings page, by name.
    pub fn page_accounts(&self) -> Result<Vec<PageAccountRow>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT name, settings, secrets, state, updated_by, updated_at
                 FROM page_accounts ORDER BY name",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PageAccountRow {
                    name: r.get(0)?,
                    settings: r.get(1)?,
                    secrets: r.get(2)?,
                    state: r.get(3)?,
                    updated_by: r.get(4)?,
                    updated_at: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }
}
