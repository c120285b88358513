//! Mail transactions over an open session. Where the server offers PIPELINING (RFC 2920),
//! MAIL, every RCPT and DATA go out in one write and their replies are read after it: two
//! round trips per message (the commands, then the content) instead of three plus one per
//! recipient. Elsewhere the commands go one by one.

use std::time::Duration;

use lettre::address::{Address as LettreAddress, Envelope as LettreEnvelope};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;

use super::session::{Cause, Failure, Stage, timed};
use crate::bindings::transport::Envelope;

type SmtpError = lettre::transport::smtp::Error;

/// How long a session that failed may take to say goodbye (QUIT) before it is closed.
const QUIT_LIMIT: Duration = Duration::from_secs(5);

/// An open, authenticated SMTP session.
pub struct Session {
    conn: AsyncSmtpConnection,
    pipelining: bool,
    /// Set from the first command of a transaction until the server is known to wait for
    /// the next one. A session left unsettled (a reply not read, or DATA accepted for
    /// content that is not coming) is closed: QUIT could be read as message content, and
    /// the session is never reused.
    unsettled: bool,
}

impl Session {
    pub(super) fn new(conn: AsyncSmtpConnection, pipelining: bool) -> Self {
        Self {
            conn,
            pipelining,
            unsettled: false,
        }
    }

    /// Whether the session may not carry another transaction.
    pub fn has_broken(&self) -> bool {
        self.unsettled || self.conn.has_broken()
    }

    /// Readies the session for another transaction after `failure`, with RSET, where the
    /// server refused the transaction and still waits for commands: a refused recipient
    /// costs no new connection, TLS handshake and login. False where the session cannot
    /// go on (it broke, waits for content, or the server is closing it with 421).
    pub async fn reset_after(&mut self, failure: &Failure) -> bool {
        let refused = match &failure.cause {
            Cause::Smtp(e) | Cause::AfterData(e) => {
                failure.stage == Stage::Transaction
                    && is_reply(e)
                    && e.status().is_some_and(|c| c.to_string() != "421")
            }
            _ => false,
        };
        if !refused || self.has_broken() {
            return false;
        }
        let reset = tokio::time::timeout(QUIT_LIMIT, self.conn.command(Rset)).await;
        // A reset that failed leaves the server's state unknown.
        self.unsettled = !matches!(reset, Ok(Ok(_)));
        !self.unsettled
    }

    /// Ends the session politely: QUIT, and its reply, within a few seconds.
    pub async fn quit(mut self) {
        if !self.has_broken() {
            let _ = tokio::time::timeout(QUIT_LIMIT, self.conn.quit()).await;
        }
    }

    /// Ends a session after a failure: with QUIT where the server waits for a command,
    /// by closing the connection where that is not known (the server then discards what
    /// the transaction had, so nothing is delivered).
    pub async fn abort(mut self) {
        if self.unsettled {
            return;
        }
        let _ = tokio::time::timeout(QUIT_LIMIT, self.conn.abort()).await;
    }

