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

/// The SSM layer the stack writes (`ServiceConfigParameter` in infra/k3s-autoscaler.yaml),
/// with sample values for its `${…}` substitutions: what a deployed autoscaler reads first.
pub(crate) fn stack_layer() -> String {
    let template = include_str!("../../infra/k3s-autoscaler.yaml");
    let start = template.find("\n  ServiceConfigParameter:").expect("the stack writes the config parameter");
    let block = &template[start..];
    let body = &block[block.find("- |\n").expect("a !Sub list with the TOML first") + 4..];
    let indent = body.len() - body.trim_start().len();
    let text: String = body
        .lines()
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(open) = rest.find("${") {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("closed substitution") + open;
        let sample = match &rest[open + 2..close] {
            "ClusterId" => "prod".to_string(),
            "AWS::Region" => "eu-west-1".to_string(),
            "PoolName" => "workers".to_string(),
            "PoolMinSize" => "2".to_string(),
            "PoolMaxSize" => "10".to_string(),
            "Subnet1Zone" => "eu-west-1a".to_string(),
            "Subnet2Zone" => "eu-west-1b".to_string(),
            "AWS::StackName" => "k3s-prod".to_string(),
            "StateTable" => "k3s-autoscaler-prod".to_string(),
            "Ec2NoticeQueue" => {
                "https://sqs.eu-west-1.amazonaws.com/123456789012/k3s-autoscaler-prod-notices".to_string()
            }
            "ScalingEventsLogGroup" => "/k3s-autoscaler/prod/scaling-events".to_string(),
            "WorkerLaunchTemplate" => "lt-0123456789abcdef0".to_string(),
            "WorkerLaunchTemplate.LatestVersionNumber" => "3".to_string(),
            "PublicSubnet1" => "subnet-0aaaaaaaaaaaaaaa1".to_string(),
            "PublicSubnet2" => "subnet-0bbbbbbbbbbbbbbb2".to_string(),
            other => {
                panic!("the stack's config parameter substitutes ${{{other}}}: add a sample for it here")
            }
        };
        out.push_str(&sample);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}
