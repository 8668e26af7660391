//! Builds the AWS SDK configuration from ours: region, optional endpoint (moto), timeouts.

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::AwsConfig;

/// Loads credentials the standard way (env, profile, IMDS / pod identity) and applies our
/// region, endpoint override and per-call timeouts.
pub async fn sdk_config(aws: &AwsConfig) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(aws.call_timeout)
        .operation_attempt_timeout(aws.call_timeout)
        .operation_timeout(aws.call_timeout * 2)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(aws.region.clone()))
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(3));
    if let Some(url) = &aws.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Before the configuration is known (it may come from SSM): the standard chain with the
/// region and endpoint the file layers give, and fixed short timeouts.
pub async fn bootstrap_sdk_config(region: Option<String>, endpoint: Option<String>) -> SdkConfig {
    let call_timeout = std::time::Duration::from_secs(5);
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
