//! SSM Parameter Store: where the stack writes the autoscaler's settings
//! (`/k3s-autoscaler/<cluster>/config`, a String of TOML) and where the webhook token lives
//! (`/k3s-autoscaler/<cluster>/webhook-token`, a SecureString). [`Parameters`] is what the
//! config loader and the token refresher need; [`SsmParameters`] is the real one.

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ssm::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use thiserror::Error;

use crate::core::text::{REASON_MAX, bounded};

#[cfg(test)]
pub(crate) mod fake;

/// Largest value accepted: an advanced-tier parameter's limit (a standard one holds 4 KB).
pub const VALUE_MAX: usize = 8 * 1024;

/// Why a parameter could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParameterError {
    /// No such parameter (or no permission to know it exists).
    #[error("SSM parameter {name} does not exist: create it (docs/quickstart.md) or fix the name")]
    NotFound {
        /// The parameter.
        name: String,
    },
    /// SSM refused or did not answer.
    #[error("SSM parameter {name} could not be read ({code}): {message}")]
    Unavailable {
        /// The parameter.
        name: String,
        /// SSM's error code, or `unavailable` when no answer came.
        code: String,
        /// What went wrong (bounded).
        message: String,
    },
    /// The value is larger than any parameter can be: not a value we wrote.
    #[error("SSM parameter {name} holds {len} bytes, more than the {VALUE_MAX} a parameter can")]
    TooLarge {
        /// The parameter.
        name: String,
        /// Its length.
        len: usize,
    },
}

/// What the config loader and the token refresher need of Parameter Store.
#[async_trait]
pub trait Parameters: Send + Sync {
    /// The value of `name`, decrypted when it is a SecureString.
    async fn get(&self, name: &str) -> Result<String, ParameterError>;
}

/// The real Parameter Store, through aws-sdk-ssm.
pub struct SsmParameters {
    client: aws_sdk_ssm::Client,
}

impl SsmParameters {
    /// A client on the shared SDK configuration (region, endpoint, timeouts).
    pub fn new(sdk: &SdkConfig) -> Self {
        SsmParameters { client: aws_sdk_ssm::Client::new(sdk) }
    }
}

#[async_trait]
impl Parameters for SsmParameters {
    async fn get(&self, name: &str) -> Result<String, ParameterError> {
        let out = self.client.get_parameter().name(name).with_decryption(true).send().await.map_err(|e| {
            if e.as_service_error().is_some_and(|s| s.is_parameter_not_found()) {
                return ParameterError::NotFound { name: bounded(name, REASON_MAX) };
            }
            ParameterError::Unavailable {
                name: bounded(name, REASON_MAX),
                code: e.code().unwrap_or("unavailable").to_string(),
                message: bounded(&unavailable_message(&e), REASON_MAX),
            }
        })?;
        let value = out.parameter.and_then(|p| p.value).unwrap_or_default();
        if value.len() > VALUE_MAX {
            return Err(ParameterError::TooLarge { name: bounded(name, REASON_MAX), len: value.len() });
        }
        Ok(value)
    }
}

/// Parameter Store reached only when first asked (most configurations name no parameter),
/// with the region and endpoint of the file layers: the full configuration, which may itself
/// come from a parameter, is not known yet.
pub struct LazySsmParameters {
    region: Option<String>,
    endpoint: Option<String>,
    client: tokio::sync::OnceCell<SsmParameters>,
}

impl LazySsmParameters {
    /// `None` leaves the region (or the endpoint) to the AWS SDK's own chain.
    pub fn new(region: Option<String>, endpoint: Option<String>) -> Self {
        LazySsmParameters { region, endpoint, client: tokio::sync::OnceCell::new() }
    }
}

#[async_trait]
impl Parameters for LazySsmParameters {
    async fn get(&self, name: &str) -> Result<String, ParameterError> {
        let client = self
            .client
            .get_or_init(|| async {
                SsmParameters::new(
                    &crate::adapters::aws::bootstrap_sdk_config(self.region.clone(), self.endpoint.clone())
                        .await,
                )
            })
            .await;
        client.get(name).await
    }
}

fn unavailable_message<E: std::error::Error + ProvideErrorMetadata + 'static, R: std::fmt::Debug>(
    error: &SdkError<E, R>,
) -> String {
    error.message().map_or_else(|| DisplayErrorContext(error).to_string(), str::to_string)
}
