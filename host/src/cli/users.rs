//! `flowmail user add|list|remove`: the users of the settings page. Only the store is
//! needed; passwords are hashed with argon2id and never stored or shown.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, bail};
use flowmail::config::Config;
use flowmail::store::Store;
use flowmail::web::access::hash_password;

fn store(config: &Path) -> anyhow::Result<Store> {
    let config = Config::read(config)?;
    config.open_store()
}

/// Reads a line from the terminal without echoing it.
fn read_hidden(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let echo_off = std::process::Command::new("stty")
        .arg("-echo")
        .stdin(std::process::Stdio::inherit())
        .status()
        .is_ok_and(|s| s.success());
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if echo_off {
        let _ = std::process::Command::new("stty")
            .arg("echo")
            .stdin(std::process::Stdio::inherit())
            .status();
    }
    eprintln!();
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The new user's password: asked twice on a terminal, else the first line of stdin.
fn password() -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = read_hidden("Password: ")?;
        let again = read_hidden("Password again: ")?;
        if first != again {
            bail!("the two passwords differ; nothing was changed");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.chars().count() < 12 {
        bail!("the password is too short: give at least 12 characters");
    }
    Ok(password)
}

/// `flowmail user add`.
pub fn user_add(
    config: &Path,
    email: Option<&str>,
    name: Option<&str>,
    no_email: bool,
) -> anyhow::Result<()> {
    let email = email.map(|e| e.trim().to_lowercase());
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    let login = match (&email, no_email, &name) {
        (Some(e), _, _) => {
            let parsed = flowmail::config::parse_address(e)?;
            if parsed.email != *e || !e.contains('@') || e.contains(char::is_whitespace) {
                bail!("--email: `{e}` is not an address like name@example.com");
            }
            e.clone()
        }
        (None, true, Some(n)) => n.to_lowercase(),
        (None, true, None) => {
            bail!("--no-email needs --name: the name is what the user logs in with")
        }
        (None, false, _) => bail!("give --email ADDR, or --no-email with --name NAME"),
    };
    let store = store(config)?;
    let hash = hash_password(&password()?)?;
    if !store.add_user(&login, email.as_deref(), name.as_deref(), &hash)? {
        bail!("a user `{login}` exists already; remove it first to replace it");
    }
    println!("added user `{login}`");
    Ok(())
}

/// `flowmail user list`.
pub fn user_list(config: &Path) -> anyhow::Result<()> {
    let users = store(config)?.users()?;
    if users.is_empty() {
        println!("no users; add one with `flowmail user add --email ADDR`");
    }
    for u in users {
        println!(
            "{}\t{}\t{}",
            u.login,
            u.email.as_deref().unwrap_or("(no email)"),
            u.name.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// `flowmail user remove`.
pub fn user_remove(config: &Path, login: &str) -> anyhow::Result<()> {
    let login = login.trim().to_lowercase();
    if !store(config)?.remove_user(&login)? {
        bail!("no user `{login}`; see `flowmail user list`");
    }
    println!("removed user `{login}` and ended their sessions");
    Ok(())
}
