//! The release pipeline as far as it can be checked without a registry: the archives
//! hack/release-archive.sh packs and the krew manifest hack/krew-manifest.sh renders from
//! plugins/inference-access.yaml (checked as krew's own validation checks a manifest), the shape of
//! .github/workflows/release.yaml, and that the image's user is the one the packaging runs as.
//! `make verify-image` builds and runs the binary itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use packaging_tests::{crate_version, read_yaml, repo_root};
use serde_json::Value;

const PLATFORMS: [(&str, &str); 4] = [
    ("linux", "amd64"),
    ("linux", "arm64"),
    ("darwin", "amd64"),
    ("darwin", "arm64"),
];

/// A directory removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("packaging-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("{err}"));
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a script of hack/ and returns its standard output, failing the test on an error.
fn hack(script: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new("bash")
        .arg(repo_root().join("hack").join(script))
        .args(args)
        .output()
        .map_err(|err| format!("cannot run {script}: {err}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn sha256(path: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|err| panic!("cannot run sha256sum: {err}"));
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `v` and a semantic version, as krew requires of `spec.version`.
fn is_krew_version(version: &str) -> bool {
    let Some(core) = version.strip_prefix('v') else {
        return false;
    };
    let core = core.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// What krew's manifest validation (sigs.k8s.io/krew internal/index/validation) requires.
fn krew_violations(manifest: &Value, file_stem: &str) -> Vec<String> {
    let mut violations = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            violations.push(what.to_owned());
        }
    };
    check(
        manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2",
        "apiVersion",
    );
    check(manifest["kind"] == "Plugin", "kind");
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
    check(name == file_stem, "metadata.name must match the file name");
    check(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "a safe plugin name",
    );
    let spec = &manifest["spec"];
    let short = spec["shortDescription"].as_str().unwrap_or_default();
    check(
        !short.is_empty() && !short.contains(['\n', '\r']),
        "a one-line shortDescription",
    );
    check(
        is_krew_version(spec["version"].as_str().unwrap_or_default()),
        "spec.version v<semver>",
    );
    let platforms = spec["platforms"].as_array().cloned().unwrap_or_default();
    check(!platforms.is_empty(), "platforms");
    for platform in &platforms {
        check(
            platform["uri"].as_str().is_some_and(|u| !u.is_empty()),
            "platform uri",
        );
        let sha = platform["sha256"].as_str().unwrap_or_default();
        check(
            sha.len() == 64
                && sha
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "platform sha256: 64 lower-case hex digits",
        );
        check(
            platform["bin"].as_str().is_some_and(|b| !b.is_empty()),
            "platform bin",
        );
        if let Some(files) = platform.get("files") {
            let files = files.as_array().cloned().unwrap_or_default();
            check(!files.is_empty(), "files unset or non-empty");
            for file in files {
                check(
                    file["from"].as_str().is_some_and(|f| !f.is_empty())
                        && file["to"].as_str().is_some_and(|t| !t.is_empty()),
                    "files from and to",
                );
            }
        }
        let labels = platform["selector"]["matchLabels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        check(!labels.is_empty(), "a non-empty selector");
        check(
            labels.keys().all(|k| k == "os" || k == "arch"),
            "selector keys os and arch only",
        );
    }
    violations
}

#[test]
fn the_release_archives_and_krew_manifest_install_the_plugin_as_krew_expects() {
    let scratch = Scratch::new("krew");
    let version = format!("v{}", crate_version().unwrap_or_else(|err| panic!("{err}")));
    let dist = scratch.0.join("dist");
    let dist_arg = dist.to_string_lossy().into_owned();
    let mut sums = Vec::new();
    for (os, arch) in PLATFORMS {
        // A distinct "binary" per platform, so a mixed-up checksum shows.
        let binary = scratch.0.join(format!("binary-{os}-{arch}"));
        std::fs::write(&binary, format!("#!/bin/sh\necho {os}/{arch}\n"))
            .unwrap_or_else(|err| panic!("{err}"));
        let archive = hack(
            "release-archive.sh",
            &[&binary.to_string_lossy(), &version, os, arch, &dist_arg],
        )
        .unwrap_or_else(|err| panic!("{err}"));
        let archive = PathBuf::from(archive.trim());
        assert_eq!(
            archive.file_name().and_then(|n| n.to_str()),
            Some(format!("inference-access_{version}_{os}_{arch}.tar.gz").as_str())
        );
        let listing = Command::new("tar")
            .arg("-tzf")
            .arg(&archive)
            .output()
            .unwrap_or_else(|err| panic!("{err}"));
        let listing: BTreeSet<String> = String::from_utf8_lossy(&listing.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        sums.push(((os, arch), sha256(&archive), listing));
    }

    let text =
        hack("krew-manifest.sh", &[&version, &dist_arg]).unwrap_or_else(|err| panic!("{err}"));
    assert!(!text.contains("${"), "placeholders left:\n{text}");
    let manifest: Value = serde_yaml::from_str(&text).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        krew_violations(&manifest, "inference-access"),
        Vec::<String>::new()
    );
    assert_eq!(manifest["spec"]["version"], version.as_str());

    let platforms = manifest["spec"]["platforms"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(platforms.len(), PLATFORMS.len());
    for ((os, arch), sum, listing) in &sums {
        let platform = platforms
            .iter()
            .find(|p| {
                p["selector"]["matchLabels"]["os"] == *os
                    && p["selector"]["matchLabels"]["arch"] == *arch
            })
            .unwrap_or_else(|| panic!("no platform {os}/{arch}"));
        assert_eq!(platform["sha256"], sum.as_str(), "{os}/{arch}");
        assert_eq!(
            platform["uri"],
            format!(
                "https://github.com/inference-access/inference-access/releases/download/{version}/inference-access_{version}_{os}_{arch}.tar.gz"
            )
            .as_str()
        );
        // kubectl finds the plugin as kubectl-inference_access: krew links `bin` under that
        // name, and the files it copies come from the archive.
        assert_eq!(platform["bin"], "kubectl-inference_access");
        let files = platform["files"].as_array().cloned().unwrap_or_default();
        assert!(
            files
                .iter()
                .any(|f| f["from"] == "inference-access" && f["to"] == "kubectl-inference_access"),
            "{files:?}"
        );
        for file in &files {
            let from = file["from"].as_str().unwrap_or_default();
            assert!(
                listing.contains(from),
                "{os}/{arch}: {from} not in {listing:?}"
            );
        }
    }

    // A missing archive fails the release instead of shipping a manifest that cannot install.
    std::fs::remove_file(dist.join(format!("inference-access_{version}_darwin_arm64.tar.gz")))
        .unwrap_or_else(|err| panic!("{err}"));
    let missing =
        hack("krew-manifest.sh", &[&version, &dist_arg]).expect_err("an archive is missing");
    assert!(
        missing.contains("darwin_arm64.tar.gz is missing"),
        "{missing}"
    );
}

fn workflow() -> Value {
    read_yaml(".github/workflows/release.yaml").unwrap_or_else(|err| panic!("{err}"))
}

/// Every `run:` script and `uses:` of a job, as one text.
fn job_text(workflow: &Value, job: &str) -> String {
    let steps = workflow["jobs"][job]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no job {job}"));
    steps
        .iter()
        .map(|step| {
            format!(
                "{} {} {}",
                step["uses"].as_str().unwrap_or_default(),
                step["run"].as_str().unwrap_or_default(),
                step["with"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The arguments of the Dockerfile's `cargo build`.
fn dockerfile_build_args() -> String {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile"))
        .unwrap_or_else(|err| panic!("{err}"));
    let start = dockerfile
        .find("cargo build ")
        .unwrap_or_else(|| panic!("the Dockerfile runs no cargo build"));
    dockerfile[start + "cargo build ".len()..]
        .split(['&', '\\', '\n'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn the_release_workflow_builds_signs_and_publishes_every_artifact() {
    let workflow = workflow();
    assert_eq!(workflow["on"]["push"]["tags"], serde_json::json!(["v*"]));
    // Read-only unless a job needs more.
    assert_eq!(workflow["permissions"]["contents"], "read");

    // Static musl binaries for Linux with the Dockerfile's own flags, and macOS for the plugin.
    let matrix = workflow["jobs"]["binaries"]["strategy"]["matrix"]["include"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let targets: BTreeSet<&str> = matrix.iter().filter_map(|m| m["target"].as_str()).collect();
    assert_eq!(
        targets,
        BTreeSet::from([
            "aarch64-apple-darwin",
            "aarch64-unknown-linux-musl",
            "x86_64-apple-darwin",
            "x86_64-unknown-linux-musl",
        ])
    );
    let platforms: BTreeSet<(&str, &str)> = matrix
        .iter()
        .filter_map(|m| Some((m["os"].as_str()?, m["arch"].as_str()?)))
        .collect();
    assert_eq!(platforms, BTreeSet::from(PLATFORMS));
    let binaries = job_text(&workflow, "binaries");
    let flags = dockerfile_build_args();
    assert!(
        binaries.contains(&format!("cargo build {flags} --target")),
        "the binaries are not built with the Dockerfile's `cargo build {flags}`:\n{binaries}"
    );
    assert!(binaries.contains("grep -q INTERP"), "no static check");

    // The image from the Dockerfile for both architectures, with SBOM, signed by digest.
    let image_archs: BTreeSet<&str> = workflow["jobs"]["image"]["strategy"]["matrix"]["include"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["arch"].as_str())
        .collect();
    assert_eq!(image_archs, BTreeSet::from(["amd64", "arm64"]));
    let image = job_text(&workflow, "image");
    assert!(image.contains("docker/build-push-action@"), "{image}");
    assert!(image.contains("\"file\":\"Dockerfile\""), "{image}");
    assert!(image.contains("\"sbom\":true"), "{image}");
    let manifest = job_text(&workflow, "image-manifest");
    assert!(
        manifest.contains("cosign sign --yes --recursive"),
        "{manifest}"
    );

    // The chart to an OCI registry, signed; the release with checksums, SBOM and krew manifest.
    let chart = job_text(&workflow, "chart");
    assert!(
        chart.contains("helm push") && chart.contains("cosign sign --yes"),
        "{chart}"
    );
    assert!(
        workflow["env"]["CHART_REPOSITORY"]
            .as_str()
            .is_some_and(|r| r.starts_with("oci://")),
        "{}",
        workflow["env"]
    );
    let release = job_text(&workflow, "release");
    for needle in [
        "hack/release-archive.sh",
        "hack/krew-manifest.sh",
        "anchore/sbom-action@",
        "cosign sign-blob --yes",
        "gh release create",
    ] {
        assert!(
            release.contains(needle),
            "release job lacks {needle}:\n{release}"
        );
    }

    // Keyless signing needs the OIDC token, and only the signing jobs get it.
    for (job, spec) in workflow["jobs"].as_object().into_iter().flatten() {
        let signs = job_text(&workflow, job).contains("cosign sign");
        assert_eq!(
            spec["permissions"]["id-token"] == "write",
            signs,
            "job {job}: id-token: write exactly when it signs"
        );
        // Actions pinned to a release, never to a moving branch.
        for step in spec["steps"].as_array().into_iter().flatten() {
            if let Some(uses) = step["uses"].as_str() {
                let (_, pin) = uses.split_once('@').unwrap_or((uses, ""));
                assert!(
                    pin.starts_with('v'),
                    "job {job}: {uses} is not pinned to a release"
                );
            }
        }
    }
}

#[test]
fn the_image_user_is_the_user_the_packaging_runs_as() {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile"))
        .unwrap_or_else(|err| panic!("{err}"));
    let user = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("USER "))
        .unwrap_or_else(|| panic!("the Dockerfile declares no USER"));
    let (uid, gid) = user
        .trim()
        .split_once(':')
        .unwrap_or_else(|| panic!("USER {user} is not uid:gid"));
    let values =
        read_yaml("charts/inference-access/values.yaml").unwrap_or_else(|err| panic!("{err}"));
    let deployment =
        read_yaml("config/manager/deployment.yaml").unwrap_or_else(|err| panic!("{err}"));
    for (what, context) in [
        ("chart", &values["podSecurityContext"]),
        (
            "config/manager",
            &deployment["spec"]["template"]["spec"]["securityContext"],
        ),
    ] {
        assert_eq!(context["runAsUser"].to_string(), uid, "{what}");
        assert_eq!(context["runAsGroup"].to_string(), gid, "{what}");
    }
}
