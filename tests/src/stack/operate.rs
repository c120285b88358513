//! What the tests do with a running stack: restart its servers, deliver and seed mail,
//! and write the configs that point flowmail at it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{MailStack, PASSWORD, run_daemon, wait_for_port};

impl MailStack {
    /// Stops and starts dovecot, breaking every open IMAP connection: its session
    /// processes outlive a stopped master, so they are killed as a crash would.
    pub fn restart_dovecot(&self) -> anyhow::Result<()> {
        let log = self.dir.path().join("log/dovecot.log");
        let master = std::fs::read_to_string(self.dir.path().join("dovecot/run/master.pid"))?;
        let children = Command::new("ps")
            .args(["-o", "pid=", "--ppid", master.trim()])
            .output()?;
        let children: Vec<String> = String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        run_daemon(
            Command::new("dovecot")
                .arg("-c")
                .arg(&self.dovecot_conf)
                .arg("stop"),
            &log,
        )?;
        let start = Instant::now();
        while (TcpStream::connect(("127.0.0.1", self.ports.imap)).is_ok()
            || self.dir.path().join("dovecot/run/master.pid").exists())
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(25));
        }
        if !children.is_empty() {
            let _ = Command::new("kill")
                .arg("-9")
                .args(&children)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        run_daemon(
            Command::new("dovecot").arg("-c").arg(&self.dovecot_conf),
            &log,
        )?;
        wait_for_port(self.ports.imap, "dovecot", &log)?;
        wait_for_port(self.ports.lmtp, "dovecot", &log)
    }

    /// How many IMAP logins of `user` dovecot has logged so far, across its restarts (the
    /// log is appended to).
    pub fn imap_logins(&self, user: &str) -> usize {
        let log =
            std::fs::read_to_string(self.dir.path().join("log/dovecot.log")).unwrap_or_default();
        log.matches(&format!("Login: user=<{user}>")).count()
    }

    /// Delivers `message` to `user` over LMTP, as postfix would.
    pub fn deliver(&self, user: &str, message: &[u8]) -> anyhow::Result<()> {
        use std::io::{BufRead, BufReader, Write};
        let stream = TcpStream::connect(("127.0.0.1", self.ports.lmtp))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut w = stream;
        let mut expect = |code: &str| -> anyhow::Result<()> {
            loop {
                let mut line = String::new();
                reader.read_line(&mut line)?;
                if !line.starts_with(code) {
                    bail!("LMTP: expected {code}, got {line:?}");
                }
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Ok(());
                }
            }
        };
        expect("220")?;
        write!(w, "LHLO test\r\n")?;
        expect("250")?;
        write!(w, "MAIL FROM:<sender@demo.example>\r\n")?;
        expect("250")?;
        write!(w, "RCPT TO:<{user}>\r\n")?;
        expect("250")?;
        write!(w, "DATA\r\n")?;
        expect("354")?;
        for line in message.split_inclusive(|b| *b == b'\n') {
            if line.first() == Some(&b'.') {
                w.write_all(b".")?;
            }
            w.write_all(line)?;
        }
        if !message.ends_with(b"\n") {
            w.write_all(b"\r\n")?;
        }
        write!(w, ".\r\n")?;
        expect("250")?;
        write!(w, "QUIT\r\n")?;
        Ok(())
    }

    /// A `flowmail.toml` with one account `box` that reads `user`'s `folder` over IMAP
    /// (LOGIN with the test password, or `auth` when given) and sends to a file outbox.
    pub fn imap_config(
        &self,
        dir: &Path,
        user: &str,
        port: u16,
        ssl: bool,
        folder: &str,
        auth: &str,
    ) -> anyhow::Result<String> {
        let pw = dir.join("imap-password");
        std::fs::write(&pw, PASSWORD)?;
        let auth = if auth.is_empty() {
            format!(
                "[accounts.box.auth]\nkind = \"basic\"\nusername = \"{user}\"\npassword = {{ file = \"{}\" }}\n",
                pw.display()
            )
        } else {
            auth.to_owned()
        };
        Ok(format!(
            "[store]\npath = \"var/flowmail.db\"\n[runtime]\ncache_dir = \"\"\n[accounts.box]\nfrom = \"{user}\"\n\
             [accounts.box.transport]\nkind = \"outbox\"\ndir = \"var/outbox\"\n\
             [accounts.box.mailbox]\nkind = \"imap\"\nhost = \"localhost\"\nport = {port}\nssl = {ssl}\nfolder = \"{folder}\"\nca_file = \"{}\"\ntimeout_secs = 10\n{auth}",
            self.certs.ca.display()
        ))
    }

    /// Puts `count` messages made by `make(n)` into `user`'s inbox, 500 at a time; returns
    /// their total size in bytes.
    pub fn seed_many(
        &self,
        user: &str,
        count: usize,
        make: impl Fn(usize) -> Vec<u8>,
    ) -> anyhow::Result<usize> {
        let mut total = 0;
        for start in (0..count).step_by(500) {
            let mails: Vec<Vec<u8>> = (start..count.min(start + 500)).map(&make).collect();
            total += mails.iter().map(Vec::len).sum::<usize>();
            let refs: Vec<&[u8]> = mails.iter().map(Vec::as_slice).collect();
            self.seed(user, "", &refs)?;
        }
        Ok(total)
    }

    /// A workspace whose account `box` reads `user`'s `folder` over IMAP with STARTTLS.
    pub fn imap_workspace(&self, user: &str, folder: &str) -> anyhow::Result<crate::Workspace> {
        let ws = crate::Workspace::with_config("")?;
        let config = self.imap_config(ws.path(), user, self.ports.imap, false, folder, "")?;
        std::fs::write(ws.path().join("flowmail.toml"), config)?;
        Ok(ws)
    }

    /// `user`'s Maildir (folder `""` is the inbox).
    pub fn maildir(&self, user: &str, folder: &str) -> PathBuf {
        let dir = self.dir.path().join("mail").join(user).join("Maildir");
        if folder.is_empty() {
            dir
        } else {
            dir.join(format!(".{folder}"))
        }
    }

    /// Stops and starts postfix, breaking every open SMTP connection.
    pub fn restart_postfix(&self) -> anyhow::Result<()> {
        self.stop_postfix()?;
        self.start_postfix()
    }

    /// Stops postfix: connections to it are refused until [`Self::start_postfix`]. Waits
    /// for every process of the instance to end (daemons serving a connection outlive
    /// the master for a while), and kills what is left after 10 s.
    pub fn stop_postfix(&self) -> anyhow::Result<()> {
        let log = self.dir.path().join("log/postfix.log");
        run_daemon(
            Command::new("postfix")
                .arg("-c")
                .arg(&self.postfix_dir)
                .arg("stop"),
            &log,
        )?;
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.ports.submission)).is_ok()
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(25));
        }
        while !self.postfix_processes().is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in self.postfix_processes() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        Ok(())
    }

    /// The processes of this postfix instance: every one of its daemons works in its
    /// queue directory.
    fn postfix_processes(&self) -> Vec<u32> {
        let Ok(queue) = self.dir.path().join("postfix/queue").canonicalize() else {
            return Vec::new();
        };
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let cwd = std::fs::read_link(e.path().join("cwd")).ok()?;
                (cwd == queue).then_some(pid)
            })
            .collect()
    }

    /// Starts postfix again after [`Self::stop_postfix`].
    pub fn start_postfix(&self) -> anyhow::Result<()> {
        let log = self.dir.path().join("log/postfix.log");
        // A stop in the middle of a delivery can leave a half-written file in the queue.
        // postfix's start-up check (`postsuper`, as the mail owner, with no log daemon
        // running yet) then warns of it straight into the log file, which the log daemon
        // created as root: unless the mail owner may write it, the check fails ("integrity
        // check failed"). What the check says goes to stderr, kept for the error.
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666));
        }
        let started = Instant::now();
        loop {
            let out = Command::new("postfix")
                .arg("-c")
                .arg(&self.postfix_dir)
                .arg("start")
                .stdin(Stdio::null())
                .output()
                .context("running postfix start")?;
            if out.status.success() {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "postfix start failed ({}): {}{}; its log says: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            for pid in self.postfix_processes() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        wait_for_port(
            self.ports.submission,
            "postfix",
            &self.dir.path().join("log/postfix.log"),
        )
    }

    /// A queued account (`delivery = "queued"`) of data center `dc` for `flowmail.toml`,
    /// sending through the submission port as ops@demo.example with `password`, kept in a
    /// file of `dir`.
    pub fn queued_account(&self, dir: &Path, name: &str, dc: &str, password: &str) -> String {
        let file = dir.join(format!("{name}.password"));
        let _ = std::fs::write(&file, password);
        self.account(
            name,
            "ops@demo.example",
            self.ports.submission,
            false,
            &format!(
                "[accounts.{name}.auth]\nkind = \"basic\"\nusername = \"ops@demo.example\"\n\
                 password = {{ file = \"{}\" }}\n",
                file.display()
            ),
        )
        .replace(
            "from = \"ops@demo.example\"\n",
            &format!(
                "from = \"ops@demo.example\"\ndelivery = \"queued\"\ndata_center = \"{dc}\"\n"
            ),
        )
    }

    /// An account section for `flowmail.toml` that sends through this stack.
    pub fn account(&self, name: &str, from: &str, port: u16, ssl: bool, auth: &str) -> String {
        format!(
            "[accounts.{name}]\nfrom = \"{from}\"\n[accounts.{name}.transport]\nkind = \"smtp\"\nhost = \"localhost\"\n\
             port = {port}\nssl = {ssl}\nca_file = \"{ca}\"\ntimeout_secs = 10\n{auth}\n",
            ca = self.certs.ca.display(),
        )
    }
}

