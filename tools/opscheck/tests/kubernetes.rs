//! `deploy/kubernetes`: the base and the small-VPS overlay rendered by kustomize (kubectl's),
//! every resource validated against Kubernetes's schemas (kubernetes-validate, strict), and
//! what the schemas cannot know checked here: one gateway holding its session volume, the
//! autoscalers watching the streams and groups the services really use, settings the services
//! really read, every internal port kept by a NetworkPolicy to the namespace and Prometheus.

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
    // The Ingress names each client: unset, every client would share its pods' addresses.
    assert_eq!(
        config["data"]["TRUSTED_PROXY_HEADER"].as_str(),
        Some("X-Forwarded-For")
    );
    assert!(
        config["data"]["TRUSTED_PROXIES"]
            .as_str()
            .is_some_and(|v| !v.contains("0.0.0.0/0") && !v.contains("::/0")),
        "the header is believed from the pod range only"
    );
    check_network_policy(&docs);
    docs
}

/// Whether a NetworkPolicy's `podSelector` (`matchLabels`, `matchExpressions` with `In`)
/// selects a pod labelled `labels`.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    let label = |k: &Yaml| labels[k.as_str().unwrap()].as_str();
    let by_labels = selector["matchLabels"]
        .as_hash()
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let by_expressions = selector["matchExpressions"].as_vec().is_none_or(|es| {
        es.iter().all(|e| {
            assert_eq!(e["operator"].as_str(), Some("In"), "only In is modelled");
            let values = e["values"].as_vec().unwrap();
            label(&e["key"]).is_some_and(|l| values.iter().any(|v| v.as_str() == Some(l)))
        })
    });
    by_labels && by_expressions
}

/// The ingress rules of the policies selecting a pod labelled `labels` that open its container
/// port `port` (by name or number); `None` when no policy isolates the pod (everything open).
fn rules_opening<'a>(docs: &'a [Yaml], labels: &Yaml, port: &Yaml) -> Option<Vec<&'a Yaml>> {
    let policies: Vec<&Yaml> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("NetworkPolicy"))
        .filter(|p| selects(&p["spec"]["podSelector"], labels))
        .filter(|p| {
            p["spec"]["policyTypes"]
                .as_vec()
                .is_some_and(|t| t.iter().any(|t| t.as_str() == Some("Ingress")))
        })
        .collect();
    if policies.is_empty() {
        return None;
    }
    let opens = |rule: &Yaml| {
        rule["ports"].as_vec().is_none_or(|ports| {
            ports.iter().any(|p| {
                p["port"].is_badvalue()
                    || p["port"].as_str() == port["name"].as_str()
                    || p["port"].as_i64() == port["containerPort"].as_i64()
            })
        })
    };
    Some(
        policies
            .iter()
            .flat_map(|p| p["spec"]["ingress"].as_vec().into_iter().flatten())
            .filter(|r| opens(r))
            .collect(),
    )
}

/// Every service's internal listener (health, metrics, the gateway's `/qr`, the brain's
/// console API) is reached only from the namespace's pods and Prometheus; the gateway's public
/// port stays open (the Ingress).
fn check_network_policy(docs: &[Yaml]) {
    for (kind, name) in [
        ("StatefulSet", "gateway"),
        ("Deployment", "brain"),
        ("Deployment", "transcriber"),
        ("Deployment", "ledger"),
    ] {
        let pod = &find(docs, kind, name)["spec"]["template"];
        let labels = &pod["metadata"]["labels"];
        let scraped = pod["metadata"]["annotations"]["prometheus.io/port"]
            .as_str()
            .unwrap();
        let ports = pod["spec"]["containers"][0]["ports"].as_vec().unwrap();
        let internal = ports
            .iter()
            .find(|p| {
                p["containerPort"]
                    .as_i64()
                    .map(|n| n.to_string())
                    .as_deref()
                    == Some(scraped)
            })
            .unwrap_or_else(|| panic!("{name}: no container port {scraped}"));
        let rules = rules_opening(docs, labels, internal)
            .unwrap_or_else(|| panic!("{name}: no NetworkPolicy isolates its pods"));
        assert!(
            !rules.is_empty(),
            "{name}: the internal port is closed to Prometheus too"
        );
        let mut prometheus = false;
        let mut namespace = false;
        for rule in &rules {
            let from = rule["from"]
                .as_vec()
                .unwrap_or_else(|| panic!("{name}: the internal port is open to every source"));
            for peer in from {
                assert!(peer["ipBlock"].is_badvalue(), "{name}: {peer:?}");
                if peer["namespaceSelector"].is_badvalue() {
                    namespace |= peer["podSelector"].as_hash().is_some();
                } else {
                    let ns = &peer["namespaceSelector"]["matchLabels"];
                    let pods = &peer["podSelector"]["matchLabels"];
                    assert!(
                        ns["kubernetes.io/metadata.name"].as_str().is_some()
                            && pods["app.kubernetes.io/name"].as_str() == Some("prometheus"),
                        "{name}: the internal port is open to another namespace: {peer:?}"
                    );
                    prometheus = true;
                }
            }
        }
        assert!(prometheus, "{name}: Prometheus cannot scrape it");
        assert!(namespace, "{name}: the namespace's pods cannot reach it");
        if name == "gateway" {
            let public = ports
                .iter()
                .find(|p| p["name"].as_str() == Some("public"))
                .unwrap();
            let rules = rules_opening(docs, labels, public).unwrap();
            assert!(
                rules.iter().any(|r| r["from"].is_badvalue()),
                "the public port (web chat, webhooks) must stay open to the Ingress"
            );
        }
    }
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
