//! `ledger` binary: see the library for what it does.

fn main() -> std::process::ExitCode {
    shared::service::main(ledger::SPEC, ledger::Config::load, ledger::start)
}
