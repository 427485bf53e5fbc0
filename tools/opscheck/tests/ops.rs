//! The deployment files checked without Docker (none runs on the development machines):
//! compose.yaml against what each service reads, the Dockerfile statically, prometheus/ with
//! promtool, the dashboard and alert queries against live `/metrics` scrapes, `.env.example`
//! against the services' variables (backups: backups.rs).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use opscheck::{SERVICES, program, read_yaml, root, vars_of};

fn bin(name: &str) -> PathBuf {
    shared::testing::workspace_bin(name)
}

fn compose() -> Yaml {
    read_yaml("compose.yaml")
}

/// A service's mapping with `<<: *anchor` merged in (YAML 1.1 merge keys).
fn service(compose: &Yaml, name: &str) -> HashMap<String, Yaml> {
    let svc = &compose["services"][name];
    let mut out = HashMap::new();
    if let Some(base) = svc["<<"].as_hash() {
        for (k, v) in base {
            out.insert(k.as_str().unwrap().to_owned(), v.clone());
        }
    }
    for (k, v) in svc
        .as_hash()
        .unwrap_or_else(|| panic!("no service {name} in compose.yaml"))
    {
        let k = k.as_str().unwrap();
        if k != "<<" {
            out.insert(k.to_owned(), v.clone());
        }
    }
    out
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn mem_mib(s: &str) -> u64 {
    let (n, unit) = s.split_at(s.len() - 1);
    let n: u64 = n.parse().unwrap();
    match unit {
        "m" => n,
        "g" => n * 1024,
        _ => panic!("mem_limit {s}: use m or g"),
    }
}

#[test]
fn composes_redis_needs_a_password_and_only_the_services_reach_it() {
    let c = compose();
    let redis = service(&c, "redis");
    assert_eq!(strings(&redis["networks"]), ["redis"]);
    assert_eq!(c["networks"]["redis"]["internal"].as_bool(), Some(true));
    let entry = strings(&redis["entrypoint"]).join(" ");
    assert!(entry.contains("requirepass") && entry.contains("$$REDIS_PASSWORD"));
    assert!(
        redis["environment"]["REDIS_PASSWORD"]
            .as_str()
            .is_some_and(|v| v.starts_with("${REDIS_PASSWORD:?")),
        "compose refuses to start Redis without a password"
    );
    for name in SERVICES {
        let s = service(&c, name);
        assert!(
            s["environment"]["REDIS_URL"]
                .as_str()
                .is_some_and(|u| u.starts_with("redis://:${REDIS_PASSWORD:?")),
            "{name} authenticates to Redis"
        );
        assert!(
            strings(&s["networks"]).contains(&"redis".to_owned()),
            "{name}"
        );
    }
    for name in ["prometheus", "grafana", "jaeger", "postgres"] {
        let s = service(&c, name);
        assert!(
            !strings(s.get("networks").unwrap_or(&Yaml::BadValue)).contains(&"redis".to_owned()),
            "{name} has no business with Redis"
        );
    }
}

#[test]
fn composes_redis_holds_the_media_store_and_its_headroom() {
    let c = compose();
    let redis = strings(&service(&c, "redis")["command"]);
    let max = redis
        .iter()
        .position(|a| a == "--maxmemory")
        .map(|i| mem_mib(&redis[i + 1].replace("mb", "m").replace("gb", "g")))
        .expect("compose's Redis has a maxmemory");
    let gw = service(&c, "gateway");
    let cap: u64 = gw["environment"]["MEDIA_CAP_MB"]
        .as_str()
        .map(|v| {
            v.trim_start_matches("${MEDIA_CAP_MB:-")
                .trim_end_matches('}')
                .parse()
                .unwrap()
        })
        .expect("compose sets the gateway's MEDIA_CAP_MB default");
    assert!(cap + 64 <= max, "MEDIA_CAP_MB {cap} + 64 > maxmemory {max}");
    let (_, example) = env_example();
    assert!(
        example.contains(&format!("\nMEDIA_CAP_MB={cap}\n")),
        ".env.example and compose agree on MEDIA_CAP_MB"
    );
}

#[test]
fn compose_matches_the_services() {
    let c = compose();
    for name in [
        "redis",
        "gateway",
        "brain",
        "transcriber",
        "ledger",
        "prometheus",
        "grafana",
        "postgres",
    ] {
        assert!(
            !c["services"][name].is_badvalue(),
            "compose.yaml has no service {name}"
        );
    }
    for name in SERVICES {
        let s = service(&c, name);
        let reads = vars_of(name);
        if let Some(env) = s.get("environment").and_then(Yaml::as_hash) {
            for k in env.keys() {
                let k = k.as_str().unwrap();
                assert!(
                    reads.contains(k),
                    "compose sets {k} for {name}, which does not read it"
                );
            }
        }
        assert_eq!(
            strings(&s["healthcheck"]["test"]),
            ["CMD", name, "healthcheck"],
            "{name}'s healthcheck must use its healthcheck subcommand"
        );
        assert_eq!(
            s["build"]["target"].as_str(),
            Some(name),
            "{name} builds its own target"
        );
        assert_eq!(
            s["restart"].as_str(),
            Some("unless-stopped"),
            "{name} restart policy"
        );
        assert_eq!(
            s["depends_on"]["redis"]["condition"].as_str(),
            Some("service_healthy"),
            "{name} waits for a healthy Redis"
        );
        assert!(s.contains_key("env_file"), "{name} reads .env");
        assert!(
            s["mem_limit"].as_str().is_some(),
            "{name} has a memory limit"
        );
    }
    // Scalable transcribers: no fixed name or host port.
    let t = service(&c, "transcriber");
    assert!(!t.contains_key("container_name") && !t.contains_key("ports"));
    // Brain and ledger share one database volume; the gateway keeps its own data.
    assert!(
        strings(&service(&c, "brain")["volumes"])
            .iter()
            .any(|v| v.ends_with(":/app/data"))
    );
    assert!(
        strings(&service(&c, "gateway")["volumes"])
            .iter()
            .any(|v| v.ends_with(":/app/data"))
    );
    // Redis: AOF every second on a volume, maxmemory with noeviction.
    let redis = service(&c, "redis");
    let cmd = strings(&redis["command"]).join(" ");
    for want in [
        "--appendonly yes",
        "--appendfsync everysec",
        "--maxmemory-policy noeviction",
        "--maxmemory ",
    ] {
        assert!(cmd.contains(want), "redis command lacks {want}: {cmd}");
    }
    assert!(
        strings(&redis["volumes"])
            .iter()
            .any(|v| v.ends_with(":/data"))
    );
    assert_eq!(strings(&service(&c, "postgres")["profiles"]), ["postgres"]);
    // Everything that starts by default fits a 2 GB VPS with room for the OS.
    let total: u64 = c["services"]
        .as_hash()
        .unwrap()
        .iter()
        .filter(|(_, s)| s["profiles"].is_badvalue())
        .map(|(k, _)| {
            mem_mib(
                service(&c, k.as_str().unwrap())["mem_limit"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{k:?} has no mem_limit")),
            )
        })
        .sum();
    assert!(total <= 1700, "memory limits add up to {total} MiB");
}

/// Names in `.env.example`: entries (`NAME=`, also commented `# NAME=`) and any mention.
fn env_example() -> (BTreeSet<String>, String) {
    let text = std::fs::read_to_string(root().join(".env.example")).unwrap();
    let entries = text
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect();
    (entries, text)
}

#[test]
fn env_example_as_a_dotenv_file_is_read_whole_by_every_service() {
    // Every uncommented NAME=value line is a variable dotenvy reads, with its value unquoted.
    let text = std::fs::read_to_string(root().join(".env.example")).unwrap();
    let set: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| !k.is_empty())
        .collect();
    let read: Vec<(String, String)> = dotenvy::from_path_iter(root().join(".env.example"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!(".env.example does not parse as the services read it: {e}"));
    assert_eq!(
        read.iter().map(|(k, _)| k.clone()).collect::<BTreeSet<_>>(),
        set
    );
    // `cp .env.example .env` then any service: configuration valid, nothing cut off. A broken
    // line stops it with the file and line.
    let dir = shared::testing::TempDir::new("dotenv");
    std::fs::copy(root().join(".env.example"), dir.path().join(".env")).unwrap();
    for s in SERVICES {
        let out = std::process::Command::new(bin(s))
            .arg("check-config")
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{s} check-config with .env.example as .env: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The BUDGET_MESSAGE example uncommented without its quotes, as an operator might.
    let broken = text.replace(
        "# BUDGET_MESSAGE=\"We'll get back to you shortly.\"",
        "BUDGET_MESSAGE=We'll get back to you shortly.",
    );
    assert_ne!(
        broken, text,
        "the BUDGET_MESSAGE example is in .env.example"
    );
    std::fs::write(dir.path().join(".env"), &broken).unwrap();
    let line = broken
        .lines()
        .position(|l| l.starts_with("BUDGET_MESSAGE="))
        .unwrap()
        + 1;
    // `check-config` in that folder with nothing else set.
    let check_config = |s: &str| {
        std::process::Command::new(bin(s))
            .arg("check-config")
            .current_dir(dir.path())
            .env_clear()
            .output()
            .unwrap()
    };
    let out = check_config("brain");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(".env line {line}: cannot read BUDGET_MESSAGE")),
        "{err}"
    );
    // A setting changed by adding a line at the end, the first one left in place: compose
    // would take the new value, the services the old one. Every service refuses it.
    let (name, first) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| {
            let (k, _) = l.split_once('=')?;
            (!l.starts_with('#')).then(|| (k.trim().to_owned(), i + 1))
        })
        .unwrap();
    let twice = format!("{text}\n{name}=changed\n");
    std::fs::write(dir.path().join(".env"), &twice).unwrap();
    let last = twice.lines().count();
    for s in SERVICES {
        let out = check_config(s);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{s}: {err}");
        assert!(
            err.contains(&format!(".env lines {first} and {last} both set {name}")),
            "{s}: {err}"
        );
    }
}

