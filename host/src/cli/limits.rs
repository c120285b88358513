//! The open-file limit of `serve`. Each mailbox trigger holds descriptors for as long as
//! it runs (on SQLite its lock file; the triggers of one IMAP account share one connection),
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

/// The descriptors the triggers on `accounts` (one entry per trigger) hold while they
/// run: on SQLite each its lock file; each IMAP account one connection, shared by its
/// triggers and steps (commands and IDLE take turns on it); a Maildir or Graph trigger one
/// for its reads, which come and go.
fn descriptors(config: &Config, accounts: &[&str]) -> u64 {
    let lock = u64::from(config.store.url.is_none());
    let imap = |account: &str| {
        matches!(
            config
                .accounts
                .get(account)
                .and_then(|a| a.mailbox.as_ref()),
            Some(MailboxConfig::Imap(_))
        )
    };
    let connections: std::collections::HashSet<&str> =
        accounts.iter().copied().filter(|a| imap(a)).collect();
    let others = accounts.iter().filter(|a| !imap(a)).count() as u64;
    accounts.len() as u64 * lock + connections.len() as u64 + others
}

/// Refuses `workflows` when their triggers would not fit in `limit` open files.
pub fn check(config: &Config, workflows: &[Workflow], limit: u64) -> anyhow::Result<()> {
    let accounts: Vec<&str> = workflows
        .iter()
        .filter_map(|wf| wf.trigger.mailbox.as_ref())
        .map(|t| t.account.as_str())
        .collect();
    let needed = descriptors(config, &accounts);
    let triggers = accounts.len();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_triggers_of_one_imap_account_share_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flowmail.toml");
        let imap = |name: &str| {
            format!(
                "[accounts.{name}.mailbox]\nkind = \"imap\"\nhost = \"localhost\"\nfolder = \"INBOX\"\n"
            )
        };
        let maildir = "[accounts.m.mailbox]\nkind = \"maildir\"\npath = \"mail\"\n";
        for (store, lock) in [
            ("", 1),
            ("[store]\nurl = \"postgres://localhost/flowmail\"\n", 0),
        ] {
            std::fs::write(&path, format!("{store}{}{}{maildir}", imap("a"), imap("b"))).unwrap();
            let config = Config::read(&path).unwrap();
            // Three triggers on `a`, one on `b`, two on the Maildir: 6 lock files, one
            // connection each for `a` and `b`, one read each for the Maildir triggers.
            let accounts = ["a", "a", "b", "a", "m", "m"];
            assert_eq!(descriptors(&config, &accounts), 6 * lock + 2 + 2, "{store}");
        }
    }
}
