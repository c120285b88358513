//! Property tests of what the plugin reads: hostile, broken and generated MIME.
//!
//! Three sources of input: the committed seed corpus (`tests/corpus/*.eml`: real-world
//! shapes and the ways they break), seeds mutated at random (bytes flipped, MIME tokens
//! spliced in, ranges cut or repeated, truncation), and MIME trees built by a generator
//! (nested multiparts, every transfer encoding, boundaries that break). Whatever comes in,
//! the parser answers with a message or a reason, never a panic, and what it answers is
//! usable: every attachment it lists can be forwarded as it is.
//!
//! `PROPTEST_CASES` sets the cases per property (256 by default); a long run is
//! `PROPTEST_CASES=100000 cargo test -p flowmail-plugin --release --test mime`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use flowmail_plugin::compose::check_attachment;
use flowmail_plugin::mailbox::{Content, RawMessage};
use flowmail_plugin::parse;
use flowmail_plugin::transport::AccountPolicy;
use proptest::prelude::*;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("the seed corpus is committed")
        .map(|e| {
            let path = e.expect("a corpus entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("a readable seed"))
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 20, "the seed corpus is incomplete");
    seeds
}

fn raw(data: Vec<u8>) -> RawMessage {
    RawMessage {
        id: "1:1".into(),
        flags: vec![],
        size: data.len() as u64,
        data,
        content: Content::Complete,
    }
}

/// What any input must satisfy: an answer, never a panic; a refusal says why; and a
/// message's attachments are the ones `attachments` returns, each forwardable as it is.
fn usable(data: &[u8]) -> Result<Option<String>, TestCaseError> {
    let raw = raw(data.to_vec());
    match parse::parse(&raw) {
        Err(reason) => {
            prop_assert!(!reason.is_empty(), "a refusal without a reason");
            prop_assert!(parse::attachments(&raw).is_err());
            Ok(Some(reason))
        }
        Ok(message) => {
            let files = parse::attachments(&raw).map_err(TestCaseError::fail)?;
            prop_assert_eq!(files.len(), message.attachments.len());
            let policy = AccountPolicy {
                default_sender: None,
                required_sender: None,
                max_message_bytes: u64::MAX,
                max_attachment_bytes: u64::MAX,
            };
            for (i, (file, info)) in files.iter().zip(&message.attachments).enumerate() {
                prop_assert_eq!(info.index as usize, i);
                prop_assert_eq!(&file.name, &info.name);
                prop_assert_eq!(file.data.len() as u64, info.size);
                let field = format!("attachment {i}");
                prop_assert!(
                    check_attachment(&field, file, &policy).is_ok(),
                    "a received attachment could not be forwarded: {:?}",
                    check_attachment(&field, file, &policy)
                );
            }
            for c in message.subject.chars() {
                prop_assert!(
                    !c.is_control() || c == '\t',
                    "a control character in the subject"
                );
            }
            Ok(None)
        }
    }
}

#[test]
fn every_seed_is_read_or_refused_with_its_defect_named() {
    let refused = |name: &str| -> String {
        let (_, data) = corpus().into_iter().find(|(n, _)| n == name).unwrap();
        usable(&data)
            .unwrap()
            .unwrap_or_else(|| panic!("{name} was accepted"))
    };
    for (name, data) in corpus() {
        usable(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let deep = refused("nested-70-deep.eml");
    assert!(
        deep.contains("nested 70 deep, over the limit of 64"),
        "{deep}"
    );
    assert!(refused("missing-closing-boundary.eml").contains("truncated"));
    assert!(refused("reused-boundary.eml").contains("reuses the boundary"));
    assert!(refused("no-from.eml").contains("no From header"));
    assert!(refused("not-a-message.eml").contains("not an RFC 5322 message"));
    assert!(refused("broken-base64.eml").contains("base64"));
}

#[test]
fn a_text_file_in_another_charset_keeps_its_bytes() {
    let (_, data) = corpus()
        .into_iter()
        .find(|(n, _)| n == "mixed-latin1-attachment.eml")
        .unwrap();
    let message = parse::parse(&raw(data.clone())).unwrap();
    assert_eq!(message.subject, "Café");
    assert!(message.text.unwrap().contains("voilà"));
    let files = parse::attachments(&raw(data)).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].name, "données.csv");
    // Latin-1, as it was attached: not turned into UTF-8, not replaced by U+FFFD.
    assert_eq!(files[0].data, b"nom;ville\nJos\xe9;K\xf6ln\n");
}

/// Tokens that steer a MIME parser, spliced in by the mutator.
const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b"--",
    b"--b--\r\n",
    b"=?utf-8?b?",
    b"?=",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment; filename*0*=utf-8''%C3\r\n",
    b"=\r\n",
    b"\x00",
    b"\xff\xfe",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, usize),
    Delete(prop::sample::Index, usize),
    Repeat(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<prop::sample::Index>(), 0..TOKENS.len()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<prop::sample::Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<prop::sample::Index>(), 1usize..200).prop_map(|(i, n)| Mutation::Repeat(i, n)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut data: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = data.len();
        match m {
            Mutation::Flip(i, b) if len > 0 => data[i.index(len)] = *b,
            Mutation::Insert(i, t) => {
                let at = i.index(len + 1);
                data.splice(at..at, TOKENS[*t].iter().copied());
            }
            Mutation::Delete(i, n) if len > 0 => {
                let at = i.index(len);
                data.drain(at..(at + n).min(len));
            }
            Mutation::Repeat(i, n) if len > 0 => {
                let at = i.index(len);
                let piece: Vec<u8> = data[at..(at + n).min(len)].to_vec();
                data.splice(at..at, piece);
            }
            Mutation::Truncate(i) => data.truncate(i.index(len + 1)),
            _ => {}
        }
    }
    data
}

