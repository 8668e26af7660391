//! End-to-end tests of the real binary against moto's server (real aws-sdk-rust clients
//! through an endpoint URL) and the project's fault-injecting proxy. One test binary, so the
//! AWS SDK is linked once.

use k3s_autoscaler_testkit as support;

mod alert_sync;
mod alertmanager_retry;
mod bad_input;
mod cli;
mod cloudwatch;
mod crash_recovery;
mod doctor;
mod drain;
mod dry_run;
mod duplicates;
mod fleet;
mod http_limits;
mod interruption;
mod join;
mod kube_api_semantics;
mod kube_cache;
mod notice_queue;
mod pipeline_e2e;
mod pool_rules;
mod repair;
mod replay;
mod signals;
mod spot_fallback;
mod ssm_config;
mod stack;
mod store_outage;
