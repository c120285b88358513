//! The OAuth2 server of the tests (`tests/oauth2/server.mjs`), as a node process on a
//! free loopback port, with a small HTTP client for its token and test endpoints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

use crate::stack::{free_port, need};

/// The OAuth2 server, a node process.
pub struct OAuth {
    child: Child,
    pub port: u16,
}

impl OAuth {
    pub fn start() -> anyhow::Result<Self> {
        let node = need("node", "apt-get install -y nodejs")?;
        let dir = crate::repo().join("tests/oauth2");
        if !dir.join("node_modules/oauth2-mock-server").is_dir() {
            bail!(
                "the OAuth2 server's packages are missing; install them with: npm ci --prefix tests/oauth2"
            );
        }
        let port = free_port()?;
        let mut child = Command::new(node)
            .arg("server.mjs")
            .arg(port.to_string())
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("listening") {
            let _ = child.kill();
            bail!("the OAuth2 server did not start: {line}");
        }
        Ok(Self { child, port })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain HTTP/1.1 request; returns the status and body.
    pub fn http(&self, method: &str, path: &str, form: &str) -> anyhow::Result<(u16, String)> {
        http_on(self.port, method, path, form)
    }

    /// An access token for `email`, from the token endpoint.
    pub fn token_for(&self, email: &str) -> anyhow::Result<String> {
        let (status, body) = self.http(
            "POST",
            "/token",
            &format!("grant_type=client_credentials&client_id=flowmail&client_secret=x&scope=smtp&email={email}"),
        )?;
        if status != 200 {
            bail!("token endpoint said {status}: {body}");
        }
        let v: serde_json::Value = serde_json::from_str(body.trim())
            .or_else(|_| serde_json::from_str(dechunk(&body).trim()))?;
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access_token")
    }

    /// How many token requests of `grant` type the server has had.
    pub fn grants(&self, grant: &str) -> anyhow::Result<u64> {
        let (_, body) = self.http("GET", "/test/stats", "")?;
        let v: serde_json::Value = serde_json::from_str(body.trim())
            .or_else(|_| serde_json::from_str(dechunk(&body).trim()))?;
        Ok(v["grants"][grant].as_u64().unwrap_or(0))
    }

    /// Whether the server calls `token` active.
    pub fn is_active(&self, token: &str) -> anyhow::Result<bool> {
        active_on(self.port, token)
    }

    /// Makes every issued access token inactive at the server (introspection says so).
    pub fn expire_all(&self) -> anyhow::Result<()> {
        let (status, _) = self.http("POST", "/test/expire-all", "")?;
        anyhow::ensure!(status == 200, "expire-all said {status}");
        Ok(())
    }

    /// Makes every issued token inactive, access and refresh tokens alike.
    pub fn revoke_all(&self) -> anyhow::Result<()> {
        let (status, _) = self.http("POST", "/test/revoke-all", "")?;
        anyhow::ensure!(status == 200, "revoke-all said {status}");
        Ok(())
    }
}

/// A plain HTTP/1.1 request to the OAuth2 server on `port`; returns the status and body.
pub fn http_on(port: u16, method: &str, path: &str, form: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Whether the OAuth2 server on `port` calls `token` active (its introspection).
pub fn active_on(port: u16, token: &str) -> anyhow::Result<bool> {
    let (_, body) = http_on(port, "POST", "/introspect", &format!("token={token}"))?;
    let v: serde_json::Value = serde_json::from_str(body.trim())
        .or_else(|_| serde_json::from_str(dechunk(&body).trim()))?;
    Ok(v["active"].as_bool().unwrap_or(false))
}

/// Undoes HTTP chunked encoding of a small body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for OAuth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
