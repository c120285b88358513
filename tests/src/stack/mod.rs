//! Real mail servers on 127.0.0.1 for the tests: dovecot (IMAP, LMTP, SASL, OAuth2
//! introspection), postfix (submission with STARTTLS, SMTPS, and a listener capped at
//! TLS 1.2, delivering into dovecot), and the OAuth2 server in `tests/oauth2`. Each test
//! starts its own instances on free ports in a temporary folder; dropping them stops them.
//! A missing program fails with the command that installs it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

mod certs;
mod operate;

pub use self::certs::Certs;

/// The password every dovecot user has.
pub const PASSWORD: &str = "s3cret-testpass";
/// The one address postfix refuses at RCPT (`550 5.7.1 ... no such mailbox here`) from an
/// authenticated client, for the refusal of one recipient among several.
pub const REFUSED: &str = "refused@demo.example";

/// A free port on 127.0.0.1.
/// A free port for a test server, below the kernel's ephemeral range (32768 and up), so
/// that no outgoing connection of a parallel test can take it between this check and the
/// server's bind. Each process starts at its own offset and never hands out a port twice.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let port = (FIRST + n) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port between {FIRST} and {}", FIRST + SPAN)
}

pub(crate) fn need(program: &str, install: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("`{program}` is not installed; install it with: {install}")
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs a command that leaves a daemon behind. The daemon inherits our standard streams,
/// so they are not captured (waiting for them would never end); its log tells the rest.
fn run_daemon(cmd: &mut Command, log: &Path) -> anyhow::Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!(
            "{cmd:?} failed ({status}); its log says: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    Ok(())
}

fn wait_for_port(port: u16, what: &str, log: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!(
        "{what} did not listen on port {port}; its log says: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// The ports of a running mail stack.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Postfix submission, STARTTLS.
    pub submission: u16,
    /// Postfix SMTPS, implicit TLS.
    pub smtps: u16,
    /// Postfix submission with STARTTLS capped at TLS 1.2.
    pub tls12: u16,
    /// Postfix SMTPS presenting the self-signed `CA:TRUE` certificate.
    pub self_signed: u16,
    pub imap: u16,
    pub imaps: u16,
    pub lmtp: u16,
    pub auth: u16,
}

/// dovecot and postfix, running.
pub struct MailStack {
    pub dir: tempfile::TempDir,
    pub ports: Ports,
    pub certs: Certs,
    dovecot_conf: PathBuf,
    postfix_dir: PathBuf,
}

impl MailStack {
    /// Starts dovecot and postfix; with `oauth`, dovecot also accepts XOAUTH2 tokens that
    /// the OAuth2 server introspects as active.
    pub fn start(oauth: Option<&crate::oauth::OAuth>) -> anyhow::Result<Self> {
        Self::start_with(oauth, "")
    }

    /// Starts the stack with `extra` appended to dovecot's configuration.
    pub fn start_with(oauth: Option<&crate::oauth::OAuth>, extra: &str) -> anyhow::Result<Self> {
        let dovecot = need(
            "dovecot",
            "apt-get install -y --no-install-recommends dovecot-core dovecot-imapd dovecot-lmtpd",
        )?;
        let postfix = need(
            "postfix",
            "apt-get install -y --no-install-recommends postfix",
        )?;
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_path_buf();
        // dovecot delivers as `nobody`, and postfix runs as `postfix`: both must get in.
        run(Command::new("chmod").arg("0755").arg(&root))?;
        let certs = Certs::create(&root)?;
        let ports = Ports {
            submission: free_port()?,
            smtps: free_port()?,
            tls12: free_port()?,
            self_signed: free_port()?,
            imap: free_port()?,
            imaps: free_port()?,
            lmtp: free_port()?,
            auth: free_port()?,
        };
        for d in [
            "dovecot/run",
            "dovecot/state",
            "log",
            "mail",
            "postfix/etc",
            "postfix/queue",
            "postfix/data",
        ] {
            std::fs::create_dir_all(root.join(d))?;
        }
        run(Command::new("chown")
            .arg("nobody:nogroup")
            .arg(root.join("mail")))?;
        run(Command::new("chown")
            .arg("postfix")
            .arg(root.join("postfix/data")))?;

        let oauth_passdb = match oauth {
            Some(o) => {
                let ext = root.join("dovecot/oauth2.conf.ext");
                std::fs::write(
                    &ext,
                    format!(
                        "introspection_mode = post\nintrospection_url = {}/introspect\nusername_attribute = email\n\
                         active_attribute = active\nactive_value = true\n",
                        o.url()
                    ),
                )?;
                format!(
                    "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}\n}}\n",
                    ext.display()
                )
            }
            None => String::new(),
        };
        let r = root.display();
        let dovecot_conf = root.join("dovecot/dovecot.conf");
        std::fs::write(
            &dovecot_conf,
            format!(
                "base_dir = {r}/dovecot/run\nstate_dir = {r}/dovecot/state\nlog_path = {r}/log/dovecot.log\n\
                 listen = 127.0.0.1\nprotocols = imap lmtp\nssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\n\
                 disable_plaintext_auth = no\nauth_mechanisms = plain login xoauth2 oauthbearer\nauth_failure_delay = 0\n\
                 mail_location = maildir:~/Maildir\nmail_uid = nobody\nmail_gid = nogroup\nfirst_valid_uid = 1\n\
                 passdb {{\n  driver = static\n  args = password={PASSWORD}\n  mechanisms = plain login\n}}\n{oauth_passdb}\
                 userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={r}/mail/%u allow_all_users=yes\n}}\n\
                 service imap-login {{\n  inet_listener imap {{\n    port = {imap}\n  }}\n  inet_listener imaps {{\n    port = {imaps}\n    ssl = yes\n  }}\n}}\n\
                 service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {lmtp}\n  }}\n}}\n\
                 service auth {{\n  inet_listener {{\n    address = 127.0.0.1\n    port = {auth}\n  }}\n}}\n{extra}\n",
                cert = certs.cert.display(),
                key = certs.key.display(),
                imap = ports.imap,
                imaps = ports.imaps,
                lmtp = ports.lmtp,
                auth = ports.auth,
            ),
        )?;
        run_daemon(
            Command::new(&dovecot).arg("-c").arg(&dovecot_conf),
            &root.join("log/dovecot.log"),
        )?;
        wait_for_port(ports.lmtp, "dovecot", &root.join("log/dovecot.log"))?;
        wait_for_port(ports.auth, "dovecot", &root.join("log/dovecot.log"))?;

        let postfix_dir = root.join("postfix/etc");
        std::fs::write(
            postfix_dir.join("main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {r}/postfix/queue\ndata_directory = {r}/postfix/data\n\
                 maillog_file = {r}/log/postfix.log\nmaillog_file_prefixes = {r}/log\nmail_owner = postfix\n\
                 setgid_group = postdrop\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmyhostname = mx.test.localhost\n\
                 mydestination =\nmynetworks = 127.0.0.0/8\nalias_maps =\nalias_database =\nlocal_recipient_maps =\n\
                 default_transport = lmtp:inet:127.0.0.1:{lmtp}\nrelay_transport = lmtp:inet:127.0.0.1:{lmtp}\n\
                 smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = inet:127.0.0.1:{auth}\n\
                 smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\nsmtpd_tls_security_level = may\n\
                 smtpd_tls_auth_only = yes\nsmtpd_relay_restrictions = permit_sasl_authenticated, reject\n\
                 smtpd_recipient_restrictions = check_recipient_access inline:{{ {{ {REFUSED} = REJECT no such mailbox here }} }}, permit_sasl_authenticated, reject\nmessage_size_limit = 52428800\n\
                 smtpd_error_sleep_time = 0\nsmtpd_tls_loglevel = 1\nsmtputf8_enable = no\n",
                lmtp = ports.lmtp,
                auth = ports.auth,
                cert = certs.cert.display(),
                key = certs.key.display(),
            ),
        )?;
        let services = [
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ];
        std::fs::write(
            postfix_dir.join("master.cf"),
            format!(
                "127.0.0.1:{sub} inet n - n - - smtpd\n\
                 127.0.0.1:{smtps} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt\n\
                 127.0.0.1:{tls12} inet n - n - - smtpd -o smtpd_tls_protocols=>=TLSv1.2,<=TLSv1.2 -o smtpd_tls_mandatory_protocols=>=TLSv1.2,<=TLSv1.2\n\
                 127.0.0.1:{self_signed} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt \
                 -o smtpd_tls_cert_file={relay_cert} -o smtpd_tls_key_file={relay_key}\n{}\n",
                services.join("\n"),
                sub = ports.submission,
                smtps = ports.smtps,
                tls12 = ports.tls12,
                self_signed = ports.self_signed,
                relay_cert = certs.self_signed_ca.display(),
                relay_key = certs.self_signed_key.display(),
            ),
        )?;
        run_daemon(
            Command::new(&postfix)
                .arg("-c")
                .arg(&postfix_dir)
                .arg("start"),
            &root.join("log/postfix.log"),
        )?;
        let log = root.join("log/postfix.log");
        wait_for_port(ports.submission, "postfix", &log)?;
        wait_for_port(ports.smtps, "postfix", &log)?;
        wait_for_port(ports.tls12, "postfix", &log)?;
        wait_for_port(ports.self_signed, "postfix", &log)?;
        Ok(Self {
            dir,
            ports,
            certs,
            dovecot_conf,
            postfix_dir,
        })
    }

    /// postfix's log once it holds `needle` at least `count` times, waiting up to 20 s:
    /// postfix writes its log through a daemon of its own, so a line can land a moment
    /// after the session it tells of has ended. After the wait the log is returned as it
    /// is, for the caller's assertion to show.
    pub fn log_with(&self, needle: &str, count: usize) -> String {
        let file = self.dir.path().join("log/postfix.log");
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(&file).unwrap_or_default();
            if log.matches(needle).count() >= count || start.elapsed() > Duration::from_secs(20) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Message-ID → copies of everything in `user`'s Maildir, once every one of `ids` is
    /// there, waiting up to `timeout`. A count of files is no proof that given messages
    /// arrived: a copy sent twice (a reply lost to a broken connection) can make up for
    /// one still in postfix's queue. Once no new file has come for 10 s, postfix is asked
    /// to retry its deferred mail (`postqueue -f`): a delivery deferred while the servers
    /// were loaded would otherwise wait for postfix's own backoff of 5 minutes.
    pub fn wait_for_ids(
        &self,
        user: &str,
        ids: &[String],
        timeout: Duration,
    ) -> anyhow::Result<std::collections::HashMap<String, usize>> {
        use std::collections::HashMap;
        let maildir = self.dir.path().join("mail").join(user).join("Maildir");
        let mut seen: HashMap<String, Option<String>> = HashMap::new();
        let start = Instant::now();
        let mut last_new = Instant::now();
        loop {
            // Dovecot moves a file from new/ to cur/ when a client reads it: the base name,
            // up to the ':' of its flags, stays the same.
            for path in ["new", "cur"]
                .iter()
                .filter_map(|d| std::fs::read_dir(maildir.join(d)).ok())
                .flat_map(|rd| rd.flatten().map(|e| e.path()))
            {
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let base = name.split(':').next().unwrap_or(name).to_owned();
                if seen.contains_key(&base) {
                    continue;
                }
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let id = mail_parser::MessageParser::default()
                    .parse_headers(&bytes)
                    .and_then(|m| m.message_id().map(str::to_owned));
                seen.insert(base, id);
                last_new = Instant::now();
            }
            let mut copies: HashMap<String, usize> = HashMap::new();
            for id in seen.values().flatten() {
                *copies.entry(id.clone()).or_default() += 1;
            }
            let missing: Vec<&String> = ids.iter().filter(|i| !copies.contains_key(*i)).collect();
            if missing.is_empty() {
                return Ok(copies);
            }
            if start.elapsed() > timeout {
                bail!(
                    "{user} never got {} of the {} messages, among them {:?}; postfix's queue: {}",
                    missing.len(),
                    ids.len(),
                    &missing[..missing.len().min(5)],
                    self.postqueue("-p").unwrap_or_else(|e| format!("{e:#}")),
                );
            }
            if last_new.elapsed() > Duration::from_secs(10) {
                let _ = self.postqueue("-f");
                last_new = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `postqueue -c <this instance> <flag>`: `-p` lists the queue, `-f` flushes it.
    fn postqueue(&self, flag: &str) -> anyhow::Result<String> {
        let out = Command::new("postqueue")
            .arg("-c")
            .arg(&self.postfix_dir)
            .arg(flag)
            .stdin(Stdio::null())
            .output()
            .context("running postqueue")?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    /// The files delivered to `user`'s Maildir, waiting up to `timeout` for `count` of them.
    pub fn wait_for_mail(
        &self,
        user: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Vec<u8>>> {
        let maildir = self.dir.path().join("mail").join(user).join("Maildir");
        let start = Instant::now();
        loop {
            let mut files: Vec<PathBuf> = ["new", "cur"]
                .iter()
                .filter_map(|d| std::fs::read_dir(maildir.join(d)).ok())
                .flat_map(|rd| rd.flatten().map(|e| e.path()))
                .collect();
            files.sort();
            if files.len() >= count {
                return files.iter().map(|f| Ok(std::fs::read(f)?)).collect();
            }
            if start.elapsed() > timeout {
                bail!(
                    "{user} got {} of {count} messages; postfix log: {}",
                    files.len(),
                    std::fs::read_to_string(self.dir.path().join("log/postfix.log"))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for MailStack {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.postfix_dir)
            .arg("abort")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("dovecot")
            .arg("-c")
            .arg(&self.dovecot_conf)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
