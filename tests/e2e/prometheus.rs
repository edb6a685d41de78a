//! The real Prometheus (Debian's 2.42 from `make tools`, or $PROMETHEUS / PATH) scraping the
//! running operator every second and evaluating the shipped alert rules every second.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use inference_access::gateway::client::GatewayClient;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::harness::repo;

pub struct Prometheus {
    child: Child,
    url: String,
    log: std::path::PathBuf,
    client: GatewayClient,
}

/// `config/prometheus/rules.yaml` with every `for:` cut to `for_`, so an alert fires within
/// seconds of its condition instead of minutes.
fn shipped_rules_with_for(for_: &str) -> String {
    let text = std::fs::read_to_string(repo("config/prometheus/rules.yaml")).unwrap();
    let mut rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    for group in rules["groups"].as_sequence_mut().unwrap() {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            if rule.get("for").is_some() {
                rule["for"] = for_.into();
            }
        }
    }
    serde_yaml::to_string(&rules).unwrap()
}

impl Prometheus {
    /// Starts Prometheus in `dir` with the shipped rules (`for:` cut to 1 s), scraping the
    /// operator at `target` (host:port) as the chart's ServiceMonitor does (honoring its labels).
    pub async fn start(dir: &Path, target: &str) -> Self {
        let binary = packaging_tests::tool_path(packaging_tests::Tool::Prometheus)
            .unwrap_or_else(|err| panic!("{err}"));
        let rules = dir.join("rules.yaml");
        std::fs::write(&rules, shipped_rules_with_for("1s")).unwrap();
        let config = dir.join("prometheus.yml");
        let config_text = serde_json::json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules],
            "scrape_configs": [{
                "job_name": "inference-access",
                "honor_labels": true,
                "static_configs": [{"targets": [target]}],
            }],
        });
        std::fs::write(&config, serde_yaml::to_string(&config_text).unwrap()).unwrap();
        // Prometheus cannot report a port it chose itself, so take a free one and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("prometheus.log");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus starts");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            client: GatewayClient::new().unwrap(),
        }
    }

    /// `GET /api/v1/<path>`'s `data`, or `None` while Prometheus is not answering yet. Panics
    /// when Prometheus exited.
    async fn api(&mut self, path: &str) -> Option<Value> {
        if let Some(status) = self.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("prometheus exited ({status}):\n{log}");
        }
        let response = self
            .client
            .get(&format!("{}/api/v1/{path}", self.url), &[])
            .await
            .ok()?;
        let body: Value = serde_json::from_slice(&response.body).ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// Polls `probe` on a short tick until it gives a value or `deadline` passes. The HTTP API
    /// has no change notification; Prometheus evaluates every second.
    async fn poll<T>(
        &mut self,
        path: &str,
        what: &str,
        deadline: tokio::time::Instant,
        mut probe: impl FnMut(&Value) -> Option<T>,
    ) -> T {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            if let Some(found) = self.api(path).await.as_ref().and_then(&mut probe) {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                let now = self.api(path).await;
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("no {what} before the deadline; {path} is {now:#?}\nprometheus log:\n{log}");
            }
            tick.tick().await;
        }
    }

    /// Waits until an instant query returns at least one series.
    pub async fn wait_for_series(&mut self, query: &str, deadline: tokio::time::Instant) -> Value {
        let path = format!(
            "query?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("query", query)
                .finish()
        );
        self.poll(&path, &format!("series for {query}"), deadline, |data| {
            data["result"]
                .as_array()
                .filter(|r| !r.is_empty())
                .map(|r| Value::Array(r.clone()))
        })
        .await
    }

    /// The alerts (pending or firing) named `name` whose labels include `labels`.
    pub async fn alerts(&mut self, name: &str, labels: &[(&str, &str)]) -> Vec<Value> {
        let data = self.api("alerts").await.unwrap_or_default();
        matching(&data, name, labels)
    }

    /// Waits until the alert `name` with `labels` fires, and returns it.
    pub async fn wait_for_firing(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        deadline: tokio::time::Instant,
    ) -> Value {
        self.poll(
            "alerts",
            &format!("firing {name} {labels:?}"),
            deadline,
            |data| {
                matching(data, name, labels)
                    .into_iter()
                    .find(|alert| alert["state"] == "firing")
            },
        )
        .await
    }
}

fn matching(data: &Value, name: &str, labels: &[(&str, &str)]) -> Vec<Value> {
    data["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|alert| {
            alert["labels"]["alertname"] == name
                && labels.iter().all(|(k, v)| alert["labels"][*k] == *v)
        })
        .cloned()
        .collect()
}
