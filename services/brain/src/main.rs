//! `brain` binary: see the library for what it does.

fn main() -> std::process::ExitCode {
    shared::service::main(brain::SPEC, brain::Config::load, brain::start)
}
