//! Builds the misbehaving test plugin; the tests find it through `MISBEHAVE_PLUGIN`.

fn main() -> Result<(), String> {
    let path = flowmail_build_support::build_component(
        "flowmail-misbehave",
        &["tests/misbehave/src", "tests/misbehave/Cargo.toml"],
    )?;
    println!("cargo:rustc-env=MISBEHAVE_PLUGIN={}", path.display());
    Ok(())
}