/// A MIME tree as a generator builds it, with the ways a sender gets it wrong.
#[derive(Debug, Clone)]
enum Part {
    Leaf {
        content_type: &'static str,
        encoding: &'static str,
        name: Option<String>,
        data: Vec<u8>,
    },
    Multipart {
        subtype: &'static str,
        children: Vec<Part>,
        /// Leave out the closing delimiter.
        unclosed: bool,
    },
}

fn leaf() -> impl Strategy<Value = Part> {
    (
        prop_oneof![
            Just("text/plain"),
            Just("text/html"),
            Just("application/octet-stream"),
            Just("image/png"),
            Just("message/rfc822"),
            Just("text"),
            Just("bogus"),
        ],
        prop_oneof![
            Just("base64"),
            Just("quoted-printable"),
            Just("7bit"),
            Just("8bit"),
            Just("x-unknown")
        ],
        proptest::option::of("[a-zA-Z0-9 ._é/\\\\-]{0,20}"),
        proptest::collection::vec(any::<u8>(), 0..400),
    )
        .prop_map(|(content_type, encoding, name, data)| Part::Leaf {
            content_type,
            encoding,
            name,
            data,
        })
}

fn tree() -> impl Strategy<Value = Part> {
    leaf().prop_recursive(6, 40, 5, |inner| {
        (
            prop_oneof![
                Just("mixed"),
                Just("alternative"),
                Just("related"),
                Just("digest")
            ],
            proptest::collection::vec(inner, 0..5),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(subtype, children, unclosed)| Part::Multipart {
                subtype,
                children,
                unclosed,
            })
    })
}

fn encode(encoding: &str, data: &[u8]) -> Vec<u8> {
    match encoding {
        "base64" => {
            use std::fmt::Write as _;
            const ALPHABET: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut out = String::new();
            for (n, chunk) in data.chunks(3).enumerate() {
                let b = [
                    chunk[0],
                    *chunk.get(1).unwrap_or(&0),
                    *chunk.get(2).unwrap_or(&0),
                ];
                let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for k in 0..4 {
                    if k <= chunk.len() {
                        out.push(ALPHABET[((v >> (18 - 6 * k)) & 63) as usize] as char);
                    } else {
                        out.push('=');
                    }
                }
                if n % 19 == 18 {
                    let _ = write!(out, "\r\n");
                }
            }
            out.into_bytes()
        }
        "quoted-printable" => {
            let mut out = Vec::new();
            for (n, b) in data.iter().enumerate() {
                if b.is_ascii_alphanumeric() || *b == b' ' && data.get(n + 1).is_some() {
                    out.push(*b);
                } else {
                    out.extend_from_slice(format!("={b:02X}").as_bytes());
                }
                if n % 25 == 24 {
                    out.extend_from_slice(b"=\r\n");
                }
            }
            out
        }
        _ => data.to_vec(),
    }
}

