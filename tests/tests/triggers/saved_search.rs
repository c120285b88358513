//! A look after news with a server that saves searches (SEARCHRES, RFC 5182): the sizes,
//! and small messages whole, come with the search in one round trip against dovecot,
//! and a server that names the extension but refuses it is looked at the old way.

use super::*;

/// A dovecot that writes a raw log of each IMAP session into the returned folder.
fn logged_dovecot() -> (tempfile::TempDir, MailStack) {
    let raw = tempfile::tempdir().unwrap();
    // dovecot's imap processes run as another user, and write their raw logs here.
    std::process::Command::new("chmod")
        .arg("0777")
        .arg(raw.path())
        .status()
        .unwrap();
    let stack = MailStack::start_with(
        None,
        &format!(
            "protocol imap {{\n  rawlog_dir = {}\n}}",
            raw.path().display()
        ),
    )
    .unwrap();
    (raw, stack)
}

/// What the client sent, across the raw logs of its sessions.
fn sent_commands(raw: &tempfile::TempDir) -> String {
    let mut sent = String::new();
    for entry in std::fs::read_dir(raw.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "in") {
            sent.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    sent
}

/// `wf` served until its trigger waits in IDLE.
async fn serve_until_idle(
    ws: &Workspace,
    wf: Workflow,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    let serving = start_serving(rt, store.clone(), wf);
    wait_until(
        "the trigger to wait in IDLE",
        Duration::from_secs(20),
        || store.watches().unwrap().iter().any(|w| w.mode == "idle"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    serving
}

/// Against a dovecot that offers SEARCHRES (RFC 5182), a look after news asks for the
/// sizes of what its search finds in the same round trip (`UID SEARCH RETURN (SAVE)`,
/// then `UID FETCH $`) and reads the messages just past its cursor ahead, and the size
/// cap still holds: a message over `max_size` runs without its attachments, the other in
/// full, taken whole from the look. dovecot's raw log of the session shows the commands
/// as they went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_look_after_news_gets_the_sizes_with_its_search() {
    let (raw, stack) = logged_dovecot();
    let ws = workspace(&stack, "INBOX");
    let wf = workflow(
        &ws,
        "    poll_interval: 10m\n    max_size: 2KB\n    oversize: without-attachments\n",
        false,
    );
    let (stop, handle) = serve_until_idle(&ws, wf).await;
    stack.deliver(USER, &mail("small news")).unwrap();
    wait_until("the first run", Duration::from_secs(10), || {
        ws.outbox().len() == 1
    })
    .await;
    let mut big = mail("big news");
    big.truncate(big.len() - 2);
    big.extend(std::iter::repeat_n(b"0123456789abcdef\r\n".as_slice(), 300).flatten());
    stack.deliver(USER, &big).unwrap();
    wait_until("the second run", Duration::from_secs(10), || {
        ws.outbox().len() == 2
    })
    .await;
    stop_serving(stop, handle).await;

    let mut got = handled(&ws);
    got.sort();
    assert_eq!(got, ["handled: big news", "handled: small news"]);
    // Each run tells whether its message came without attachments.
    let mut omitted: Vec<(bool, bool)> = ws
        .outbox()
        .iter()
        .map(|p| {
            let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
            (text.contains("big news"), text.contains("omitted=True"))
        })
        .collect();
    omitted.sort();
    assert_eq!(omitted, [(false, false), (true, true)]);
    let sent = sent_commands(&raw);
    let lines: Vec<&str> = sent.lines().collect();
    let saved: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("UID SEARCH RETURN (SAVE) "))
        .map(|(i, _)| i)
        .collect();
    assert!(
        saved.len() >= 2,
        "each look after news saved its search: {lines:#?}"
    );
    for i in saved {
        assert!(
            lines
                .get(i + 1)
                .is_some_and(|l| l.ends_with("UID FETCH $ (UID FLAGS RFC822.SIZE)")),
            "the sizes of the saved result were asked for with it: {lines:#?}"
        );
        // And the first bytes of the messages just past the cursor behind them.
        assert!(
            lines.get(i + 2).is_some_and(
                |l| l.contains(" UID FETCH ") && l.ends_with(" (UID BODY.PEEK[]<0.65536>)")
            ),
            "the messages past the cursor were read ahead with it: {lines:#?}"
        );
    }
    // Both messages came from the look itself: the small one whole, read ahead; the big
    // one over the cap by its parts. No message was fetched whole on its own.
    let whole = lines.iter().filter(|l| l.contains("BODY.PEEK[])")).count();
    assert_eq!(whole, 0, "{lines:#?}");
    // Sizes asked for by UID (a round trip of their own) only before the trigger had
    // caught up, at its first look.
    let by_uid = lines
        .iter()
        .filter(|l| l.contains("(UID FLAGS RFC822.SIZE)") && !l.contains(" $ "))
        .count();
    assert!(by_uid <= 1, "{lines:#?}");
}

/// A message longer than the look reads ahead is fetched whole on its own, not cut at
/// the bytes read ahead; one shorter comes whole from the look. Each run's text ends
/// with its message's last line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_longer_than_the_read_ahead_is_fetched_whole() {
    let (raw, stack) = logged_dovecot();
    let ws = workspace(&stack, "INBOX");
    let wf = workflow(&ws, "    poll_interval: 10m\n", false);
    let (stop, handle) = serve_until_idle(&ws, wf).await;
    // 60 KB fits in the 64 KB read ahead, 200 KB does not.
    for (n, (subject, lines)) in [("short", 3_400), ("long", 11_400)].into_iter().enumerate() {
        let mut m = mail(subject);
        m.extend(std::iter::repeat_n(b"0123456789abcdef\r\n".as_slice(), lines).flatten());
        m.extend(format!("last line of {subject}\r\n").bytes());
        stack.deliver(USER, &m).unwrap();
        wait_until("the run", Duration::from_secs(10), || {
            ws.outbox().len() == n + 1
        })
        .await;
    }
    stop_serving(stop, handle).await;
    let mut ends: Vec<(bool, bool)> = ws
        .outbox()
        .iter()
        .map(|p| {
            let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
            (
                text.contains("last line of short"),
                text.contains("last line of long"),
            )
        })
        .collect();
    ends.sort();
    assert_eq!(
        ends,
        [(false, true), (true, false)],
        "each run had its whole message"
    );
    let sent = sent_commands(&raw);
    let lines: Vec<&str> = sent.lines().collect();
    let ahead = lines
        .iter()
        .filter(|l| l.ends_with(" (UID BODY.PEEK[]<0.65536>)"))
        .count();
    let whole = lines.iter().filter(|l| l.contains("BODY.PEEK[])")).count();
    assert!(ahead >= 2, "{lines:#?}");
    assert_eq!(
        whole, 1,
        "only the long message was fetched on its own: {lines:#?}"
    );
}

