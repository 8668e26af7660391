//! The `/metrics` families. One struct owns them so handlers and workers record through typed
//! methods, and names stay in one place (the alert rules in `alert-rules/` depend on them).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::core::model::CapacityBackoff;
use crate::core::time::Timestamp;

/// Labels of `webhook_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// accepted, unauthorized, bad_request, unavailable.
    pub outcome: &'static str,
}

/// Labels of `alerts_received_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertKindLabels {
    /// scale_up, scale_down, resolved, ignored.
    pub kind: &'static str,
}

/// Labels of `decisions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Pool name.
    pub pool: String,
    /// launch, drain, hold, interrupt.
    pub action: &'static str,
    /// The reason's label.
    pub reason: &'static str,
}

/// Labels of `operations_total` and `operation_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// Pool name.
    pub pool: String,
    /// launch, drain or interruption.
    pub kind: &'static str,
    /// succeeded, failed, join_timeout, aborted; interruptions: drained, stranded, cordoned, held.
    pub outcome: &'static str,
}

/// Labels of `aws_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiErrorLabels {
    /// API call, e.g. RunInstances.
    pub api: &'static str,
    /// Error code, e.g. InsufficientInstanceCapacity, an HTTP status, or `unavailable`.
    pub code: String,
}

/// Labels of per-pool gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool name.
    pub pool: String,
}

/// Labels of `unremovable_nodes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnremovableLabels {
    /// Pool name.
    pub pool: String,
    /// The blocker's label.
    pub reason: &'static str,
}

/// Labels of `active_signals`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabels {
    /// Pool name.
    pub pool: String,
    /// scale-up or scale-down.
    pub direction: &'static str,
}

/// Labels of `pool_nodes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolNodeLabels {
    /// Pool name.
    pub pool: String,
    /// Availability zone.
    pub az: String,
    /// spot or on-demand.
    pub capacity_type: &'static str,
}

/// Labels of `ec2_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Ec2EventLabels {
    /// spot_interruption, rebalance_recommendation, other.
    pub kind: &'static str,
    /// handled, upgraded (a spot warning took over a rebalance), duplicate, ignored,
    /// unverified (EC2 does not confirm it), capped (rebalance cap reached), dry_run, bad_request.
    pub outcome: &'static str,
}

/// Labels of `cloudwatch_records_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// sent, failed (PutLogEvents refused or unreachable), dropped (buffer full).
    pub outcome: &'static str,
}

/// Labels of `capacity_backoff_seconds`: one offering backed off.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackoffLabels {
    /// Pool name.
    pub pool: String,
    /// Instance type, `any` when the whole (zone, market) is backed off.
    pub instance_type: String,
    /// Availability zone.
    pub az: String,
    /// spot or on-demand.
    pub market: &'static str,
    /// EC2's error code (or `JoinTimeout`).
    pub code: String,
}