/// What `scripts/lib.sh`'s `dotenv_load` sets from `file` (starting from an environment with
/// only PATH and HOME), or its error.
fn scripts_read(file: &std::path::Path) -> Result<BTreeSet<(String, String)>, String> {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(r#". scripts/lib.sh && dotenv_load "$1" && env -0"#)
        .arg("bash")
        .arg(file)
        .current_dir(root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", std::env::var("HOME").unwrap())
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| !matches!(*k, "PATH" | "HOME" | "PWD" | "SHLVL" | "_" | "OLDPWD"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

#[test]
fn the_scripts_read_a_dotenv_file_as_the_services_do_without_running_it() {
    let dir = shared::testing::TempDir::new("dotenv-scripts");
    let sample = dir.path().join("sample.env");
    std::fs::write(
        &sample,
        "# comment\nA=plain # a comment\nexport B='single $HOME # kept'\n\
         C=\"double \\\"q\\\" and $HOME and ${HOME}x\"\nD=\"You're here\" # fine\nE=\n  F = spaced\n\
         G=a#b\nH=\"cost \\$5\"\nI='$(touch pwned)'\nJ=\"`touch pwned` $(touch pwned)\"\n",
    )
    .unwrap();
    for file in [root().join(".env.example"), sample.clone()] {
        let services: BTreeSet<(String, String)> = dotenvy::from_path_iter(&file)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let scripts = scripts_read(&file).unwrap();
        assert_eq!(scripts, services, "{}", file.display());
    }
    assert!(!root().join("pwned").exists() && !dir.path().join("pwned").exists());
    // A line neither can read: both refuse; the scripts name the line.
    std::fs::write(&sample, "A=1\nB=You're here\n").unwrap();
    assert!(
        dotenvy::from_path_iter(&sample)
            .unwrap()
            .any(|i| i.is_err())
    );
    let err = scripts_read(&sample).unwrap_err();
    assert!(err.contains("line 2: cannot read B"), "{err}");
    // A variable set twice: the scripts refuse it, naming both lines, as the services do.
    std::fs::write(&sample, "A=1\nB=2\n# A=3\nexport A=4\n").unwrap();
    let err = scripts_read(&sample).unwrap_err();
    assert!(err.contains("lines 1 and 4 both set A: keep one"), "{err}");
}

/// `scripts/run`'s mode: `run_mode` (scripts/lib.sh) with `args`, from an environment of only
/// PATH, HOME and `env`: its exit code and the `WEBCHAT_DEMO` it exports (`None`: unset).
fn run_mode(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, Option<String>) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#". scripts/lib.sh && run_mode "$@" && printf '%s' "${WEBCHAT_DEMO-unset}""#)
        .arg("bash")
        .args(args)
        .current_dir(root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", std::env::var("HOME").unwrap())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let demo = String::from_utf8(out.stdout).unwrap();
    (
        out.status.code(),
        (out.status.success() && demo != "unset").then_some(demo),
    )
}

#[test]
fn scripts_run_is_in_visitor_mode_unless_demo_is_asked_for() {
    let visitor = (Some(0), Some("false".to_owned()));
    let demo = (Some(0), Some("true".to_owned()));
    // A loopback PUBLIC_ADDR (the default, and where a reverse proxy is put in front) no longer
    // means demo mode.
    assert_eq!(run_mode(&[], &[]), visitor);
    assert_eq!(run_mode(&[], &[("PUBLIC_ADDR", "127.0.0.1:8080")]), visitor);
    assert_eq!(run_mode(&[], &[("WEBCHAT_DEMO", "false")]), visitor);
    // Asked for: --demo, or WEBCHAT_DEMO=true (from .env or the environment).
    assert_eq!(run_mode(&["--demo"], &[]), demo);
    assert_eq!(run_mode(&[], &[("WEBCHAT_DEMO", "TRUE")]), demo);
    assert_eq!(
        run_mode(&["--demo"], &[("PUBLIC_ADDR", "[::1]:8080")]),
        demo
    );
    // Demo mode off loopback, and unknown arguments, stop the script.
    assert_eq!(
        run_mode(&["--demo"], &[("PUBLIC_ADDR", "0.0.0.0:8080")]).0,
        Some(2)
    );
    assert_eq!(run_mode(&["--dmeo"], &[]).0, Some(2));
    // scripts/run takes its mode from run_mode only, and prints a console link.
    let script = std::fs::read_to_string(root().join("scripts/run")).unwrap();
    let code: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with("echo"))
        .collect();
    assert!(
        code.contains(&r#"run_mode "$@""#),
        "scripts/run does not call run_mode"
    );
    assert!(
        !code.iter().any(|l| l.contains("WEBCHAT_DEMO=")),
        "scripts/run sets WEBCHAT_DEMO itself"
    );
    assert!(script.contains("target/release/gateway console-link"));
}

#[test]
fn env_example_documents_every_variable_and_only_real_ones() {
    let (entries, text) = env_example();
    let mut read = BTreeSet::new();
    for s in SERVICES {
        read.extend(vars_of(s));
    }
    for v in &read {
        let mentioned = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|w| w == v);
        assert!(
            mentioned,
            "{v} is read by a service but not documented in .env.example"
        );
    }
    // Variables for compose (what it interpolates) and the scripts, not the services.
    let compose = std::fs::read_to_string(root().join("compose.yaml")).unwrap();
    let ops = [
        "BACKUP_DIR",
        "BACKUP_KEEP_DAYS",
        "REDIS_DATA_DIR",
        "RUST_LOG",
    ];
    for e in &entries {
        assert!(
            read.contains(e) || ops.contains(&e.as_str()) || compose.contains(&format!("${{{e}:")),
            ".env.example lists {e}, which nothing reads"
        );
    }
}

#[test]
fn dockerfile_is_pinned_non_root_and_copies_what_exists() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut stage = String::new();
    let mut stages: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("FROM ") {
            let mut parts = rest.split_whitespace();
            let image = parts.next().unwrap();
            stage = parts.nth(1).unwrap_or("").to_owned();
            if !stages.contains_key(image) {
                let tag = image.split_once(':').map(|(_, t)| t).unwrap_or("");
                assert!(
                    !tag.is_empty() && tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
                    "base image {image} is not pinned to a version"
                );
            }
        }
        if let Some(rest) = line.strip_prefix("COPY ")
            && !rest.starts_with("--from")
        {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            for src in &parts[..parts.len() - 1] {
                assert!(
                    root().join(src).exists(),
                    "Dockerfile copies {src}, which does not exist"
                );
            }
        }
        stages
            .entry(stage.clone())
            .or_default()
            .push(line.to_owned());
    }
    for name in SERVICES {
        let lines = stages
            .get(name)
            .unwrap_or_else(|| panic!("no {name} stage"));
        let user = lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("USER "))
            .unwrap_or("root");
        assert!(user != "root" && user != "0", "{name} runs as root");
        assert!(
            lines.iter().any(|l| l.starts_with("HEALTHCHECK")
                && l.ends_with(&format!("CMD [\"{name}\", \"healthcheck\"]"))),
            "{name} has no healthcheck with its subcommand"
        );
        assert!(
            lines
                .iter()
                .any(|l| l == &format!("ENTRYPOINT [\"{name}\"]"))
        );
    }
    let transcriber = stages["transcriber"].join("\n");
    assert!(
        transcriber.contains("ffmpeg"),
        "the transcriber image needs ffmpeg"
    );
}