/// What the refusing server saw.
#[derive(Default)]
struct Seen {
    saved_searches: std::sync::atomic::AtomicUsize,
    plain_searches: std::sync::atomic::AtomicUsize,
    refused_statuses: std::sync::atomic::AtomicUsize,
}

/// What the scripted server refuses, or does beyond what was asked.
#[derive(Clone, Copy, PartialEq)]
enum Refuse {
    /// `SEARCH RETURN (SAVE)` and `FETCH $`, always, with BAD.
    SavedSearches,
    /// The first STATUS once a message has arrived, with NO; saved searches are kept.
    OneStatus,
    /// Nothing; its saved search finds only even UIDs, and it answers the read ahead
    /// with each message's RFC822.SIZE besides the text asked for.
    Nothing,
}

/// An IMAP server that names SEARCHRES among its capabilities and refuses what `refuse`
/// says. Its folder (UIDVALIDITY 7) starts empty; at each of its first two IDLEs a
/// message arrives, UID 1 then UID 2, and is announced with EXISTS.
fn refusing_peer(seen: Arc<Seen>, refuse: Refuse) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering::SeqCst;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = 0u32;
        let mut saved: Vec<u32> = Vec::new();
        let mut status_refused = false;
        // A message's FETCH answer, with the given items before its text.
        let answer = |uid: u32, items: &str, text: &str| {
            let body = mail(&format!("refused news {uid}"));
            let mut a = format!("* {uid} FETCH (UID {uid}{items}");
            if !text.is_empty() {
                a.push_str(&format!(" {text} {{{}}}\r\n", body.len()));
            }
            let mut a = a.into_bytes();
            if !text.is_empty() {
                a.extend(body);
            }
            a.extend(b")\r\n");
            a
        };
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            let mut out = sock.try_clone().unwrap();
            let mut lines = BufReader::new(sock);
            let mut read = move || {
                let mut line = String::new();
                match lines.read_line(&mut line) {
                    Ok(n) if n > 0 => Some(line.trim_end().to_owned()),
                    _ => None,
                }
            };
            let caps = "IMAP4rev1 IDLE SEARCHRES";
            if out
                .write_all(format!("* OK [CAPABILITY {caps}] ready\r\n").as_bytes())
                .is_err()
            {
                continue;
            }
            while let Some(line) = read() {
                let (tag, command) = line.split_once(' ').unwrap_or((&line, ""));
                let verb = command.to_ascii_uppercase();
                let mut reply = Vec::new();
                if verb.starts_with("SELECT") {
                    reply.extend(
                        format!(
                            "* {held} EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT {}] n\r\n{tag} OK [READ-WRITE] selected\r\n",
                            held + 1
                        )
                        .bytes(),
                    );
                } else if verb == "CAPABILITY" {
                    reply.extend(format!("* CAPABILITY {caps}\r\n{tag} OK\r\n").bytes());
                } else if verb.starts_with("STATUS")
                    && refuse == Refuse::OneStatus
                    && held >= 1
                    && !status_refused
                {
                    status_refused = true;
                    seen.refused_statuses.fetch_add(1, SeqCst);
                    reply.extend(format!("{tag} NO status is not available now\r\n").bytes());
                } else if verb.starts_with("STATUS") {
                    reply.extend(
                        format!(
                            "* STATUS INBOX (UIDVALIDITY 7 UIDNEXT {})\r\n{tag} OK status\r\n",
                            held + 1
                        )
                        .bytes(),
                    );
                } else if verb.starts_with("UID SEARCH RETURN (SAVE)") {
                    seen.saved_searches.fetch_add(1, SeqCst);
                    if refuse == Refuse::SavedSearches {
                        reply.extend(
                            format!("{tag} BAD saved searches are not kept here\r\n").bytes(),
                        );
                    } else {
                        // `UID n:*`: the messages from n on.
                        let from = verb
                            .split(' ')
                            .nth(5)
                            .and_then(|r| r.split(':').next()?.parse::<u32>().ok())
                            .unwrap_or(1);
                        saved = (from.max(1)..=held)
                            .filter(|u| refuse != Refuse::Nothing || u % 2 == 0)
                            .collect();
                        reply.extend(format!("{tag} OK saved\r\n").bytes());
                    }
                } else if verb.starts_with("UID FETCH $") {
                    if refuse == Refuse::SavedSearches {
                        reply.extend(format!("{tag} BAD no saved result\r\n").bytes());
                    } else {
                        for uid in &saved {
                            let n = mail(&format!("refused news {uid}")).len();
                            reply.extend(answer(*uid, &format!(" FLAGS () RFC822.SIZE {n}"), ""));
                        }
                        reply.extend(format!("{tag} OK fetch\r\n").bytes());
                    }
                } else if verb.starts_with("UID FETCH") && verb.contains("<0.") {
                    // Read ahead: `UID FETCH a:b (UID BODY.PEEK[]<0.n>)`.
                    let set = command.split(' ').nth(2).unwrap_or_default();
                    let mut ends = set.split(':').filter_map(|u| u.parse::<u32>().ok());
                    let (a, b) = (ends.next().unwrap_or(1), ends.next().unwrap_or(0));
                    for uid in a.max(1)..=b.min(held) {
                        let unasked = match refuse {
                            Refuse::Nothing => {
                                let n = mail(&format!("refused news {uid}")).len();
                                format!(" RFC822.SIZE {n}")
                            }
                            _ => String::new(),
                        };
                        reply.extend(answer(uid, &unasked, "BODY[]<0>"));
                    }
                    reply.extend(format!("{tag} OK fetch\r\n").bytes());
                } else if verb.starts_with("UID SEARCH") {
                    seen.plain_searches.fetch_add(1, SeqCst);
                    let uids: String = (1..=held).map(|u| format!(" {u}")).collect();
                    reply.extend(format!("* SEARCH{uids}\r\n{tag} OK search\r\n").bytes());
                } else if verb.starts_with("UID FETCH") {
                    let set = command.split(' ').nth(2).unwrap_or_default();
                    for uid in set.split(',').filter_map(|u| u.parse::<u32>().ok()) {
                        if uid == 0 || uid > held {
                            continue;
                        }
                        let n = mail(&format!("refused news {uid}")).len();
                        reply.extend(answer(uid, &format!(" FLAGS () RFC822.SIZE {n}"), "BODY[]"));
                    }
                    reply.extend(format!("{tag} OK fetch\r\n").bytes());
                } else if verb == "IDLE" {
                    let _ = out.write_all(b"+ idling\r\n");
                    if held < 2 {
                        std::thread::sleep(Duration::from_millis(300));
                        held += 1;
                        let _ = out.write_all(format!("* {held} EXISTS\r\n").as_bytes());
                    }
                    // Until DONE.
                    while read().is_some_and(|l| !l.eq_ignore_ascii_case("DONE")) {}
                    reply.extend(format!("{tag} OK idle done\r\n").bytes());
                } else if verb.starts_with("LOGOUT") {
                    reply.extend(format!("* BYE\r\n{tag} OK bye\r\n").bytes());
                } else {
                    reply.extend(format!("{tag} OK done\r\n").bytes());
                }
                if out.write_all(&reply).is_err() {
                    break;
                }
            }
        }
    });
    port
}

