//! The plugin the application runs: loaded and compiled once, and reloaded from its file
//! on request (`serve` on SIGHUP).

use std::sync::Arc;

use anyhow::Context;
use wasmtime::component::Component;

use super::{App, Plugin};
use crate::runtime::{Runtime, engine_for, load_component};

impl App {
    /// The plugin runtime, compiled (or loaded from the compiled-component cache) on first
    /// use.
    pub fn runtime(&self) -> anyhow::Result<&Runtime> {
        if let Some(r) = self.runtime.get() {
            return Ok(r);
        }
        let wasm = self.plugin_bytes()?;
        let engine = engine_for(&self.limits).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let component = self.compile(&engine, &wasm)?;
        let runtime = Runtime::new(&engine, &component, self.caps.clone(), self.limits)
            .map_err(not_of_the_world)?
            .with_audit(self.audit.clone());
        self.set_serving(&wasm);
        let _ = self.runtime.set(runtime);
        self.runtime
            .get()
            .context("the plugin runtime could not be kept")
    }

    /// Loads the `--plugin` file again and, when it changed, serves the steps that start
    /// from now on with it. A file that cannot be read, is not a component or does not
    /// implement the world is refused, and the plugin in force keeps serving.
    pub fn reload_plugin(&self) -> anyhow::Result<Reload> {
        let Plugin::File(_) = &self.plugin else {
            anyhow::bail!(
                "only a plugin file can be reloaded; this process runs the embedded plugin (start it with --plugin FILE)"
            );
        };
        let runtime = self.runtime()?;
        let wasm = self.plugin_bytes()?;
        let label = self.label(&wasm);
        if self.serving() == label {
            return Ok(Reload::Unchanged(label));
        }
        let component = self.compile(runtime.engine(), &wasm)?;
        runtime.swap(&component).map_err(not_of_the_world)?;
        self.set_serving(&wasm);
        Ok(Reload::Swapped(label))
    }

    /// The plugin in force: `embedded plugin`, or its file and the SHA-256 of its bytes.
    pub fn serving(&self) -> String {
        match self.serving.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_serving(&self, wasm: &[u8]) {
        let label = self.label(wasm);
        match self.serving.lock() {
            Ok(mut s) => *s = label,
            Err(poisoned) => *poisoned.into_inner() = label,
        }
    }

    fn label(&self, wasm: &[u8]) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(wasm);
        let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        match &self.plugin {
            Plugin::Embedded => format!("embedded plugin (sha256 {short})"),
            Plugin::File(path) => format!("{} (sha256 {short})", path.display()),
            Plugin::Bytes(_) => format!("plugin bytes (sha256 {short})"),
        }
    }

    fn plugin_bytes(&self) -> anyhow::Result<Arc<Vec<u8>>> {
        Ok(match &self.plugin {
            Plugin::Embedded => Arc::new(crate::DEFAULT_PLUGIN.to_vec()),
            Plugin::File(path) => Arc::new(
                std::fs::read(path)
                    .with_context(|| format!("reading the plugin {}", path.display()))?,
            ),
            Plugin::Bytes(b) => b.clone(),
        })
    }

    fn compile(&self, engine: &wasmtime::Engine, wasm: &[u8]) -> anyhow::Result<Component> {
        load_component(engine, wasm, self.cache_dir.as_deref()).map_err(|e| {
            anyhow::anyhow!(
                "the plugin is not a WebAssembly component this host can load ({e:#}); build it for wasm32-wasip2 as a component of the world `mail-plugin` in wit/"
            )
        })
    }
}

/// What [`App::reload_plugin`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The file is the plugin in force; nothing was swapped.
    Unchanged(String),
    /// Steps that start from now on run this plugin.
    Swapped(String),
}

fn not_of_the_world(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "the plugin does not implement the world flowmail:mail/mail-plugin of this host ({e:#}); build it against this flowmail's wit/"
    )
}