#[test]
fn prometheus_config_and_rules_pass_promtool_and_scrape_every_service() {
    // Debian's prometheus package.
    let promtool = program(&["/usr/bin/promtool", "promtool"]);
    let dir = shared::testing::TempDir::new("promtool");
    let config = std::fs::read_to_string(root().join("prometheus/prometheus.yml")).unwrap();
    // The config names the rules by their path in the container; check the same file here.
    let local = config.replace(
        "/etc/prometheus/alerts.yml",
        &root().join("prometheus/alerts.yml").display().to_string(),
    );
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, &local).unwrap();
    for args in [
        vec!["check", "config", path.to_str().unwrap()],
        vec![
            "check",
            "rules",
            root().join("prometheus/alerts.yml").to_str().unwrap(),
        ],
    ] {
        let out = Command::new(&promtool).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let y = YamlLoader::load_from_str(&config).unwrap().remove(0);
    let jobs: Vec<String> = y["scrape_configs"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|j| format!("{j:?}"))
        .collect();
    for (name, port) in [
        ("gateway", 9181),
        ("brain", 9182),
        ("transcriber", 9183),
        ("ledger", 9184),
    ] {
        assert!(
            jobs.iter()
                .any(|j| j.contains(&format!("\"{name}\"")) && j.contains(&port.to_string())),
            "no scrape job for {name}:{port}"
        );
    }
}

