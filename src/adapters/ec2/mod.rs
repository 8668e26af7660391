//! [`Compute`] on EC2: CreateFleet `instant` from the pool's launch template, tag-scoped
//! describe and terminate (per instance: an instant fleet is never deleted, since deleting it
//! terminates its instances). Only instances tagged `managed-by` + `cluster` are ever returned or terminated.

pub mod compute;
#[cfg(test)]
pub(crate) mod fake;

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::config::interceptors::InterceptorContext;
use aws_sdk_ec2::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::create_fleet::CreateFleetError;
use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, Filter, FleetLaunchTemplateConfigRequest, FleetLaunchTemplateOverridesRequest,
    FleetLaunchTemplateSpecificationRequest, FleetOnDemandAllocationStrategy, FleetType, Instance,
    InstanceLifecycleType, InstanceStateName, InstanceType, OnDemandOptionsRequest, ResourceType,
    SpotAllocationStrategy, SpotInstanceInterruptionBehavior, SpotOptionsRequest, Tag, TagSpecification,
    TargetCapacitySpecificationRequest,
};

use self::compute::{
    CAPACITY_ERROR_CODES, Compute, ComputeError, FleetAnswer, FleetSpec, InstanceState, MANAGED_BY_VALUE,
    ManagedInstance, OfferingError, TAG_CLUSTER, TAG_MANAGED_BY, TAG_OP_ID, TAG_POOL,
};
use crate::core::model::Market;
use crate::core::text::bounded;
use crate::core::time::Timestamp;

/// Longest EC2 error code kept from a fleet answer.
const ERROR_CODE_MAX: usize = 64;
/// Longest EC2 error message kept from a fleet answer.
const ERROR_MESSAGE_MAX: usize = 256;

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

    /// The CreateFleet `instant` request of `spec`: what `launch` sends, and what `doctor`
    /// sends with DryRun so that IAM judges the very same request (template, subnets, types,
    /// tags, market).
    fn fleet_request(
        &self,
        spec: &FleetSpec,
    ) -> aws_sdk_ec2::operation::create_fleet::builders::CreateFleetFluentBuilder {
        let template = if spec.launch_template.starts_with("lt-") {
            FleetLaunchTemplateSpecificationRequest::builder().launch_template_id(&spec.launch_template)
        } else {
            FleetLaunchTemplateSpecificationRequest::builder().launch_template_name(&spec.launch_template)
        }
        .version(&spec.launch_template_version)
        .build();
        let overrides: Vec<FleetLaunchTemplateOverridesRequest> = spec
            .overrides
            .iter()
            .map(|o| {
                FleetLaunchTemplateOverridesRequest::builder()
                    .set_instance_type(o.instance_type.as_deref().map(InstanceType::from))
                    .subnet_id(&o.subnet_id)
                    .build()
            })
            .collect();
        let config = FleetLaunchTemplateConfigRequest::builder()
            .launch_template_specification(template)
            .set_overrides(Some(overrides))
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
        let capacity_type = match spec.market {
            Market::Spot => DefaultTargetCapacityType::Spot,
            Market::OnDemand => DefaultTargetCapacityType::OnDemand,
        };
        self.client
            .create_fleet()
            .r#type(FleetType::Instant)
            .client_token(&spec.client_token)
            .launch_template_configs(config)
            .target_capacity_specification(
                TargetCapacitySpecificationRequest::builder()
                    .total_target_capacity(spec.count as i32)
                    .default_target_capacity_type(capacity_type)
                    .build(),
            )
            .spot_options(
                SpotOptionsRequest::builder()
                    .allocation_strategy(SpotAllocationStrategy::PriceCapacityOptimized)
                    .instance_interruption_behavior(SpotInstanceInterruptionBehavior::Terminate)
                    .build(),
            )
            .on_demand_options(
                OnDemandOptionsRequest::builder()
                    .allocation_strategy(FleetOnDemandAllocationStrategy::LowestPrice)
                    .build(),
            )
            .tag_specifications(tag_spec(ResourceType::Instance))
            .tag_specifications(tag_spec(ResourceType::Volume))
    }

    /// CreateFleet of `spec` with DryRun: `Ok` when EC2 answers DryRunOperation (the call
    /// would be permitted), else the error (UnauthorizedOperation when IAM denies it).
    pub async fn dry_run_launch(&self, spec: &FleetSpec) -> Result<(), ComputeError> {
        dry_run_answer(self.fleet_request(spec).dry_run(true).send().await.map(|_| ()), "CreateFleet")
    }

    /// TerminateInstances of one instance with DryRun, as [`Ec2Compute::dry_run_launch`].
    pub async fn dry_run_terminate(&self, instance_id: &str) -> Result<(), ComputeError> {
        let request = self.client.terminate_instances().instance_ids(instance_id).dry_run(true);
        dry_run_answer(request.send().await.map(|_| ()), "TerminateInstances")
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

    async fn launch(&self, spec: &FleetSpec) -> Result<FleetAnswer, ComputeError> {
        let out = self.fleet_request(spec).send().await.map_err(|e| classify("CreateFleet", e))?;
        // The answer names instance ids, types and lifecycle, not tags: the launched instances
        // carry the tags asked for, so they are this pool's.
        let instances = out
            .instances()
            .iter()
            .flat_map(|group| {
                let instance_type = group.instance_type().map(|t| t.as_str().to_string());
                group.instance_ids().iter().map(move |id| ManagedInstance {
                    instance_id: id.clone(),
                    az: spec.az.clone(),
                    market: spec.market,
                    launched_at: Timestamp::default(),
                    state: InstanceState::Pending,
                    pool: spec.pool.clone(),
                    op_id: Some(spec.op_id.clone()),
                    instance_type: instance_type.clone(),
                })
            })
            .collect();
        let errors = out
            .errors()
            .iter()
            .map(|e| OfferingError {
                instance_type: e
                    .launch_template_and_overrides()
                    .and_then(|l| l.overrides())
                    .and_then(|o| o.instance_type())
                    .map(|t| t.as_str().to_string()),
                code: bounded(e.error_code().unwrap_or("unknown"), ERROR_CODE_MAX),
                message: bounded(e.error_message().unwrap_or_default(), ERROR_MESSAGE_MAX),
            })
            .collect();
        Ok(FleetAnswer { instances, errors })
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
        instance_type: instance.instance_type().map(|t| t.as_str().to_string()),
    })
}

/// A DryRun call's answer: EC2 reports "would have succeeded" as the error DryRunOperation.
fn dry_run_answer<E>(
    answer: Result<(), SdkError<E, HttpResponse>>,
    api: &'static str,
) -> Result<(), ComputeError>
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    match answer {
        Err(e) if e.code() == Some("DryRunOperation") => Ok(()),
        Err(e) => Err(classify(api, e)),
        Ok(()) => Err(ComputeError::Rejected {
            api,
            code: "NoDryRun".into(),
            message: "the endpoint ignored DryRun and acted".into(),
        }),
    }
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

/// Forbids retrying CreateFleet when EC2 refuses the whole request for lack of capacity
/// (capacity per offering comes back in a successful answer, which is never retried).
#[derive(Debug)]
struct NoRetryOnCapacity;

impl ClassifyRetry for NoRetryOnCapacity {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(error)) = ctx.output_or_error() else { return RetryAction::NoActionIndicated };
        let code = error
            .as_operation_error()
            .and_then(|e| e.downcast_ref::<CreateFleetError>())
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
