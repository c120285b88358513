//! Runs the plugin: one engine, a compiled-component cache on disk, an `InstancePre`
//! reused for a fresh instance per step, and a deadline and memory cap per call.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub mod cache;
mod epoch;
mod prepared;
mod returns;

use self::epoch::{Running, TICK};
use self::prepared::Prepared;
use self::returns::{check_page, check_receipt};

use wasmtime::component::{Component, Instance, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::MailError;
use crate::bindings::actions::{Filter, MailboxPage, Receipt};
use crate::bindings::mailbox::{Cursor, SizeCap};
use crate::bindings::types::OutgoingMessage;
use crate::caps::{self, Audit, Capabilities, Live};

/// Per-call limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time one action call may take, host calls included.
    pub timeout: Duration,
    /// The most linear memory the plugin may hold.
    pub memory_bytes: usize,
    /// How many instances may live at once, one per step under way: the pool's size. A
    /// step that finds every slot taken waits for one.
    pub instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            memory_bytes: 256 << 20,
            instances: 128,
        }
    }
}

/// Why a call did not return normally.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(
        "the plugin ran past its time limit of {0:?} and was stopped; raise runtime.step_timeout_ms if the step is legitimately slow"
    )]
    Timeout(Duration),
    #[error(
        "the plugin tried to grow its memory to {wanted} bytes, over its limit of {limit} bytes, and was stopped; raise runtime.memory_limit_mb if the step is legitimately large"
    )]
    Memory { wanted: usize, limit: usize },
    #[error(
        "the plugin exhausted its call stack (runaway recursion, most likely) and was stopped; this is a fault of the plugin, and retrying the same input fails the same way"
    )]
    StackOverflow,
    #[error(
        "the plugin returned {0}; this is a fault of the plugin, and retrying the same input fails the same way"
    )]
    Oversized(String),
    #[error("the plugin failed: {0}")]
    Trap(String),
    #[error("{}", .0.describe())]
    Mail(#[from] MailError),
}

struct MemoryCap {
    limit: usize,
    refused: Option<usize>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.refused = Some(desired);
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes reached",
                self.limit
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The data of one step's store.
pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    caps: Arc<Capabilities>,
    audit: Audit,
    step: String,
    /// The accounts this call named, the only ones it may reach.
    scope: caps::Scope,
    log: caps::log::Budget,
    /// Keeps the epoch ticking while the step runs.
    _running: Running,
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A loaded plugin, ready to run steps.
pub struct Runtime {
    engine: Engine,
    /// The plugin steps start on; [`Runtime::swap`] replaces it between steps, and a step
    /// under way finishes on the one it started with.
    pre: std::sync::RwLock<Arc<Prepared>>,
    caps: Arc<Live>,
    limits: Limits,
    audit: Audit,
    /// One permit per slot of the engine's pool: a step holds one while its instance
    /// lives, so that a busy moment waits for a slot instead of failing.
    slots: Arc<tokio::sync::Semaphore>,
}

/// The engine flowmail runs plugins on, with the default limits.
pub fn engine() -> wasmtime::Result<Engine> {
    engine_for(&Limits::default())
}

/// The engine flowmail runs plugins on: instances come from a pool of `limits.instances`
/// slots sized for `limits.memory_bytes` (the pooling allocator, with copy-on-write
/// memory images), which halves the cost of a fresh instance per step against
/// allocating each on demand (`cargo bench -p flowmail --bench sandbox`). Its epoch ticks
/// every 10 ms while a step runs ([`epoch`]).
pub fn engine_for(limits: &Limits) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling(
        limits,
    )));
    engine_from(config)
}

