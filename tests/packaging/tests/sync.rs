//! The copies made by hack/sync.sh (chart CRDs and RBAC, config/crd, config/samples) agree with
//! their sources. Fails after `make crds` or an edit of config/rbac/ until `hack/sync.sh` runs.

use std::process::Command;

use packaging_tests::repo_root;

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
