//! Backups as docs/DEPLOYMENT.md tells the operator to run them. The host-run stack (brain and
//! ledger as processes on the database of SB_TEST_DB, a Redis with its AOF) is backed up by the
//! documented cron line — run as cron runs it, with cron's bare PATH and nothing else in the
//! environment, configured by `.env` alone — then changed, stopped and restored with
//! `scripts/restore --redis-dir`: the database and Redis are as they were at the backup, the
//! backup readable by its owner only, the replaced SQLite file kept.
//! The compose path (`--compose`, through `docker compose exec`) cannot run here (no Docker
//! engine): its commands are recorded by a stand-in `docker` and checked against compose.yaml.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use opscheck::root;
use shared::config::ServiceName;
use shared::testing::{RedisServer, ServiceEnv, TempDir, TestDb};

/// The documented cron line with the given marker (`--compose` or not), from DEPLOYMENT.md.
fn documented_cron_line(compose: bool) -> String {
    let doc = std::fs::read_to_string(root().join("docs/DEPLOYMENT.md")).unwrap();
    doc.lines()
        .find(|l| {
            l.starts_with("15 3 * * * ")
                && l.contains("scripts/backup")
                && l.contains("--compose") == compose
        })
        .unwrap_or_else(|| panic!("DEPLOYMENT.md has no cron line (compose: {compose})"))
        .to_owned()
}

/// An install like /opt/switchboard: the scripts (linked) and the operator's `.env`.
fn install(env: &[(&str, &str)]) -> TempDir {
    let dir = TempDir::new("install");
    std::os::unix::fs::symlink(root().join("scripts"), dir.path().join("scripts")).unwrap();
    let text: String = env.iter().map(|(k, v)| format!("{k}='{v}'\n")).collect();
    std::fs::write(dir.path().join(".env"), text).unwrap();
    dir
}

/// A command as cron runs it: `sh -c`, PATH=/usr/bin:/bin, HOME, nothing else.
fn as_cron(command: &str, extra_path: Option<&Path>) -> Output {
    let path = match extra_path {
        Some(p) => format!("{}:/usr/bin:/bin", p.display()),
        None => "/usr/bin:/bin".to_owned(),
    };
    Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .env("PATH", path)
        .env("HOME", std::env::var("HOME").unwrap())
        .env("SHELL", "/bin/sh")
        .output()
        .unwrap()
}

/// The cron line's command (after its five time fields) for an install at `dir`.
fn cron_command(line: &str, dir: &Path) -> String {
    let command = line.splitn(6, ' ').nth(5).unwrap();
    command.replace("/opt/switchboard", dir.to_str().unwrap())
}

async fn contacts(db: &shared::db::Db) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM contacts ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

async fn exec(db: &shared::db::Db, sql: &'static str) {
    sqlx::query(sql).execute(db.pool()).await.unwrap();
}

fn redis_get(redis: &RedisServer, key: &str) -> Option<String> {
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("GET").arg(key).query(&mut c).unwrap()
}

fn redis_set(redis: &RedisServer, key: &str, value: &str) {
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(&mut c)
        .unwrap();
}

#[tokio::test]
async fn the_documented_cron_line_backs_up_the_running_stack_and_restore_brings_it_back() {
    let mut redis = RedisServer::start();
    let db = TestDb::new().await;
    let postgres = db.url.starts_with("postgres");
    // The stack running on them while the backup is taken.
    let mut prefix: Option<String> = None;
    let mut envs = Vec::new();
    let mut procs = Vec::new();
    for (name, service) in [
        ("brain", ServiceName::Brain),
        ("ledger", ServiceName::Ledger),
    ] {
        let mut senv = ServiceEnv::new(service, &redis.url(), Some(&db.url));
        match &prefix {
            Some(p) => senv.use_prefix(p),
            None => prefix = Some(senv.prefix.clone()),
        }
        let bin = shared::testing::workspace_bin(name);
        procs.push(senv.spawn_ready(bin.to_str().unwrap()).await);
        envs.push(senv);
    }
    exec(&db.db, "INSERT INTO contacts (id, role, allowed, opted_out, created_at_ms, updated_at_ms) VALUES ('kept', 'admin', 1, 0, 1, 1)").await;
    redis_set(&redis, "probe", "at-backup");

    let site = install(&[
        ("DATABASE_URL", &db.url),
        ("REDIS_URL", &redis.url()),
        ("BACKUP_KEEP_DAYS", "14"),
    ]);
    let line = documented_cron_line(false);
    let out = as_cron(&cron_command(&line, site.path()), None);
    let log = std::fs::read_to_string(site.path().join("backups/backup.log")).unwrap_or_default();
    assert!(out.status.success(), "{line}\n{out:?}\n{log}");
    let folder = PathBuf::from(log.lines().last().expect("the folder it wrote").trim());
    let folder = site.path().join(folder);
    let dump = if postgres {
        "switchboard.pgdump"
    } else {
        "switchboard.db"
    };
    assert!(folder.join(dump).exists(), "{log}");
    assert!(folder.join("redis.rdb").exists(), "{log}");
    // Every conversation is in there: its owner's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&site.path().join("backups")), 0o700);
    assert_eq!(mode(&folder), 0o700);
    for f in std::fs::read_dir(&folder).unwrap() {
        let f = f.unwrap().path();
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }

    // What the compose path asks the brain for: a consistent copy of the live SQLite database.
    let copy = site.path().join("copy.db");
    let out = Command::new(shared::testing::workspace_bin("brain"))
        .args(["backup-db", copy.to_str().unwrap()])
        .envs(&envs[0].env)
        .output()
        .unwrap();
    if postgres {
        assert!(!out.status.success());
        let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(said.contains("back it up with pg_dump"), "{said}");
    } else {
        assert!(out.status.success(), "{out:?}");
        let check = Command::new("sqlite3")
            .args([
                copy.to_str().unwrap(),
                "SELECT id FROM contacts; PRAGMA integrity_check;",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&check.stdout), "kept\nok\n");
    }

    // Later: changed, then the stack stopped for the restore.
    exec(&db.db, "DELETE FROM contacts WHERE id = 'kept'").await;
    exec(&db.db, "INSERT INTO contacts (id, role, allowed, opted_out, created_at_ms, updated_at_ms) VALUES ('later', 'user', 0, 0, 2, 2)").await;
    redis_set(&redis, "probe", "later");
    redis_set(&redis, "added-later", "1");
    drop(procs);
    db.db.close().await;
    redis.terminate();

    let restore = format!(
        "cd {} && scripts/restore --redis-dir {} {}",
        site.path().display(),
        redis.dir().display(),
        folder.display()
    );
    let out = as_cron(&restore, None);
    assert!(out.status.success(), "{out:?}");
    redis.restart();
    assert_eq!(redis_get(&redis, "probe").as_deref(), Some("at-backup"));
    assert_eq!(redis_get(&redis, "added-later"), None);
    let again = shared::db::Db::connect_lazy(&shared::config::Dsn::new(&db.url)).unwrap();
    assert_eq!(contacts(&again).await, ["kept"]);
    again.close().await;
    if let Some(file) = db.url.strip_prefix("sqlite://") {
        let file = Path::new(file);
        let name = format!(
            "{}.before-restore-",
            file.file_name().unwrap().to_string_lossy()
        );
        let kept = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with(&name));
        assert!(kept, "the replaced database is kept");
    }
    drop(envs);
}

