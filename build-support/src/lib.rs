//! Builds a workspace crate as a `wasm32-wasip2` component from a build script, the way
//! wasmtime's test-programs do: a nested `cargo build` into a target dir of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// Builds `package` (a cdylib in this workspace) in release mode for `wasm32-wasip2` and
/// returns the path of the component. Installs the rustup target first if it is missing.
pub fn build_component(package: &str, rerun_paths: &[&str]) -> Result<PathBuf, String> {
    let manifest_dir = env("CARGO_MANIFEST_DIR")?;
    let workspace = find_workspace(Path::new(&manifest_dir))?;
    for p in rerun_paths {
        println!("cargo:rerun-if-changed={}", workspace.join(p).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());

    ensure_target()?;
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let target_dir = out_dir.join("wasm-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "-p",
            package,
            "--target-dir",
        ])
        .arg(&target_dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("running cargo for {package}: {e}"))?;
    if !status.success() {
        return Err(format!("building {package} for {TARGET} failed ({status})"));
    }
    let file = format!("{}.wasm", package.replace('-', "_"));
    let path = target_dir.join(TARGET).join("release").join(file);
    if !path.is_file() {
        return Err(format!("{} was not produced", path.display()));
    }
    Ok(path)
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name)
        .map_err(|_| format!("{name} is not set; run this from a cargo build script"))
}

fn find_workspace(start: &Path) -> Result<PathBuf, String> {
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|toml| toml.contains("[workspace]"))
        })
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no workspace above {}", start.display()))
}

/// The machine may not auto-install rustup targets, so install it here when missing.
fn ensure_target() -> Result<(), String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|e| format!("running {rustc}: {e}"))?;
    let dir = String::from_utf8_lossy(&libdir.stdout).trim().to_owned();
    if libdir.status.success() && has_core(&dir) {
        return Ok(());
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(|e| format!("the {TARGET} target is missing and rustup could not run ({e}); install it with `rustup target add {TARGET}`"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`rustup target add {TARGET}` failed ({status}); run it by hand"
        ))
    }
}

fn has_core(dir: &str) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
    })
}
