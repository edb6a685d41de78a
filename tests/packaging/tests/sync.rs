//! The copies made by hack/sync.sh (chart CRDs and RBAC, config/crd, config/samples) agree with
//! their sources (fails after `make crds` or an edit of config/rbac/ until `hack/sync.sh` runs),
//! and the packaging ships the version the crate builds.

use std::process::Command;

use packaging_tests::{crate_version, read_yaml, repo_root};

#[test]
fn chart_and_config_copies_match_their_sources() {
    let output = Command::new("bash")
        .arg(repo_root().join("hack/verify-sync.sh"))
        .output()
        .unwrap_or_else(|err| panic!("cannot run hack/verify-sync.sh: {err}"));
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn chart_and_kustomize_ship_the_crate_version() {
    let version = crate_version().unwrap_or_else(|err| panic!("{err}"));
    let chart =
        read_yaml("charts/inference-access/Chart.yaml").unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        chart["appVersion"],
        version.as_str(),
        "Chart.yaml appVersion"
    );
    let deployment =
        read_yaml("config/manager/deployment.yaml").unwrap_or_else(|err| panic!("{err}"));
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default();
    assert!(
        image.ends_with(&format!(":{version}")),
        "config/manager image {image} is not {version}"
    );
}
