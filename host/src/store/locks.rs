//! One process at a time runs a mailbox trigger.
//!
//! On SQLite the claim is an OS file lock beside the store: it ends with the process,
//! however that ends, and a paused process keeps it (no other process could run anyway).
//!
//! On a shared store the claim is a lease in `trigger_leases`, renewed every
//! third of [`LEASE_TTL`] by one task per store and valid for that long of the database's
//! clock (so the nodes' clocks do not matter). A node that dies stops renewing and
//! another node takes the trigger over once the lease runs out. Each claim increments the
//! lease's epoch, and every write of a trigger's state (its cursor, its handled records,
//! its watchdog row) made by this process carries the epoch it holds: a node that was
//! paused, not dead, and lost its lease meanwhile finds its writes refused
//! ([`StoreError::Fenced`]) when it wakes up, and its renewal tells it to stand down.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::db::Conn;
use super::values::{self, args, get};
use super::{Result, Store, StoreError};

/// How long a lease lasts without renewal, unless the node says otherwise
/// (`node.lease_secs`): a dead node's triggers are taken over within this plus a
/// standby's probe interval. Each process renews all its leases in one statement every
/// third of it.
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// Held while one process runs a mailbox-triggered workflow; dropping it lets go.
#[derive(Debug)]
pub struct WorkflowLock(Held);

#[derive(Debug)]
enum Held {
    /// An OS file lock beside the SQLite file.
    File(#[allow(dead_code)] std::fs::File),
    /// A lease on the shared store.
    Lease(Lease),
}

impl WorkflowLock {
    /// Turns true when this process lost the claim (a lease that ran out while the
    /// process was paused, and another node took it). A file lock is never lost.
    pub fn lost(&self) -> Option<watch::Receiver<bool>> {
        match &self.0 {
            Held::File(_) => None,
            Held::Lease(lease) => Some(lease.lost.clone()),
        }
    }

    /// The lease's epoch, on a shared store.
    pub fn epoch(&self) -> Option<i64> {
        match &self.0 {
            Held::File(_) => None,
            Held::Lease(lease) => Some(lease.epoch),
        }
    }
}

/// A held lease; dropping it gives the trigger up at once, so that a clean stop needs no
/// wait for the lease to run out.
struct Lease {
    conn: Arc<Conn>,
    leases: Arc<Leases>,
    workflow: String,
    epoch: i64,
    lost: watch::Receiver<bool>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lease({} epoch {})", self.workflow, self.epoch)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mine = self.leases.forget(&self.workflow, self.epoch);
        if mine {
            let released = self.conn.exec(
                "UPDATE trigger_leases SET owner = NULL, lease_until = 0
                 WHERE workflow = $1 AND epoch = $2",
                args![&self.workflow, self.epoch],
            );
            if let Err(e) = released {
                tracing::warn!(
                    "workflow `{}`: giving its lease up failed ({e}); it lapses in {}s",
                    self.workflow,
                    self.leases.ttl()
                );
            }
        }
    }
}

/// The leases this store holds: the epoch of each, and who to tell when one is lost.
pub(super) struct Leases {
    /// Unique to this store in this process.
    owner: String,
    held: Mutex<HashMap<String, Fence>>,
    renewing: Mutex<bool>,
    ttl_secs: AtomicU64,
}

struct Fence {
    epoch: i64,
    lost: watch::Sender<bool>,
}

impl Leases {
    pub(super) fn new() -> Self {
        Self {
            owner: format!(
                "{}:{}:{:016x}",
                crate::config::host_name(),
                std::process::id(),
                fastrand::u64(..)
            ),
            held: Mutex::new(HashMap::new()),
            renewing: Mutex::new(false),
            ttl_secs: AtomicU64::new(LEASE_TTL.as_secs()),
        }
    }

    fn ttl(&self) -> u64 {
        self.ttl_secs.load(Ordering::Relaxed)
    }

    /// The epoch this store holds for `workflow`, if it claimed it.
    pub(super) fn epoch(&self, workflow: &str) -> Option<i64> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(workflow).map(|f| f.epoch)
    }

    /// Drops the fence of `workflow` if it is still `epoch`'s; whether it was.
    fn forget(&self, workflow: &str, epoch: i64) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.get(workflow).is_some_and(|f| f.epoch == epoch) {
            held.remove(workflow);
            return true;
        }
        false
    }
}

/// `insert` (an `INSERT ... VALUES (...) ...` whose `$1` is the workflow) made to write
/// only while the lease of that workflow still has the epoch bound as `$epoch_param`.
/// On PostgreSQL the lease row is share-locked until the write commits, so a takeover
/// waits for it, and a write that waited for a takeover sees the new epoch and writes
/// nothing.
pub(super) fn fenced(insert: &str, epoch_param: usize) -> String {
    let Some(start) = insert.find("VALUES (") else {
        return insert.to_owned();
    };
    let open = start + "VALUES (".len();
    let mut depth = 1;
    let mut close = None;
    for (i, c) in insert[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close) = close else {
        return insert.to_owned();
    };
    format!(
        "{}SELECT {} WHERE EXISTS (SELECT 1 FROM trigger_leases WHERE workflow = $1 \
         AND epoch = ${epoch_param} {{for_share}}){}",
        &insert[..start],
        &insert[open..close],
        &insert[close + 1..]
    )
}

impl Store {
    /// How long this store's trigger leases last without renewal (at least 3 s).
    pub fn set_lease_secs(&self, secs: u64) {
        self.leases.ttl_secs.store(secs.max(3), Ordering::Relaxed);
    }