/// Metric names used by a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const NOT_METRICS: &[&str] = &[
        "sum",
        "max",
        "min",
        "avg",
        "count",
        "rate",
        "increase",
        "histogram_quantile",
        "clamp_min",
        "by",
        "without",
        "and",
        "or",
        "unless",
        "on",
        "ignoring",
        "le",
        "offset",
        "abs",
    ];
    // Drop label matchers, grouping clauses and range selectors.
    let mut s = String::new();
    let mut depth = 0;
    for c in expr.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth == 0 => s.push(c),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        rest = &rest[i..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        let after = rest[end..].trim_start();
        let grouping = ["by", "without"].contains(&word);
        rest = &rest[end..];
        if grouping {
            // Skip the label list: `by (a, b)`.
            if let Some(close) = rest.find(')') {
                rest = &rest[close + 1..];
            }
            continue;
        }
        if word.contains('_') && !NOT_METRICS.contains(&word) && !after.starts_with('(') {
            out.insert(word.to_owned());
        }
    }
    out
}

#[test]
fn promql_metric_names_are_extracted() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.95, sum by (le, stream) (rate(bus_handle_seconds_bucket{stream=\"x\"}[5m])))"
        ),
        BTreeSet::from(["bus_handle_seconds_bucket".to_owned()])
    );
    assert_eq!(
        metric_names("max(a_b) > 0 and max(c_d) / max(e_f) > 0.7"),
        BTreeSet::from(["a_b".to_owned(), "c_d".to_owned(), "e_f".to_owned()])
    );
}

