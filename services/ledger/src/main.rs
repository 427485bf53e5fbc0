//! `ledger` binary: see the library for what it does.

/// mimalloc, not glibc's allocator: less CPU per message (docs/BENCHMARKS.md, issue 26).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    shared::service::main(ledger::SPEC, ledger::Config::load, ledger::start)
}
