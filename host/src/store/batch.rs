//! Group commit for SQLite's one writer connection. Writers that arrive while a commit
//! is under way queue up; the next of them to lead writes everything queued in one
//! transaction, each caller's statements in a savepoint of their own, and commits once.
//! A commit is a flush of the write-ahead log to disk, so a thousand triggers recording
//! their start at once cost a few dozen flushes instead of a thousand, while every caller
//! still returns only once its own writes are on disk. A caller's statement that fails
//! rolls back that caller's savepoint alone; the others' writes are kept.
//!
//! A write may also be deferred: it is kept on a process crash but reaches the disk with
//! the next durable commit, or SQLite's next checkpoint, instead of flushing the log
//! itself (`synchronous = NORMAL` in the write-ahead log, which stays until the next
//! durable commit sets `FULL` again before it runs: [`Db::writer_for`]). The log is
//! written in order and a flush covers everything before it, so a deferred write never
//! outlives a durable write that came after it. Only what no promise rests on may be
//! deferred: a trigger's state for `status`, and the mark that a run has started.
//!
//! There is no thread of its own: the caller that finds no commit under way leads the
//! next one, and hands the lead to the first caller still queued when it is done.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::db::{Conn, Db, Dialect, blocking};
use super::values::{Arg, bind};
use super::{Result, StoreError};

/// One statement of a write.
pub struct Write {
    /// In the database's dialect (see [`Db::sql`]).
    pub sql: sqlx::AssertSqlSafe<String>,
    pub args: Vec<Arg>,
    /// When the statement changes no row, the caller's writes are rolled back and it
    /// gets [`Written::Unchanged`] (a fenced write whose lease is gone).
    pub required: bool,
}

/// What a caller's writes did.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// All committed; the rows each statement changed.
    Rows(Vec<u64>),
    /// The statement at this index changed no row although it was required to; none of
    /// the caller's statements were kept.
    Unchanged(usize),
}

struct Job {
    writes: Vec<Write>,
    durable: bool,
    reply: SyncSender<Reply>,
}

enum Reply {
    Done(Result<Written>),
    /// The caller leads the next commit.
    Lead,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    leading: bool,
}

/// The queue of writers and who leads.
#[derive(Default)]
pub struct GroupCommit {
    queue: Mutex<Queue>,
    /// The batches led so far, and the callers' writes in them.
    batches: AtomicU64,
    writes: AtomicU64,
}

/// How a leader runs one batch on the writer connection, on its own thread.
pub trait Drive {
    fn drive_batch(&self, jobs: Vec<Vec<Write>>, durable: bool) -> Vec<Result<Written>>;
}

impl GroupCommit {
    /// Queues `writes` and returns once they are committed (or failed), leading a commit
    /// when none is under way; `durable` ones are on disk by then. Blocks the calling
    /// thread.
    pub fn write(&self, writes: Vec<Write>, durable: bool, drive: &dyn Drive) -> Result<Written> {
        let (reply, done) = sync_channel(1);
        let lead = {
            let mut queue = self.queue.lock().map_err(|_| StoreError::Closed)?;
            queue.jobs.push_back(Job {
                writes,
                durable,
                reply,
            });
            !std::mem::replace(&mut queue.leading, true)
        };
        self.wait(lead, &done, drive)
    }

    fn wait(&self, mut lead: bool, done: &Receiver<Reply>, drive: &dyn Drive) -> Result<Written> {
        loop {
            if lead {
                self.lead(drive);
            }
            match done.recv() {
                Ok(Reply::Done(result)) => return result,
                Ok(Reply::Lead) => lead = true,
                Err(_) => return Err(StoreError::Closed),
            }
        }
    }

    /// Writes everything queued in one commit and answers each caller, then hands the
    /// lead on. The hand-over also happens when the batch unwinds, so that no caller
    /// waits for a leader that is gone.
    fn lead(&self, drive: &dyn Drive) {
        struct HandOver<'a>(&'a GroupCommit);
        impl Drop for HandOver<'_> {
            fn drop(&mut self) {
                self.0.hand_over();
            }
        }
        let _hand_over = HandOver(self);
        let jobs: Vec<Job> = match self.queue.lock() {
            Ok(mut queue) => queue.jobs.drain(..).collect(),
            Err(_) => return,
        };
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        // One durable write makes the whole commit durable.
        let durable = jobs.iter().any(|j| j.durable);
        let (writes, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|j| (j.writes, j.reply)).unzip();
        let results = drive.drive_batch(writes, durable);
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(Reply::Done(result));
        }
    }

    /// How many batches were committed, and how many callers' writes they held.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }

    /// Gives the lead to the first caller still queued, or ends it.
    fn hand_over(&self) {
        let Ok(mut queue) = self.queue.lock() else {
            return;
        };
        // A caller that cannot be told (gone) is dropped from the queue.
        while let Some(next) = queue.jobs.front() {
            if next.reply.send(Reply::Lead).is_ok() {
                return;
            }
            queue.jobs.pop_front();
        }
        queue.leading = false;
    }
}

