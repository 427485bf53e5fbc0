//! `gateway` binary: see the library for what it does.

fn main() -> std::process::ExitCode {
    shared::service::main_with::<gateway::Commands, _, _>(
        gateway::SPEC,
        gateway::Config::load,
        gateway::start,
    )
}
