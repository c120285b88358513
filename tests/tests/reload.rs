//! Hot reload: `flowmail serve --plugin FILE` swaps in a new plugin file on SIGHUP
//! between steps, with its trigger still watching; a file that is not a component, or a
//! component that does not implement the world, leaves the old plugin serving, logged
//! and shown by `flowmail status`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flowmail_tests::{MISBEHAVE_PLUGIN, Process, Workspace};

fn deliver(ws: &Workspace, n: usize) {
    std::fs::write(
        ws.path().join(format!("Maildir/new/17959{n:05}.m{n}.host")),
        format!(
            "From: a@demo.example\r\nTo: box@demo.example\r\nSubject: msg {n}\r\n\
             Message-ID: <reload-{n}@demo.example>\r\n\r\nbody {n}\r\n"
        ),
    )
    .unwrap();
}

/// Waits until the outbox holds `n` messages and returns the newest one's text.
fn nth_sent(ws: &Workspace, n: usize, what: &str) -> String {
    let started = Instant::now();
    loop {
        let sent = ws.outbox();
        if sent.len() >= n {
            let newest = sent
                .iter()
                .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
                .unwrap();
            return std::fs::read_to_string(newest).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: {} of {n} sent; serve said:\n{}",
            sent.len(),
            stderr(ws)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stderr(ws: &Workspace) -> String {
    std::fs::read_to_string(ws.path().join("serve.err")).unwrap_or_default()
}

fn wait_for_line(ws: &Workspace, needle: &str, count: usize) {
    let started = Instant::now();
    while stderr(ws).matches(needle).count() < count {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "serve never said `{needle}`:\n{}",
            stderr(ws)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Replaces the plugin file as a deploy would: a new file renamed over the old.
fn install(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn sighup_swaps_the_plugin_between_steps_and_a_bad_file_leaves_the_old_one_serving() {
    let ws = Workspace::forwarding("").unwrap();
    let plugin = ws.path().join("plugin.wasm");
    std::fs::write(&plugin, flowmail::DEFAULT_PLUGIN).unwrap();

    let mut serve: Process = Command::new(flowmail_tests::flowmail_bin())
        .current_dir(ws.path())
        .args([
            "--plugin",
            plugin.to_str().unwrap(),
            "serve",
            "forward.yaml",
        ])
        .stdout(std::fs::File::create(ws.path().join("serve.out")).unwrap())
        .stderr(std::fs::File::create(ws.path().join("serve.err")).unwrap())
        .spawn()
        .unwrap()
        .into();

    // The flowmail plugin composes a full message.
    deliver(&ws, 1);
    let first = nth_sent(&ws, 1, "the first plugin's run");
    assert!(
        first.contains("MIME-Version: 1.0") && first.contains("forwarded"),
        "{first}"
    );
    let shown = ws.status();
    assert!(
        shown.contains("plugin.wasm (sha256 "),
        "{shown}\nserve said:\n{}",
        stderr(&ws)
    );

    // A SIGHUP with the misbehaving plugin in place: the next run is its, and the trigger
    // never stopped watching.
    install(&plugin, &std::fs::read(MISBEHAVE_PLUGIN).unwrap());
    serve.signal("-HUP");
    wait_for_line(&ws, "plugin reloaded: steps that start from now on run", 1);
    deliver(&ws, 2);
    let second = nth_sent(&ws, 2, "the reloaded plugin's run");
    assert!(
        second.starts_with("Subject: msg 2\r\n\r\nok"),
        "not the misbehaving plugin's message: {second}"
    );
    let serving = ws.status();

    // Not a component, then a component of no world: refused, logged, shown in status,
    // and the misbehaving plugin goes on serving.
    for (n, bytes, says) in [
        (
            3,
            &b"this is not wasm"[..],
            "is not a WebAssembly component this host can load",
        ),
        (
            4,
            &b"\0asm\x0d\0\x01\0"[..],
            "does not implement the world flowmail:mail/mail-plugin",
        ),
    ] {
        install(&plugin, bytes);
        serve.signal("-HUP");
        wait_for_line(&ws, says, 1);
        assert!(stderr(&ws).contains("keeps serving"), "{}", stderr(&ws));
        let shown = ws.status();
        assert!(
            shown.contains("RELOAD FAILED") && shown.contains(says),
            "{shown}"
        );
        deliver(&ws, n);
        let sent = nth_sent(&ws, n, "a run after a refused reload");
        assert!(
            sent.starts_with(&format!("Subject: msg {n}\r\n\r\nok")),
            "{sent}"
        );
    }
    // The plugin in force is the one that served before the refused reloads.
    let line = |text: &str| {
        text.lines()
            .find(|l| l.contains("plugin.wasm (sha256 "))
            .map(str::to_owned)
    };
    assert_eq!(line(&ws.status()), line(&serving));

    // Back to the flowmail plugin: reloaded, and the failure is no longer shown.
    install(&plugin, flowmail::DEFAULT_PLUGIN);
    serve.signal("-HUP");
    wait_for_line(&ws, "plugin reloaded: steps that start from now on run", 2);
    deliver(&ws, 5);
    let fifth = nth_sent(&ws, 5, "the flowmail plugin again");
    assert!(fifth.contains("MIME-Version: 1.0"), "{fifth}");
    assert!(!ws.status().contains("RELOAD FAILED"));

    // Every message ran once, and the process is still up.
    assert_eq!(ws.outbox().len(), 5);
    assert!(serve.try_wait().unwrap().is_none(), "serve ended");
    serve.kill().unwrap();
    let _ = serve.wait();
}