impl Conn {
    /// Writes `writes` (statement, arguments, whether it must change a row) in one
    /// transaction, on disk when this returns. On SQLite, writers that meet share a
    /// commit ([`GroupCommit`]).
    pub fn write(&self, writes: Vec<(impl AsRef<str>, Vec<Arg>, bool)>) -> Result<Written> {
        self.write_as(writes, true)
    }

    /// Like [`Conn::write`]; not `durable`, a SQLite commit does not wait for the disk
    /// (see the module's comment for what may be written so).
    pub fn write_as(
        &self,
        writes: Vec<(impl AsRef<str>, Vec<Arg>, bool)>,
        durable: bool,
    ) -> Result<Written> {
        let writes: Vec<Write> = writes
            .into_iter()
            .map(|(sql, args, required)| Write {
                sql: self.db.sql(sql.as_ref()),
                args,
                required,
            })
            .collect();
        match self.db.dialect {
            Dialect::Sqlite => blocking(|| self.group.write(writes, durable, self)),
            // PostgreSQL's writers have connections of their own, and its log flushes
            // already serve the commits that meet.
            Dialect::Postgres => {
                let err = self.sql_err();
                self.run(move |db| async move {
                    let mut results = run_batch(db, vec![writes], true, err).await;
                    results.pop().unwrap_or(Err(StoreError::Closed))
                })
            }
        }
    }
}

impl Drive for Conn {
    fn drive_batch(&self, jobs: Vec<Vec<Write>>, durable: bool) -> Vec<Result<Written>> {
        let count = jobs.len();
        let err = self.sql_err();
        self.drive(move |db| async move { Ok(run_batch(db, jobs, durable, err).await) })
            .unwrap_or_else(|_| (0..count).map(|_| Err(StoreError::Closed)).collect())
    }
}

/// Runs `jobs` on the writer. A single statement alone runs as it would without
/// batching, in its own commit; a single job of several statements is one transaction;
/// several jobs share one transaction, each in a savepoint of its own. Not `durable`,
/// the commit does not flush SQLite's log to disk.
pub async fn run_batch(
    db: Db,
    jobs: Vec<Vec<Write>>,
    durable: bool,
    err: impl Fn(sqlx::Error) -> StoreError,
) -> Vec<Result<Written>> {
    let count = jobs.len();
    let all_failed = |e: sqlx::Error| -> Vec<Result<Written>> {
        let text = e.to_string();
        let mut out = vec![Err(err(e))];
        out.extend((1..count).map(|_| Err(err(shared_failure(&text)))));
        out
    };
    let mut conn = match db.writer_for(durable).await {
        Ok(conn) => conn,
        Err(e) => return all_failed(e),
    };
    match commit(&mut conn, jobs).await {
        Ok(results) => results.into_iter().map(|r| r.map_err(&err)).collect(),
        Err(e) => all_failed(e),
    }
}

/// Commits `jobs` on `conn`; the error is one that ended the commit as a whole.
async fn commit(
    conn: &mut sqlx::AnyConnection,
    mut jobs: Vec<Vec<Write>>,
) -> sqlx::Result<Vec<sqlx::Result<Written>>> {
    let count = jobs.len();
    if count == 1 && jobs.first().is_some_and(|j| j.len() == 1) {
        let Some(write) = jobs.pop().and_then(|mut j| j.pop()) else {
            return Ok(Vec::new());
        };
        let single = async {
            let changed = bind(sqlx::query(write.sql), write.args)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            Ok(match (write.required, changed) {
                (true, 0) => Written::Unchanged(0),
                _ => Written::Rows(vec![changed]),
            })
        };
        return Ok(vec![single.await]);
    }
    let mut tx = sqlx::Connection::begin(conn).await?;
    let mut results = Vec::with_capacity(count);
    for writes in jobs {
        if count == 1 {
            match run_job(&mut tx, writes).await {
                Ok(Written::Rows(rows)) => results.push(Ok(Written::Rows(rows))),
                // Alone, a job that fails rolls the whole transaction back.
                other => {
                    tx.rollback().await?;
                    return Ok(vec![other]);
                }
            }
            continue;
        }
        let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
        let outcome = run_job(&mut savepoint, writes).await;
        match &outcome {
            Ok(Written::Rows(_)) => savepoint.commit().await?,
            // Undoing this caller's writes must work, or the transaction would hold
            // writes that no caller is told of: then nothing commits.
            _ => savepoint.rollback().await?,
        }
        results.push(outcome);
    }
    tx.commit().await?;
    Ok(results)
}

async fn run_job(
    conn: &mut sqlx::AnyConnection,
    writes: Vec<Write>,
) -> std::result::Result<Written, sqlx::Error> {
    let mut rows = Vec::with_capacity(writes.len());
    for (i, w) in writes.into_iter().enumerate() {
        let changed = bind(sqlx::query(w.sql), w.args)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if w.required && changed == 0 {
            return Ok(Written::Unchanged(i));
        }
        rows.push(changed);
    }
    Ok(Written::Rows(rows))
}

/// The error told to the other callers of a batch that failed as a whole.
fn shared_failure(text: &str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(format!(
        "the commit this write shared with others failed: {text}"
    )))
}
