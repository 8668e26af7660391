//! The CloudFormation template deployed into moto, then the autoscaler run against the
//! resources it created: its table, its launch template, its subnets.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::support::aws::{Aws, Fixtures};
use crate::support::joiner::Joiner;
use crate::support::kube_api::FakeKube;
use crate::support::moto::Moto;
use crate::support::service::{self, ServiceConfig};
use crate::support::{eventually, scale_up};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_scales_with_the_resources_the_stack_created() {
    let moto = Moto::start();
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let outputs_file = dir.path().join("stack.json");
    let python = std::env::var("MOTO_PYTHON").unwrap_or_else(|_| format!("{root}/.venv/bin/python"));
    let url = moto.url.clone();
    let out_path = outputs_file.clone();
    let deployed = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(format!("{root}/infra/tests/deploy_moto.py"))
            .args(["--endpoint-url", &url, "--out", out_path.to_str().unwrap(), "--no-launch-smoke"])
            .output()
            .expect("run infra/tests/deploy_moto.py (scripts/setup.sh installs its Python)")
    })
    .await
    .unwrap();
    assert!(deployed.status.success(), "stack deploy failed:\n{}", String::from_utf8_lossy(&deployed.stdout));
    let stack: serde_json::Value = serde_json::from_slice(&std::fs::read(&outputs_file).unwrap()).unwrap();
    let outputs = &stack["outputs"];
    let region = stack["region"].as_str().unwrap().to_string();
    let cluster = outputs["ClusterId"].as_str().unwrap().to_string();
    let template = outputs["WorkerLaunchTemplateId"].as_str().unwrap().to_string();
    let subnets: Vec<(String, String)> = stack["subnets"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(az, id)| (az.clone(), id.as_str().unwrap().to_string()))
        .collect();
    assert_eq!(subnets.len(), 2, "two zones");

    let aws = Arc::new(Aws::in_region(&moto.url, &region).await);
    let kube = Arc::new(FakeKube::start().await);
    let _joiner = Joiner::start(aws.clone(), kube.clone(), &cluster, Duration::from_millis(200));
    let mut config = ServiceConfig::new(&cluster, &moto.url);
    config.table = outputs["StateTableName"].as_str().unwrap().to_string();
    config.region = region.clone();
    let fixtures = Fixtures { subnets: subnets.clone(), launch_template: template.clone() };
    let prepared = service::prepare(&config, &fixtures, &kube);
    let service = service::Service::start(&prepared).await;
    assert_eq!(service.post(&scale_up("fp-stack")).await, 200);
    let launched = eventually("an instance from the stack's template", Duration::from_secs(30), || async {
        let found = aws.instances(&cluster).await;
        (found.len() == 1).then_some(found)
    })
    .await;
    let (id, az, _) = &launched[0];
    let described = aws.ec2.describe_instances().instance_ids(id).send().await.unwrap();
    let instance = &described.reservations()[0].instances()[0];
    let subnet = instance.subnet_id().unwrap_or_default().to_string();
    assert!(
        subnets.contains(&(az.clone(), subnet.clone())),
        "{az}/{subnet} is one of the stack's subnets {subnets:?}"
    );
    let state = aws.items(&config.table, &cluster, "state#workers").await;
    assert_eq!(state.len(), 1, "the pool's state lives in the stack's table");
}
