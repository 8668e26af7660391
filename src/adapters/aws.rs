//! Builds the AWS SDK configuration from ours: region, optional endpoint (moto), timeouts.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::AwsConfig;

/// How long an SSM read may take before the configuration (and its `call_timeout`) is known.
const BOOTSTRAP_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Loads credentials the standard way (env, profile, IMDS / pod identity) and applies our
/// region, endpoint override and per-call timeouts.
pub async fn sdk_config(aws: &AwsConfig) -> SdkConfig {
    load(Some(aws.region.clone()), aws.endpoint_url.clone(), aws.call_timeout).await
}

/// Before the configuration is known (it may come from SSM): the standard chain with the
/// region and endpoint the file layers give, and fixed short timeouts.
pub async fn bootstrap_sdk_config(region: Option<String>, endpoint: Option<String>) -> SdkConfig {
    load(region, endpoint, BOOTSTRAP_CALL_TIMEOUT).await
}

/// The standard chain with per-call timeouts, three attempts, and the region and endpoint
/// when given (else the SDK's own chain decides, e.g. `AWS_REGION`).
async fn load(region: Option<String>, endpoint: Option<String>, call_timeout: Duration) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(call_timeout)
        .operation_attempt_timeout(call_timeout)
        .operation_timeout(call_timeout * 2)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(3));
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
