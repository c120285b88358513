//! The settings page's records: users (argon2id hashes only), sessions (the hash of the
//! cookie's token, never the token), and the accounts made on the page (secrets sealed).

use sqlx::any::AnyRow;

use super::values::{args, get};
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

fn user(r: &AnyRow, at: usize) -> std::result::Result<UserRow, sqlx::Error> {
    Ok(UserRow {
        id: get(r, at)?,
        login: get(r, at + 1)?,
        email: get(r, at + 2)?,
        name: get(r, at + 3)?,
        password_hash: get(r, at + 4)?,
        created_at: get(r, at + 5)?,
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
        self.conn
            .exec(
                "INSERT INTO users (login, email, name, password_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (login) DO NOTHING",
                args![login, email, name, password_hash, crate::unix_now()],
            )
            .map(|n| n == 1)
    }

    /// Every user, by login.
    pub fn users(&self) -> Result<Vec<UserRow>> {
        self.conn.rows(
            &format!("SELECT {USER_COLUMNS} FROM users ORDER BY login"),
            args![],
            |r| user(r, 0),
        )
    }

    /// The user who logs in as `login`.
    pub fn user(&self, login: &str) -> Result<Option<UserRow>> {
        self.conn.row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE login = $1"),
            args![login],
            |r| user(r, 0),
        )
    }

    /// Removes the user who logs in as `login`, and their sessions; `false` if none.
    pub fn remove_user(&self, login: &str) -> Result<bool> {
        self.conn.exec(
            "DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE login = $1)",
            args![login],
        )?;
        self.conn
            .exec("DELETE FROM users WHERE login = $1", args![login])
            .map(|n| n == 1)
    }

    /// Records a new session under the hash of its token.
    pub fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        csrf: &str,
        expires_at: i64,
    ) -> Result<()> {
        // Expired sessions go whenever a new one comes.
        self.conn.exec(
            "DELETE FROM sessions WHERE expires_at <= $1",
            args![crate::unix_now()],
        )?;
        self.conn
            .exec(
                "INSERT INTO sessions (token_hash, user_id, csrf, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                args![token_hash, user_id, csrf, crate::unix_now(), expires_at],
            )
            .map(drop)
    }

    /// The live session whose token hashes to `token_hash`, with its user.
    pub fn session(&self, token_hash: &str) -> Result<Option<SessionRow>> {
        self.conn.row(
            "SELECT s.csrf, s.expires_at, u.id, u.login, u.email, u.name, u.password_hash,
                u.created_at
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.expires_at > $2",
            args![token_hash, crate::unix_now()],
            |r| {
                Ok(SessionRow {
                    csrf: get(r, 0)?,
                    expires_at: get(r, 1)?,
                    user: user(r, 2)?,
                })
            },
        )
    }

    /// Ends a session.
    pub fn end_session(&self, token_hash: &str) -> Result<()> {
        self.conn
            .exec(
                "DELETE FROM sessions WHERE token_hash = $1",
                args![token_hash],
            )
            .map(drop)
    }

    /// Writes an account of the settings page.
    pub fn put_page_account(&self, row: &PageAccountRow) -> Result<()> {
        self.conn
            .exec(
                "INSERT INTO page_accounts (name, settings, secrets, state, updated_by, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (name) DO UPDATE SET settings = excluded.settings,
                   secrets = excluded.secrets, state = excluded.state,
                   updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                args![
                    &row.name,
                    &row.settings,
                    &row.secrets,
                    &row.state,
                    &row.updated_by,
                    row.updated_at
                ],
            )
            .map(drop)
    }

    /// Every account of the settings page, by name.
    pub fn page_accounts(&self) -> Result<Vec<PageAccountRow>> {
        self.conn.rows(
            "SELECT name, settings, secrets, state, updated_by, updated_at
             FROM page_accounts ORDER BY name",
            args![],
            |r| {
                Ok(PageAccountRow {
                    name: get(r, 0)?,
                    settings: get(r, 1)?,
                    secrets: get(r, 2)?,
                    state: get(r, 3)?,
                    updated_by: get(r, 4)?,
                    updated_at: get(r, 5)?,
                })
            },
        )
    }
}
