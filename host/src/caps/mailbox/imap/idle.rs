//! Waiting for news: IDLE on a connection of its own, shared by every trigger of the
//! account, or polling for a server without IDLE.

use std::sync::atomic::Ordering;

use async_imap::Session;
use async_imap::extensions::idle::IdleResponse;
use async_imap::types::UnsolicitedResponse;

use super::failure::{Failure, classify};
use super::{Imap, NOT_OFFERED, OFFERED};
use crate::bindings::MailError;
use crate::caps::mailbox::{WaitPlan, Wake};
use crate::net::Stream;

impl Imap {
    /// Waits for news. One trigger at a time idles on the account's IDLE connection; the
    /// others follow it and wake when it does, so that no trigger sleeps through news that
    /// another one's IDLE consumed.
    pub(super) async fn wait(&self, plan: WaitPlan) -> Result<Wake, MailError> {
        let mut follow = self.wakes.subscribe();
        let Ok(guard) = self.idle.try_lock() else {
            return Ok(tokio::select! {
                r = follow.recv() => r.unwrap_or(Wake { mode: "idle", changed: true }),
                () = tokio::time::sleep(plan.idle_refresh) => Wake { mode: "idle", changed: false },
            });
        };
        let result = self.wait_idle(plan, guard).await;
        // Followers look again in any case; an error shows in their own next read.
        let _ = self.wakes.send(match &result {
            Ok(w) => *w,
            Err(_) => Wake {
                mode: "idle",
                changed: true,
            },
        });
        result
    }

    /// Waits in IDLE on a connection of its own (or polls, for a server without IDLE);
    /// see [`Backend::wait_for_change`].
    async fn wait_idle(
        &self,
        plan: WaitPlan,
        mut guard: tokio::sync::MutexGuard<'_, Option<Session<Stream>>>,
    ) -> Result<Wake, MailError> {
        let server = self.server();
        if self.idle_offered.load(Ordering::Relaxed) == NOT_OFFERED {
            tokio::time::sleep(plan.poll_interval).await;
            return Ok(Wake {
                mode: "poll",
                changed: false,
            });
        }
        let session = match guard.take() {
            Some(s) => s,
            None => {
                let mut s = self.connect().await?;
                let caps = s
                    .capabilities()
                    .await
                    .map_err(|e| classify(&server, "CAPABILITY", e))?;
                if !caps.has_str("IDLE") {
                    tracing::info!(
                        "{server} does not offer IDLE; polling every {:?}",
                        plan.poll_interval
                    );
                    self.idle_offered.store(NOT_OFFERED, Ordering::Relaxed);
                    drop(guard);
                    tokio::time::sleep(plan.poll_interval).await;
                    return Ok(Wake {
                        mode: "poll",
                        changed: false,
                    });
                }
                self.idle_offered.store(OFFERED, Ordering::Relaxed);
                // A new connection's SELECT already counts messages that arrived since
                // the caller last looked, and IDLE never reports those: look again first.
                *guard = Some(s);
                return Ok(Wake {
                    mode: "idle",
                    changed: true,
                });
            }
        };
        // What arrived before now was reported during earlier commands, after the caller's
        // last look began or before it; either way that look covered it.
        let unsolicited = session.unsolicited_responses.clone();
        while unsolicited.try_recv().is_ok() {}
        let mut handle = session.idle();
        handle
            .init()
            .await
            .map_err(|e| classify(&server, "IDLE", e))?;
        // News that came with the start of IDLE went to the unsolicited queue.
        let mut early = false;
        while let Ok(r) = unsolicited.try_recv() {
            early |= matches!(
                r,
                UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
            );
        }
        let (outcome, stopped) = if early {
            (Ok(IdleResponse::ManualInterrupt), true)
        } else {
            let (wait, stop) = handle.wait_with_timeout(plan.idle_refresh);
            tokio::pin!(wait);
            tokio::select! {
                r = &mut wait => (r, false),
                () = tokio::time::sleep(plan.idle_refresh) => {
                    // Dropping the stop source ends the wait at once.
                    drop(stop);
                    (wait.await, true)
                }
            }
        };
        let changed = match outcome.map_err(|e| classify(&server, "IDLE", e))? {
            IdleResponse::NewData(_) => true,
            IdleResponse::Timeout => false,
            IdleResponse::ManualInterrupt if stopped => early,
            IdleResponse::ManualInterrupt => {
                return Err(Failure::IdleDropped.classify(&server));
            }
        };
        let session = tokio::time::timeout(self.settings.timeout, handle.done())
            .await
            .map_err(|_| {
                Failure::Silent {
                    during: "DONE after IDLE".into(),
                    limit: self.settings.timeout,
                }
                .classify(&server)
            })?
            .map_err(|e| classify(&server, "DONE", e))?;
        *guard = Some(session);
        Ok(Wake {
            mode: "idle",
            changed,
        })
    }
}
