//! The mailbox trigger's settings: how messages become runs, what happens after a run,
//! retries and dead letters, the size cap, and how `flowmail serve` waits for mail.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::inputs;
use crate::bindings::mailbox::{Flag, Oversize, SizeCap};
use crate::caps::mailbox::WaitPlan;

/// A mailbox trigger.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxTrigger {
    pub account: String,
    #[serde(default)]
    pub filter: inputs::FilterInput,
    /// Messages read from the mailbox at a time, and per run when `per` is `batch`.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// One run per message (the default), or one run per batch of messages.
    #[serde(default)]
    pub per: Per,
    /// What to do with a message after its run succeeded.
    #[serde(default)]
    pub on_success: PostAction,
    #[serde(default)]
    pub retry: Retry,
    #[serde(default)]
    pub dead_letter: DeadLetter,
    /// Messages larger than this many bytes (or `10MB`, `512KiB`, ...) are over the cap.
    #[serde(default, deserialize_with = "size")]
    pub max_size: Option<u64>,
    /// What to do with a message over `max_size`: `skip` it (reported with its size), or
    /// read it `without-attachments`.
    #[serde(default = "default_oversize", deserialize_with = "oversize")]
    pub oversize: Oversize,
    /// How often `flowmail serve` looks when the server has no IDLE.
    #[serde(default = "default_poll", deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// How long one IDLE lasts before it is issued again (at most 29 minutes).
    #[serde(default = "default_idle_refresh", deserialize_with = "duration")]
    pub idle_refresh: Duration,
    /// Silence after which `flowmail serve` reconnects and logs an alert. By default a
    /// little more than the longest quiet wait (IDLE refresh or poll interval).
    #[serde(default, deserialize_with = "opt_duration")]
    pub silence_alert: Option<Duration>,
}

/// What one run covers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Per {
    #[default]
    Message,
    Batch,
}

/// A post-action, done only after a run succeeded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum PostAction {
    #[default]
    Nothing,
    MarkSeen,
    /// Flag the message (IMAP `\Flagged`, Graph's follow-up flag), to leave it in place
    /// but marked as handled.
    Flag,
    Delete,
    MoveTo(String),
}

impl<'de> Deserialize<'de> for PostAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Move {
                #[serde(rename = "move_to")]
                folder: String,
            },
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) => match w.as_str() {
                "none" | "nothing" => Ok(Self::Nothing),
                "seen" | "mark_seen" => Ok(Self::MarkSeen),
                "flag" | "flagged" => Ok(Self::Flag),
                "delete" => Ok(Self::Delete),
                other => Err(serde::de::Error::custom(format!(
                    "`{other}` is not a post-action: use none, seen, flag, delete or {{ move_to: FOLDER }}"
                ))),
            },
            Raw::Move { folder } => Ok(Self::MoveTo(folder)),
        }
    }
}

/// How failed runs are retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Runs per message, the first one included, before it goes to the dead letters.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// The wait before the second attempt; it doubles each time, with jitter.
    #[serde(default = "default_backoff", deserialize_with = "duration")]
    pub backoff: Duration,
    /// The longest wait between attempts.
    #[serde(default = "default_max_backoff", deserialize_with = "duration")]
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

impl Retry {
    /// The wait after failed attempt number `attempt` (1-based): exponential, capped, and
    /// jittered by up to a quarter either way so that many failures do not retry at once.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_backoff);
        jitter(base)
    }
}

/// `d` moved by a random amount of up to a quarter either way.
pub fn jitter(d: Duration) -> Duration {
    let quarter = d.as_millis() as u64 / 4;
    if quarter == 0 {
        return d;
    }
    let offset = fastrand::u64(0..=2 * quarter);
    (d + Duration::from_millis(offset)).saturating_sub(Duration::from_millis(quarter))
}

/// Where a message goes after its last failed attempt.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    /// Move it to this folder.
    #[serde(default)]
    pub folder: Option<String>,
    /// Or set this flag on it (`flagged` when neither is given).
    #[serde(default, deserialize_with = "opt_flag")]
    pub flag: Option<Flag>,
}

/// The per-message size cap of a trigger that sets no `max_size`: 50 MB, above what mail
/// servers accept (Gmail and Microsoft 365 take 25 to 35 MB), well under the plugin's memory
/// limit.
pub const DEFAULT_MAX_SIZE: u64 = 50 * 1000 * 1000;

impl MailboxTrigger {
    /// The size cap to pass to `read-mailbox`: `max_size`, or [`DEFAULT_MAX_SIZE`] when the
    /// trigger sets none, so that the default setup never reads a huge message whole.
    pub fn cap(&self) -> Option<SizeCap> {
        Some(SizeCap {
            max_size: self.max_size.unwrap_or(DEFAULT_MAX_SIZE),
            oversize: self.oversize,
        })
    }

