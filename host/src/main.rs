//! The `flowmail` command: parses the command line and dispatches to [`cli`], where each
//! command's body lives. Only the binary prints; the library reports through return values
//! and the workflow `Events` sink.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flowmail::app::Plugin;

mod cli;

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
enum DeadLettersAction {
    /// Each dead letter with its workflow, account, attempts and reason.
    List {
        /// Only this workflow's.
        #[arg(long)]
        workflow: Option<String>,
    },
    /// Puts the dead letters back to waiting: the next `run` or `serve` catch-up runs each
    /// once more.
    Retry {
        /// Only this workflow's.
        #[arg(long)]
        workflow: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Adds a user; the password is read from the terminal (twice, not shown) or from
    /// standard input.
    Add {
        /// The address the user logs in with and receives validation mails at.
        #[arg(long, conflicts_with = "no_email")]
        email: Option<String>,
        /// The user's name; without an email address, the name is what the user logs in with.
        #[arg(long)]
        name: Option<String>,
        /// A user without an email address (Validate and Save then asks for one).
        #[arg(long)]
        no_email: bool,
    },
    /// Every user, with the address or name they log in with.
    List,
    /// Removes a user and ends their sessions.
    Remove {
        /// The address (or, for a user without one, the name) the user logs in with.
        login: String,
    },
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
        /// Serve only the settings page (`web.listen`), without running triggers.
        #[arg(long)]
        web_only: bool,
    },
    /// The users of the settings page.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Show what each mailbox trigger of `flowmail serve` last did: the last successful
    /// IDLE or poll, the last error, the oldest unhandled message, retries and dead letters.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The nodes that share the store: data center, alive or not, last heartbeat, triggers.
    Nodes {
        /// Print the nodes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The durable outbox by data center: queued, sending, sent and failed messages, the
    /// oldest waiting one's age and the latest failures with the server's reply.
    Outbox {
        /// Print the outbox as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The dead letters of mailbox triggers: list them, or retry them once their cause is
    /// fixed.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLettersAction,
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

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let config = cli.config.as_path();
    let plugin = match &cli.plugin {
        Some(path) => Plugin::File(path.clone()),
        None => Plugin::Embedded,
    };
    // Only the commands that talk to servers or run the plugin start the async runtime.
    let runtime = || flowmail::blocking::runtime().context("starting the async runtime");
    match &cli.command {
        Command::Check { workflow } => cli::check(config, workflow),
        Command::Status { json } => cli::status(config, *json),
        Command::Nodes { json } => cli::nodes(config, *json),
        Command::Outbox { json } => cli::outbox(config, *json),
        Command::DeadLetters { action } => match action {
            DeadLettersAction::List { workflow } => {
                cli::dead_letters(config, workflow.as_deref(), false)
            }
            DeadLettersAction::Retry { workflow } => {
                cli::dead_letters(config, workflow.as_deref(), true)
            }
        },
        Command::TestMail { account, to, json } => {
            runtime()?.block_on(cli::test_mail(config, account, to, *json))
        }
        Command::Authorize { account, timeout } => {
            runtime()?.block_on(cli::authorize(config, account, *timeout))
        }
        Command::Run { workflow } => runtime()?.block_on(cli::run(config, plugin, workflow)),
        Command::Serve {
            workflows,
            web_only,
        } => runtime()?.block_on(cli::serve(config, plugin, workflows, *web_only)),
        Command::User { action } => match action {
            UserAction::Add {
                email,
                name,
                no_email,
            } => cli::user_add(config, email.as_deref(), name.as_deref(), *no_email),
            UserAction::List => cli::user_list(config),
            UserAction::Remove { login } => cli::user_remove(config, login),
        },
    }
}
