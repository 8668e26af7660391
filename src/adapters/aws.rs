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
