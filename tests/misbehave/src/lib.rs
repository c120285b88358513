//! A plugin that misbehaves on request, to prove the host's limits: `send-mail` with the
//! subject `loop` never returns, with `hog` it allocates without bound, with `recurse` it
//! recurses until its stack runs out, with `huge` it returns a
//! receipt of some hundred megabytes, with `flood` it logs 200,000 lines, with
//! `other:NAME` it sends through account NAME, which the step did not name, with `probe` it
//! tries to escape the sandbox (read files, list the environment, open a socket to the
//! port in the text, flood stdout) and reports what happened in the receipt's reference;
//! with `remember` it reports what an earlier call left in its memory (a counter and a
//! 256 KB buffer among its statics, and a marked 256 KB heap allocation), then leaves
//! its own marks there; any other subject sends a minimal message, so a test can see the host serve the next
//! call. `read-mailbox` reads only each message's Subject and Message-ID.

wit_bindgen::generate!({
    world: "mail-plugin",
    path: "../../wit",
});

use exports::flowmail::mail::actions::{Filter, Guest, MailboxPage, Receipt};
use flowmail::mail::mailbox::{self, Search, SizeCap};
use flowmail::mail::transport::{self, Envelope};
use flowmail::mail::types::{MailError, OutgoingMessage, ReceivedMessage};

struct Misbehave;

/// What `remember` leaves behind in static memory.
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static mut RESIDUE: [u8; 256 << 10] = [0; 256 << 10];

/// What an earlier `remember` left: the calls counted, the static buffer's marked bytes,
/// and whether a fresh heap allocation of the same size (not zeroed by the allocator's
/// contract, `Vec::with_capacity`) still held the earlier call's mark; then marks all
/// three.
fn remember() -> String {
    let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: the component runs one call at a time on one thread.
    let statics = unsafe { &mut *std::ptr::addr_of_mut!(RESIDUE) };
    let marked = statics.iter().filter(|b| **b != 0).count();
    statics.fill(0xA5);
    let mut heap: Vec<u8> = Vec::with_capacity(256 << 10);
    // Volatile reads of whatever the fresh allocation's memory holds (a plugin peeking
    // at it on purpose).
    let heap_marked = (0..heap.capacity())
        // SAFETY: within the allocation; any byte value is a valid u8.
        .filter(|i| unsafe { heap.as_ptr().add(*i).read_volatile() } == 0x5A)
        .count();
    heap.resize(256 << 10, 0x5A);
    std::hint::black_box(&heap);
    format!("calls {calls}, static bytes marked {marked}, heap bytes marked {heap_marked}")
}

/// Recurses until the stack runs out.
fn deep(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    std::hint::black_box(deep(std::hint::black_box(n - 1))) + 1
}