/// Writes `part` as MIME; `depth` makes boundaries unique, as a good sender does.
fn write(part: &Part, path: &str, out: &mut Vec<u8>) {
    match part {
        Part::Leaf {
            content_type,
            encoding,
            name,
            data,
        } => {
            out.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
            out.extend_from_slice(format!("Content-Transfer-Encoding: {encoding}\r\n").as_bytes());
            if let Some(name) = name {
                out.extend_from_slice(
                    format!("Content-Disposition: attachment; filename=\"{name}\"\r\n").as_bytes(),
                );
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&encode(encoding, data));
            // In a multipart, the line break before a delimiter belongs to the delimiter;
            // at the top, it would be part of the body.
            if path != "0" {
                out.extend_from_slice(b"\r\n");
            }
        }
        Part::Multipart {
            subtype,
            children,
            unclosed,
        } => {
            let boundary = format!("=_b{path}");
            out.extend_from_slice(
                format!("Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\n")
                    .as_bytes(),
            );
            for (i, child) in children.iter().enumerate() {
                out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
                write(child, &format!("{path}.{i}"), out);
            }
            if !unclosed {
                out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            }
        }
    }
}

fn message_of(part: &Part) -> Vec<u8> {
    let mut out = b"From: Sender <sender@example.com>\r\nTo: to@example.org\r\n\
                    Subject: generated\r\nMIME-Version: 1.0\r\n"
        .to_vec();
    write(part, "0", &mut out);
    out
}

/// A tree as a careful sender writes it: closed, decodable, and with a readable content
/// type on every file, so that every file in it must come out intact.
fn well_formed_tree() -> impl Strategy<Value = Part> {
    let leaf = (
        // Text files too: their bytes must not go through a charset.
        prop_oneof![
            Just("application/octet-stream"),
            Just("text/plain"),
            Just("text/csv; charset=iso-8859-1")
        ],
        prop_oneof![Just("base64"), Just("quoted-printable")],
        proptest::collection::vec(any::<u8>(), 1..400),
    )
        .prop_map(|(content_type, encoding, data)| Part::Leaf {
            content_type,
            encoding,
            name: Some("file.bin".into()),
            data,
        });
    leaf.prop_recursive(5, 30, 4, |inner| {
        (
            // Files travel in multipart/mixed; alternative and related hold a body's
            // versions and the parts it shows, where a reader takes text as the body.
            Just("mixed"),
            proptest::collection::vec(inner, 1..4),
        )
            .prop_map(|(subtype, children)| Part::Multipart {
                subtype,
                children,
                unclosed: false,
            })
    })
}

fn files_in(part: &Part, out: &mut Vec<Vec<u8>>) {
    match part {
        Part::Leaf { data, .. } => out.push(data.clone()),
        Part::Multipart { children, .. } => children.iter().for_each(|c| files_in(c, out)),
    }
}

proptest! {
    #[test]
    fn mutated_seeds_are_read_or_refused(
        seed in any::<prop::sample::Index>(),
        mutations in proptest::collection::vec(mutation(), 1..8),
    ) {
        let seeds = corpus();
        let (_, data) = &seeds[seed.index(seeds.len())];
        usable(&mutate(data.clone(), &mutations))?;
    }

    #[test]
    fn arbitrary_bytes_are_read_or_refused(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        usable(&data)?;
        let mut with_header = b"From: a@example.com\r\n".to_vec();
        with_header.extend_from_slice(&data);
        usable(&with_header)?;
    }

    #[test]
    fn generated_trees_are_read_or_refused(tree in tree()) {
        usable(&message_of(&tree))?;
    }

    #[test]
    fn files_of_well_formed_trees_arrive_intact(tree in well_formed_tree()) {
        let data = message_of(&tree);
        let refused = usable(&data)?;
        prop_assert!(refused.is_none(), "a well-formed message was refused: {refused:?}");
        let mut want = Vec::new();
        files_in(&tree, &mut want);
        let mut got: Vec<Vec<u8>> = parse::attachments(&raw(data))
            .map_err(TestCaseError::fail)?
            .into_iter()
            .map(|a| a.data)
            .collect();
        want.sort();
        got.sort();
        prop_assert_eq!(got, want);
    }
}
