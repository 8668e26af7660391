//! The real Alertmanager (Debian's `prometheus-alertmanager`, 0.25) on loopback, routing
//! every alert to the service's webhook with its bearer token.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::moto::free_port;

/// A running Alertmanager; killed on drop.
pub struct Alertmanager {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    let found = ["/usr/bin/prometheus-alertmanager", "/usr/local/bin/alertmanager"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("Alertmanager not found: run scripts/setup.sh (apt package prometheus-alertmanager)")
    })
}

impl Alertmanager {
    /// Starts Alertmanager sending to `webhook` with `token`, with short timings.
    pub async fn start(webhook: &str, token: &str) -> Alertmanager {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, token).expect("token");
        let config = format!(
            "route:\n  receiver: k3s-autoscaler\n  group_by: [alertname, pool]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n- name: k3s-autoscaler\n  webhook_configs:\n  - url: {webhook}\n    send_resolved: true\n    http_config:\n      authorization:\n        credentials_file: {}\n",
            token_file.display()
        );
        Alertmanager::with_config(dir, &config).await
    }

    /// Starts Alertmanager on `config` (files it names may live in `dir`, kept with it).
    pub async fn with_config(dir: tempfile::TempDir, config: &str) -> Alertmanager {
        Alertmanager::with_config_on(dir, config, free_port()).await
    }

    /// As [`Alertmanager::with_config`], on `port` (chosen before the service that reads
    /// Alertmanager's API starts).
    pub async fn with_config_on(dir: tempfile::TempDir, config: &str, port: u16) -> Alertmanager {
        let config_file = dir.path().join("alertmanager.yml");
        std::fs::write(&config_file, config).expect("config");
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager");
        let url = format!("http://127.0.0.1:{port}");
        let am = Alertmanager { child, url, _dir: dir };
        super::eventually("Alertmanager ready", Duration::from_secs(20), || async {
            let ready = reqwest::get(format!("{}/-/ready", am.url)).await.ok()?;
            ready.status().is_success().then_some(())
        })
        .await;
        am
    }

    /// Silences alerts matching `matchers` (name, value: equality) for `hours`, as
    /// `amtool silence add` does; returns the silence id.
    pub async fn silence(&self, matchers: &[(&str, &str)], hours: u64) -> String {
        let now = std::time::SystemTime::now();
        let ends = now + Duration::from_secs(hours * 3600);
        let body = serde_json::json!({
            "matchers": matchers.iter().map(|(n, v)| serde_json::json!({"name": n, "value": v, "isRegex": false, "isEqual": true})).collect::<Vec<_>>(),
            "startsAt": humantime::format_rfc3339_millis(now).to_string(),
            "endsAt": humantime::format_rfc3339_millis(ends).to_string(),
            "createdBy": "k3s-autoscaler tests",
            "comment": "pause scaling",
        });
        let response = reqwest::Client::new()
            .post(format!("{}/api/v2/silences", self.url))
            .json(&body)
            .send()
            .await
            .expect("post silence");
        assert!(response.status().is_success(), "Alertmanager refused the silence: {}", response.status());
        let answer: serde_json::Value = response.json().await.expect("silence answer");
        answer["silenceID"].as_str().expect("silenceID").to_string()
    }

    /// Expires silence `id` now (`amtool silence expire`).
    pub async fn expire(&self, id: &str) {
        let response = reqwest::Client::new()
            .delete(format!("{}/api/v2/silence/{id}", self.url))
            .send()
            .await
            .expect("expire silence");
        assert!(response.status().is_success(), "Alertmanager refused to expire {id}: {}", response.status());
    }

    /// Alerts Alertmanager holds: (alertname, state), state being active, suppressed or
    /// unprocessed.
    pub async fn alerts(&self) -> Vec<(String, String)> {
        let answer: serde_json::Value = reqwest::get(format!("{}/api/v2/alerts", self.url))
            .await
            .expect("get alerts")
            .json()
            .await
            .expect("alerts json");
        answer
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|a| {
                        (
                            a["labels"]["alertname"].as_str().unwrap_or_default().to_string(),
                            a["status"]["state"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fires an alert through Alertmanager's API, as Prometheus would.
    pub async fn fire(&self, labels: serde_json::Value, summary: &str) {
        self.post_alert(serde_json::json!({ "labels": labels, "annotations": { "summary": summary } })).await
    }

    /// Keeps an alert firing as Prometheus does (re-sent every second, else Alertmanager
    /// resolves it after `resolve_timeout`) until the returned task is aborted.
    pub fn keep_firing(&self, labels: serde_json::Value, summary: &str) -> tokio::task::JoinHandle<()> {
        let alert = serde_json::json!({ "labels": labels, "annotations": { "summary": summary } });
        let url = self.url.clone();
        tokio::spawn(async move {
            loop {
                post_alert(&url, alert.clone()).await;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        })
    }

    /// Resolves an alert fired by [`Alertmanager::fire`] (same labels, `endsAt` now), as
    /// Prometheus does when a rule clears.
    pub async fn resolve(&self, labels: serde_json::Value) {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        self.post_alert(serde_json::json!({ "labels": labels, "endsAt": now })).await
    }

    async fn post_alert(&self, alert: serde_json::Value) {
        post_alert(&self.url, alert).await
    }
}

async fn post_alert(url: &str, alert: serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}/api/v2/alerts"))
        .json(&serde_json::json!([alert]))
        .send()
        .await
        .expect("post alert");
    assert!(response.status().is_success(), "Alertmanager refused the alert: {}", response.status());
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