    /// Claims `workflow` for this process, so that two processes never handle the same
    /// trigger at once; [`StoreError::Busy`] while another holds it.
    pub fn lock_workflow(&self, workflow: &str) -> Result<WorkflowLock> {
        let Some(path) = &self.path else {
            // A lease given up a moment ago by a process that is ending is free at once;
            // one still held belongs to a live node.
            return self.try_lease(workflow)?.ok_or_else(|| StoreError::Busy {
                workflow: workflow.to_owned(),
            });
        };
        lock_file(path, workflow)
    }

    /// One try at claiming `workflow`, without waiting: `None` while another process holds
    /// it. For a node that stands by to take a trigger over.
    pub fn try_lock_workflow(&self, workflow: &str) -> Result<Option<WorkflowLock>> {
        if self.path.is_some() {
            return match self.lock_workflow(workflow) {
                Ok(lock) => Ok(Some(lock)),
                Err(StoreError::Busy { .. }) => Ok(None),
                Err(e) => Err(e),
            };
        }
        self.try_lease(workflow)
    }

    /// The holder of `workflow`'s lease and its epoch, if anyone holds it now.
    pub fn lease_holder(&self, workflow: &str) -> Result<Option<(String, i64)>> {
        self.conn.row(
            "SELECT owner, epoch FROM trigger_leases
             WHERE workflow = $1 AND owner IS NOT NULL AND lease_until >= {now}",
            args![workflow],
            |r| Ok((get(r, 0)?, get(r, 1)?)),
        )
    }

    fn try_lease(&self, workflow: &str) -> Result<Option<WorkflowLock>> {
        self.conn.exec(
            "INSERT INTO trigger_leases (workflow, epoch, owner, lease_until)
             VALUES ($1, 0, NULL, 0) ON CONFLICT (workflow) DO NOTHING",
            args![workflow],
        )?;
        let epoch = self.conn.row(
            "UPDATE trigger_leases SET epoch = epoch + 1, owner = $2, lease_until = {now} + $3
             WHERE workflow = $1 AND (owner IS NULL OR lease_until < {now})
             RETURNING epoch",
            args![workflow, &self.leases.owner, self.leases.ttl() as i64],
            |r| get::<i64>(r, 0),
        )?;
        let Some(epoch) = epoch else {
            return Ok(None);
        };
        let (tx, rx) = watch::channel(false);
        {
            let mut held = self.leases.held.lock().unwrap_or_else(|p| p.into_inner());
            held.insert(workflow.to_owned(), Fence { epoch, lost: tx });
        }
        self.start_renewing();
        Ok(Some(WorkflowLock(Held::Lease(Lease {
            conn: self.conn.clone(),
            leases: self.leases.clone(),
            workflow: workflow.to_owned(),
            epoch,
            lost: rx,
        }))))
    }

    /// Starts the task that renews this store's leases, once.
    fn start_renewing(&self) {
        let mut renewing = self
            .leases
            .renewing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *renewing {
            return;
        }
        *renewing = true;
        let conn = Arc::downgrade(&self.conn);
        let leases = Arc::downgrade(&self.leases);
        self.conn.spawn(renew(conn, leases));
    }
}

/// Renews every lease of this store each third of its time to live; a lease that did
/// not renew was taken by another node, and its holder is told. Ends with the store.
async fn renew(conn: Weak<Conn>, leases: Weak<Leases>) {
    loop {
        let Some(ttl) = leases.upgrade().map(|l| l.ttl()) else {
            return;
        };
        tokio::time::sleep(Duration::from_millis(ttl * 1000 / 3)).await;
        let (Some(conn), Some(leases)) = (conn.upgrade(), leases.upgrade()) else {
            return;
        };
        let db = conn.db.clone();
        let sql = db.sql(
            "UPDATE trigger_leases SET lease_until = {now} + $2 WHERE owner = $1
             RETURNING workflow, epoch",
        );
        let owner = leases.owner.clone();
        drop(conn);
        let renewed = match db.writer().await {
            Ok(mut writer) => {
                values::bind(sqlx::query(sql), args![&owner, LEASE_TTL.as_secs() as i64])
                    .fetch_all(&mut *writer)
                    .await
            }
            Err(e) => Err(e),
        };
        let renewed: Vec<(String, i64)> = match renewed {
            Ok(rows) => rows
                .iter()
                .filter_map(|r| Some((get(r, 0).ok()?, get(r, 1).ok()?)))
                .collect(),
            Err(e) => {
                // Nothing is known; the fence keeps a late write out if the lease lapses.
                tracing::warn!("renewing the trigger leases failed: {e}");
                continue;
            }
        };
        let held = leases.held.lock().unwrap_or_else(|p| p.into_inner());
        for (workflow, fence) in held.iter() {
            if !renewed.contains(&(workflow.clone(), fence.epoch)) && !*fence.lost.borrow() {
                tracing::warn!(
                    "workflow `{workflow}`: this node lost its lease (epoch {}) to another node; it stands down",
                    fence.epoch
                );
                let _ = fence.lost.send(true);
            }
        }
    }
}

/// The OS file lock of `workflow` beside the SQLite store at `path`.
fn lock_file(path: &Path, workflow: &str) -> Result<WorkflowLock> {
    let dir = path
        .parent()
        .map(|p| p.join("locks"))
        .unwrap_or_else(|| Path::new("locks").to_path_buf());
    let io = |source| StoreError::Io {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let name: String = workflow
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{name}.lock")))
        .map_err(io)?;
    // A lock just released can look held for a moment: a process being spawned
    // elsewhere in this one holds a copy of the descriptor until it execs. Only a lock
    // still held after a second belongs to another flowmail.
    let mut tries = 0;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(WorkflowLock(Held::File(file))),
            Err(std::fs::TryLockError::WouldBlock) if tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Busy {
                    workflow: workflow.to_owned(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
}
