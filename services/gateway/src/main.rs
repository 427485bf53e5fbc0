//! `gateway` binary: see the library for what it does.

fn main() -> std::process::ExitCode {
    shared::service::main(gateway::SPEC, gateway::Config::load, gateway::start)
}