/// All metric families of the service.
pub struct Metrics {
    registry: Registry,
    /// Webhook requests by outcome.
    pub webhook_requests: Family<OutcomeLabels, Counter>,
    /// Alerts received by kind.
    pub alerts_received: Family<AlertKindLabels, Counter>,
    /// Unix time of the last accepted notification.
    pub last_notification: Gauge<f64, AtomicU64>,
    /// Decisions by pool, action and reason.
    pub decisions: Family<DecisionLabels, Counter>,
    /// Finished operations by pool, kind and outcome.
    pub operations: Family<OperationLabels, Counter>,
    /// Operation durations (launch → Ready, drain) by pool, kind and outcome.
    pub operation_duration: Family<OperationLabels, Histogram>,
    /// AWS call errors by API and code.
    pub aws_errors: Family<ApiErrorLabels, Counter>,
    /// Active signals per pool and direction, as last seen by a reconcile.
    pub active_signals: Family<SignalLabels, Gauge>,
    /// Managed workers per pool, as last seen by a reconcile.
    pub pool_workers: Family<PoolLabels, Gauge>,
    /// Nodes that may not be drained, by pool and reason, as last seen by a scale-down check.
    pub unremovable_nodes: Family<UnremovableLabels, Gauge>,
    /// Kubernetes call errors by call and status.
    pub kube_errors: Family<ApiErrorLabels, Counter>,
    /// Managed workers by pool, zone and capacity type, as last seen by a reconcile.
    pub pool_nodes: Family<PoolNodeLabels, Gauge>,
    /// 1 while this replica holds the pool's lease.
    pub lease_held: Family<PoolLabels, Gauge>,
    /// EventBridge EC2 events by kind and outcome.
    pub ec2_events: Family<Ec2EventLabels, Counter>,
    /// Pods still on an interrupted node when its deadline passed.
    pub interruption_stranded_pods: Counter,
    /// Failed reads of the webhook token's SSM parameter (the tokens in force stay).
    pub token_refresh_failures: Counter,
    /// Scaling events sent to CloudWatch Logs, by outcome.
    pub cloudwatch_records: Family<SinkLabels, Counter>,
    /// Managed instances of the pool that are registered Nodes without the pool's label (a
    /// removed label, a template/pool name mismatch): never cleaned up, reported instead.
    pub nodes_without_pool_label: Family<PoolLabels, Gauge>,
    /// The Alertmanager sync's families.
    pub alert_sync: AlertSyncMetrics,
    /// Nodes due for node repair that hold local data: never terminated, left to a person.
    pub repair_blocked_nodes: Family<PoolLabels, Gauge>,
    /// Seconds left on each backed-off offering, as of this replica's last state write.
    pub capacity_backoffs: Family<BackoffLabels, Gauge>,
    /// The offerings last reported per pool, so expired ones are removed.
    backoff_series: std::sync::Mutex<std::collections::HashMap<String, Vec<BackoffLabels>>>,
    /// The EC2 notice queue poller's families.
    pub notice_queue: NoticeQueueMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family under the `k3s_autoscaler` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("k3s_autoscaler");
        let webhook_requests = Family::default();
        registry.register("webhook_requests", "Webhook requests by outcome", webhook_requests.clone());
        let alerts_received = Family::default();
        registry.register("alerts_received", "Alerts received by kind", alerts_received.clone());
        let last_notification = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_notification_timestamp_seconds",
            "Unix time of the last accepted Alertmanager notification",
            last_notification.clone(),
        );
        let decisions = Family::default();
        registry.register("decisions", "Scaling decisions by pool, action and reason", decisions.clone());
        let operations = Family::default();
        registry.register("operations", "Finished operations by pool, kind and outcome", operations.clone());
        let operation_duration = Family::<OperationLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "operation_duration_seconds",
            "Operation duration: launch to Ready, drain start to termination",
            operation_duration.clone(),
        );
        let aws_errors = Family::default();
        registry.register("aws_errors", "AWS call errors by API and code", aws_errors.clone());
        let active_signals = Family::default();
        registry.register(
            "active_signals",
            "Active scaling signals by pool and direction",
            active_signals.clone(),
        );
        let pool_workers = Family::default();
        registry.register("pool_workers", "Managed workers by pool", pool_workers.clone());
        let unremovable_nodes = Family::default();
        registry.register(
            "unremovable_nodes",
            "Nodes that may not be drained, by pool and reason",
            unremovable_nodes.clone(),
        );
        let kube_errors = Family::default();
        registry.register(
            "kube_errors",
            "Kubernetes API call errors by call and status",
            kube_errors.clone(),
        );
        let pool_nodes = Family::default();
        registry.register(
            "pool_nodes",
            "Managed workers by pool, availability zone and capacity type",
            pool_nodes.clone(),
        );
        let lease_held = Family::default();
        registry.register("lease_held", "1 while this replica holds the pool's lease", lease_held.clone());
        let ec2_events = Family::default();
        registry.register("ec2_events", "EventBridge EC2 events by kind and outcome", ec2_events.clone());
        let interruption_stranded_pods = Counter::default();
        registry.register(
            "interruption_stranded_pods",
            "Pods still on an interrupted node when its deadline passed",
            interruption_stranded_pods.clone(),
        );
        let token_refresh_failures = Counter::default();
        registry.register(
            "token_refresh_failures",
            "Failed reads of the webhook token's SSM parameter (the tokens in force stay)",
            token_refresh_failures.clone(),
        );
        let cloudwatch_records = Family::default();
        registry.register(
            "cloudwatch_records",
            "Scaling events sent to CloudWatch Logs, by outcome",
            cloudwatch_records.clone(),
        );
        let nodes_without_pool_label = Family::default();
        registry.register(
            "nodes_without_pool_label",
            "Managed instances registered as Nodes without the pool label, as last checked",
            nodes_without_pool_label.clone(),
        );
        let alert_sync = AlertSyncMetrics::register(&mut registry);
        let repair_blocked_nodes = Family::default();
        registry.register(
            "repair_blocked_nodes",
            "Nodes due for node repair that hold local data and are left to a person, by pool",
            repair_blocked_nodes.clone(),
        );
        let capacity_backoffs = Family::default();
        registry.register(
            "capacity_backoff_seconds",
            "Seconds left on each backed-off offering (instance type, zone, market) and why",
            capacity_backoffs.clone(),
        );
        let notice_queue = NoticeQueueMetrics::register(&mut registry);
        Metrics {
            capacity_backoffs,
            backoff_series: Default::default(),
            alert_sync,
            notice_queue,
            registry,
            webhook_requests,
            alerts_received,
            last_notification,
            decisions,
            operations,
            operation_duration,
            aws_errors,
            active_signals,
            pool_workers,
            unremovable_nodes,
            kube_errors,
            pool_nodes,
            lease_held,
            ec2_events,
            interruption_stranded_pods,
            token_refresh_failures,
            cloudwatch_records,
            nodes_without_pool_label,
            repair_blocked_nodes,
        }
    }

    /// Creates the counters the health alerts watch at zero, so their first increment is an
    /// increase Prometheus can see rather than the birth of a series.
    pub fn zero_pool_series<'a>(&self, pools: impl IntoIterator<Item = &'a String>) {
        for pool in pools {
            let _ = self.repair_blocked_nodes.get_or_create(&PoolLabels { pool: pool.clone() });
            for (kind, outcomes) in [
                ("launch", &["succeeded", "failed", "join_timeout"][..]),
                ("drain", &["succeeded", "aborted", "superseded"][..]),
                ("interruption", &["drained", "stranded", "cordoned", "held"][..]),
            ] {
                for outcome in outcomes {
                    let _ =
                        self.operations.get_or_create(&OperationLabels { pool: pool.clone(), kind, outcome });
                }
            }
        }
        for outcome in ["accepted", "unauthorized", "bad_request", "unavailable"] {
            let _ = self.webhook_requests.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["sent", "failed", "dropped"] {
            let _ = self.cloudwatch_records.get_or_create(&SinkLabels { outcome });
        }
    }

    /// Sets the workers per (zone, capacity type) of `pool`; `zones` are the pool's zones, so
    /// a zone that emptied shows 0 instead of its last count.
    pub fn observe_pool_nodes<'a>(
        &self,
        pool: &str,
        zones: impl IntoIterator<Item = &'a str>,
        workers: impl IntoIterator<Item = (&'a str, &'static str)> + Clone,
    ) {
        for az in zones {
            for capacity_type in ["spot", "on-demand"] {
                let n = workers.clone().into_iter().filter(|(a, c)| *a == az && *c == capacity_type).count();
                let labels = PoolNodeLabels { pool: pool.to_string(), az: az.to_string(), capacity_type };
                self.pool_nodes.get_or_create(&labels).set(n as i64);
            }
        }
    }

    /// Shows the offerings of `pool` backed off at `now` (seconds left), dropping the series
    /// of offerings no longer backed off.
    pub fn observe_backoffs(&self, pool: &str, backoffs: &[CapacityBackoff], now: Timestamp) {
        let live: Vec<(BackoffLabels, i64)> = backoffs
            .iter()
            .filter(|b| b.until > now)
            .map(|b| {
                let labels = BackoffLabels {
                    pool: pool.to_string(),
                    instance_type: b.instance_type.clone().unwrap_or_else(|| "any".into()),
                    az: b.az.clone(),
                    market: b.market.as_str(),
                    code: if b.code.is_empty() { "capacity".into() } else { b.code.clone() },
                };
                (labels, b.until.since(now).as_secs() as i64)
            })
            .collect();
        let mut series = self.backoff_series.lock().unwrap_or_else(|e| e.into_inner());
        let previous = series.insert(pool.to_string(), live.iter().map(|(l, _)| l.clone()).collect());
        for gone in previous.unwrap_or_default().iter().filter(|l| !live.iter().any(|(k, _)| k == *l)) {
            self.capacity_backoffs.remove(gone);
        }
        for (labels, seconds) in &live {
            self.capacity_backoffs.get_or_create(labels).set(*seconds);
        }
    }

    /// Records whether this replica holds `pool`'s lease.
    pub fn set_lease_held(&self, pool: &str, held: bool) {
        self.lease_held.get_or_create(&PoolLabels { pool: pool.to_string() }).set(i64::from(held));
    }

    /// Counts a webhook request.
    pub fn webhook_request(&self, outcome: &'static str) {
        self.webhook_requests.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts an AWS error.
    pub fn aws_error(&self, api: &'static str, code: impl Into<String>) {
        self.aws_errors.get_or_create(&ApiErrorLabels { api, code: code.into() }).inc();
    }

    /// Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

fn duration_histogram() -> Histogram {
    // 1 s .. ~68 min: joins take minutes, drains up to the drain timeout.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

// === Alertmanager sync ===

/// Labels of `alert_sync_signals_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncChangeLabels {
    /// removed (resolved, silenced or inhibited in Alertmanager) or added (a lost post).
    pub change: &'static str,
}

/// What the Alertmanager sync reports (see `service::alert_sync`).
pub struct AlertSyncMetrics {
    /// 1 while no Alertmanager replica answers and signals expire by `signal_ttl` only.
    pub fallback: Gauge,
    /// Replicas that answered the last sync.
    pub replicas_up: Gauge,
    /// 1 while a silence mutes a scaling alert of the pool.
    pub pool_paused: Family<PoolLabels, Gauge>,
    /// Stored signals the sync removed or added.
    pub signals: Family<SyncChangeLabels, Counter>,
}

impl AlertSyncMetrics {
    fn register(registry: &mut Registry) -> Self {
        let fallback = Gauge::default();
        registry.register(
            "alertmanager_fallback",
            "1 while no Alertmanager replica answers: signals expire by signal_ttl only",
            fallback.clone(),
        );
        let replicas_up = Gauge::default();
        registry.register(
            "alertmanager_replicas_up",
            "Alertmanager replicas that answered the last sync",
            replicas_up.clone(),
        );
        let pool_paused = Family::default();
        registry.register(
            "pool_paused",
            "1 while a silence in Alertmanager pauses the pool's scaling",
            pool_paused.clone(),
        );
        let signals: Family<SyncChangeLabels, Counter> = Family::default();
        registry.register(
            "alert_sync_signals",
            "Stored signals the Alertmanager sync removed or added",
            signals.clone(),
        );
        for change in ["removed", "added"] {
            let _ = signals.get_or_create(&SyncChangeLabels { change });
        }
        AlertSyncMetrics { fallback, replicas_up, pool_paused, signals }
    }

    /// Sets every pool's paused gauge: 1 for the `paused` ones, 0 for the others.
    pub fn set_paused<'a>(&self, pools: impl IntoIterator<Item = &'a String>, paused: impl Fn(&str) -> bool) {
        for pool in pools {
            let labels = PoolLabels { pool: pool.clone() };
            self.pool_paused.get_or_create(&labels).set(i64::from(paused(pool)));
        }
    }
}

