//! `scripts/doctor` against the four services running as processes on a Redis of their own
//! (with maxmemory and noeviction, as compose runs it): all well, then a service down and a
//! model that refuses the key — each named, exit 1. Its `--compose` path is the same checks
//! through `docker compose exec` and cannot run here (no Docker engine).

use std::process::Command;

use opscheck::root;
use shared::config::ServiceName;
use shared::testing::{RedisServer, ServiceEnv, ServiceProcess, TestDb};

fn doctor(env: &[(String, String)]) -> (bool, String) {
    let out = Command::new(root().join("scripts/doctor"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn doctor_says_all_is_well_then_names_what_is_not() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "400mb", "--maxmemory-policy", "noeviction"]);
    let fake = shared::fake_chat::FakeChat::start();
    let db = TestDb::sqlite();
    let mut envs: Vec<ServiceEnv> = Vec::new();
    let mut procs: Vec<ServiceProcess> = Vec::new();
    let mut vars = vec![
        ("REDIS_URL".to_owned(), redis.url()),
        ("OPENAI_BASE_URL".to_owned(), fake.base_url.clone()),
        ("OPENAI_API_KEY".to_owned(), "sk-test".to_owned()),
    ];
    let mut prefix: Option<String> = None;
    for (name, service) in [
        ("gateway", ServiceName::Gateway),
        ("brain", ServiceName::Brain),
        ("transcriber", ServiceName::Transcriber),
        ("ledger", ServiceName::Ledger),
    ] {
        let uses_db = matches!(name, "brain" | "ledger");
        let mut senv = ServiceEnv::new(service, &redis.url(), uses_db.then_some(db.url.as_str()));
        match &prefix {
            Some(p) => senv.use_prefix(p),
            None => prefix = Some(senv.prefix.clone()),
        }
        senv.env.insert(
            "PUBLIC_ADDR".into(),
            format!("127.0.0.1:{}", shared::testing::free_port()),
        );
        for (k, v) in &vars {
            senv.env.insert(k.clone(), v.clone());
        }
        let p = senv
            .spawn_ready(shared::testing::workspace_bin(name).to_str().unwrap())
            .await;
        vars.push((service.http_addr_var().to_owned(), senv.http_addr.clone()));
        procs.push(p);
        envs.push(senv);
    }
    let (ok, said) = doctor(&vars);
    assert!(ok, "{said}");
    for line in [
        "ok    gateway ready",
        "ok      webchat connected",
        "ok    brain ready",
        "ok    transcriber ready",
        "ok    ledger ready",
        "ok    model reachable",
        "ok    disk",
        "ok    Redis memory",
    ] {
        assert!(said.contains(line), "{line:?} missing:\n{said}");
    }

    // Redis without maxmemory (the local stack scripts/run starts): a warning, not a failure;
    // one that evicts at maxmemory: a failure, for the messages it could lose.
    let plain = RedisServer::start_with(&[]);
    let on = |r: &RedisServer| -> Vec<(String, String)> {
        let mut v = vars.clone();
        v.retain(|(k, _)| k != "REDIS_URL");
        v.push(("REDIS_URL".to_owned(), r.url()));
        v
    };
    let (ok, said) = doctor(&on(&plain));
    assert!(ok, "{said}");
    assert!(said.contains("warn  Redis has no maxmemory"), "{said}");
    let evicting =
        RedisServer::start_with(&["--maxmemory", "400mb", "--maxmemory-policy", "allkeys-lru"]);
    let (ok, said) = doctor(&on(&evicting));
    assert!(!ok, "{said}");
    assert!(
        said.contains("FAIL  Redis evicts keys at maxmemory (policy allkeys-lru)"),
        "{said}"
    );

    // The brain gone, and a key the model refuses: both named, exit 1.
    let mut brain = procs.remove(1);
    brain.kill9();
    let mut refused = vars.clone();
    refused.retain(|(k, _)| k != "OPENAI_API_KEY");
    let (ok, said) = doctor(&refused);
    assert!(!ok, "{said}");
    assert!(said.contains("FAIL  brain does not answer"), "{said}");
    assert!(
        said.contains("FAIL  model at") && said.contains("refuses OPENAI_API_KEY"),
        "{said}"
    );
    assert!(said.contains("ok    gateway ready"), "{said}");
    drop(brain);
}
