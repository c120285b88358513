//! The database under the store: SQLite (a file, the embedded default) or PostgreSQL (a
//! URL, shared by several nodes), through sqlx's `Any` driver. Queries are written once,
//! with `$1`-style parameters; the few places where the two dialects differ are spelled
//! per dialect here. The store's calls stay synchronous for its callers: the calling
//! thread drives each query with the store's own runtime, whose thread keeps the pools'
//! timers and background work.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;

use super::batch::{GroupCommit, Written};
use super::values::{Arg, bind};
use super::{Result, StoreError, migrations};

/// Which database a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// The pools and their dialect. On SQLite, writes go through one connection of their
/// own: the process's writers queue for it in order instead of meeting on SQLite's write
/// lock, whose busy handler sleeps for growing spans (up to 100 ms) and leaves the lock
/// idle meanwhile; reads use the other connections and, in the write-ahead log, never
/// wait for a writer. On PostgreSQL both are one pool.
#[derive(Clone)]
pub struct Db {
    /// For reads.
    pub pool: AnyPool,
    /// For writes and transactions: taken with [`Db::writer`] or [`Db::writer_for`], which
    /// set how its commits reach the disk.
    writer: AnyPool,
    pub dialect: Dialect,
    /// Whether SQLite's writer connection may run with `synchronous = NORMAL`, as a
    /// deferred write left it. Set before the mode is relaxed and cleared only once
    /// `FULL` is back, and changed only by the holder of the one writer connection, so
    /// that when it reads `false` every commit is flushed.
    relaxed: Arc<AtomicBool>,
}

impl Db {
    /// Whether `sql` is a plain `SELECT`, for the readers' pool; anything else
    /// (`UPDATE ... RETURNING` reads rows too, but writes) goes to the writer.
    pub fn reads_only(sql: &str) -> bool {
        let head = sql.trim_start().get(..6).unwrap_or_default();
        head.eq_ignore_ascii_case("select")
    }

    /// The writer's connection, set so that each commit is on disk before it returns.
    pub async fn writer(&self) -> sqlx::Result<PoolConnection<sqlx::Any>> {
        self.writer_for(true).await
    }

    /// The writer's connection; not `durable`, on SQLite its commits do not wait for the
    /// disk (`synchronous = NORMAL` in the write-ahead log: see `batch.rs` for what may
    /// be written so). The mode stays as the last writer left it, so that deferred
    /// writes one after another cost no statement more, and a durable writer sets `FULL`
    /// again before its first statement. If that fails, the connection is closed and
    /// the write fails: it never runs unflushed.
    pub async fn writer_for(&self, durable: bool) -> sqlx::Result<PoolConnection<sqlx::Any>> {
        let mut conn = self.writer.acquire().await?;
        if self.dialect != Dialect::Sqlite {
            return Ok(conn);
        }
        let relaxed = self.relaxed.load(Ordering::SeqCst);
        if durable && relaxed {
            if let Err(e) = synchronous(&mut conn, "FULL").await {
                conn.close_on_drop();
                return Err(e);
            }
            self.relaxed.store(false, Ordering::SeqCst);
        } else if !durable && !relaxed {
            // Marked first: whatever the outcome, the next durable writer sets FULL.
            self.relaxed.store(true, Ordering::SeqCst);
            synchronous(&mut conn, "NORMAL").await?;
        }
        Ok(conn)
    }

    /// The writer's pool as it is, for tests that look at the connection's mode.
    #[cfg(test)]
    pub(super) fn writer_pool(&self) -> &AnyPool {
        &self.writer
    }

    /// `sql` for this dialect: `$N` parameters become SQLite's `?N` (bound by number, so a
    /// parameter may come back out of order), and `{seq}` names the column that keeps
    /// insertion order (SQLite's `rowid`, a `seq` column on PostgreSQL). `{now}` is the
    /// database's clock in Unix seconds, the one clock every node shares, and
    /// `{for_share}` share-locks the rows a subquery read, on PostgreSQL.
    pub fn sql(&self, sql: &str) -> sqlx::AssertSqlSafe<String> {
        // Safe: the text is the store's own SQL; values are always bound parameters.
        sqlx::AssertSqlSafe(self.sql_text(sql))
    }

