//! What the checks in `tests/` share: the repository's root, the four services and the variables
//! each reads, YAML files of the repository, and the tools the checks run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

/// The four services, as their binaries and compose services are named.
pub const SERVICES: [&str; 4] = ["gateway", "brain", "transcriber", "ledger"];

/// The workspace's root directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// A YAML file of the repository (its first document), by its path from the root.
pub fn read_yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .remove(0)
}

/// The variables a service reads (its `vars` subcommand).
pub fn vars_of(service: &str) -> BTreeSet<String> {
    let out = Command::new(shared::testing::workspace_bin(service))
        .arg("vars")
        .output()
        .unwrap_or_else(|e| panic!("{service} vars: {e}"));
    assert!(out.status.success(), "{service} vars failed");
    String::from_utf8(out.stdout)
        .expect("variable names are UTF-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The first of `names` that runs (`--version`), for a tool scripts/test installs.
pub fn program(names: &[&str]) -> String {
    names
        .iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .unwrap_or_else(|| panic!("none of {names:?} runs (scripts/test installs it)"))
        .to_string()
}
