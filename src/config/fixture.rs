//! A minimal valid config file with a real token file, for the config tests.

use std::path::Path;

use super::{Config, ConfigError};

/// A temporary directory holding the token file the config names.
pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
        Fixture { dir }
    }
    pub(crate) fn toml(&self, extra_pool: &str) -> String {
        format!(
            r#"
cluster_id = "demo"
[auth]
bearer_token_file = "{token}"
[aws]
region = "us-east-1"
table = "t"
[pools.workers]
min = 1
max = 4
launch_template = "lt-1"
{extra_pool}
[pools.workers.subnets]
"us-east-1a" = "subnet-a"
"#,
            token = self.dir.path().join("token").display()
        )
    }
    pub(crate) fn load(&self, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml(text, Path::new("test.toml"), env)
    }
}
