//! Plays the workers' kubelets: every managed instance that appears in moto becomes a Node
//! (providerID `aws:///<az>/<id>`, the labels infra/userdata/worker.sh sets) after a boot delay, and
//! turns Ready then. With `remove_terminated`, the Node of an instance that is no longer
//! pending or running goes too, as the cloud controller would remove it.

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

/// How the joiner behaves.
#[derive(Clone, Copy)]
pub struct JoinOptions {
    /// From the instance appearing in EC2 to its Node being Ready.
    pub boot: Duration,
    /// Remove the Node of a terminated instance.
    pub remove_terminated: bool,
}

impl Joiner {
    /// Joins instances of `cluster` into `kube` after `boot`.
    pub fn start(aws: Arc<Aws>, kube: Arc<FakeKube>, cluster: &str, boot: Duration) -> Joiner {
        Joiner::start_with(aws, kube, cluster, JoinOptions { boot, remove_terminated: false })
    }

    /// Joins instances of `cluster` into `kube` as `options` say.
    pub fn start_with(aws: Arc<Aws>, kube: Arc<FakeKube>, cluster: &str, options: JoinOptions) -> Joiner {
        Joiner::start_with_hook(aws, kube, cluster, options, Arc::new(|_: &str| {}))
    }

    /// As `start_with`; `before_join(node name)` runs just before each Node is created (the
    /// soak binds pods to a node before any controller can see it).
    pub fn start_with_hook(
        aws: Arc<Aws>,
        kube: Arc<FakeKube>,
        cluster: &str,
        options: JoinOptions,
        before_join: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Joiner {
        let enabled = Arc::new(AtomicBool::new(true));
        let cluster = cluster.to_string();
        let flag = enabled.clone();
        let task = tokio::spawn(async move {
            let mut joined: HashSet<String> = HashSet::new();
            loop {
                let live = aws.instances(&cluster).await;
                if flag.load(Ordering::SeqCst) {
                    for (id, az, spot) in &live {
                        if joined.insert(id.clone()) {
                            let hook = before_join.clone();
                            let (kube, id, az, spot) = (kube.clone(), id.clone(), az.clone(), *spot);
                            tokio::spawn(async move {
                                tokio::time::sleep(options.boot).await;
                                hook(&node_name(&id));
                                join(&kube, &id, &az, spot);
                            });
                        }
                    }
                }
                if options.remove_terminated {
                    let gone: Vec<String> =
                        joined.iter().filter(|id| !live.iter().any(|(l, _, _)| l == *id)).cloned().collect();
                    for id in gone {
                        kube.remove_node(&node_name(&id));
                        joined.remove(&id);
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

fn join(kube: &FakeKube, id: &str, az: &str, spot: bool) {
    kube.add_node(
        node(&node_name(id))
            .provider_id(&format!("aws:///{az}/{id}"))
            .label("k3s-autoscaler/pool", "workers")
            .label("k3s-autoscaler/managed", "true")
            .label("k3s-autoscaler/capacity-type", if spot { "spot" } else { "on-demand" })
            .label("topology.kubernetes.io/zone", az)
            .ready(true)
            .build(),
    );
}

impl Drop for Joiner {
    fn drop(&mut self) {
        self.task.abort();
    }
}
