//! Headless Chromium driven through chromedriver on a free port, and `flowmail serve
//! --web-only` with a user, for the settings page's tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator};

use crate::stack::{free_port, need};

/// The apt packages the browser tests need.
pub const INSTALL: &str = "apt-get install -y --no-install-recommends chromium chromium-driver";

/// chromedriver and a headless Chromium session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session.
    pub async fn start() -> anyhow::Result<Self> {
        let driver_bin = need("chromedriver", INSTALL)?;
        let chromium = need("chromium", INSTALL)?;
        let port = free_port()?;
        let mut driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = driver.kill();
                bail!("chromedriver did not listen on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir()?;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1280,2200",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .context("opening a Chromium session through chromedriver")?;
        Ok(Self {
            client,
            driver,
            _profile: profile,
        })
    }

    /// The element `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        let wait = self.client.wait().at_most(Duration::from_secs(10));
        match wait.for_element(Locator::Css(css)).await {
            Ok(e) => Ok(e),
            Err(e) => bail!("no element `{css}` on {}: {e}", self.url().await),
        }
    }

    /// Whether `css` is on the page and shown.
    pub async fn shown(&self, css: &str) -> anyhow::Result<bool> {
        Ok(self.find(css).await?.is_displayed().await?)
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        Ok(self.find(css).await?.click().await?)
    }

    /// Chooses `value` in the select `css`.
    pub async fn select(&self, css: &str, value: &str) -> anyhow::Result<()> {
        Ok(self.find(css).await?.select_by_value(value).await?)
    }

    /// The text of the element `css`.
    pub async fn text_of(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    /// The current value of the field `css`.
    pub async fn value(&self, css: &str) -> anyhow::Result<String> {
        Ok(self
            .find(css)
            .await?
            .prop("value")
            .await?
            .unwrap_or_default())
    }

    /// Types `text` into the field `css`, replacing what it held.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let e = self.find(css).await?;
        e.clear().await?;
        e.send_keys(text).await?;
        Ok(())
    }

    /// The page's text.
    pub async fn text(&self) -> anyhow::Result<String> {
        Ok(self.find("body").await?.text().await?)
    }

    /// The current URL, for messages.
    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// `flowmail serve --web-only` in `dir`, on a free port, until dropped.
pub struct WebServer {
    pub url: String,
    child: Option<Child>,
}

impl WebServer {
    /// A page already served at `url` (through a proxy, say); dropping it stops nothing.
    pub fn at(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            child: None,
        }
    }

    /// Starts the page for the workspace in `dir` (its `flowmail.toml` gets a `[web]`
    /// table with the port).
    pub fn start(dir: &Path, extra_web: &str) -> anyhow::Result<Self> {
        Self::start_with(dir, extra_web, &["serve", "--web-only"])
    }

    /// Starts `flowmail serve WORKFLOWS...`: the triggers and the page.
    pub fn serving(dir: &Path, extra_web: &str, workflows: &str) -> anyhow::Result<Self> {
        Self::start_with(dir, extra_web, &["serve", workflows])
    }

    fn start_with(dir: &Path, extra_web: &str, args: &[&str]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let config = dir.join("flowmail.toml");
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str(&format!(
            "\n[web]\nlisten = \"127.0.0.1:{port}\"\n{extra_web}\n"
        ));
        std::fs::write(&config, text)?;
        let child = Command::new(crate::flowmail_bin())
            .current_dir(dir)
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(std::fs::File::create(dir.join("web.out"))?)
            .stderr(std::fs::File::create(dir.join("web.err"))?)
            .spawn()
            .with_context(|| format!("starting flowmail {}", args.join(" ")))?;
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the settings page did not listen on {port}: {}",
                    std::fs::read_to_string(dir.join("web.err")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            url: format!("http://127.0.0.1:{port}"),
            child: Some(child),
        })
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Adds a settings-page user through the command line.
pub fn add_user(dir: &Path, args: &[&str], password: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new(crate::flowmail_bin())
        .current_dir(dir)
        .arg("user")
        .arg("add")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{password}")?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("user add failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