    fn sql_text(&self, sql: &str) -> String {
        let sql = match self.dialect {
            Dialect::Sqlite => sql
                .replace("{seq}", "rowid")
                .replace("{now}", "CAST(strftime('%s', 'now') AS INTEGER)")
                .replace("{for_share}", ""),
            Dialect::Postgres => sql
                .replace("{seq}", "seq")
                .replace(
                    "{now}",
                    "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)",
                )
                .replace("{for_share}", "FOR SHARE"),
        };
        if self.dialect == Dialect::Postgres {
            return sql;
        }
        let mut out = String::with_capacity(sql.len());
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                out.push('?');
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// A store's database and the runtime its connections live on.
pub struct Conn {
    pub db: Db,
    /// Where the store is, for messages (a path, or the URL without its password).
    pub name: String,
    runtime: Option<tokio::runtime::Runtime>,
    /// The writers waiting for SQLite's writer connection.
    pub(super) group: GroupCommit,
}

/// SQLite's write-ahead log: a commit is one flush of the log to disk instead of the
/// rollback journal's several (journal, database, folder), and readers such as `flowmail
/// status` no longer wait for a writer. `synchronous = FULL` keeps every commit on disk
/// before it returns, so a power cut loses no message recorded as handled: `NORMAL`
/// would save the flush but could lose the last commits, and with them the record that
/// a message was sent, which would send it again.
async fn sqlite_pragmas(conn: &mut sqlx::AnyConnection) -> std::result::Result<(), sqlx::Error> {
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&mut *conn)
        .await?;
    sqlx::query("PRAGMA synchronous = FULL")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How long PostgreSQL lets a session sit inside a transaction waiting for its client
/// before it ends the session. flowmail's transactions run their statements back to
/// back, so only a frozen process (SIGSTOP, a VM paused, a swap storm) waits this long;
/// ending its session frees the rows it locked, which would otherwise hold up the node
/// taking over its triggers until it woke.
const IDLE_IN_TRANSACTION: &str = "10s";

async fn postgres_session(conn: &mut sqlx::AnyConnection) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}'"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A pool of at most `size` connections to `url`.
async fn pool(url: &str, dialect: Dialect, size: u32) -> std::result::Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(size)
        // A SQLite connection is a file, not a peer that may have gone away: pinging it
        // before each query only cost two more thread hand-overs.
        .test_before_acquire(dialect == Dialect::Postgres)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                match dialect {
                    Dialect::Sqlite => sqlite_pragmas(conn).await?,
                    Dialect::Postgres => postgres_session(conn).await?,
                }
                Ok(())
            })
        })
        .acquire_timeout(std::time::Duration::from_secs(30))
        .connect(url)
        .await
}

async fn synchronous(conn: &mut sqlx::AnyConnection, level: &str) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA synchronous = {level}")))
        .execute(conn)
        .await
        .map(drop)
}

/// How long a dropped store waits for its connections to close.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Closed connections checkpoint SQLite's log into the database file and
            // remove it. The wait is bounded: the store may be dropped inside another
            // runtime, where it must not hang.
            let (pool, writer) = (self.db.pool.clone(), self.db.writer.clone());
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            rt.spawn(async move {
                pool.close().await;
                writer.close().await;
                let _ = tx.send(());
            });
            let _ = rx.recv_timeout(CLOSE_WAIT);
            rt.shutdown_background();
        }
    }
}

