//! The alert rules of config/prometheus/rules.yaml: they parse, their unit tests
//! (tests/prometheus/rules.test.yaml) pass with the real `promtool`, every alert is tested and has
//! a runbook section in docs/troubleshooting.md that its `runbook_url` points at.

use packaging_tests::{Tool, read_yaml, repo_root, run, run_in};
use serde_json::Value;

fn alerts() -> Vec<Value> {
    let rules = read_yaml("config/prometheus/rules.yaml").unwrap_or_else(|err| panic!("{err}"));
    rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .filter(|rule| rule["alert"].is_string())
        .collect()
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let checked = run(
        Tool::Promtool,
        &["check", "rules", "config/prometheus/rules.yaml"],
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert!(checked.contains("SUCCESS"), "{checked}");
    // Rule file paths in a test file are relative to the test file.
    let tested = run_in(
        Tool::Promtool,
        &["test", "rules", "rules.test.yaml"],
        &repo_root().join("tests/prometheus"),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_fires_in_a_unit_test() {
    let tests = read_yaml("tests/prometheus/rules.test.yaml").unwrap_or_else(|err| panic!("{err}"));
    let fired: Vec<&str> = tests["tests"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|test| test["alert_rule_test"].as_array().into_iter().flatten())
        .filter(|case| case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .filter_map(|case| case["alertname"].as_str())
        .collect();
    let alerts = alerts();
    assert!(alerts.len() >= 5, "{alerts:?}");
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap_or_default();
        assert!(fired.contains(&name), "no unit test sees {name} fire");
    }
}

/// The anchor GitHub gives a Markdown heading: lower case, spaces to dashes, punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_a_severity_and_a_runbook_section() {
    let doc = std::fs::read_to_string(repo_root().join("docs/troubleshooting.md"))
        .unwrap_or_else(|err| panic!("cannot read docs/troubleshooting.md: {err}"));
    let anchors: Vec<String> = doc
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| anchor(heading.trim_start_matches('#')))
        .collect();
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap_or_default();
        let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["warning", "critical"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for annotation in ["summary", "description"] {
            assert!(
                alert["annotations"][annotation].is_string(),
                "{name}: no {annotation}"
            );
        }
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let (page, fragment) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{name}: runbook_url {url:?} has no section"));
        assert!(
            page.ends_with("/blob/main/docs/troubleshooting.md"),
            "{name}: {url}"
        );
        assert_eq!(
            fragment,
            name.to_lowercase(),
            "{name}: one section per alert"
        );
        assert!(
            anchors.iter().any(|a| a == fragment),
            "{name}: docs/troubleshooting.md has no section #{fragment}"
        );
    }
}
