//! [`Compute`] on EC2: RunInstances from the pool's launch template, tag-scoped describe and
//! terminate. Only instances tagged `managed-by` + `cluster` are ever returned or terminated.

pub mod compute;
#[cfg(test)]
pub(crate) mod fake;

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::config::interceptors::InterceptorContext;
use aws_sdk_ec2::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::run_instances::RunInstancesError;
use aws_sdk_ec2::types::{
    Filter, Instance, InstanceInterruptionBehavior, InstanceLifecycleType, InstanceMarketOptionsRequest,
    InstanceStateName, LaunchTemplateSpecification, MarketType, ResourceType, SpotInstanceType,
    SpotMarketOptions, Tag, TagSpecification,
};

use self::compute::{
    CAPACITY_ERROR_CODES, Compute, ComputeError, InstanceState, MANAGED_BY_VALUE, ManagedInstance, RunSpec,
    TAG_CLUSTER, TAG_MANAGED_BY, TAG_OP_ID, TAG_POOL,
};
use crate::core::model::Market;
use crate::core::time::Timestamp;

/// EC2-backed compute for one cluster.
#[derive(Clone)]
pub struct Ec2Compute {
    client: Client,
    cluster_id: String,
}

impl Ec2Compute {
    /// Compute for `cluster_id`.
    pub fn new(client: Client, cluster_id: impl Into<String>) -> Self {
        Self { client, cluster_id: cluster_id.into() }
    }

    /// Builds the EC2 client from the shared SDK config, without retries on capacity errors:
    /// EC2 answers them with 5xx, which the SDK would retry with backoff, delaying the
    /// on-demand fallback by seconds for an answer that will not change.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, cluster_id: impl Into<String>) -> Self {
        let config = aws_sdk_ec2::config::Builder::from(sdk).retry_classifier(NoRetryOnCapacity).build();
        Self::new(Client::from_conf(config), cluster_id)
    }

    fn managed_filters(&self) -> Vec<Filter> {
        vec![
            Filter::builder().name(format!("tag:{TAG_MANAGED_BY}")).values(MANAGED_BY_VALUE).build(),
            Filter::builder().name(format!("tag:{TAG_CLUSTER}")).values(&self.cluster_id).build(),
        ]
    }

    async fn describe(
        &self,
        mut filters: Vec<Filter>,
        states: &[&str],
    ) -> Result<Vec<ManagedInstance>, ComputeError> {
        filters.extend(self.managed_filters());
        filters.push(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(states.iter().map(|s| s.to_string()).collect()))
                .build(),
        );
        let mut found = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| classify("DescribeInstances", e))?;
            for reservation in page.reservations() {
                found.extend(reservation.instances().iter().filter_map(|i| to_managed(i, &self.cluster_id)));
            }
            match page.next_token {
                Some(token) if !token.is_empty() => next = Some(token),
                _ => return Ok(found),
            }
        }
    }
}

const LIVE_STATES: &[&str] = &["pending", "running"];

#[async_trait]
impl Compute for Ec2Compute {
    async fn list_pool(&self, pool: &str) -> Result<Vec<ManagedInstance>, ComputeError> {
        let by_pool = Filter::builder().name(format!("tag:{TAG_POOL}")).values(pool).build();
        self.describe(vec![by_pool], LIVE_STATES).await
    }

    async fn find_by_op(&self, op_id: &str) -> Result<Vec<ManagedInstance>, ComputeError> {
        let by_op = Filter::builder().name(format!("tag:{TAG_OP_ID}")).values(op_id).build();
        self.describe(vec![by_op], &["pending", "running", "stopping", "stopped", "shutting-down"]).await
    }