impl MailStack {
    /// Puts `messages` into `user`'s Maildir (folder `""` is the inbox), as delivery would.
    pub fn seed(&self, user: &str, folder: &str, messages: &[&[u8]]) -> anyhow::Result<()> {
        let mut dir = self.dir.path().join("mail").join(user).join("Maildir");
        if !folder.is_empty() {
            dir = dir.join(format!(".{folder}"));
        }
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let (uid, gid) = mail_owner()?;
        let user_dir = self.dir.path().join("mail").join(user);
        let mut owned = vec![user_dir.clone(), user_dir.join("Maildir"), dir.clone()];
        owned.extend(["new", "cur", "tmp"].map(|s| dir.join(s)));
        for d in owned {
            std::os::unix::fs::chown(&d, Some(uid), Some(gid))?;
        }
        static SEEDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        for m in messages {
            // Maildir names start with the delivery time, so arrival order is name order.
            let n = SEEDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let name = format!("{}.M{n}P{}.seed", 1_795_000_000 + n, std::process::id());
            std::fs::write(dir.join("tmp").join(&name), m)?;
            std::os::unix::fs::chown(dir.join("tmp").join(&name), Some(uid), Some(gid))?;
            std::fs::rename(dir.join("tmp").join(&name), dir.join("new").join(&name))?;
        }
        Ok(())
    }
}

/// The numeric owner of mail files: dovecot's `mail_uid = nobody`, `mail_gid = nogroup`.
fn mail_owner() -> anyhow::Result<(u32, u32)> {
    static OWNER: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    if let Some(o) = OWNER.get() {
        return Ok(*o);
    }
    let id = |args: &[&str]| -> anyhow::Result<u32> {
        let out = Command::new("id").args(args).output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .with_context(|| format!("`id {}` gave no number", args.join(" ")))
    };
    let uid = id(&["-u", "nobody"])?;
    let gid = Command::new("getent")
        .args(["group", "nogroup"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split(':')
                .nth(2)
                .and_then(|g| g.trim().parse().ok())
        })
        .map_or_else(|| id(&["-g", "nobody"]), Ok)?;
    Ok(*OWNER.get_or_init(|| (uid, gid)))
}
