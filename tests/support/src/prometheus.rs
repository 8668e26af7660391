//! The real Prometheus (Debian's `prometheus`, 2.42) on loopback, and its alerts API.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use super::moto::free_port;

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _dir: tempfile::TempDir,
}

/// One alert as `/api/v1/alerts` shows it.
#[derive(Clone, Debug)]
pub struct RuleAlert {
    pub name: String,
    pub labels: serde_json::Map<String, serde_json::Value>,
    /// `pending` (condition true, `for:` not over yet) or `firing`.
    pub state: String,
    /// The evaluation at which the condition became true.
    pub active_at: SystemTime,
    pub summary: String,
}

impl Prometheus {
    /// Starts Prometheus on `config` (a prometheus.yml whose rule files live in `dir`).
    pub async fn start(dir: tempfile::TempDir, config: &str) -> Prometheus {
        let binary = std::path::Path::new("/usr/bin/prometheus");
        assert!(binary.exists(), "Prometheus not found: run scripts/setup.sh (apt package prometheus)");
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
        super::eventually("Prometheus ready", Duration::from_secs(30), || async {
            let ready = reqwest::get(format!("{}/-/ready", prometheus.url)).await.ok()?;
            ready.status().is_success().then_some(())
        })
        .await;
        prometheus
    }

    /// Pending and firing alerts.
    pub async fn alerts(&self) -> Vec<RuleAlert> {
        let Ok(response) = reqwest::get(format!("{}/api/v1/alerts", self.url)).await else {
            return Vec::new();
        };
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        let list = answer["data"]["alerts"].as_array().cloned().unwrap_or_default();
        list.iter()
            .map(|a| RuleAlert {
                name: a["labels"]["alertname"].as_str().unwrap_or_default().to_string(),
                labels: a["labels"].as_object().cloned().unwrap_or_default(),
                state: a["state"].as_str().unwrap_or_default().to_string(),
                active_at: a["activeAt"]
                    .as_str()
                    .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                    .map(SystemTime::from)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
                summary: a["annotations"]["summary"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// The first alert named `name` in `state`, if any.
    pub async fn alert(&self, name: &str, state: &str) -> Option<RuleAlert> {
        self.alerts().await.into_iter().find(|a| a.name == name && a.state == state)
    }

    /// Each alerting rule's `for:` window, by alert name.
    pub async fn windows(&self) -> std::collections::HashMap<String, Duration> {
        let Ok(response) = reqwest::get(format!("{}/api/v1/rules?type=alert", self.url)).await else {
            return Default::default();
        };
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        let groups = answer["data"]["groups"].as_array().cloned().unwrap_or_default();
        groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| {
                Some((r["name"].as_str()?.to_string(), Duration::from_secs_f64(r["duration"].as_f64()?)))
            })
            .collect()
    }

    /// The value of an instant `query` that returns one series.
    pub async fn scalar(&self, query: &str) -> Option<f64> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?;
        let answer: serde_json::Value = response.json().await.ok()?;
        answer["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