    /// Sends one message; returns the server's final reply. Every failure before the
    /// content was sent means nothing was delivered; one after it is [`Cause::AfterData`].
    pub async fn transaction(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
        timeout: Duration,
    ) -> Result<Response, Failure> {
        let addresses = lettre_envelope(envelope)?;
        let mut options = Vec::new();
        let non_ascii = |a: &str| !a.is_ascii();
        if non_ascii(&envelope.sender) || envelope.recipients.iter().any(|r| non_ascii(r)) {
            options.push(MailParameter::SmtpUtfEight);
        }
        if !message.is_ascii() {
            options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let mail = Mail::new(addresses.from().cloned(), options);
        let rcpts: Vec<Rcpt> = addresses
            .to()
            .iter()
            .map(|to| Rcpt::new(to.clone(), Vec::new()))
            .collect();
        self.unsettled = true;
        // MAIL, RCPT and DATA: if the session breaks here, nothing was delivered.
        let prelude = async {
            if self.pipelining {
                pipelined(&mut self.conn, mail, rcpts).await
            } else {
                one_by_one(&mut self.conn, mail, rcpts).await
            }
        };
        let failed = |cause| {
            Err(Failure {
                stage: Stage::Transaction,
                cause,
            })
        };
        match tokio::time::timeout(timeout, prelude).await {
            Ok(Ok(())) => {}
            Ok(Err(Stop::Refused { error, in_data })) => {
                // Every reply was read: the server waits for the next command, unless
                // it accepted DATA for content that is not coming.
                self.unsettled = in_data;
                return failed(Cause::Smtp(error));
            }
            Ok(Err(Stop::Broken(error))) => return failed(Cause::Smtp(error)),
            Err(_) => return failed(Cause::TimedOut(timeout)),
        }
        // The content and its final dot. From here a lost reply leaves the outcome unknown,
        // so the failure says so and is never retried silently. A large message may take
        // long; the limit scales with its size.
        let limit = timeout + Duration::from_secs(message.len() as u64 / (256 * 1024));
        let reply = timed(
            Stage::Transaction,
            limit,
            self.conn.message(message),
            Cause::AfterData,
        )
        .await;
        // A final reply, positive or not, ends the transaction; a timeout or a broken
        // connection leaves it open.
        self.unsettled = match &reply {
            Ok(_) => false,
            Err(Failure {
                cause: Cause::AfterData(e),
                ..
            }) => !is_reply(e),
            Err(_) => true,
        };
        reply
    }
}

/// The envelope as lettre takes it; an address it cannot read is the caller's error.
fn lettre_envelope(envelope: &Envelope) -> Result<LettreEnvelope, Failure> {
    let parse = |a: &str| {
        a.parse::<LettreAddress>()
            .map_err(|e| format!("`{a}`: {e}"))
    };
    (|| -> Result<LettreEnvelope, String> {
        let to = envelope
            .recipients
            .iter()
            .map(|r| parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        LettreEnvelope::new(Some(parse(&envelope.sender)?), to).map_err(|e| e.to_string())
    })()
    .map_err(|e| Failure {
        stage: Stage::Transaction,
        cause: Cause::Address(e),
    })
}

/// Why MAIL, RCPT or DATA did not get the server ready for the content.
enum Stop {
    /// The server refused a command; every reply was read. `in_data`: it accepted DATA
    /// all the same and now waits for content.
    Refused { error: SmtpError, in_data: bool },
    /// The connection broke, or a reply was not SMTP.
    Broken(SmtpError),
}

/// Whether `e` is the server's reply (the session is still in step) rather than a broken
/// or garbled connection.
fn is_reply(e: &SmtpError) -> bool {
    e.status().is_some()
}

/// The commands one by one, each waiting for its reply.
async fn one_by_one(
    conn: &mut AsyncSmtpConnection,
    mail: Mail,
    rcpts: Vec<Rcpt>,
) -> Result<(), Stop> {
    let step = |r: Result<Response, SmtpError>| match r {
        Ok(_) => Ok(()),
        Err(error) if is_reply(&error) => Err(Stop::Refused {
            error,
            in_data: false,
        }),
        Err(error) => Err(Stop::Broken(error)),
    };
    step(conn.command(mail).await)?;
    for rcpt in rcpts {
        step(conn.command(rcpt).await)?;
    }
    step(conn.command(Data).await)
}

/// MAIL, every RCPT and DATA in one write (RFC 2920: DATA ends the group), then their
/// replies in order. A refused command is reported once every reply is read, so that the
/// session stays in step; the first refusal is the one reported.
async fn pipelined(
    conn: &mut AsyncSmtpConnection,
    mail: Mail,
    rcpts: Vec<Rcpt>,
) -> Result<(), Stop> {
    let mut group = mail.to_string();
    for rcpt in &rcpts {
        group.push_str(&rcpt.to_string());
    }
    group.push_str(&Data.to_string());
    let mut refused = None;
    let mut settle = |r: Result<Response, SmtpError>| match r {
        Ok(_) => Ok(()),
        Err(error) if is_reply(&error) => {
            refused.get_or_insert(error);
            Ok(())
        }
        Err(error) => Err(Stop::Broken(error)),
    };
    // The group goes out in one write; this reads MAIL's reply.
    settle(conn.command(Group(group)).await)?;
    for _ in &rcpts {
        settle(conn.read_response().await)?;
    }
    let data = conn.read_response().await;
    let in_data = data.is_ok();
    settle(data)?;
    match refused {
        None => Ok(()),
        Some(error) => Err(Stop::Refused { error, in_data }),
    }
}

/// Commands written together, each with its line ending.
struct Group(String);

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether an EHLO reply, as the server sent it (`250-` and `250 ` lines), offers
/// `keyword`.
pub(super) fn offers(ehlo: &str, keyword: &str) -> bool {
    ehlo.lines().any(|line| {
        line.starts_with("250")
            && line
                .get(4..)
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
    })
}

/// The queue id in a final `250` reply, such as postfix's `Ok: queued as 4dQ5Yk0Qvf`.
pub fn queue_id(r: &Response) -> Option<String> {
    r.message().find_map(|line| {
        let at = line.find("queued as ")?;
        line[at + 10..].split_whitespace().next().map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::offers;

    #[test]
    fn pipelining_is_read_from_the_ehlo_reply_as_sent() {
        let ehlo = "220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n";
        assert!(offers(ehlo, "PIPELINING"));
        assert!(offers(ehlo, "size"));
        assert!(offers("250 pipelining\r\n", "PIPELINING"));
        assert!(!offers(ehlo, "CHUNKING"));
        // Not a keyword of the reply: the greeting, or a word inside another line.
        assert!(!offers(
            "220 PIPELINING ready\r\n250 mx.test\r\n",
            "PIPELINING"
        ));
        assert!(!offers(
            "250-mx.test\r\n250 X-NOT-PIPELINING\r\n",
            "PIPELINING"
        ));
    }
}