// === EC2 notice queue ===

/// Labels of `notice_queue_deleted_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueDeletedLabels {
    /// The intake's outcome (handled, upgraded, duplicate, ignored, unverified, capped,
    /// dry_run) or `malformed` (not an EC2 event).
    pub reason: &'static str,
}

/// Labels of `notice_queue_failed_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueFailedLabels {
    /// receive (the queue could not be read), handle (the message stays for its next
    /// delivery) or delete (handled, but it will come back as a repeat).
    pub stage: &'static str,
}

/// What the notice poller reports (see `service::notice_poller`).
pub struct NoticeQueueMetrics {
    /// Messages received from the queue (each delivery counts).
    pub received: Counter,
    /// Messages deleted, by why.
    pub deleted: Family<QueueDeletedLabels, Counter>,
    /// Failed receives, handlings and deletes.
    pub failed: Family<QueueFailedLabels, Counter>,
}

impl NoticeQueueMetrics {
    fn register(registry: &mut Registry) -> Self {
        let received = Counter::default();
        registry.register(
            "notice_queue_received",
            "Messages received from the EC2 notice queue (each delivery counts)",
            received.clone(),
        );
        let deleted = Family::default();
        registry.register(
            "notice_queue_deleted",
            "EC2 notice queue messages deleted, by reason (the intake's outcome, or malformed)",
            deleted.clone(),
        );
        let failed: Family<QueueFailedLabels, Counter> = Family::default();
        registry.register(
            "notice_queue_failed",
            "EC2 notice queue receives, handlings and deletes that failed, by stage",
            failed.clone(),
        );
        for stage in ["receive", "handle", "delete"] {
            let _ = failed.get_or_create(&QueueFailedLabels { stage });
        }
        NoticeQueueMetrics { received, deleted, failed }
    }
}