/// Serves a trigger on the scripted server until `runs` runs, then `settle` longer, and
/// returns the subjects handled (sorted) and what the server saw.
async fn runs_on(refuse: Refuse, runs: usize, settle: Duration) -> (Vec<String>, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let port = refusing_peer(seen.clone(), refuse);
    let ws = Workspace::with_scripted_imap(USER, port).unwrap();
    let wf = workflow(&ws, "    poll_interval: 10m\n", false);
    let (rt, store) = ws.app(None, Audit::default()).unwrap();
    let (stop, handle) = start_serving(rt, store.clone(), wf);
    wait_until("the runs", Duration::from_secs(30), || {
        ws.outbox().len() == runs
    })
    .await;
    tokio::time::sleep(settle).await;
    stop_serving(stop, handle).await;
    let mut got = handled(&ws);
    got.sort();
    (got, seen)
}

/// Serves a trigger on the scripted server until both its messages have run, and
/// returns what the server saw.
async fn both_runs_on(refuse: Refuse) -> Arc<Seen> {
    let (got, seen) = runs_on(refuse, 2, Duration::ZERO).await;
    assert_eq!(got, ["handled: refused news 1", "handled: refused news 2"]);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_names_searchres_but_refuses_it_is_looked_at_the_old_way() {
    let seen = both_runs_on(Refuse::SavedSearches).await;
    // Refused once, then never asked again: the second news was looked at the old way.
    assert_eq!(
        seen.saved_searches
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert!(
        seen.plain_searches
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    );
}

/// A STATUS the server refuses during a look with a saved search says nothing about
/// saved searches: the trigger tries again, the later looks still save their searches,
/// and both messages run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_status_does_not_turn_saved_searches_off() {
    use std::sync::atomic::Ordering::SeqCst;
    let seen = both_runs_on(Refuse::OneStatus).await;
    assert_eq!(seen.refused_statuses.load(SeqCst), 1);
    // Only the first look, before the trigger had a cursor, searched without saving:
    // the look the STATUS failed saved its search, and so did every look after it (its
    // retry, and the look after the second news).
    assert!(
        seen.plain_searches.load(SeqCst) == 1 && seen.saved_searches.load(SeqCst) >= 3,
        "saved searches: {}, plain: {}",
        seen.saved_searches.load(SeqCst),
        seen.plain_searches.load(SeqCst)
    );
}

/// A message read ahead is not one the search found, even when the server sends its
/// size unasked: the saved search finds only the second message, and only it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_read_ahead_runs_only_when_the_search_found_it() {
    // The first arrived a look earlier, and would have run before the second; half a
    // second more leaves time for any run after it.
    let (got, seen) = runs_on(Refuse::Nothing, 1, Duration::from_millis(500)).await;
    assert_eq!(got, ["handled: refused news 2"]);
    assert!(
        seen.saved_searches
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    );
}
