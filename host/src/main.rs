//! The `flowmail` command: run or check workflows against the embedded or a given plugin.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flowmail::config::Config;
use flowmail::runtime::{Runtime, engine, load_component};
use flowmail::store::Store;
use flowmail::workflow::{RunOptions, Runner, Workflow};

/// Mail steps for workflows, run in a WebAssembly sandbox.
#[derive(Parser)]
#[command(name = "flowmail", version)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, default_value = "flowmail.toml")]
    config: PathBuf,
    /// A plugin component to use instead of the embedded one.
    #[arg(long, global = true)]
    plugin: Option<PathBuf>,
    /// More log output: -v for debug, -vv for trace.
    #[arg(short, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow once; a mailbox trigger processes what is new since its cursor.
    Run { workflow: PathBuf },
    /// Check a workflow against the config without running it.
    Check { workflow: PathBuf },
    /// Keep every mailbox-triggered workflow running: IDLE where the server offers it,
    /// polling otherwise, one run per new message, until Ctrl-C or SIGTERM.
    Serve {
        /// Workflow files, or folders of them.
        #[arg(default_value = "workflows")]
        workflows: Vec<PathBuf>,
    },
    /// Show what each mailbox trigger of `flowmail serve` last did: the last successful
    /// IDLE or poll, the last error, the oldest unhandled message, retries and dead letters.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Save & Authorize: run the OAuth2 authorization-code flow for an account.
    Authorize {
        /// The account to authorize.
        #[arg(long)]
        account: String,
        /// How long to wait for the browser, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Send a test message through an account's SMTP server, reporting every stage.
    TestMail {
        /// The account to test.
        #[arg(long)]
        account: String,
        /// The recipient of the test message.
        #[arg(long)]
        to: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "flowmail={level},{}",
            if cli.verbose > 0 { "info" } else { "warn" }
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: &Path, workflow: &Path) -> anyhow::Result<(Config, Workflow)> {
    let config = Config::load(config)?;
    let wf = Workflow::load(workflow)?;
    wf.check(&config)
        .map_err(|e| anyhow::anyhow!("workflow `{}`: {e}", wf.name))?;
    Ok((config, wf))
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Check { workflow } => {
            let (_, wf) = load(&cli.config, workflow)?;
            println!("workflow `{}` is valid ({} steps)", wf.name, wf.steps.len());
            Ok(())
        }
        Command::TestMail { account, to, json } => {
            let config = Config::load(&cli.config)?;
            let store = Arc::new(Store::open(&config.store_path())?);
            let relay = config.relay_with(account, &config.token_managers(&store)?)?;
            let from = config
                .accounts
                .get(account)
                .and_then(|a| a.from.as_deref())
                .map(flowmail::config::parse_address)
                .transpose()?
                .map(|a| a.email)
                .with_context(|| {
                    format!("account `{account}` has no `from` address to send the test from")
                })?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let report = rt.block_on(flowmail::caps::smtp::test_mail::run(
                account, &relay, &from, to,
            ));
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            if report.ok {
                Ok(())
            } else {
                Err(anyhow::anyhow!("Test Mail failed"))
            }
        }
        Command::Authorize { account, timeout } => {
            let config = Config::load(&cli.config)?;
            let store = Arc::new(Store::open(&config.store_path())?);
            let manager = config
                .token_managers(&store)?
                .remove(account)
                .with_context(|| {
                    format!(
                        "account `{account}` has no OAuth2 settings with client_id and token_url"
                    )
                })?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let user = rt.block_on(flowmail::oauth::authorize::authorize(
                manager,
                |url| println!("Open this URL in a browser to authorize `{account}`:\n\n  {url}\n\nWaiting for the callback..."),
                std::time::Duration::from_secs(*timeout),
            ))?;
            println!("Authorized as {user}");
            Ok(())
        }
        Command::Run { workflow } => {
            let (config, wf) = load(&cli.config, workflow)?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(run(&cli, &config, &wf))
        }
        Command::Serve { workflows } => {
            let config = Config::load(&cli.config)?;
            let wfs = load_all(&config, workflows)?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(serve(&cli, &config, &wfs))
        }
        Command::Status { json } => {
            let config = Config::load(&cli.config)?;
            let store = Store::open(&config.store_path())?;
            let report = flowmail::status::collect(&store)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", flowmail::status::render(&report));
            }
            Ok(())
        }
    }
}

