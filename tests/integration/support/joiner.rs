//! Plays the workers' kubelets: every managed instance that appears in moto becomes a Node
//! (providerID `aws:///<az>/<id>`, pool label) after a boot delay, and turns Ready then.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::aws::Aws;
use super::kube_api::{FakeKube, node};

/// A running joiner; stops on drop.
pub struct Joiner {
    enabled: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

/// The node name the joiner gives an instance.
pub fn node_name(instance_id: &str) -> String {
    format!("node-{instance_id}")
}

impl Joiner {
    /// Joins instances of `cluster` into `kube` after `boot`.
    pub fn start(aws: Arc<Aws>, kube: Arc<FakeKube>, cluster: &str, boot: Duration) -> Joiner {
        let enabled = Arc::new(AtomicBool::new(true));
        let cluster = cluster.to_string();
        let flag = enabled.clone();
        let task = tokio::spawn(async move {
            let mut joined: HashSet<String> = HashSet::new();
            loop {
                if flag.load(Ordering::SeqCst) {
                    for (id, az, _) in aws.instances(&cluster).await {
                        if joined.insert(id.clone()) {
                            let kube = kube.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(boot).await;
                                kube.add_node(
                                    node(&node_name(&id))
                                        .provider_id(&format!("aws:///{az}/{id}"))
                                        .label("k3s-autoscaler/pool", "workers")
                                        .ready(true)
                                        .build(),
                                );
                            });
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Joiner { enabled, task }
    }

    /// Stops joining new instances (a node that never comes up).
    pub fn pause(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        self.task.abort();
    }
}