#[tokio::test]
async fn dashboard_and_alert_queries_name_metrics_the_services_serve() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("prometheus/grafana/dashboards/switchboard.json"))
            .unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut wanted = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            wanted.extend(metric_names(t["expr"].as_str().unwrap()));
        }
    }
    let rules = YamlLoader::load_from_str(
        &std::fs::read_to_string(root().join("prometheus/alerts.yml")).unwrap(),
    )
    .unwrap()
    .remove(0);
    for group in rules["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            wanted.extend(metric_names(rule["expr"].as_str().unwrap()));
        }
    }
    assert!(wanted.len() > 20, "{wanted:?}");

    // The four services, idle: every metric is registered at zero at start.
    let db = shared::testing::TestDb::sqlite();
    let redis = shared::testing::redis_url();
    // Dropped in reverse: the processes stop, then their environments (keys, directories) go.
    let mut envs = Vec::new();
    let mut procs = Vec::new();
    for name in SERVICES {
        let service = match name {
            "gateway" => shared::config::ServiceName::Gateway,
            "brain" => shared::config::ServiceName::Brain,
            "transcriber" => shared::config::ServiceName::Transcriber,
            _ => shared::config::ServiceName::Ledger,
        };
        let uses_db = matches!(name, "brain" | "ledger");
        let mut senv =
            shared::testing::ServiceEnv::new(service, &redis, uses_db.then_some(db.url.as_str()));
        senv.env.insert(
            "PUBLIC_ADDR".into(),
            format!("127.0.0.1:{}", shared::testing::free_port()),
        );
        if name == "gateway" {
            // Every transport, so their metrics are served too (the web sidecar is the tests'
            // scripted fake: WhatsApp cannot be reached from here).
            let fake = senv.dir.path().join("fake-wa");
            std::fs::create_dir_all(&fake).unwrap();
            for (k, v) in [
                ("TRANSPORTS", "web,cloud,webchat".to_owned()),
                // The Graph API is unreachable here: the transport is simply not ready.
                ("WA_CLOUD_PHONE_NUMBER_ID", "1".to_owned()),
                ("WA_CLOUD_ACCESS_TOKEN", "EAAx".to_owned()),
                ("WA_CLOUD_APP_SECRET", "secret".to_owned()),
                ("WA_CLOUD_VERIFY_TOKEN", "verify".to_owned()),
                ("WA_CLOUD_GRAPH_URL", "http://127.0.0.1:1/v26.0".to_owned()),
                (
                    "WA_SIDECAR_DIR",
                    root()
                        .join("services/gateway/tests/fake-sidecar")
                        .display()
                        .to_string(),
                ),
                ("WA_SESSION_DIR", fake.join("session").display().to_string()),
            ] {
                senv.env.insert(k.into(), v);
            }
        }
        let p = senv.spawn(bin(name).to_str().unwrap());
        // The gateway's web session waits for a QR scan: alive, not ready.
        assert!(
            p.wait_status("/healthz", 200, Duration::from_secs(60))
                .await,
            "{}",
            p.log_text()
        );
        procs.push(p);
        envs.push(senv);
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // one maintenance round (Redis memory)
    let mut served = BTreeSet::new();
    for p in &procs {
        let text = reqwest_get(&format!("{}/metrics", p.http)).await;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let name = line.split(['{', ' ']).next().unwrap();
            served.insert(name.to_owned());
        }
    }
    let missing: Vec<&String> = wanted.iter().filter(|m| !served.contains(*m)).collect();
    assert!(missing.is_empty(), "queried but not served: {missing:?}");
}

