//! The Alertmanager edge: its API v2, read once per sweep from every replica.
//!
//! Plain HTTP/1.1 through hyper (already in the tree for the AWS and Kubernetes clients), so
//! the sync adds no HTTP stack of its own. Anything but a 2xx answer carrying the API's JSON
//! within the timeout is an error: the truth rule counts it as "unreachable", never as "no
//! alerts".

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::AlertmanagerConfig;
use crate::core::sync::{AlertState, ApiAlert, ReplicaAnswer};
use crate::core::text::{NAME_MAX as MAX_TEXT, bounded};

/// The query of every sync: all our alerts (active, muted and unprocessed), one GET per
/// replica. Muted ones are how a pause is seen; the truth rule sorts them out.
pub const ALERTS_QUERY: &str = "/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true\
&filter=autoscaler%3D~%22scale-up%7Cscale-down%22";

/// Largest answer read; more is an error, not a partial list.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Why a replica could not be read.
#[derive(Debug, Error)]
pub enum AlertSourceError {
    /// No connection or a broken one.
    #[error("{url}: cannot connect: {message}")]
    Unreachable {
        /// The replica.
        url: String,
        /// The error.
        message: String,
    },
    /// No complete answer within the timeout.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// The replica.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// A non-2xx status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The replica.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A body that is not the API's JSON (an HTML error page, a truncated answer, …).
    #[error("{url}: not Alertmanager's API answer: {message}")]
    Invalid {
        /// The replica.
        url: String,
        /// What was wrong.
        message: String,
    },
}

impl AlertSourceError {
    /// Low-cardinality label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            AlertSourceError::Unreachable { .. } => "unreachable",
            AlertSourceError::Timeout { .. } => "timeout",
            AlertSourceError::Status { .. } => "status",
            AlertSourceError::Invalid { .. } => "invalid",
        }
    }
}

/// A silence, as much of it as `status` shows (texts bounded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SilenceInfo {
    /// Silence id.
    pub id: String,
    /// Who created it.
    pub created_by: String,
    /// Why.
    pub comment: String,
    /// When it ends (RFC 3339, as Alertmanager wrote it).
    pub ends_at: String,
    /// active, pending or expired.
    pub state: String,
}

/// Reads Alertmanager's view of our alerts.
#[async_trait]
pub trait AlertSource: Send + Sync {
    /// Every replica's answer to [`ALERTS_QUERY`], asked in parallel, in config order.
    async fn alerts(&self) -> Vec<ReplicaAnswer>;
    /// The silences with these ids, from the first replica that answers.
    async fn silences(&self, ids: &[String]) -> Result<Vec<SilenceInfo>, AlertSourceError>;
}

