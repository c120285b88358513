//! Helpers for the end-to-end tests: a private copy of the demo workspace, and the real
//! plugin or the misbehaving one on the real host.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowmail::app::{App, Plugin};
use flowmail::caps::Audit;
use flowmail::config::Config;
use flowmail::store::Store;

pub mod browser;
pub mod graph;
pub mod oauth;
pub mod postgres;
pub mod sink;
pub mod stack;

/// The misbehaving test plugin, built by this crate's build script.
pub const MISBEHAVE_PLUGIN: &str = env!("MISBEHAVE_PLUGIN");

/// The `flowmail` binary of this build, beside the test executables (`cargo test
/// --workspace` builds it for the host's own command-line tests).
pub fn flowmail_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("flowmail"))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p flowmail` or run `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A process a test started, killed when the test ends, also when it fails: a `serve`
/// left behind by a failed assertion would run on, taking CPU from the tests after it.
pub struct Process(std::process::Child);

impl From<std::process::Child> for Process {
    fn from(child: std::process::Child) -> Self {
        Self(child)
    }
}

impl std::ops::Deref for Process {
    type Target = std::process::Child;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Process {
    /// `kill SIGNAL` of the process, `SIGNAL` as `kill` takes it (`-HUP`, `-TERM`).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "kill {signal}: {status:?}"
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Established TCP connections to `port` on this machine, counted on the clients' side
/// (the server's ends have `port` as their local port and are not counted).
pub fn connections_to(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    let remote = cols
                        .get(2)
                        .and_then(|r| r.rsplit(':').next())
                        .and_then(|p| u16::from_str_radix(p, 16).ok());
                    // State 01 is ESTABLISHED.
                    remote == Some(port) && cols.get(3) == Some(&"01")
                })
                .count()
        })
        .sum()
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A plain-text message to `to`, from the account's default sender.
pub fn text_message(
    to: &str,
    subject: &str,
    text: &str,
) -> flowmail::bindings::types::OutgoingMessage {
    flowmail::bindings::types::OutgoingMessage {
        sender: None,
        to: vec![flowmail::bindings::types::Address {
            name: None,
            email: to.into(),
        }],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject: subject.into(),
        text: Some(text.into()),
        html: None,
        attachments: vec![],
        forward_attachments: vec![],
        extra_headers: vec![],
    }
}

/// A GET to `url` (`http://127.0.0.1:PORT/...`); returns the status, the `Location`
/// header if any, and the body.
pub fn http_get(url: &str) -> anyhow::Result<(u16, Option<String>, String)> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("not an http URL: {url}"))?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status in {text}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let location = head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.trim().to_owned())
    });
    Ok((status, location, body.to_owned()))
}

/// Copies a folder tree.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// A temporary copy of the demo: `flowmail.toml` (with `extra` appended) and `workflows/`.
///
/// With `FLOWMAIL_TEST_STORE=postgres` its store is a database of its own on PostgreSQL
/// ([`postgres::suite_on_postgres`]): `store.url` is written into the config it starts
/// with, and set again by [`Workspace::config`] when a test wrote a config of its own.
/// A config that names a store URL itself keeps it.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    database: Option<String>,
}

