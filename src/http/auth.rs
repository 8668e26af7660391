//! Webhook credentials: bearer tokens (Alertmanager `authorization`) and/or basic auth,
//! compared in constant time, checked before the body is read. The EC2 notices route has
//! tokens of its own: a token of one route is refused on the other.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::config::AuthConfig;

/// Rejects requests to `/v1/alerts` without valid credentials with 401.
pub(super) async fn require_credentials(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    guard(&state, request, next, authorized).await
}

/// Rejects requests to `/v1/events/ec2` without one of the notices tokens with 401.
pub(super) async fn require_events_credentials(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    guard(&state, request, next, events_authorized).await
}

async fn guard(
    state: &AppState,
    request: Request,
    next: Next,
    check: fn(&AuthConfig, Option<&str>) -> bool,
) -> Result<Response, ApiError> {
    let header = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !check(&state.service.config().auth, header) {
        state.service.metrics().webhook_request("unauthorized");
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(request).await)
}

/// Whether the header carries one of the notices route's bearer tokens (basic auth is not
/// offered there: EventBridge sends an API key header).
pub(crate) fn events_authorized(auth: &AuthConfig, header: Option<&str>) -> bool {
    match (bearer(header), &auth.events_token) {
        (Some(given), Some(tokens)) => tokens.accepts(given.as_bytes()),
        _ => false,
    }
}

fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, credentials) = header?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim())
}

fn equal(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

/// Whether the `Authorization` header matches a configured credential.
pub(crate) fn authorized(auth: &AuthConfig, header: Option<&str>) -> bool {
    let Some((scheme, credentials)) = header.and_then(|h| h.trim().split_once(' ')) else {
        return false;
    };
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return auth.bearer_token.as_ref().is_some_and(|tokens| tokens.accepts(credentials.as_bytes()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let (Some(user), Some(password)) = (&auth.basic_username, &auth.basic_password) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
            return false;
        };
        let Some(split) = decoded.iter().position(|b| *b == b':') else {
            return false;
        };
        let (given_user, given_password) = (&decoded[..split], &decoded[split + 1..]);
        // Evaluate both comparisons so timing does not reveal which one failed.
        let user_ok = equal(given_user, user.as_bytes());
        let password_ok = equal(given_password, password.expose().as_bytes());
        return user_ok & password_ok;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::secrets::TokenFile;

    /// Tokens loaded from a file that is then removed (a vanished file keeps the last tokens).
    fn tokens(text: &str) -> TokenFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, text).unwrap();
        TokenFile::load(&path).unwrap()
    }

    fn auth(bearer: Option<&str>, basic: Option<(&str, &str)>) -> AuthConfig {
        AuthConfig {
            bearer_token: bearer.map(tokens),
            basic_username: basic.map(|(u, _)| u.to_string()),
            basic_password: basic.map(|(_, p)| Secret::new(p)),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn each_route_accepts_only_its_own_tokens() {
        let a =
            AuthConfig { events_token: Some(tokens("ev\n")), ..auth(Some("tok\nnext"), Some(("am", "pw"))) };
        assert!(authorized(&a, Some("Bearer tok")) && authorized(&a, Some("Bearer next")));
        assert!(!authorized(&a, Some("Bearer ev")), "the notices token does not post alerts");
        assert!(events_authorized(&a, Some("Bearer ev")) && events_authorized(&a, Some("bearer  ev ")));
        for other in ["Bearer tok", "Bearer next", &basic("am", "pw"), "Bearer", "ev"] {
            assert!(!events_authorized(&a, Some(other)), "{other}");
        }
        assert!(!events_authorized(&auth(Some("tok"), None), Some("Bearer tok")), "no events token: refused");
    }

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let a = auth(Some("tok"), None);
        assert!(authorized(&a, Some("Bearer tok")));
        assert!(authorized(&a, Some("bearer tok")));
        for bad in [None, Some(""), Some("Bearer"), Some("Bearer to"), Some("Bearer tok2"), Some("Token tok")]
        {
            assert!(!authorized(&a, bad), "{bad:?}");
        }
        assert!(!authorized(&a, Some(&basic("tok", "tok"))), "basic is not configured");
    }

    #[test]
    fn basic_auth_checks_user_and_password() {
        let a = auth(None, Some(("am", "pw:with:colons")));
        assert!(authorized(&a, Some(&basic("am", "pw:with:colons"))));
        assert!(!authorized(&a, Some(&basic("am", "nope"))));
        assert!(!authorized(&a, Some(&basic("other", "pw:with:colons"))));
        assert!(!authorized(&a, Some("Basic !!!not-base64")));
        assert!(!authorized(&a, Some("Bearer pw:with:colons")), "bearer is not configured");
    }

    #[test]
    fn both_methods_can_be_enabled_together() {
        let a = auth(Some("tok"), Some(("am", "pw")));
        assert!(authorized(&a, Some("Bearer tok")));
        assert!(authorized(&a, Some(&basic("am", "pw"))));
    }
}