    /// How `flowmail serve` waits.
    pub fn wait_plan(&self) -> WaitPlan {
        WaitPlan {
            idle_refresh: self.idle_refresh,
            poll_interval: self.poll_interval,
            first: false,
        }
    }

    /// The silence after which the watchdog steps in.
    pub fn silence(&self) -> Duration {
        self.silence_alert
            .unwrap_or_else(|| self.idle_refresh.max(self.poll_interval) + Duration::from_secs(120))
    }

    /// Checks the settings that serde cannot; `Err` names the field and the fix.
    pub fn check(&self) -> Result<(), (String, String)> {
        let fail = |f: &str, r: &str| Err((f.to_owned(), r.to_owned()));
        if self.batch == 0 || self.batch > 1000 {
            return fail("batch", "must be between 1 and 1000");
        }
        if self.retry.attempts == 0 {
            return fail(
                "retry.attempts",
                "must be at least 1 (the first run counts)",
            );
        }
        if self.idle_refresh > Duration::from_secs(29 * 60) || self.idle_refresh.is_zero() {
            return fail(
                "idle_refresh",
                "must be more than 0 and at most 29m: servers end an IDLE after 30 minutes",
            );
        }
        if self.poll_interval < Duration::from_millis(100) {
            return fail("poll_interval", "must be at least 100ms");
        }
        if self.silence() <= self.idle_refresh.max(self.poll_interval) {
            return fail(
                "silence_alert",
                "must be longer than idle_refresh and poll_interval, or every quiet wait raises an alert",
            );
        }
        if self.max_size == Some(0) {
            return fail("max_size", "must be more than 0 bytes");
        }
        if self.dead_letter.folder.is_some() && self.dead_letter.flag.is_some() {
            return fail("dead_letter", "give either `folder` or `flag`, not both");
        }
        if let PostAction::MoveTo(f) = &self.on_success
            && f.trim().is_empty()
        {
            return fail("on_success.move_to", "name the folder to move to");
        }
        Ok(())
    }
}

fn default_batch() -> u32 {
    100
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(3600)
}
fn default_poll() -> Duration {
    Duration::from_secs(60)
}
fn default_idle_refresh() -> Duration {
    Duration::from_secs(25 * 60)
}
fn default_oversize() -> Oversize {
    Oversize::Skip
}

/// Parses `250ms`, `30s`, `5m`, `2h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: use 250ms, 30s, 5m or 2h"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "`{text}` is not a duration: use 250ms, 30s, 5m or 2h"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{text}`: {e}"))
}

/// Parses a byte count: `1048576`, `500KB`, `10MB`, `1GB` (powers of 1000) or `KiB`,
/// `MiB`, `GiB` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size: use 10MB, 512KiB or a number of bytes"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{text}` is not a size: use 10MB, 512KiB or a number of bytes"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(u64),
    Text(String),
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => Ok(Duration::from_secs(n)),
        NumOrText::Text(t) => parse_duration(&t).map_err(serde::de::Error::custom),
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match NumOrText::deserialize(d)? {
        NumOrText::Num(n) => Ok(Some(n)),
        NumOrText::Text(t) => parse_size(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

fn oversize<'de, D: Deserializer<'de>>(d: D) -> Result<Oversize, D::Error> {
    match String::deserialize(d)?.as_str() {
        "skip" => Ok(Oversize::Skip),
        "without-attachments" => Ok(Oversize::WithoutAttachments),
        other => Err(serde::de::Error::custom(format!(
            "`{other}` is not an oversize policy: use skip or without-attachments"
        ))),
    }
}

fn opt_flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Flag>, D::Error> {
    match String::deserialize(d)?
        .to_ascii_lowercase()
        .trim_start_matches('\\')
    {
        "seen" => Ok(Some(Flag::Seen)),
        "flagged" => Ok(Some(Flag::Flagged)),
        "answered" => Ok(Some(Flag::Answered)),
        "draft" => Ok(Some(Flag::Draft)),
        other => Err(serde::de::Error::custom(format!(
            "`{other}` is not a dead-letter flag: use flagged, seen, answered or draft"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("512KiB"), Ok(524_288));
        assert!(parse_size("big").is_err());
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let r = Retry {
            attempts: 5,
            backoff: Duration::from_secs(8),
            max_backoff: Duration::from_secs(20),
        };
        for _ in 0..50 {
            let first = r.delay(1);
            assert!(first >= Duration::from_secs(6) && first <= Duration::from_secs(10));
            let second = r.delay(2);
            assert!(second >= Duration::from_secs(12) && second <= Duration::from_secs(20));
            assert!(r.delay(9) <= Duration::from_secs(25));
        }
    }
}