/// A stand-in `docker` that records each call and answers as compose would for a SQLite stack.
const FAKE_DOCKER: &str = r#"#!/bin/sh
printf '%s\n' "$*" | tr '\n' ' ' >> "$FAKE_DOCKER_LOG"
echo >> "$FAKE_DOCKER_LOG"
case "$*" in
  "compose exec -T brain printenv DATABASE_URL") echo "sqlite:///app/data/switchboard.db" ;;
  "compose exec -T brain brain backup-db "*) echo "$7" ;;
  "compose cp brain:"*) sqlite3 "$4" "CREATE TABLE contacts (id TEXT); INSERT INTO contacts VALUES ('kept');" ;;
  "compose cp redis:"*) printf 'REDIS0011fake' > "$4" ;;
esac
exit 0
"#;

#[test]
fn the_compose_path_asks_compose_for_what_exists_in_compose_yaml() {
    let site = install(&[]);
    let bin = TempDir::new("fake-docker");
    let docker = bin.path().join("docker");
    std::fs::write(&docker, FAKE_DOCKER).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = bin.path().join("calls");

    let line = documented_cron_line(true);
    let cmd = format!(
        "export FAKE_DOCKER_LOG={}; {}",
        log.display(),
        cron_command(&line, site.path())
    );
    let out = as_cron(&cmd, Some(bin.path()));
    let backup_log =
        std::fs::read_to_string(site.path().join("backups/backup.log")).unwrap_or_default();
    assert!(out.status.success(), "{out:?}\n{backup_log}");
    let folder = site.path().join(backup_log.lines().last().unwrap().trim());
    assert!(folder.join("switchboard.db").exists());
    assert!(folder.join("redis.rdb").exists());

    let restore = format!(
        "export FAKE_DOCKER_LOG={}; cd {} && scripts/restore --compose {}",
        log.display(),
        site.path().display(),
        folder.display()
    );
    let out = as_cron(&restore, Some(bin.path()));
    assert!(out.status.success(), "{out:?}");

    let compose = std::fs::read_to_string(root().join("compose.yaml")).unwrap();
    let compose = yaml_rust2::YamlLoader::load_from_str(&compose)
        .unwrap()
        .remove(0);
    let calls = std::fs::read_to_string(&log).unwrap();
    let mut seen = Vec::new();
    for call in calls.lines() {
        let words: Vec<&str> = call.split_whitespace().collect();
        assert_eq!(words[0], "compose", "{call}");
        // The service each call names, and the paths it uses inside that service.
        let service = match words[1] {
            "exec" => words[3],
            "cp" => words
                .iter()
                .find_map(|w| {
                    w.split_once(':')
                        .map(|(s, _)| s)
                        .filter(|s| !s.starts_with('/'))
                })
                .unwrap(),
            "run" => words
                .iter()
                .skip_while(|w| **w != "--entrypoint")
                .nth(2)
                .unwrap(),
            "stop" | "up" => continue,
            other => panic!("unexpected compose command {other}: {call}"),
        };
        let svc = &compose["services"][service];
        assert!(
            !svc.is_badvalue(),
            "no service {service} in compose.yaml: {call}"
        );
        let volumes = format!("{:?}", svc["volumes"]);
        for path in words
            .iter()
            .filter(|w| w.contains("/app/data") || w.contains("/data/"))
        {
            let inside = if path.contains("/app/data") {
                ":/app/data"
            } else {
                ":/data"
            };
            assert!(
                volumes.contains(inside),
                "{service} has no volume at {path}: {call}"
            );
        }
        seen.push(format!("{} {service}", words[1]));
    }
    for wanted in [
        "exec brain",
        "cp brain",
        "exec redis",
        "cp redis",
        "run brain",
        "run redis",
    ] {
        assert!(
            seen.iter().any(|s| s == wanted),
            "{wanted} never called:\n{calls}"
        );
    }
    // The subcommand the compose path runs in the brain exists.
    let help = Command::new(shared::testing::workspace_bin("brain"))
        .args(["backup-db", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success(), "{help:?}");
}
