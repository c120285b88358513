//! The open-file limit of `serve`. Each mailbox trigger holds descriptors for as long as
//! it runs (an IMAP trigger a fetch and an IDLE connection, and on SQLite its lock file),
//! and past the limit every part of the process fails at once with "Too many open
//! files": healthy triggers, the store, the outbox. So `serve` raises its soft limit to
//! the hard one at start, and refuses a set of triggers that would not fit, saying how
//! many do.

use anyhow::bail;

use flowmail::config::{Config, MailboxConfig};
use flowmail::workflow::Workflow;

/// Descriptors the rest of the process may hold at once: the store's connections, the
/// settings page, the delivery workers' SMTP sessions, the plugin engine, logs.
pub const RESERVE: u64 = 128;

/// Raises the soft open-file limit to the hard one; the limit in force after.
pub fn raise_open_files() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given, which lives here.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // An unlimited hard limit is not a valid soft one for open files on Linux.
    let target = limit.rlim_max.min(1 << 20);
    if limit.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads only the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = target;
        } else {
            tracing::warn!(
                "could not raise the open-file limit from {} to {target}: {}",
                limit.rlim_cur,
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(limit.rlim_cur)
}

/// The descriptors one trigger on `account` holds while it runs.
fn per_trigger(config: &Config, account: &str) -> u64 {
    let lock = u64::from(config.store.url.is_none());
    match config
        .accounts
        .get(account)
        .and_then(|a| a.mailbox.as_ref())
    {
        Some(MailboxConfig::Imap(_)) => 2 + lock,
        // A Maildir or Graph trigger holds its lock; its reads come and go.
        _ => 1 + lock,
    }
}

/// Refuses `workflows` when their triggers would not fit in `limit` open files.
pub fn check(config: &Config, workflows: &[Workflow], limit: u64) -> anyhow::Result<()> {
    let needed: u64 = workflows
        .iter()
        .filter_map(|wf| wf.trigger.mailbox.as_ref())
        .map(|t| per_trigger(config, &t.account))
        .sum();
    let triggers = workflows
        .iter()
        .filter(|wf| wf.trigger.mailbox.is_some())
        .count();
    if needed + RESERVE > limit {
        let each = needed.div_ceil(triggers.max(1) as u64).max(1);
        bail!(
            "serving {triggers} mailbox triggers needs about {} open files ({needed} for the triggers, {RESERVE} for the rest), but this process may open {limit} (its hard limit); about {} triggers fit. Raise the limit (`ulimit -Hn` and `ulimit -n`, or LimitNOFILE= for a systemd service), or spread the triggers over more nodes",
            needed + RESERVE,
            limit.saturating_sub(RESERVE) / each
        );
    }
    Ok(())
}