async fn reqwest_get(url: &str) -> String {
    shared::http_client::client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Compose's interpolation for values without the operator's .env: `${NAME:-default}` →
/// default, `${NAME:?message}` → `required`'s value for NAME (compose refuses to run without
/// it), anywhere in the string.
#[test]
fn compose_rotates_logs_reaps_chromium_and_stops_early_without_its_secrets() {
    let c = compose();
    let text = std::fs::read_to_string(root().join("compose.yaml")).unwrap();
    for (name, _) in c["services"].as_hash().unwrap() {
        let name = name.as_str().unwrap();
        let s = service(&c, name);
        let logging = s
            .get("logging")
            .unwrap_or_else(|| panic!("{name} has no log rotation"));
        assert_eq!(logging["driver"].as_str(), Some("json-file"), "{name}");
        assert!(logging["options"]["max-size"].as_str().is_some(), "{name}");
        assert!(logging["options"]["max-file"].as_str().is_some(), "{name}");
        let image = s.get("image").and_then(Yaml::as_str).unwrap_or("");
        assert!(
            !image.contains("jaegertracing/all-in-one"),
            "Jaeger v1 is end of life"
        );
    }
    assert_eq!(service(&c, "gateway")["init"].as_bool(), Some(true));
    for secret in ["REDIS_PASSWORD", "LOG_HASH_KEY", "GRAFANA_ADMIN_PASSWORD"] {
        assert!(
            text.contains(&format!("${{{secret}:?")),
            "compose must stop early without {secret}"
        );
        assert!(
            !text.contains(&format!("${{{secret}:-")),
            "{secret} must not default to anything"
        );
    }
    for name in SERVICES {
        let env = service(&c, name)["environment"].clone();
        assert!(
            env["LOG_HASH_KEY"]
                .as_str()
                .is_some_and(|v| v.contains("${LOG_HASH_KEY:?")),
            "{name} gets the one LOG_HASH_KEY"
        );
    }
}

#[test]
fn compose_believes_the_proxy_header_that_only_the_hosts_proxy_can_send() {
    let gw = service(&compose(), "gateway");
    // Unset, every client would share the Docker bridge address and its allowances.
    assert_eq!(
        gw["environment"]["TRUSTED_PROXY_HEADER"]
            .as_str()
            .map(|v| interpolate(v, &[])),
        Some("X-Forwarded-For".to_owned())
    );
    // Only the host (its TLS proxy) reaches the public listener.
    let ports = strings(&gw["ports"]);
    assert!(!ports.is_empty());
    for p in ports {
        assert!(
            p.starts_with("127.0.0.1:"),
            "{p} is published beyond the host"
        );
    }
}

fn interpolate(v: &str, required: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${") + start;
        let inner = &rest[start + 2..end];
        if let Some((_, default)) = inner.split_once(":-") {
            out.push_str(default);
        } else if let Some((name, _)) = inner.split_once(":?") {
            let value = required
                .iter()
                .find(|(k, _)| *k == name)
                .unwrap_or_else(|| panic!("compose requires {name}: give it to the check"));
            out.push_str(value.1);
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn each_service_accepts_the_compose_configuration_with_the_required_secrets() {
    let c = compose();
    let (_, text) = env_example();
    // The defaults .env.example sets (uncommented lines), as an operator's copy starts.
    let defaults: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let required = [
        ("REDIS_PASSWORD", "0123456789abcdef"),
        ("LOG_HASH_KEY", "0123456789abcdef0123456789abcdef"),
    ];
    for name in SERVICES {
        let s = service(&c, name);
        let mut env: Vec<(String, String)> = defaults.clone();
        if let Some(e) = s.get("environment").and_then(Yaml::as_hash) {
            for (k, v) in e {
                let v = v
                    .as_str()
                    .map(|v| interpolate(v, &required))
                    .unwrap_or_else(|| format!("{v:?}"));
                env.push((k.as_str().unwrap().to_owned(), v));
            }
        }
        let run = |extra: &[(&str, &str)]| {
            Command::new(bin(name))
                .arg("check-config")
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .envs(extra.iter().copied())
                .current_dir(std::env::temp_dir())
                .output()
                .unwrap()
        };
        let out = run(&required);
        assert!(
            out.status.success(),
            "{name} refuses the compose configuration:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if name == "gateway" {
            // Compose exposes the public listener: demo mode (phone numbers, no token) must
            // be refused there.
            let out = run(&[("WEBCHAT_DEMO", "true")]);
            assert_eq!(out.status.code(), Some(2));
            assert!(String::from_utf8_lossy(&out.stderr).contains("WEBCHAT_DEMO"));
        }
    }
}

#[test]
fn every_service_names_itself_and_says_command_line_errors_in_words() {
    let dir = shared::testing::TempDir::new("cli");
    std::fs::copy(root().join(".env.example"), dir.path().join(".env")).unwrap();
    for s in SERVICES {
        let run = |args: &[&str]| {
            std::process::Command::new(bin(s))
                .args(args)
                .current_dir(dir.path())
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap())
                .output()
                .unwrap()
        };
        let out = run(&["-V"]);
        let version = String::from_utf8_lossy(&out.stdout);
        assert!(version.starts_with(&format!("{s} ")), "{s} -V: {version}");
        // A subcommand that fails once the configuration is read: said in words, not logged.
        let out = run(&["dlq", "list", "no-such-stream"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{s}: {err}");
        assert!(
            err.starts_with(&format!("{s}: ")) && !err.contains('{'),
            "{s} dlq list no-such-stream: {err}"
        );
    }
}
