//! The servers the benchmark sends to: postfix's `smtp-sink`, and a Rust sink that
//! answers every command at once.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sink(std::process::Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An SMTP server that answers every command at once and keeps no message: a sink that
/// is not the bottleneck, unlike `smtp-sink`, which tops out near 2,900 msg/s here.
pub fn start_rust_sink() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_sink(stream));
        }
    });
    port
}

fn serve_sink(stream: std::net::TcpStream) {
    use std::io::{BufRead, Write};
    stream.set_nodelay(true).unwrap();
    let mut out = std::io::BufWriter::new(stream.try_clone().unwrap());
    let mut lines = std::io::BufReader::new(stream);
    let mut line = Vec::new();
    let reply = |out: &mut std::io::BufWriter<std::net::TcpStream>, text: &[u8]| {
        out.write_all(text).and_then(|()| out.flush()).is_ok()
    };
    if !reply(&mut out, b"220 sink ESMTP\r\n") {
        return;
    }
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).map(|v| v.to_ascii_uppercase());
        let answer: &[u8] = match verb.as_deref() {
            Some(b"EHLO") => b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            Some(b"DATA") => {
                if !reply(&mut out, b"354 go ahead\r\n") {
                    return;
                }
                loop {
                    line.clear();
                    if lines.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == b".\r\n" {
                        break;
                    }
                }
                b"250 2.0.0 queued\r\n"
            }
            Some(b"QUIT") => {
                reply(&mut out, b"221 bye\r\n");
                return;
            }
            _ => b"250 ok\r\n",
        };
        if !reply(&mut out, answer) {
            return;
        }
    }
}

pub fn start_sink(port: u16) -> Sink {
    let child = Command::new("smtp-sink")
        .args(["-u", "nobody", &format!("127.0.0.1:{port}"), "256"])
        .stdout(Stdio::null())
        .spawn()
        .expect("smtp-sink is missing; install it with: apt-get install -y postfix");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "smtp-sink did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Sink(child)
}
