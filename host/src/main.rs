//! The `flowmail` command: run or check workflows against the embedded or a given plugin.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flowmail::config::Config;
use flowmail::runtime::{Runtime, engine, load_component};
use flowmail::store::Store;
use flowmail::workflow::{Runner, Workflow};

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
    }
}

async fn run(cli: &Cli, config: &Config, wf: &Workflow) -> anyhow::Result<()> {
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
    let report = Runner {
        runtime: &runtime,
        store: &store,
    }
    .run(wf)
    .await
    .map_err(|e| anyhow::anyhow!("workflow `{}`: {e}", wf.name))?;
    for line in &report.lines {
        println!("{line}");
    }
    if report.sent.is_empty() {
        println!("{}: nothing to send", wf.name);
    }
    Ok(())
}
