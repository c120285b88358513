//! postfix's `smtp-sink` on a free loopback port: an SMTP server that accepts every
//! message and keeps none, for benchmarks whose server must not be the bottleneck of
//! the durable parts measured.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running `smtp-sink`, stopped when dropped.
pub struct SmtpSink {
    pub port: u16,
    child: Child,
}

impl SmtpSink {
    /// Starts `smtp-sink` with a backlog of 256.
    pub fn start() -> anyhow::Result<Self> {
        let port = crate::stack::free_port()?;
        let child = Command::new("smtp-sink")
            .args(["-u", "nobody", &format!("127.0.0.1:{port}"), "256"])
            .stdout(Stdio::null())
            .spawn()
            .context("smtp-sink is missing; install it with: apt-get install -y postfix")?;
        let sink = Self { port, child };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("smtp-sink did not listen on {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(sink)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
