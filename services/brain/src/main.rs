//! `brain` binary: see the library for what it does.

/// mimalloc, not glibc's allocator: less CPU per message (docs/BENCHMARKS.md, issue 26).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    shared::service::main_with::<brain::cli::Subcommands, _, _>(
        brain::SPEC,
        brain::Config::load,
        brain::start,
    )
}
