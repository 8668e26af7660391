//! The real `k3s-autoscaler` binary as a child process, configured for moto.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::aws::{Fixtures, REGION};

/// The bearer token every test service accepts.
pub const TOKEN: &str = "integration-token";

/// The bearer token `POST /v1/events/ec2` accepts (a credential of its own).
pub const EVENTS_TOKEN: &str = "integration-events-token";

/// Settings of one test service.
pub struct ServiceConfig {
    pub cluster_id: String,
    pub table: String,
    pub endpoint: String,
    pub extra_pool: String,
    pub extra_top: String,
    pub min: u32,
    pub max: u32,
    pub region: String,
    pub scale_up_cooldown: String,
    /// Extra lines under `[timing]`.
    pub extra_timing: String,
    /// `server.body_limit_bytes`.
    pub body_limit: usize,
    /// Extra lines under `[server]`.
    pub extra_server: String,
    /// `timing.sweep_interval`.
    pub sweep_interval: String,
}

impl ServiceConfig {
    /// Defaults for tests: min 0, max 4, short lease and sweep, long cooldowns.
    pub fn new(cluster_id: &str, endpoint: &str) -> Self {
        ServiceConfig {
            cluster_id: cluster_id.into(),
            table: format!("autoscaler-{cluster_id}"),
            endpoint: endpoint.into(),
            extra_pool: String::new(),
            extra_top: String::new(),
            min: 0,
            max: 4,
            region: REGION.to_string(),
            scale_up_cooldown: "10m".into(),
            extra_timing: String::new(),
            body_limit: 65536,
            extra_server: String::new(),
            sweep_interval: "1s".into(),
        }
    }

    fn toml(
        &self,
        fixtures: &Fixtures,
        token_file: &std::path::Path,
        kubeconfig: &std::path::Path,
    ) -> String {
        let subnets: String =
            fixtures.subnets.iter().map(|(az, id)| format!("\"{az}\" = \"{id}\"\n")).collect();
        format!(
            r#"cluster_id = "{cluster}"
{extra_top}
[server]
listen = "127.0.0.1:0"
body_limit_bytes = {body_limit}
{extra_server}
[auth]
bearer_token_file = "{token}"
events_token_file = "{events_token}"
[aws]
region = "{region}"
endpoint_url = "{endpoint}"
table = "{table}"
call_timeout = "2s"
[kubernetes]
kubeconfig = "{kubeconfig}"
[timing]
lease_ttl = "3s"
sweep_interval = "{sweep}"
{extra_timing}
[pools.workers]
min = {min}
max = {max}
launch_template = "{template}"
scale_up_cooldown = "{cooldown}"
{extra_pool}
[pools.workers.subnets]
{subnets}"#,
            cluster = self.cluster_id,
            extra_top = self.extra_top,
            token = token_file.display(),
            events_token = token_file.with_file_name("events-token").display(),
            extra_server = self.extra_server,
            endpoint = self.endpoint,
            table = self.table,
            template = fixtures.launch_template,
            extra_pool = self.extra_pool,
            kubeconfig = kubeconfig.display(),
            min = self.min,
            max = self.max,
            region = self.region,
            cooldown = self.scale_up_cooldown,
            extra_timing = self.extra_timing,
            body_limit = self.body_limit,
            sweep = self.sweep_interval,
        )
    }
}

/// A running service process; killed on drop.
pub struct Service {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

/// The binary under test: `$K3S_AUTOSCALER_BIN`, else `k3s-autoscaler` in the profile
/// directory of the running test, benchmark or example (`target/<profile>/deps/…`,
/// `target/<profile>/examples/…`), where Cargo builds it for them.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("K3S_AUTOSCALER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("the executable's directory");
    let profile_dir = match dir.file_name().and_then(|name| name.to_str()) {
        Some("deps" | "examples") => dir.parent().expect("target/<profile>"),
        _ => dir,
    };
    profile_dir.join(format!("k3s-autoscaler{}", std::env::consts::EXE_SUFFIX))
}

fn command(config_path: &std::path::Path) -> Command {
    let mut command = Command::new(binary());
    command
        .env("K3S_AUTOSCALER_CONFIG", config_path)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", std::env::var("TEST_SERVICE_LOG").unwrap_or_else(|_| "warn".into()));
    command
}

/// Writes the config and creates the table with `init-table`.
pub fn prepare(
    config: &ServiceConfig,
    fixtures: &Fixtures,
    kube: &super::kube_api::FakeKube,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("write token");
    std::fs::write(dir.path().join("events-token"), format!("{EVENTS_TOKEN}\n")).expect("write events token");
    let kubeconfig = kube.kubeconfig(dir.path());
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config.toml(fixtures, &token, &kubeconfig)).expect("write config");
    let out = command(&path).arg("init-table").output().expect("run init-table");
    assert!(out.status.success(), "init-table failed: {}", String::from_utf8_lossy(&out.stderr));
    (dir, path)
}

impl Service {
    /// Starts `serve` with the prepared config and waits for `/readyz`.
    pub async fn start(prepared: &(tempfile::TempDir, PathBuf)) -> Service {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("config.toml");
        std::fs::copy(&prepared.1, &config_path).expect("copy config");
        Service::start_with_layers(config_path.as_os_str(), dir).await
    }

    /// Starts `serve` with `K3S_AUTOSCALER_CONFIG` = `layers` (files and `ssm:/…`
    /// parameters, comma-separated) and waits for `/readyz`; `dir` lives as long as it.
    pub async fn start_with_layers(layers: &std::ffi::OsStr, dir: tempfile::TempDir) -> Service {
        let mut child = command(std::path::Path::new(layers))
            .args(["--log-format", "text", "serve"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn k3s-autoscaler");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let url = format!("http://{addr}");
        let service = Service { child, url, _dir: dir };
        let client = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", service.url)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(20), "service never became ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        service
    }

    /// The process id (benchmarks read its CPU time and memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Posts a webhook payload with the right token; returns the status code.
    pub async fn post(&self, payload: &serde_json::Value) -> u16 {
        self.post_raw(payload.to_string().into_bytes(), Some(&format!("Bearer {TOKEN}"))).await
    }

    /// Posts raw bytes with an optional Authorization header.
    pub async fn post_raw(&self, body: Vec<u8>, authorization: Option<&str>) -> u16 {
        let mut request = reqwest::Client::new()
            .post(format!("{}/v1/alerts", self.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        request.send().await.expect("post").status().as_u16()
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url)).await.expect("metrics").text().await.expect("text")
    }

    /// The value of one exact series (`name{labels}`) in `/metrics`; `None` when it is absent,
    /// so a test can tell "zero" from "not exported".
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics().await, series)
    }

    /// Waits up to `timeout` for `line` (`name{labels} value`, exactly as exported): the
    /// service counts an outcome after the write that a test sees, so a count is awaited,
    /// never read at once after it.
    pub async fn metric_line(&self, line: &str, timeout: Duration) {
        crate::eventually(line, timeout, || async {
            self.metrics().await.lines().any(|l| l == line).then_some(())
        })
        .await;
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the series `series` (name and labels exactly as exported) in a metrics text.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
