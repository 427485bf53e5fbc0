//! `deploy/kubernetes`: the base and the small-VPS overlay rendered by kustomize (kubectl's),
//! every resource validated against Kubernetes's schemas (kubernetes-validate, strict), and
//! what the schemas cannot know checked here: one gateway holding its session volume, the
//! autoscalers watching the streams and groups the services really use, settings the services
//! really read.

use std::collections::BTreeSet;
use std::process::Command;

use opscheck::{SERVICES, root, vars_of};
use shared::bus::Stream;
use yaml_rust2::{Yaml, YamlLoader};

/// `kubectl kustomize <dir>`: the resources it renders.
fn render(dir: &str) -> (String, Vec<Yaml>) {
    let out = Command::new("kubectl")
        .args(["kustomize", root().join(dir).to_str().unwrap()])
        .output()
        .expect("kubectl (its kustomize renders the manifests)");
    assert!(
        out.status.success(),
        "kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    (text, docs)
}

fn find<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn validate(dir: &str, text: &str) {
    let file = shared::testing::TempDir::new("k8s");
    let path = file.path().join("rendered.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", path.to_str().unwrap()])
        .output()
        .expect("kubernetes-validate (scripts/test installs it with pip)");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !said.contains("ERROR"),
        "{dir}:\n{said}"
    );
    // Only KEDA's kinds may go unchecked by the schemas (checked below instead).
    for line in said.lines().filter(|l| l.contains("Couldn't find schema")) {
        assert!(line.contains("keda.sh/v1alpha1"), "{dir}: {line}");
    }
}

/// The variables the four services read.
fn service_vars() -> BTreeSet<String> {
    SERVICES.iter().flat_map(|s| vars_of(s)).collect()
}

fn check(dir: &str) -> Vec<Yaml> {
    let (text, docs) = render(dir);
    validate(dir, &text);

    let gateway = find(&docs, "StatefulSet", "gateway");
    assert_eq!(
        gateway["spec"]["replicas"].as_i64(),
        Some(1),
        "one WhatsApp session"
    );
    assert_eq!(
        gateway["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as_str(),
        Some("data")
    );
    let pod = &gateway["spec"]["template"]["spec"];
    assert_eq!(
        pod["shareProcessNamespace"].as_bool(),
        Some(true),
        "Chromium's zombies reaped"
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"].as_str(),
        Some("/app/data")
    );

    for (name, port) in [("brain", 9182), ("transcriber", 9183), ("ledger", 9184)] {
        let d = find(&docs, "Deployment", name);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["ports"][0]["containerPort"].as_i64(),
            Some(port),
            "{name}"
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/readyz")
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/healthz")
        );
        assert!(
            c["image"]
                .as_str()
                .unwrap()
                .contains(&format!("switchboard-{name}:")),
            "{name}: {:?}",
            c["image"]
        );
    }

    // The autoscalers watch real streams and groups (default STREAM_PREFIX=sb).
    let keys = shared::bus::Keys::new("sb");
    for (name, stream) in [
        ("brain", Stream::Inbound),
        ("transcriber", Stream::Transcribe),
    ] {
        let so = find(&docs, "ScaledObject", name);
        assert_eq!(so["spec"]["scaleTargetRef"]["name"].as_str(), Some(name));
        let t = &so["spec"]["triggers"][0];
        assert_eq!(t["type"].as_str(), Some("redis-streams"));
        assert_eq!(
            t["metadata"]["stream"].as_str(),
            Some(keys.stream(stream).as_str())
        );
        assert_eq!(
            t["metadata"]["consumerGroup"].as_str(),
            Some(stream.group())
        );
        assert!(
            t["metadata"]["lagCount"].as_str().is_some(),
            "{name} scales by lag"
        );
        let min = so["spec"]["minReplicaCount"].as_i64().unwrap();
        let max = so["spec"]["maxReplicaCount"].as_i64().unwrap();
        assert!(1 <= min && min <= max, "{name}: {min}..{max}");
    }

    // Settings in the ConfigMap are variables the services read.
    let vars = service_vars();
    let config = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .expect("the settings ConfigMap");
    for (k, _) in config["data"].as_hash().unwrap() {
        let k = k.as_str().unwrap();
        assert!(vars.contains(k), "{k} is read by no service");
    }
    docs
}

#[test]
fn the_base_renders_validates_and_scales_by_queue_lag() {
    let docs = check("deploy/kubernetes/base");
    assert_eq!(
        find(&docs, "ScaledObject", "brain")["spec"]["minReplicaCount"].as_i64(),
        Some(2)
    );
}

#[test]
fn the_small_vps_overlay_renders_validates_and_stays_small() {
    let docs = check("deploy/kubernetes/overlays/small-vps");
    for d in docs
        .iter()
        .filter(|d| d["kind"].as_str() != Some("Namespace"))
    {
        assert_eq!(
            d["metadata"]["namespace"].as_str(),
            Some("switchboard"),
            "{:?}",
            d["metadata"]["name"]
        );
    }
    for name in ["brain", "transcriber"] {
        assert_eq!(
            find(&docs, "ScaledObject", name)["spec"]["maxReplicaCount"].as_i64(),
            Some(2),
            "{name}"
        );
    }
    let gateway = find(&docs, "StatefulSet", "gateway");
    let requests = &gateway["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(requests["requests"]["memory"].as_str(), Some("300Mi"));
    assert_eq!(
        requests["limits"]["memory"].as_str(),
        Some("600Mi"),
        "limits kept"
    );
}
