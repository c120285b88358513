//! A private PostgreSQL server for the tests: `initdb` and `pg_ctl` from the machine's
//! PostgreSQL on a temporary folder and a free port on 127.0.0.1, as the `postgres` user
//! when the tests run as root (PostgreSQL refuses to run as root), stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running server; `url` reaches its `postgres` database as the superuser `flowmail`.
pub struct Postgres {
    pub url: String,
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

/// The newest PostgreSQL's `bin` folder (Debian keeps it out of PATH).
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).context(
        "PostgreSQL is missing (no /usr/lib/postgresql/*/bin/initdb); install it with: apt-get install -y postgresql",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args...`, as the `postgres` user when this process is root.
fn command(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn run(mut c: Command, what: &str) -> anyhow::Result<()> {
    let out = c.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Postgres {
    pub fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        if is_root() {
            // The server runs as `postgres`: it owns the folder it writes.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown",
            )?;
        }
        let data_arg = data.display().to_string();
        run(
            command(
                &bin.join("initdb"),
                &[
                    "-D",
                    &data_arg,
                    "-U",
                    "flowmail",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            ),
            "initdb",
        )?;
        let port = crate::stack::free_port()?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            dir.path().display()
        );
        let log = dir.path().join("postgres.log").display().to_string();
        run(
            command(
                &bin.join("pg_ctl"),
                &[
                    "-D", &data_arg, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
                ],
            ),
            "pg_ctl start",
        )?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "PostgreSQL did not listen on {port}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            url: format!("postgres://flowmail@127.0.0.1:{port}/postgres"),
            port,
            bin,
            data,
            _dir: dir,
        })
    }

    /// A new, empty database on this server, and its URL.
    pub fn database(&self, name: &str) -> anyhow::Result<String> {
        run(self.client("createdb", &[name]), "createdb")?;
        Ok(format!(
            "postgres://flowmail@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// Runs `sql` in database `name` with psql, as another client of the server would.
    pub fn psql(&self, name: &str, sql: &str) -> anyhow::Result<()> {
        let args = ["-d", name, "-v", "ON_ERROR_STOP=1", "-qc", sql];
        run(self.client("psql", &args), "psql")
    }

    /// `tool` of this server's binaries with `args`, as the test user over loopback.
    fn client(&self, tool: &str, args: &[&str]) -> Command {
        let port = self.port.to_string();
        let mut all = vec!["-h", "127.0.0.1", "-p", &port, "-U", "flowmail"];
        all.extend_from_slice(args);
        command(&self.bin.join(tool), &all)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = command(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "immediate", "-w", "stop"],
        )
        .output();
    }
}

/// Whether the suite runs its stores on PostgreSQL (`FLOWMAIL_TEST_STORE=postgres`):
/// every workspace then gets a database of its own on one server per test process.
pub fn suite_on_postgres() -> bool {
    std::env::var("FLOWMAIL_TEST_STORE").is_ok_and(|v| v == "postgres")
}

static SHARED: std::sync::OnceLock<Result<Postgres, String>> = std::sync::OnceLock::new();
static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Postgres {
    /// A new database on this test process's shared server, started on first use and
    /// stopped (its folder removed) by a watcher once the process has exited, since a
    /// static is never dropped.
    pub fn fresh_database() -> anyhow::Result<String> {
        let shared = SHARED.get_or_init(|| {
            let pg = Postgres::start().map_err(|e| format!("{e:#}"))?;
            pg.stop_after(std::process::id())
                .map_err(|e| format!("{e:#}"))?;
            Ok(pg)
        });
        let pg = shared.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        pg.database(&format!("suite_{n}"))
    }

    /// Empties database `name` of the shared server: dropped, its connections ended, and
    /// created again.
    pub fn reset_database(name: &str) -> anyhow::Result<()> {
        let Some(Ok(pg)) = SHARED.get() else {
            bail!("the suite's PostgreSQL has not started");
        };
        run(pg.client("dropdb", &["--force", name]), "dropdb")?;
        pg.database(name).map(drop)
    }

    /// Stops this server and removes its folder once process `pid` is gone.
    fn stop_after(&self, pid: u32) -> anyhow::Result<()> {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {}'{}' -D '{}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{}'",
            if is_root() {
                "runuser -u postgres -- "
            } else {
                ""
            },
            self.bin.join("pg_ctl").display(),
            self.data.display(),
            self._dir.path().display()
        );
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the watcher that stops the suite's PostgreSQL")?;
        Ok(())
    }
}
