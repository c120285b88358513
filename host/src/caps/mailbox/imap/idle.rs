//! Waiting for news: IDLE on the account's one connection, shared by every trigger of the
//! account and given up for as long as a command needs the connection, or polling for a
//! server without IDLE.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_imap::Session;
use async_imap::extensions::idle::IdleResponse;
use async_imap::types::UnsolicitedResponse;
use tokio::time::Instant;

use super::failure::{Failure, classify};
use super::{Imap, NOT_OFFERED, OFFERED, UNKNOWN};
use crate::bindings::MailError;
use crate::caps::mailbox::{WaitPlan, Wake};
use crate::net::Stream;

/// How one turn in IDLE ended.
enum Turn {
    /// The wait is over: news, or the time to look anyway.
    Done(Wake),
    /// A command wanted the connection; IDLE is entered again after it.
    Interrupted,
}

impl Imap {
    /// Waits for news. One trigger at a time leads the wait in IDLE; the others follow it
    /// and wake when it does, so that no trigger sleeps through news that another one's
    /// IDLE consumed.
    pub(super) async fn wait(&self, plan: WaitPlan) -> Result<Wake, MailError> {
        // Subscribed before the way of waiting is read: a leader learns it before it
        // tells its followers, so a follower that finds it unknown hears the leader.
        let mut follow = self.wakes.subscribe();
        if let Some(shown) = self.shown_at_once(plan) {
            return Ok(shown);
        }
        let Ok(_lead) = self.lead.try_lock() else {
            return Ok(tokio::select! {
                r = follow.recv() => r.unwrap_or(Wake { mode: "idle", changed: true }),
                () = tokio::time::sleep(plan.idle_refresh) => Wake { mode: "idle", changed: false },
            });
        };
        if let Some(shown) = self.shown_at_once(plan) {
            return Ok(shown);
        }
        let result = self.wait_idle(plan).await;
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

    /// Waits in IDLE (or polls, for a server without IDLE) until news or `plan`'s refresh;
    /// see [`Backend::wait_for_change`]. Commands of steps and of other triggers on the
    /// account interrupt the IDLE and run in between, so the account needs one connection.
    async fn wait_idle(&self, plan: WaitPlan) -> Result<Wake, MailError> {
        let deadline = Instant::now() + plan.idle_refresh;
        loop {
            if self.idle_offered.load(Ordering::Relaxed) == NOT_OFFERED {
                return Ok(self.poll(plan).await);
            }
            // Registered before the connection is taken, so that a command that comes
            // after the check of `wanted` below still ends the IDLE.
            let interrupt = self.interrupt.notified();
            tokio::pin!(interrupt);
            interrupt.as_mut().enable();
            let mut guard = self.session.lock().await;
            if self.wanted.load(Ordering::SeqCst) > 0 {
                // A command is about to take the connection: let it go first.
                drop(guard);
                tokio::task::yield_now().await;
                continue;
            }
            let Some(session) = guard.take() else {
                // A new connection's SELECT already counts messages that arrived since
                // the caller last looked, and IDLE never reports those: look again first.
                let mut fresh = self.connect().await?;
                let offered = self.offers_idle(&mut fresh).await;
                *guard = Some(fresh);
                offered?;
                return Ok(Wake {
                    mode: "idle",
                    changed: true,
                });
            };
            let mut session = session;
            if self.idle_offered.load(Ordering::Relaxed) == UNKNOWN {
                // The connection was opened for a command. Return to say which way this
                // account waits (a trigger shows `starting` until a wait ends); the look
                // that follows costs little.
                let offered = self.offers_idle(&mut session).await;
                *guard = Some(session);
                offered?;
                let mode = match self.idle_offered.load(Ordering::Relaxed) {
                    NOT_OFFERED => "poll",
                    _ => "idle",
                };
                return Ok(Wake {
                    mode,
                    changed: false,
                });
            }
            match self
                .idle_turn(session, &mut guard, deadline, interrupt)
                .await?
            {
                Turn::Done(wake) => return Ok(wake),
                Turn::Interrupted => {
                    drop(guard);
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    /// One IDLE on `session`, put back into `guard` after DONE.
    async fn idle_turn(
        &self,
        session: Session<Stream>,
        guard: &mut Option<Session<Stream>>,
        deadline: Instant,
        interrupt: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) -> Result<Turn, MailError> {
        let server = self.server();
        // News reported during commands since the last IDLE: the caller's last look may
        // have covered it, but a step's command, or another trigger's, may have been the
        // one that received it. Look again (at worst once for nothing).
        let unsolicited = session.unsolicited_responses.clone();
        // Empties the unsolicited queue; whether it held news of messages.
        let news = || {
            let mut found = self.heard.swap(false, Ordering::SeqCst);
            while let Ok(r) = unsolicited.try_recv() {
                found |= matches!(
                    r,
                    UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
                );
            }
            found
        };
        let found = news();
        if found || Instant::now() >= deadline {
            *guard = Some(session);
            return Ok(Turn::Done(Wake {
                mode: "idle",
                changed: found,
            }));
        }
        let mut handle = session.idle();
        handle
            .init()
            .await
            .map_err(|e| classify(&server, "IDLE", e))?;
        // News that came with the start of IDLE went to the unsolicited queue.
        let early = news();
        let mut interrupted = false;
        let (outcome, stopped) = if early {
            (Ok(IdleResponse::ManualInterrupt), true)
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            let (wait, stop) = handle.wait_with_timeout(left);
            tokio::pin!(wait);
            tokio::select! {
                r = &mut wait => (r, false),
                () = tokio::time::sleep_until(deadline) => {
                    // Dropping the stop source ends the wait at once.
                    drop(stop);
                    (wait.await, true)
                }
                () = interrupt => {
                    interrupted = true;
                    drop(stop);
                    (wait.await, true)
                }
            }
        };
        let outcome = match outcome.map_err(|e| classify(&server, "IDLE", e))? {
            IdleResponse::NewData(_) => Turn::Done(Wake {
                mode: "idle",
                changed: true,
            }),
            IdleResponse::Timeout => Turn::Done(Wake {
                mode: "idle",
                changed: false,
            }),
            IdleResponse::ManualInterrupt if stopped => {
                if early {
                    Turn::Done(Wake {
                        mode: "idle",
                        changed: true,
                    })
                } else if interrupted {
                    Turn::Interrupted
                } else {
                    Turn::Done(Wake {
                        mode: "idle",
                        changed: false,
                    })
                }
            }
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
        if matches!(outcome, Turn::Done(_)) {
            // What came with the news or with DONE (dovecot follows EXISTS with RECENT)
            // is covered by the look the caller makes next. After an interruption it
            // stays, for the next turn to find.
            news();
        }
        *guard = Some(session);
        Ok(outcome)
    }

    /// Whether the server offers IDLE (and SEARCHRES), asked once per account and
    /// remembered.
    async fn offers_idle(&self, session: &mut Session<Stream>) -> Result<(), MailError> {
        let server = self.server();
        let caps = session
            .capabilities()
            .await
            .map_err(|e| classify(&server, "CAPABILITY", e))?;
        self.saves_searches
            .store(caps.has_str("SEARCHRES"), Ordering::SeqCst);
        if caps.has_str("IDLE") {
            self.idle_offered.store(OFFERED, Ordering::SeqCst);
        } else {
            tracing::info!("{server} does not offer IDLE; polling instead");
            self.idle_offered.store(NOT_OFFERED, Ordering::SeqCst);
        }
        Ok(())
    }

    /// For a trigger's first wait, once the account's way of waiting is known: that way,
    /// at once.
    fn shown_at_once(&self, plan: WaitPlan) -> Option<Wake> {
        let mode = match self.idle_offered.load(Ordering::SeqCst) {
            OFFERED => "idle",
            NOT_OFFERED => "poll",
            _ => return None,
        };
        plan.first.then_some(Wake {
            mode,
            changed: false,
        })
    }

    /// A poll's wait, for a server without IDLE.
    async fn poll(&self, plan: WaitPlan) -> Wake {
        tokio::time::sleep(plan.poll_interval).await;
        Wake {
            mode: "poll",
            changed: false,
        }
    }
}

/// Counts a command as waiting for the connection until it has it, also when the command
/// is dropped while it waits.
pub(super) struct Wanted<'a>(&'a AtomicUsize);

impl<'a> Wanted<'a> {
    pub(super) fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Wanted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