/// `config` with `store.url = url` under its `[store]` table (added if missing), unless
/// it names a store URL already.
fn with_store_url(config: &str, url: &str) -> String {
    let line = format!("url = \"{url}\"");
    if config.lines().any(|l| l.trim() == "[store]") {
        config
            .lines()
            .flat_map(|l| {
                if l.trim() == "[store]" {
                    vec![l.to_owned(), line.clone()]
                } else {
                    vec![l.to_owned()]
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        format!("{config}\n[store]\n{line}\n")
    }
}

impl Workspace {
    /// A workspace for `serve`: account `box` reads the Maildir `Maildir/` and sends to the
    /// file outbox, and `forward.yaml` sends each new message's subject on from it.
    /// `runtime` is added to the `[runtime]` section.
    pub fn forwarding(runtime: &str) -> anyhow::Result<Self> {
        let ws = Self::with_config(&format!(
            "[node]\nheartbeat_secs = 1\n[web]\nlisten = \"127.0.0.1:0\"\n\
             [runtime]\ncache_dir = \"var/cache\"\n{runtime}\n\
             [accounts.box]\nfrom = \"Flows <flows@demo.example>\"\n\
             [accounts.box.transport]\nkind = \"outbox\"\ndir = \"var/outbox\"\n\
             [accounts.box.mailbox]\nkind = \"maildir\"\npath = \"Maildir\"\n"
        ))?;
        for d in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(ws.path().join("Maildir").join(d))?;
        }
        std::fs::write(
            ws.path().join("forward.yaml"),
            "name: forward\ntrigger:\n  mailbox:\n    account: box\nsteps:\n\
             \x20 - id: send\n    action: send-mail\n    with:\n      account: box\n      message:\n\
             \x20       to: ops@demo.example\n        subject: \"${{ trigger.message.subject }}\"\n        text: forwarded\n",
        )?;
        Ok(ws)
    }

    /// What `flowmail status` prints in this workspace.
    pub fn status(&self) -> String {
        let out = std::process::Command::new(flowmail_bin())
            .current_dir(self.path())
            .arg("status")
            .output();
        assert!(
            out.as_ref().is_ok_and(|o| o.status.success()),
            "flowmail status failed: {out:?}"
        );
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    pub fn new(extra_config: &str) -> anyhow::Result<Self> {
        let config = std::fs::read_to_string(repo().join("flowmail.toml"))?;
        Self::with_config(&format!("{config}\n{extra_config}"))
    }

    /// A workspace with the demo's `workflows/` and `config` as its `flowmail.toml`.
    pub fn with_config(config: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        copy_tree(&repo().join("workflows"), &dir.path().join("workflows"))?;
        let own_url = config
            .lines()
            .any(|l| l.trim_start().starts_with("url = \"postgres"));
        let database = match postgres::suite_on_postgres() && !own_url {
            true => Some(postgres::Postgres::fresh_database()?),
            false => None,
        };
        let config = match &database {
            Some(url) => with_store_url(config, url),
            None => config.to_owned(),
        };
        std::fs::write(dir.path().join("flowmail.toml"), config)?;
        Ok(Self { dir, database })
    }

    /// A workspace whose account `box` reads the folder INBOX of `user` on a scripted
    /// IMAP server at 127.0.0.1:`port` (no TLS, password `pw`) and sends to the outbox.
    pub fn with_scripted_imap(user: &str, port: u16) -> anyhow::Result<Self> {
        let ws = Self::with_config("")?;
        let password = ws.path().join("imap-password");
        std::fs::write(&password, "pw")?;
        ws.write_config(format!(
            "[store]\npath = \"var/flowmail.db\"\n[runtime]\ncache_dir = \"\"\n[accounts.box]\nfrom = \"{user}\"\n\
             [accounts.box.transport]\nkind = \"outbox\"\ndir = \"var/outbox\"\n\
             [accounts.box.mailbox]\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfolder = \"INBOX\"\ntimeout_secs = 10\n\
             [accounts.box.auth]\nkind = \"basic\"\nusername = \"{user}\"\npassword = {{ file = \"{}\" }}\n",
            password.display()
        ))?;
        Ok(ws)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `config` as the workspace's `flowmail.toml`; on the suite's PostgreSQL,
    /// with the workspace's database as its store unless it names one.
    pub fn write_config(&self, config: impl AsRef<str>) -> anyhow::Result<()> {
        let config = config.as_ref();
        let config = match &self.database {
            Some(url) if !config.contains("url = \"postgres") => with_store_url(config, url),
            _ => config.to_owned(),
        };
        Ok(std::fs::write(self.path().join("flowmail.toml"), config)?)
    }

    /// Empties the workspace's store, as a first start would find it.
    pub fn reset_store(&self) -> anyhow::Result<()> {
        match &self.database {
            Some(url) => {
                let name = url.rsplit('/').next().unwrap_or_default();
                postgres::Postgres::reset_database(name)
            }
            None => {
                let db = self.path().join("var/flowmail.db");
                for file in [
                    db.clone(),
                    db.with_extension("db-wal"),
                    db.with_extension("db-shm"),
                ] {
                    match std::fs::remove_file(&file) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                }
                Ok(())
            }
        }
    }

    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(&self.path().join("flowmail.toml"))?;
        if let Some(url) = &self.database
            && config.store.url.is_none()
        {
            config.store.url = Some(url.clone());
        }
        Ok(config)
    }

    /// The `.eml` files in the outbox.
    pub fn outbox(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.path().join("var/outbox"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// The application over this workspace's config, with `plugin` (the embedded one if
    /// `None`), its runtime built, and its store.
    pub fn app(
        &self,
        plugin: Option<&str>,
        audit: Audit,
    ) -> anyhow::Result<(Arc<App>, Arc<Store>)> {
        let mut config = self.config()?;
        // One compiled-component cache for every test: a debug host compiles slowly.
        config.runtime.cache_dir = std::env::temp_dir().join("flowmail-test-cache");
        let plugin = match plugin {
            Some(path) => Plugin::File(path.into()),
            None => Plugin::Embedded,
        };
        let app = App::open(&config, plugin)?.with_audit(audit);
        app.runtime()?;
        let store = app.store().clone();
        Ok((Arc::new(app), store))
    }
}

/// A mailbox search with no conditions.
pub fn no_search() -> flowmail::bindings::mailbox::Search {
    flowmail::bindings::mailbox::Search {
        sender_contains: None,
        subject_contains: None,
        unseen: false,
        sent_since: None,
    }
}

/// A TCP proxy on 127.0.0.1 that can freeze: while frozen it keeps every connection open
/// but passes no byte either way, as a half-open network path or a hung server would.
pub struct FreezableProxy {
    pub port: u16,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    /// Everything the upstream sent back, when recording.
    pub replies: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl FreezableProxy {
    /// Starts a proxy to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> anyhow::Result<Self> {
        Self::start_with(upstream, false)
    }

    /// Starts a proxy to `127.0.0.1:upstream` that keeps every byte the upstream sends
    /// back in [`FreezableProxy::replies`], to search what a browser was sent.
    pub fn recording(upstream: u16) -> anyhow::Result<Self> {
        Self::start_with(upstream, true)
    }

    fn start_with(upstream: u16, record: bool) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let replies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = replies.clone();
        let listener = std::net::TcpListener::bind(("127.0.0.1", stack::free_port()?))?;
        let port = listener.local_addr()?.port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (from, to, replies) in [
                    (client.try_clone(), server.try_clone(), None),
                    (
                        server.try_clone(),
                        client.try_clone(),
                        record.then(|| sink.clone()),
                    ),
                ] {
                    let (Ok(mut from), Ok(mut to)) = (from, to) else {
                        continue;
                    };
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            while flag.load(Ordering::SeqCst) {
                                std::thread::sleep(std::time::Duration::from_millis(20));
                            }
                            if let Some(Ok(mut all)) = replies.as_ref().map(|r| r.lock()) {
                                all.extend_from_slice(&buf[..n]);
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Ok(Self {
            port,
            frozen,
            replies,
        })
    }

    /// Stops (true) or resumes (false) all traffic.
    pub fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}