impl Conn {
    /// Connects to `url` (`sqlite://PATH?mode=rwc` or `postgres://...`) and migrates.
    pub fn open(url: &str, name: String) -> Result<Self> {
        let io = |source| StoreError::Io {
            path: name.clone(),
            source,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flowmail-store")
            .enable_all()
            .build()
            .map_err(io)?;
        let dialect = if url.starts_with("postgres") {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        };
        sqlx::any::install_default_drivers();
        let url = url.to_owned();
        let connect_name = name.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let result = async {
                let sql = |source| StoreError::Sql {
                    path: connect_name.clone(),
                    source,
                };
                // The writer first: it creates a new SQLite file, and migrates.
                let (writers, readers) = match dialect {
                    Dialect::Sqlite => (1, 3),
                    Dialect::Postgres => (8, 0),
                };
                let writer = pool(&url, dialect, writers).await.map_err(sql)?;
                let pool = match readers {
                    0 => writer.clone(),
                    n => pool(&url, dialect, n).await.map_err(sql)?,
                };
                let db = Db {
                    pool,
                    writer,
                    dialect,
                    relaxed: Arc::default(),
                };
                migrations::migrate(&db, &connect_name).await?;
                Ok(db)
            }
            .await;
            let _ = tx.send(result);
        });
        let db = rx.recv().map_err(|_| StoreError::Closed)??;
        Ok(Self {
            db,
            name,
            runtime: Some(runtime),
            group: GroupCommit::default(),
        })
    }

    /// Runs `fut` on the store's runtime in the background.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        if let Some(rt) = &self.runtime {
            rt.spawn(fut);
        }
    }

    /// Runs `f` with the store's runtime and waits for it. Callers in async code on the
    /// multi-threaded runtime hand their worker's other tasks on while they wait.
    pub fn run<T, F>(&self, f: impl FnOnce(Db) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        blocking(|| self.drive(f))
    }

    /// Runs `f` like [`Conn::run`], on a thread that may block.
    pub(super) fn drive<T, F>(&self, f: impl FnOnce(Db) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let Some(rt) = &self.runtime else {
            return Err(StoreError::Closed);
        };
        let fut = f(self.db.clone());
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            // A current-thread runtime cannot be left for `block_on`: the store's thread
            // runs the query.
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                rt.spawn(async move {
                    let _ = tx.send(fut.await);
                });
                rx.recv().map_err(|_| StoreError::Closed)?
            }
            // Outside any runtime, or on a worker of the multi-threaded one (which hands
            // its other tasks on meanwhile), the calling thread drives the query itself,
            // with the store runtime's timers: no hand-over to the store's thread and back.
            _ => wait(rt, fut),
        }
    }

    pub(super) fn sql_err(&self) -> impl Fn(sqlx::Error) -> StoreError + Send + Sync + 'static {
        let name = self.name.clone();
        move |source| StoreError::Sql {
            path: name.clone(),
            source,
        }
    }

    /// Runs a statement; returns the rows it changed.
    pub fn exec(&self, sql: &str, args: Vec<Arg>) -> Result<u64> {
        match self.write(vec![(sql, args, false)])? {
            Written::Rows(rows) => Ok(rows.first().copied().unwrap_or_default()),
            Written::Unchanged(_) => Ok(0),
        }
    }

    /// The rows of a query, each turned into `T` by `map`.
    pub fn rows<T: Send + 'static>(
        &self,
        sql: &str,
        args: Vec<Arg>,
        map: impl Fn(&AnyRow) -> std::result::Result<T, sqlx::Error> + Send + 'static,
    ) -> Result<Vec<T>> {
        let err = self.sql_err();
        let sql = self.db.sql(sql);
        self.run(move |db| async move {
            let rows = fetch(&db, sql, args, false).await.map_err(&err)?;
            rows.iter().map(|r| map(r).map_err(&err)).collect()
        })
    }

    /// The first row of a query, if any, turned into `T` by `map`.
    pub fn row<T: Send + 'static>(
        &self,
        sql: &str,
        args: Vec<Arg>,
        map: impl Fn(&AnyRow) -> std::result::Result<T, sqlx::Error> + Send + 'static,
    ) -> Result<Option<T>> {
        let err = self.sql_err();
        let sql = self.db.sql(sql);
        self.run(move |db| async move {
            let rows = fetch(&db, sql, args, true).await.map_err(&err)?;
            rows.first().map(|r| map(r).map_err(&err)).transpose()
        })
    }

    /// The rows of several queries (plain `SELECT`s), read one after another on one
    /// reader connection in one visit to the store: one wait of the calling thread
    /// and one connection taken from the pool, instead of one of each per query.
    pub fn reads(&self, queries: Vec<(&str, Vec<Arg>)>) -> Result<Vec<Vec<AnyRow>>> {
        let err = self.sql_err();
        let queries: Vec<_> = queries
            .into_iter()
            .map(|(sql, args)| (self.db.sql(sql), args))
            .collect();
        self.run(move |db| async move {
            let mut conn = db.pool.acquire().await.map_err(&err)?;
            let mut out = Vec::with_capacity(queries.len());
            for (sql, args) in queries {
                out.push(
                    bind(sqlx::query(sql), args)
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(&err)?,
                );
            }
            Ok(out)
        })
    }

    /// Runs `f` with a transaction's connection and commits if it succeeds.
    pub fn transaction<T, F>(
        &self,
        f: impl FnOnce(Db, sqlx::Transaction<'static, sqlx::Any>) -> F + Send + 'static,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<(T, sqlx::Transaction<'static, sqlx::Any>)>> + Send + 'static,
    {
        let err = self.sql_err();
        self.run(move |db| async move {
            let conn = db.writer().await.map_err(&err)?;
            let tx = sqlx::Transaction::begin(conn, None).await.map_err(&err)?;
            let (value, tx) = f(db, tx).await?;
            tx.commit().await.map_err(&err)?;
            Ok(value)
        })
    }
}

/// The rows of `sql` (only the first with `first`): a plain `SELECT` on the readers'
/// pool, anything else on the writer, whose commits are then flushed ([`Db::writer`]).
async fn fetch(
    db: &Db,
    sql: sqlx::AssertSqlSafe<String>,
    args: Vec<Arg>,
    first: bool,
) -> sqlx::Result<Vec<AnyRow>> {
    let reads = Db::reads_only(&sql.0);
    let query = bind(sqlx::query(sql), args);
    match (reads, first) {
        (true, false) => query.fetch_all(&db.pool).await,
        (true, true) => Ok(query.fetch_optional(&db.pool).await?.into_iter().collect()),
        (false, _) => {
            let mut writer = db.writer().await?;
            if first {
                Ok(query
                    .fetch_optional(&mut *writer)
                    .await?
                    .into_iter()
                    .collect())
            } else {
                query.fetch_all(&mut *writer).await
            }
        }
    }
}

/// Runs `f`, which blocks, from any thread: a worker of the multi-threaded runtime
/// hands its other tasks on meanwhile.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Drives `fut` to its end on this thread, with the store runtime's I/O and timers.
///
/// The thread waits with `std::thread::park`, not with tokio's `block_on`: a store call
/// made inside `Runtime::block_on` (the main task of `serve` and of the other commands)
/// would otherwise park on the same per-thread parker as the `block_on` around it, and
/// take the wake-up meant for that outer task. The outer task then slept on with its
/// timers already fired: `serve` stopped beating and delivering, and ignored SIGTERM.
fn wait<T>(rt: &tokio::runtime::Runtime, fut: impl Future<Output = T>) -> T {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let _context = rt.enter();
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