impl Guest for Misbehave {
    fn send_mail(account: String, message: OutgoingMessage) -> Result<Receipt, MailError> {
        match message.subject.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => Err(MailError::Permanent(format!("depth {}", deep(u64::MAX)))),
            // A return value the host must not keep: a 64 MB message id and a million
            // accepted recipients, for a step that named one.
            "huge" => Ok(Receipt {
                message_id: "h".repeat(64 << 20),
                accepted: vec!["a@example.com".to_owned(); 1_000_000],
                transport: "huge".into(),
                status: transport::DeliveryStatus::Queued,
                reference: None,
                size: 0,
            }),
            "flood" => {
                for i in 0..200_000u32 {
                    flowmail::mail::log::log(
                        flowmail::mail::log::Level::Info,
                        &format!("flood line {i} {}", "x".repeat(100)),
                    );
                }
                Err(MailError::Permanent("flooded".into()))
            }
            other if other.starts_with("other:") => {
                // An account the step did not name.
                let envelope = Envelope {
                    sender: "misbehave@example.com".into(),
                    recipients: vec!["ops@demo.example".into()],
                };
                let d = transport::send(
                    &other["other:".len()..],
                    &envelope,
                    b"Subject: x\r\n\r\nx\r\n",
                )?;
                Ok(Receipt {
                    message_id: "misbehave@example.com".into(),
                    accepted: d.accepted,
                    transport: d.transport,
                    status: d.status,
                    reference: d.reference,
                    size: 0,
                })
            }
            "remember" => Ok(Receipt {
                message_id: "remember@example.com".into(),
                accepted: Vec::new(),
                transport: "remember".into(),
                status: transport::DeliveryStatus::Queued,
                reference: Some(remember()),
                size: 0,
            }),
            "probe" => {
                let report = probe(message.text.as_deref().unwrap_or_default());
                Ok(Receipt {
                    message_id: "probe@example.com".into(),
                    accepted: Vec::new(),
                    transport: "probe".into(),
                    status: transport::DeliveryStatus::Queued,
                    reference: Some(report),
                    size: 0,
                })
            }
            _ => {
                let to = message
                    .to
                    .first()
                    .map(|a| a.email.clone())
                    .unwrap_or_default();
                let envelope = Envelope {
                    sender: "misbehave@example.com".into(),
                    recipients: vec![to],
                };
                let body = format!("Subject: {}\r\n\r\nok\r\n", message.subject);
                let d = transport::send(&account, &envelope, body.as_bytes())?;
                Ok(Receipt {
                    message_id: "misbehave@example.com".into(),
                    accepted: d.accepted,
                    transport: d.transport,
                    status: d.status,
                    reference: d.reference,
                    size: body.len() as u64,
                })
            }
        }
    }

    fn read_mailbox(
        account: String,
        _filter: Filter,
        after: Option<String>,
        limit: u32,
        cap: Option<SizeCap>,
    ) -> Result<MailboxPage, MailError> {
        let search = Search {
            sender_contains: None,
            subject_contains: None,
            unseen: false,
            sent_since: None,
        };
        let batch = mailbox::fetch_after(&account, after.as_deref(), limit, &search, cap)?;
        Ok(MailboxPage {
            messages: batch.messages.iter().map(minimal).collect(),
            skipped: Vec::new(),
            next_cursor: batch.next,
            scanned: batch.messages.len() as u32,
            more: batch.more,
            restarted: batch.restarted,
        })
    }
}

/// A message as a plugin that reads only its top header lines (Subject, Message-ID) sees
/// it: enough for a trigger to run on.
fn minimal(raw: &mailbox::RawMessage) -> ReceivedMessage {
    let text = String::from_utf8_lossy(&raw.data);
    let header = |name: &str| {
        text.lines().take_while(|l| !l.is_empty()).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    ReceivedMessage {
        id: raw.id.clone(),
        message_id: header("Message-ID").map(|m| m.trim_matches(['<', '>']).to_owned()),
        sender: None,
        to: Vec::new(),
        cc: Vec::new(),
        date: None,
        subject: header("Subject").unwrap_or_default(),
        text: None,
        html: None,
        attachments: Vec::new(),
        flags: raw.flags.clone(),
        size: raw.size,
        attachments_omitted: false,
    }
}

/// Tries each way out of the sandbox; one line per attempt.
fn probe(port: &str) -> String {
    use std::io::Write;
    let mut lines = Vec::new();
    let outcome = |r: Result<String, std::io::Error>| match r {
        Ok(v) => format!("allowed {v}"),
        Err(e) => format!("denied ({e})"),
    };
    lines.push(format!(
        "file read: {}",
        outcome(std::fs::read("/etc/passwd").map(|b| format!("{} bytes", b.len())))
    ));
    lines.push(format!(
        "dir list: {}",
        outcome(std::fs::read_dir("/").map(|d| format!("{} entries", d.count())))
    ));
    lines.push(format!(
        "file write: {}",
        outcome(std::fs::write("/tmp/flowmail-probe", b"x").map(|()| "written".into()))
    ));
    let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    lines.push(format!("env: {} variable(s) {vars:?}", vars.len()));
    lines.push(format!(
        "env PATH: {}",
        std::env::var("PATH").map_or("absent".into(), |v| format!("present ({} chars)", v.len()))
    ));
    lines.push(format!(
        "socket: {}",
        outcome(
            std::net::TcpStream::connect(format!("127.0.0.1:{}", port.trim()))
                .map(|s| format!("{:?}", s.peer_addr()))
        )
    ));
    let chunk = vec![b'x'; 1 << 20];
    let mut out = std::io::stdout();
    let mut written = 0usize;
    let mut error = None;
    for _ in 0..64 {
        match out.write_all(&chunk) {
            Ok(()) => written += chunk.len(),
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    lines.push(format!("stdout: {written} bytes written, error {error:?}"));
    lines.join("\n")
}

export!(Misbehave);
