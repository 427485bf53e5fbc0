//! Releases and images, checked without Docker or GitHub: the workflows with actionlint, the
//! Dockerfile with hadolint, the image names compose runs, and the bases on supported releases.

use std::process::Command;

use yaml_rust2::Yaml;

use opscheck::{SERVICES, read_yaml as yaml, root};

/// Runs a linter that scripts/test installs; its output on failure.
fn lint(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test installs it with pip)"));
    assert!(
        out.status.success(),
        "{program} {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn workflows_pass_actionlint() {
    lint("actionlint", &[]);
}

#[test]
fn dockerfile_passes_hadolint() {
    // .hadolint.yaml: warnings fail; the one rule ignored says why.
    lint("hadolint", &["Dockerfile"]);
}

#[test]
fn a_version_tag_publishes_every_image_for_amd64_and_arm64_with_an_sbom() {
    let wf = yaml(".github/workflows/release.yml");
    let tags = format!("{:?}", wf["on"]["push"]["tags"]);
    assert!(tags.contains("v*.*.*"), "released on version tags: {tags}");
    let images = &wf["jobs"]["images"];
    assert_eq!(
        images["needs"].as_str(),
        Some("test"),
        "images only after the suite passed"
    );
    let targets: Vec<&str> = images["strategy"]["matrix"]["target"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(targets, SERVICES);
    let build = images["steps"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("docker/build-push-action@"))
        })
        .expect("a build-push step");
    let with = &build["with"];
    assert_eq!(with["platforms"].as_str(), Some("linux/amd64,linux/arm64"));
    assert_eq!(with["push"].as_bool(), Some(true));
    assert_eq!(with["sbom"].as_bool(), Some(true));
    assert_eq!(with["target"].as_str(), Some("${{ matrix.target }}"));
    let test_job = format!("{:?}", wf["jobs"]["test"]["steps"]);
    assert!(
        test_job.contains("scripts/test"),
        "the release runs the suite"
    );
    // What compose pulls is what the workflow pushes.
    let pushed = format!("{:?}", images["steps"]);
    assert!(
        pushed.contains("ghcr.io/${{ github.repository_owner }}/switchboard-${{ matrix.target }}")
    );
}

#[test]
fn compose_names_each_image_by_switchboard_image_and_version_and_can_still_build_it() {
    let c = yaml("compose.yaml");
    for name in SERVICES {
        let s = &c["services"][name];
        assert_eq!(
            s["image"].as_str(),
            Some(
                format!(
                    "${{SWITCHBOARD_IMAGE:-switchboard}}-{name}:${{SWITCHBOARD_VERSION:-latest}}"
                )
                .as_str()
            ),
            "{name}"
        );
        assert_eq!(
            s["build"]["target"].as_str(),
            Some(name),
            "{name} keeps build:"
        );
    }
}

#[test]
fn images_are_based_on_supported_releases() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let bases: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|image| image.contains(':'))
        .collect();
    // Debian 13 (trixie) everywhere; Node.js from an even (LTS) line for the sidecar.
    for base in &bases {
        let (name, tag) = base.split_once(':').unwrap();
        match name {
            "rust" => assert!(tag.ends_with("-trixie"), "{base}"),
            "debian" => assert!(tag.starts_with("13") || tag.starts_with("trixie"), "{base}"),
            "node" => {
                let major: u32 = tag.split(['-', '.']).next().unwrap().parse().unwrap();
                assert!(
                    major >= 24 && major.is_multiple_of(2),
                    "{base}: not a current LTS line"
                );
                assert!(tag.contains("trixie"), "{base}");
            }
            other => panic!("unexpected base image {other}"),
        }
    }
    assert!(bases.iter().any(|b| b.starts_with("node:")), "{bases:?}");
    let gateway = text.split("AS gateway").nth(1).unwrap();
    assert!(
        !gateway.contains(" nodejs") && !gateway.contains(" npm"),
        "the gateway takes Node.js from the sidecar stage, not Debian's (end of life upstream)"
    );
}
