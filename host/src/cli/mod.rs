//! The bodies of the `flowmail` commands, part of the binary only. `main.rs` parses the
//! command line and calls one of these; each builds what it needs through [`App`] and
//! prints its own output.

mod limits;
mod nodes;
mod progress;
mod reload;
mod users;

pub use self::nodes::list as nodes;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

pub use self::progress::Console;
pub use self::users::{user_add, user_list, user_remove};
use flowmail::app::{App, Plugin};
use flowmail::cluster::probes::{self, Route};
use flowmail::config::Config;
use flowmail::workflow::{RunOptions, Runner, Workflow};

/// Loads the config and a workflow, and checks one against the other.
pub fn load(config: &Path, workflow: &Path) -> anyhow::Result<(Config, Workflow)> {
    let config = Config::load(config)?;
    let wf = Workflow::load(workflow)?;
    wf.check(&config)
        .map_err(|e| anyhow::anyhow!("workflow `{}`: {e}", wf.name))?;
    Ok((config, wf))
}

/// `flowmail check`.
pub fn check(config: &Path, workflow: &Path) -> anyhow::Result<()> {
    let (_, wf) = load(config, workflow)?;
    println!("workflow `{}` is valid ({} steps)", wf.name, wf.steps.len());
    Ok(())
}

/// `flowmail test-mail`: sends a test message through `account`, stage by stage.
pub async fn test_mail(config: &Path, account: &str, to: &str, json: bool) -> anyhow::Result<()> {
    let (config, app) = open(config, Plugin::Embedded)?;
    // From the account's data center: here, or through a live node of it.
    let here = config.node_data_center();
    let report = match probes::route(app.store(), &here, &config.account_data_center(account))? {
        Route::Here => {
            let mut report = app.test_mail(&config, account, to).await?;
            report.node = Some(config.node.name());
            report.data_center = Some(here);
            report
        }
        Route::There(dc) => probes::run_there(app.store(), &dc, account, to, None).await?,
    };
    if json {
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

/// `flowmail authorize`: Save & Authorize, the authorization-code flow in a browser.
pub async fn authorize(config: &Path, account: &str, timeout: u64) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let app = App::open(&config, Plugin::Embedded)?;
    let manager = app.token_manager(account).with_context(|| {
        format!("account `{account}` has no OAuth2 settings with client_id and token_url")
    })?;
    let user = flowmail::auth::authorize::authorize(
        manager,
        |url| {
            println!(
                "Open this URL in a browser to authorize `{account}`:\n\n  {url}\n\nWaiting for the callback..."
            )
        },
        std::time::Duration::from_secs(timeout),
    )
    .await?;
    println!("Authorized as {user}");
    Ok(())
}

/// `flowmail status`. It reads the store only, so it needs none of the accounts' secrets.
pub fn status(config: &Path, json: bool) -> anyhow::Result<()> {
    let config = Config::read(config)?;
    let store = config.open_store()?;
    let report = flowmail::status::collect(&store)?;
    if json {
        out(&format!("{}\n", serde_json::to_string_pretty(&report)?))
    } else {
        let mut text = flowmail::status::render(&report);
        text.push_str(&flowmail::status::render_outbox(&flowmail::status::outbox(
            &store,
        )?));
        text.push_str(&flowmail::status::render_plugins(&store)?);
        out(&text)
    }
}

/// `flowmail outbox`: the durable outbox by data center and state, with the latest
/// failures. `status --json` stays the array of triggers it always was; this is the
/// outbox's JSON.
pub fn outbox(config: &Path, json: bool) -> anyhow::Result<()> {
    let config = Config::read(config)?;
    let store = config.open_store()?;
    let report = flowmail::status::outbox(&store)?;
    if json {
        return out(&format!("{}\n", serde_json::to_string_pretty(&report)?));
    }
    let text = flowmail::status::render_outbox(&report);
    if text.is_empty() {
        return out("the outbox is empty: no account queues its mail (delivery = \"queued\")\n");
    }
    out(text.trim_start())
}

/// `flowmail dead-letters list|retry`. Like `status`, it reads only the store.
pub fn dead_letters(config: &Path, workflow: Option<&str>, retry: bool) -> anyhow::Result<()> {
    let config = Config::read(config)?;
    let store = config.open_store()?;
    let scope = workflow.map_or("any workflow".to_owned(), |w| format!("`{w}`"));
    if retry {
        let n = store.retry_dead_letters(workflow)?;
        return out(&format!(
            "{n} dead letter(s) of {scope} wait again; the next `flowmail run` or `serve` catch-up runs each once\n"
        ));
    }
    let letters = store.dead_letters(workflow)?;
    if letters.is_empty() {
        return out(&format!("no dead letters of {scope}\n"));
    }
    let mut text = String::new();
    for (wf, account, row) in letters {
        text.push_str(&format!(
            "{wf} ({account}): {} {} after {} attempt(s): {}\n",
            row.message,
            row.key,
            row.attempts,
            row.last_error.as_deref().unwrap_or("no reason recorded")
        ));
    }
    out(&text)
}

/// Writes `text` to stdout. A reader that went away (`status | head`) ends the output
/// quietly instead of failing.
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The config and the application over it, with the settings page's accounts merged
/// in, so that workflows can use them by name.
fn open(config: &Path, plugin: Plugin) -> anyhow::Result<(Config, Arc<App>)> {
    let mut config = Config::load(config)?;
    let app = Arc::new(App::open(&config, plugin)?);
    flowmail::web::accounts::merge(&app, &mut config)?;
    Ok((config, app))
}

/// `flowmail run`: one workflow once; with a mailbox trigger, a catch-up.
pub async fn run(config: &Path, plugin: Plugin, workflow: &Path) -> anyhow::Result<()> {
    let (config, app) = open(config, plugin)?;
    let wf = Workflow::load(workflow)?;
    wf.check(&config)
        .map_err(|e| anyhow::anyhow!("workflow `{}`: {e}", wf.name))?;
    app.keep_tokens_alive().await;
    let console = Console::for_one_workflow();
    let runner = Runner::new(&app)?.with_events(&console);
    let options = RunOptions {
        retry_now: true,
        progress: true,
    };
    let report = flowmail::workflow::run_with(&runner, &wf, options)
        .await
        .map_err(|e| anyhow::anyhow!("workflow `{}`: {e}", wf.name))?;
    // A catch-up showed its lines as they happened; the rest are shown now.
    for line in report.lines.iter().skip(report.shown) {
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

/// How long a stopping `serve` waits for its runs and sends under way before it exits
/// anyway: 120 s, or 30 s more than a step may take where `runtime.step_timeout_ms` is
/// longer. A forced exit is a crash as far as the store knows: a run cut short is
/// retried at the next start, and queued mail stays queued.
fn stop_grace(config: &Config) -> std::time::Duration {
    let step = std::time::Duration::from_millis(config.runtime.step_timeout_ms);
    std::time::Duration::from_secs(120).max(step + std::time::Duration::from_secs(30))
}

/// The next SIGTERM, or never where it cannot be caught.
async fn sigterm(term: &mut Option<tokio::signal::unix::Signal>) {
    match term.as_mut() {
        Some(t) => {
            t.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// `flowmail serve`: every mailbox-triggered workflow in `paths`, and the settings page,
/// until Ctrl-C or SIGTERM; with `web_only`, the settings page alone.
pub async fn serve(
    config_path: &Path,
    plugin: Plugin,
    paths: &[PathBuf],
    web_only: bool,
) -> anyhow::Result<()> {
    // Taken first, so that a SIGTERM during start-up stops cleanly too.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let hangup = reload::listen();
    let (config, app) = open(config_path, plugin)?;
    let workflows = if web_only {
        Vec::new()
    } else {
        load_all(&config, paths)?
    };
    match limits::raise_open_files() {
        Ok(limit) => limits::check(&config, &workflows, limit)?,
        Err(e) => tracing::warn!("the open-file limit cannot be read: {e}"),
    }
    let web = Arc::new(flowmail::web::Web::new(
        app.clone(),
        config_path.to_path_buf(),
        &config,
    )?);
    let listener = flowmail::web::bind(&config.web.listen).await?;
    println!(
        "settings page: http://{}/",
        listener
            .local_addr()
            .context("the settings page's address")?
    );
    flowmail::metrics::install();
    let node = nodes::register(app.store(), &config, workflows.len())?;
    app.keep_tokens_alive().await;
    let console: Arc<dyn flowmail::workflow::Events> = Arc::new(Console::default());
    let events: Arc<dyn flowmail::workflow::Events> = match &config.alerts {
        Some(a) => {
            if !config.accounts.contains_key(&a.account) {
                eprintln!(
                    "alerts.account: `{}` does not exist yet; alerts are mailed once it is saved on the settings page",
                    a.account
                );
            }
            Arc::new(flowmail::workflow::alert_mail::AlertMail::new(
                console,
                app.clone(),
                &a.account,
                &a.to,
            ))
        }
        None => console,
    };
    // The plugin compiles before anything is served: a broken one stops the start.
    app.runtime()?;
    node.beat_now();
    reload::serving(&app, &config.node.name());
    let serving = flowmail::workflow::serve::Serving {
        app: app.clone(),
        events: events.clone(),
    };
    let events: &dyn flowmail::workflow::Events = &*events;
    // The accounts' own alerts (a needed re-authorization, an expiring client secret), now
    // and every six hours.
    let settings_alerts = async {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(6 * 3600));
        loop {
            tick.tick().await;
            flowmail::web::accounts::check_alerts(&app, &config, events);
        }
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let grace = stop_grace(&config);
    let signals = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = sigterm(&mut term) => {}
        }
        eprintln!(
            "stopping: runs in progress finish first (a second Ctrl-C or SIGTERM stops at once; in {} s the stop is forced)",
            grace.as_secs()
        );
        let _ = tx.send(true);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => std::process::exit(130),
            () = sigterm(&mut term) => std::process::exit(143),
            () = tokio::time::sleep(grace) => {
                eprintln!(
                    "the stop did not finish within {} s: exiting now; a run cut short is retried at the next start, and queued mail stays queued",
                    grace.as_secs()
                );
                std::process::exit(1);
            }
        }
    };
    let page = tokio::spawn(flowmail::web::serve(web.clone(), listener, rx.clone()));
    let workers = flowmail::cluster::outbox::Workers {
        app: app.clone(),
        node: config.node.name(),
        data_center: config.node_data_center(),
        config: config.outbox.clone(),
        events,
    };
    let delivering = workers.run(rx.clone());
    // Test Mail that processes of other data centers ask of this one.
    let (node_name, node_dc) = (config.node.name(), config.node_data_center());
    let probing = probes::serve(
        app.store().clone(),
        &node_name,
        &node_dc,
        |job| {
            let web = web.clone();
            async move { web.run_probe(job).await }
        },
        rx.clone(),
    );
    let triggers = async {
        if web_only {
            let mut stop = rx.clone();
            let _ = stop.wait_for(|s| *s).await;
            Ok(())
        } else {
            flowmail::workflow::serve::serve(serving, workflows, rx).await
        }
    };
    // On a stop, both finish what they have under way: a run, a send.
    let work = async {
        let (ended, (), ()) = tokio::join!(triggers, delivering, probing);
        ended
    };
    // A process that runs for months must keep its refresh tokens alive too, not only
    // at start.
    let keep_alive = app.keep_tokens_alive_every(std::time::Duration::from_secs(24 * 3600));
    let ended = tokio::select! {
        r = work => r,
        () = async { signals.await; } => Ok(()),
        () = keep_alive => Ok(()),
        () = settings_alerts => Ok(()),
        () = node.beat() => Ok(()),
        () = reload::on_hangup(hangup, app.clone(), config.node.name()) => Ok(()),
    };
    node.stopped();
    ended?;
    match tokio::time::timeout(std::time::Duration::from_secs(5), page).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => tracing::warn!("the settings page's server ended badly: {e}"),
        Err(_) => tracing::warn!("the settings page's server did not stop within 5 s"),
    }
    Ok(())
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
        let warnings = wf
            .check_served(config)
            .map_err(|e| anyhow::anyhow!("workflow `{}` ({}): {e}", wf.name, file.display()))?;
        for w in warnings {
            eprintln!("workflow `{}`: {w}", wf.name);
        }
        if workflows.iter().any(|w| w.name == wf.name) {
            anyhow::bail!(
                "two workflows are named `{}`; names key the mailbox cursors, so make them unique",
                wf.name
            );
        }
        workflows.push(wf);
    }
    let found_any = !workflows.is_empty();
    // A trigger runs on the nodes of its account's data center only.
    let here = config.node_data_center();
    workflows.retain(|wf| {
        let Some(account) = wf.trigger.mailbox.as_ref().map(|t| t.account.as_str()) else {
            return true;
        };
        let there = config.account_data_center(account);
        if there != here {
            eprintln!(
                "workflow `{}`: its account `{account}` is in data center `{there}`; this node is in `{here}`, so a node there runs it",
                wf.name
            );
        }
        there == here
    });
    if !found_any {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A forced stop never cuts short a step that is still within its time limit.
    #[test]
    fn the_stop_grace_outlasts_the_step_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flowmail.toml");
        for (runtime, secs) in [("", 120), ("step_timeout_ms = 300000\n", 330)] {
            std::fs::write(&path, format!("[runtime]\n{runtime}")).unwrap();
            let config = Config::read(&path).unwrap();
            assert_eq!(stop_grace(&config).as_secs(), secs, "{runtime}");
        }
    }
}
