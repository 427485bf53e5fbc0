//! `transcriber` binary: see the library for what it does.

fn main() -> std::process::ExitCode {
    shared::service::main(
        transcriber::SPEC,
        transcriber::Config::load,
        transcriber::start,
    )
}