/// The real [`AlertSource`]: HTTP to each configured replica.
pub struct HttpAlertSource {
    client: Client<HttpConnector, Empty<Bytes>>,
    urls: Vec<String>,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl HttpAlertSource {
    /// A client for the configured replicas.
    pub fn new(config: &AlertmanagerConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let authorization = config.authorization().and_then(|value| {
            let mut header = HeaderValue::from_str(&value).ok()?;
            header.set_sensitive(true);
            Some(header)
        });
        HttpAlertSource {
            client,
            urls: config.urls.iter().map(|u| u.trim_end_matches('/').to_string()).collect(),
            authorization,
            timeout: config.timeout,
        }
    }

    /// GETs `path` of replica `base` within the timeout: the body of a 2xx answer.
    async fn get(&self, base: &str, path: &str) -> Result<Bytes, AlertSourceError> {
        let url = base.to_string();
        match tokio::time::timeout(self.timeout, self.get_unbounded(base, path)).await {
            Ok(result) => result,
            Err(_) => Err(AlertSourceError::Timeout { url, timeout: self.timeout }),
        }
    }

    async fn get_unbounded(&self, base: &str, path: &str) -> Result<Bytes, AlertSourceError> {
        let url = base.to_string();
        let unreachable = |message: String| AlertSourceError::Unreachable {
            url: url.clone(),
            message: bounded(&message, MAX_TEXT),
        };
        let mut request = hyper::Request::get(format!("{base}{path}"))
            .header(ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| unreachable(format!("bad request: {e}")))?;
        if let Some(value) = &self.authorization {
            request.headers_mut().insert(AUTHORIZATION, value.clone());
        }
        let response = self.client.request(request).await.map_err(|e| unreachable(error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(AlertSourceError::Status { url, status: status.as_u16() });
        }
        let body = Limited::new(response.into_body(), MAX_BODY).collect().await.map_err(|e| {
            AlertSourceError::Invalid { url: url.clone(), message: bounded(&e.to_string(), MAX_TEXT) }
        })?;
        Ok(body.to_bytes())
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait]
impl AlertSource for HttpAlertSource {
    async fn alerts(&self) -> Vec<ReplicaAnswer> {
        join_all(self.urls.iter().map(|url| async move {
            let body = self.get(url, ALERTS_QUERY).await?;
            parse_alerts(url, &body)
        }))
        .await
        .into_iter()
        .map(|answer| answer.map_err(|e: AlertSourceError| bounded(&e.to_string(), MAX_TEXT)))
        .collect()
    }

    async fn silences(&self, ids: &[String]) -> Result<Vec<SilenceInfo>, AlertSourceError> {
        let mut last = None;
        for url in &self.urls {
            match self.get(url, "/api/v2/silences").await.and_then(|body| parse_silences(url, &body)) {
                Ok(all) => return Ok(all.into_iter().filter(|s| ids.contains(&s.id)).collect()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| AlertSourceError::Unreachable {
            url: String::new(),
            message: "no Alertmanager configured".into(),
        }))
    }
}

// === the API's JSON (api/v2/openapi.yaml: gettableAlerts, gettableSilences) ===

#[derive(Deserialize)]
struct GettableAlert {
    fingerprint: String,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    status: GettableStatus,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableStatus {
    state: String,
    #[serde(default)]
    silenced_by: Vec<String>,
    #[serde(default)]
    inhibited_by: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableSilence {
    id: String,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
    ends_at: String,
    status: SilenceStatus,
}

#[derive(Deserialize)]
struct SilenceStatus {
    state: String,
}

/// Parses a `/api/v2/alerts` answer whole: one alert that is not as the API defines it makes
/// the whole answer invalid, so a garbled list never reads as "these alerts ended".
pub fn parse_alerts(url: &str, body: &[u8]) -> Result<Vec<ApiAlert>, AlertSourceError> {
    let invalid = |message: String| AlertSourceError::Invalid {
        url: url.to_string(),
        message: bounded(&message, MAX_TEXT),
    };
    let alerts: Vec<GettableAlert> = serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    alerts
        .into_iter()
        .map(|alert| {
            if alert.fingerprint.is_empty() {
                return Err(invalid("an alert without fingerprint".into()));
            }
            let state = match alert.status.state.as_str() {
                "active" => AlertState::Active,
                "suppressed" => AlertState::Suppressed,
                "unprocessed" => AlertState::Unprocessed,
                other => return Err(invalid(format!("unknown alert state {other:?}"))),
            };
            Ok(ApiAlert {
                fingerprint: alert.fingerprint,
                labels: alert.labels,
                annotations: alert.annotations,
                state,
                silenced_by: alert.status.silenced_by,
                inhibited_by: alert.status.inhibited_by,
            })
        })
        .collect()
}

fn parse_silences(url: &str, body: &[u8]) -> Result<Vec<SilenceInfo>, AlertSourceError> {
    let silences: Vec<GettableSilence> = serde_json::from_slice(body).map_err(|e| {
        AlertSourceError::Invalid { url: url.to_string(), message: bounded(&e.to_string(), MAX_TEXT) }
    })?;
    Ok(silences
        .into_iter()
        .map(|s| SilenceInfo {
            id: bounded(&s.id, 64),
            created_by: bounded(&s.created_by, MAX_TEXT),
            comment: bounded(&s.comment, MAX_TEXT),
            ends_at: bounded(&s.ends_at, 64),
            state: bounded(&s.status.state, 16),
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;