/// Every workflow with a mailbox trigger in `paths` (files, or folders of `.yaml` files).
fn load_all(config: &Config, paths: &[PathBuf]) -> anyhow::Result<Vec<Workflow>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let mut workflows: Vec<Workflow> = Vec::new();
    for file in files {
        let wf = Workflow::load(&file)?;
        if wf.trigger.mailbox.is_none() {
            continue;
        }
        wf.check(config)
            .map_err(|e| anyhow::anyhow!("workflow `{}` ({}): {e}", wf.name, file.display()))?;
        if workflows.iter().any(|w| w.name == wf.name) {
            anyhow::bail!(
                "two workflows are named `{}`; names key the mailbox cursors, so make them unique",
                wf.name
            );
        }
        workflows.push(wf);
    }
    if workflows.is_empty() {
        anyhow::bail!(
            "no workflow with a mailbox trigger in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(workflows)
}

async fn serve(cli: &Cli, config: &Config, workflows: &[Workflow]) -> anyhow::Result<()> {
    let (store, runtime) = start(cli, config).await?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let signals = async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
        eprintln!("stopping: runs in progress finish first (a second Ctrl-C stops at once)");
        let _ = tx.send(true);
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    };
    let work = flowmail::workflow::serve::serve(&runtime, &store, workflows, rx);
    tokio::select! {
        r = work => r?,
        () = async { signals.await; } => {}
    }
    Ok(())
}

/// Opens the store and the plugin runtime, and keeps the OAuth2 refresh tokens alive.
async fn start(cli: &Cli, config: &Config) -> anyhow::Result<(Arc<Store>, Runtime)> {
    let store = Arc::new(Store::open(&config.store_path())?);
    let caps = Arc::new(config.capabilities(&store)?);
    let wasm = match &cli.plugin {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("reading the plugin {}", path.display()))?
        }
        None => flowmail::DEFAULT_PLUGIN.to_vec(),
    };
    let engine = engine().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let component = load_component(&engine, &wasm, config.cache_dir().as_deref())
        .map_err(|e| anyhow::anyhow!("loading the plugin: {e:#}"))?;
    for (account, manager) in &caps.tokens.managers {
        match manager.keep_alive().await {
            Ok(true) => {
                tracing::info!("refreshed the idle refresh token of `{account}` to keep it alive")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("keeping the tokens of `{account}` alive failed: {e:?}"),
        }
    }
    let runtime = Runtime::new(&engine, &component, caps, config.limits())
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    Ok((store, runtime))
}

async fn run(cli: &Cli, config: &Config, wf: &Workflow) -> anyhow::Result<()> {
    let (store, runtime) = start(cli, config).await?;
    let report = Runner {
        runtime: &runtime,
        store: &store,
    }
    .run_with(
        wf,
        RunOptions {
            retry_now: true,
            progress: true,
        },
    )
    .await;
    let report = report.map_err(|e| anyhow::anyhow!("workflow `{}`: {e}", wf.name))?;
    for line in &report.lines {
        println!("{line}");
    }
    if let Some(first) = report.failed.first() {
        return Err(anyhow::anyhow!(
            "workflow `{}`: {first}{}",
            wf.name,
            match report.failed.len() {
                1 => String::new(),
                n => format!(" (and {} more failed run(s))", n - 1),
            }
        ));
    }
    if report.sent.is_empty() {
        println!("{}: nothing to send", wf.name);
    }
    Ok(())
}
