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
        let config_file = dir.path().join("alertmanager.yml");
        std::fs::write(&config_file, config).expect("config");
        let port = free_port();
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

    /// Fires an alert through Alertmanager's API, as Prometheus would.
    pub async fn fire(&self, labels: serde_json::Value, summary: &str) {
        let body = serde_json::json!([{ "labels": labels, "annotations": { "summary": summary } }]);
        let response = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .json(&body)
            .send()
            .await
            .expect("post alert");
        assert!(response.status().is_success(), "Alertmanager refused the alert: {}", response.status());
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
