//! Compiles `../proto` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    println!("cargo:rerun-if-changed=../migrations");
    let fds = protox::compile(["switchboard/v1/events.proto"], ["../proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