/// The pool: one slot per instance that may live at once. Address space is reserved per
/// slot, and memory is committed only as an instance touches it. When an instance ends,
/// the kernel's `PAGEMAP_SCAN` (Linux 6.7 and later; elsewhere the plain reset below)
/// names the pages the step dirtied within the first `KEEP_RESIDENT` bytes of each
/// memory and table, and only those are set back to the image's contents, staying
/// resident for the next step; the rest is returned with `madvise`. A step costs about
/// 17 µs of sandbox instead of 40 µs (`cargo bench -p flowmail --bench sandbox`); every
/// step still starts from the image, so nothing of one step reaches the next. (Keeping
/// the first megabyte resident without the scan made a step slower: all of it was
/// zeroed each time.)
pub fn pooling(limits: &Limits) -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    // A component instance of the plugin holds a handful of core instances (its own,
    // WASI's adapters), each with at most one memory and a few tables.
    pool.total_component_instances(limits.instances)
        .total_core_instances(limits.instances.saturating_mul(8))
        .total_memories(limits.instances.saturating_mul(2))
        .total_tables(limits.instances.saturating_mul(8))
        .total_stacks(limits.instances)
        .max_memory_size(limits.memory_bytes)
        .max_unused_warm_slots(limits.instances.min(16))
        .pagemap_scan(wasmtime::Enabled::Auto);
    if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
    }
    pool
}

/// What each pool slot's memory and tables keep resident between steps when the kernel
/// can say which pages a step dirtied: a `send-mail` step dirties about 170 KB.
pub const KEEP_RESIDENT: usize = 1 << 20;

/// An engine on `config` (the benchmarks compare allocation strategies with it), with
/// the component model and the epoch that ticks every 10 ms while a step runs.
pub fn engine_from(mut config: Config) -> wasmtime::Result<Engine> {
    config.wasm_component_model(true).epoch_interruption(true);
    let engine = Engine::new(&config)?;
    epoch::spawn_ticker(engine.weak())?;
    Ok(engine)
}

