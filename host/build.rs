//! Builds the plugin component and embeds it as the host's default plugin.

fn main() -> Result<(), String> {
    let path = flowmail_build_support::build_component(
        "flowmail-plugin",
        &["plugin/src", "plugin/Cargo.toml"],
    )?;
    println!("cargo:rustc-env=FLOWMAIL_DEFAULT_PLUGIN={}", path.display());
    Ok(())
}