    async fn launch(&self, spec: &RunSpec) -> Result<Vec<ManagedInstance>, ComputeError> {
        let template = if spec.launch_template.starts_with("lt-") {
            LaunchTemplateSpecification::builder().launch_template_id(&spec.launch_template)
        } else {
            LaunchTemplateSpecification::builder().launch_template_name(&spec.launch_template)
        }
        .version(&spec.launch_template_version)
        .build();
        let tags: Vec<Tag> = [
            (TAG_MANAGED_BY, MANAGED_BY_VALUE.to_string()),
            (TAG_CLUSTER, self.cluster_id.clone()),
            (TAG_POOL, spec.pool.clone()),
            (TAG_OP_ID, spec.op_id.clone()),
            ("Name", format!("{}-{}", self.cluster_id, spec.pool)),
        ]
        .into_iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect();
        let tag_spec = |resource| {
            TagSpecification::builder().resource_type(resource).set_tags(Some(tags.clone())).build()
        };
        let mut request = self
            .client
            .run_instances()
            .launch_template(template)
            .subnet_id(&spec.subnet_id)
            .min_count(1)
            .max_count(spec.count as i32)
            .client_token(&spec.client_token)
            .tag_specifications(tag_spec(ResourceType::Instance))
            .tag_specifications(tag_spec(ResourceType::Volume));
        if spec.market == Market::Spot {
            request = request.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::OneTime)
                            .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                            .build(),
                    )
                    .build(),
            );
        }
        let out = request.send().await.map_err(|e| classify("RunInstances", e))?;
        Ok(out
            .instances()
            .iter()
            .filter_map(|i| {
                to_managed(i, &self.cluster_id).map(|mut m| {
                    // The answer may omit the lifecycle; we know what we asked for.
                    m.market = spec.market;
                    m
                })
            })
            .collect())
    }

    async fn terminate(&self, instance_ids: &[String]) -> Result<(), ComputeError> {
        if instance_ids.is_empty() {
            return Ok(());
        }
        let ids = Filter::builder().name("instance-id").set_values(Some(instance_ids.to_vec())).build();
        let managed = self
            .describe(
                vec![ids],
                &["pending", "running", "stopping", "stopped", "shutting-down", "terminated"],
            )
            .await?;
        if let Some(foreign) = instance_ids.iter().find(|id| !managed.iter().any(|m| &m.instance_id == *id)) {
            return Err(ComputeError::NotManaged(foreign.clone()));
        }
        self.client
            .terminate_instances()
            .set_instance_ids(Some(instance_ids.to_vec()))
            .send()
            .await
            .map_err(|e| classify("TerminateInstances", e))?;
        Ok(())
    }

    async fn spot_request_status(&self, instance_id: &str) -> Result<Option<String>, ComputeError> {
        let by_instance = Filter::builder().name("instance-id").values(instance_id).build();
        let out = self
            .client
            .describe_spot_instance_requests()
            .filters(by_instance)
            .send()
            .await
            .map_err(|e| classify("DescribeSpotInstanceRequests", e))?;
        Ok(out
            .spot_instance_requests()
            .iter()
            .filter(|r| r.instance_id() == Some(instance_id))
            .find_map(|r| r.status().and_then(|s| s.code()).map(str::to_string)))
    }
}

fn tag<'a>(instance: &'a Instance, key: &str) -> Option<&'a str> {
    instance.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// Converts an EC2 instance, or `None` if it is not managed for `cluster_id` (belt and braces
/// on top of the describe filters).
fn to_managed(instance: &Instance, cluster_id: &str) -> Option<ManagedInstance> {
    if tag(instance, TAG_MANAGED_BY) != Some(MANAGED_BY_VALUE)
        || tag(instance, TAG_CLUSTER) != Some(cluster_id)
    {
        return None;
    }
    let state = match instance.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Pending) => InstanceState::Pending,
        Some(InstanceStateName::Running) => InstanceState::Running,
        _ => InstanceState::Gone,
    };
    let market = match instance.instance_lifecycle() {
        Some(InstanceLifecycleType::Spot) => Market::Spot,
        _ => Market::OnDemand,
    };
    let launched_at = instance
        .launch_time()
        .and_then(|t| t.to_millis().ok())
        .map(|ms| Timestamp::from_millis(ms.max(0) as u64))
        .unwrap_or_default();
    Some(ManagedInstance {
        instance_id: instance.instance_id()?.to_string(),
        az: instance.placement().and_then(|p| p.availability_zone()).unwrap_or_default().to_string(),
        market,
        launched_at,
        state,
        pool: tag(instance, TAG_POOL).unwrap_or_default().to_string(),
        op_id: tag(instance, TAG_OP_ID).map(str::to_string),
    })
}

/// Sorts an SDK error by what the caller can do: capacity, definitive rejection, or unknown.
fn classify<E>(api: &'static str, error: SdkError<E, HttpResponse>) -> ComputeError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let message = DisplayErrorContext(&error).to_string();
    let code = error.code().map(str::to_string);
    match (&error, code) {
        (SdkError::ServiceError(_), Some(code)) if CAPACITY_ERROR_CODES.contains(&code.as_str()) => {
            ComputeError::Capacity { api, message: error.message().unwrap_or_default().to_string(), code }
        }
        (SdkError::ServiceError(service), Some(code))
            if service.raw().status().is_client_error() && !is_throttling(&code) =>
        {
            ComputeError::Rejected { api, message: error.message().unwrap_or_default().to_string(), code }
        }
        _ => ComputeError::Unavailable { api, message },
    }
}

fn is_throttling(code: &str) -> bool {
    matches!(code, "RequestLimitExceeded" | "Throttling" | "ThrottlingException")
}

/// Forbids retrying RunInstances when EC2 says it has no capacity.
#[derive(Debug)]
struct NoRetryOnCapacity;

impl ClassifyRetry for NoRetryOnCapacity {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(error)) = ctx.output_or_error() else { return RetryAction::NoActionIndicated };
        let code = error
            .as_operation_error()
            .and_then(|e| e.downcast_ref::<RunInstancesError>())
            .and_then(|e| e.code());
        match code {
            Some(code) if CAPACITY_ERROR_CODES.contains(&code) => RetryAction::RetryForbidden,
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "NoRetryOnCapacity"
    }
}