/// Compiles `wasm`, or loads it from the compiled-component cache at `cache_dir`, whose
/// entries are trusted only when they authenticate ([`cache`]). A cache that cannot be
/// trusted is not used, with a warning.
pub fn load_component(
    engine: &Engine,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> wasmtime::Result<Component> {
    let Some(dir) = cache_dir else {
        return Component::new(engine, wasm);
    };
    match cache::Cache::open(dir) {
        Ok(cache) => cache.load(engine, wasm),
        Err(e) => {
            tracing::warn!(
                "the compiled-component cache {} is not used: {e}",
                dir.display()
            );
            Component::new(engine, wasm)
        }
    }
}

/// Links WASI (no files, no environment, no network) and the four capabilities.
fn linker(engine: &Engine) -> wasmtime::Result<Linker<StepState>> {
    let mut linker: Linker<StepState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    caps::transport::add_to_linker(&mut linker, |s| caps::transport::TransportView {
        ctx: &s.caps.transport,
        audit: &s.audit,
        scope: &s.scope,
    })?;
    caps::mailbox::add_to_linker(&mut linker, |s| caps::mailbox::Mailbox {
        ctx: &s.caps.mailbox,
        audit: &s.audit,
        scope: &s.scope,
    })?;
    caps::tokens::add_to_linker(&mut linker, |s| caps::tokens::Tokens {
        ctx: &s.caps.tokens,
        table: &mut s.table,
        audit: &s.audit,
        scope: &s.scope,
    })?;
    caps::log::add_to_linker(&mut linker, |s| caps::log::Log {
        step: &s.step,
        audit: &s.audit,
        budget: &mut s.log,
    })?;
    Ok(linker)
}

/// Links `component` against the host, checking that it implements the world.
fn prepare(engine: &Engine, component: &Component) -> wasmtime::Result<Prepared> {
    Prepared::new(&linker(engine)?, component)
}

impl Runtime {
    /// Prepares `component` for running steps against `caps`.
    pub fn new(
        engine: &Engine,
        component: &Component,
        caps: Arc<Live>,
        limits: Limits,
    ) -> wasmtime::Result<Self> {
        Ok(Self {
            engine: engine.clone(),
            pre: std::sync::RwLock::new(Arc::new(prepare(engine, component)?)),
            caps,
            limits,
            audit: Audit::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(limits.instances as usize)),
        })
    }

    /// Serves the steps that start from now on with `component`, which must implement the
    /// world; on an error the plugin in force stays.
    pub fn swap(&self, component: &Component) -> wasmtime::Result<()> {
        let pre = Arc::new(prepare(&self.engine, component)?);
        match self.pre.write() {
            Ok(mut current) => *current = pre,
            Err(poisoned) => *poisoned.into_inner() = pre,
        }
        Ok(())
    }

    /// A slot of the pool for one step's instance, waiting while all are taken.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, StepError> {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StepError::Trap(format!("no instance slot: {e}")))
    }

    fn current(&self) -> Arc<Prepared> {
        match self.pre.read() {
            Ok(pre) => pre.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Sets the tap that sees every value crossing the boundary.
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }

    /// The engine this runtime runs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn store(&self, step: &str, scope: caps::Scope) -> Store<StepState> {
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = StepState {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap {
                limit: self.limits.memory_bytes,
                refused: None,
            },
            caps: self.caps.current(),
            audit: self.audit.clone(),
            step: step.to_owned(),
            scope,
            log: caps::log::Budget::default(),
            _running: Running::start(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        let ticks = (self.limits.timeout.as_millis() / TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    /// A fresh instance of the current plugin in `store`, and the action `pick` looks up
    /// in it.
    async fn instantiate<F>(
        &self,
        store: &mut Store<StepState>,
        pick: impl FnOnce(&Prepared, &mut Store<StepState>, &Instance) -> wasmtime::Result<F>,
    ) -> Result<F, StepError> {
        let prepared = self.current();
        let action = async {
            let instance = prepared.instantiate(&mut *store).await?;
            pick(&prepared, &mut *store, &instance)
        };
        action.await.map_err(|e| self.classify(store, e))
    }

    fn classify(&self, store: &Store<StepState>, e: wasmtime::Error) -> StepError {
        if let Some(wanted) = store.data().memory.refused {
            return StepError::Memory {
                wanted,
                limit: self.limits.memory_bytes,
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => return StepError::Timeout(self.limits.timeout),
            Some(Trap::StackOverflow) => return StepError::StackOverflow,
            _ => {}
        }
        StepError::Trap(format!("{e:#}"))
    }

    /// Runs the plugin's `send-mail` as step `step`.
    pub async fn send_mail(
        &self,
        step: &str,
        account: &str,
        message: &OutgoingMessage,
    ) -> Result<Receipt, StepError> {
        let named = std::iter::once(account.to_owned()).chain(
            message
                .forward_attachments
                .iter()
                .map(|a| a.account.clone()),
        );
        let _slot = self.slot().await?;
        let mut store = self.store(step, caps::Scope::of(named));
        let send_mail = self.instantiate(&mut store, Prepared::send_mail).await?;
        self.audit
            .record(|| format!("export actions.send-mail account={account} message={message:?}"));
        let result = send_mail.call_async(&mut store, (account, message)).await;
        let (result,) = result.map_err(|e| self.classify(&store, e))?;
        drop(store);
        if let Ok(receipt) = &result {
            check_receipt(receipt, message)?;
        }
        self.audit
            .record(|| format!("export actions.send-mail -> {result:?}"));
        Ok(result?)
    }

    /// Runs the plugin's `read-mailbox` as step `step`.
    pub async fn read_mailbox(
        &self,
        step: &str,
        account: &str,
        filter: &Filter,
        after: Option<Cursor>,
        limit: u32,
        cap: Option<SizeCap>,
    ) -> Result<MailboxPage, StepError> {
        let _slot = self.slot().await?;
        let mut store = self.store(step, caps::Scope::of([account.to_owned()]));
        let read_mailbox = self.instantiate(&mut store, Prepared::read_mailbox).await?;
        self.audit.record(|| {
            format!(
                "export actions.read-mailbox account={account} filter={filter:?} after={after:?}"
            )
        });
        let result = read_mailbox
            .call_async(&mut store, (account, filter, after.as_ref(), limit, cap))
            .await;
        let (result,) = result.map_err(|e| self.classify(&store, e))?;
        drop(store);
        if let Ok(page) = &result {
            check_page(page, limit)?;
        }
        self.audit
            .record(|| format!("export actions.read-mailbox -> {result:?}"));
        Ok(result?)
    }
}
