//! The API's JSON as Alertmanager 0.25 writes it, and every kind of bad answer, which must be
//! an error (the truth rule's "unreachable"), never an empty list.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::config::AlertmanagerConfig;

const CAPTURED: &[u8] = include_bytes!("../../../tests/fixtures/alertmanager/am-0.25-api-alerts.json");

#[test]
fn a_captured_answer_parses_with_states_silences_and_inhibitions() {
    let alerts = parse_alerts("http://am", CAPTURED).unwrap();
    assert_eq!(alerts.len(), 3);
    let by = |fp: &str| alerts.iter().find(|a| a.fingerprint == fp).unwrap();
    assert_eq!(by("55fdb50b74cf6c92").state, AlertState::Active);
    assert_eq!(by("3161d418f021052d").state, AlertState::Suppressed);
    assert_eq!(by("3161d418f021052d").silenced_by, ["7c3d872f-944e-4662-9ae4-8de5d9ad8f98"]);
    assert_eq!(by("ce45746bccc4446b").inhibited_by, ["55fdb50b74cf6c92"]);
    assert_eq!(by("55fdb50b74cf6c92").annotations["summary"], "CPU 85%");
}

#[test]
fn a_captured_silence_list_parses() {
    let body = include_bytes!("../../../tests/fixtures/alertmanager/am-0.25-api-silences.json");
    let silences = parse_silences("http://am", body).unwrap();
    assert_eq!(
        silences,
        [SilenceInfo {
            id: "7c3d872f-944e-4662-9ae4-8de5d9ad8f98".into(),
            created_by: "ops@example.com".into(),
            comment: "maintenance".into(),
            ends_at: "2026-12-01T03:24:05.476Z".into(),
            state: "active".into(),
        }]
    );
}

#[test]
fn garbage_is_an_error_never_an_empty_list() {
    let truncated = &CAPTURED[..CAPTURED.len() / 2];
    let no_fingerprint = br#"[{"fingerprint": "", "labels": {}, "status": {"state": "active"}}]"#;
    let odd_state = br#"[{"fingerprint": "a", "labels": {}, "status": {"state": "sleepy"}}]"#;
    let no_status = br#"[{"fingerprint": "a", "labels": {}}]"#;
    for body in [
        &b"<html><body>502 Bad Gateway</body></html>"[..],
        truncated,
        b"",
        b"{}",
        b"null",
        no_fingerprint,
        odd_state,
        no_status,
    ] {
        let err = parse_alerts("http://am", body).unwrap_err();
        assert_eq!(err.label(), "invalid", "{}", String::from_utf8_lossy(body));
    }
    assert_eq!(parse_alerts("http://am", b"[]").unwrap(), Vec::new(), "an empty list is a valid answer");
}

/// A one-shot-per-connection loopback server answering every request with `response` after
/// `delay`; returns its base URL and a receiver of the requests' head.
async fn serve(
    response: &'static str,
    delay: Duration,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).to_string());
                tokio::time::sleep(delay).await;
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, rx)
}

fn source(urls: Vec<String>) -> HttpAlertSource {
    HttpAlertSource::new(&AlertmanagerConfig {
        urls,
        sync_interval: Duration::from_secs(1),
        timeout: Duration::from_millis(300),
        bearer_token_file: None,
        bearer_token: Some(crate::config::Secret::new("am-token")),
        basic_username: None,
        basic_password_file: None,
        basic_password: None,
    })
}

fn response(status: &str, content_type: &str, body: &str) -> &'static str {
    let text = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    Box::leak(text.into_boxed_str())
}

#[tokio::test]
async fn every_bad_answer_over_http_is_unreachable_and_a_good_replica_still_counts() {
    let ok = response("200 OK", "application/json", std::str::from_utf8(CAPTURED).unwrap());
    let (good, mut requests) = serve(ok, Duration::ZERO).await;
    let (html, _) = serve(response("200 OK", "text/html", "<html>login</html>"), Duration::ZERO).await;
    let (error, _) = serve(response("500 Internal Server Error", "text/plain", "boom"), Duration::ZERO).await;
    let (slow, _) = serve(ok, Duration::from_secs(2)).await;
    let truncated = response("200 OK", "application/json", "[{\"fingerprint\": \"a\"");
    let (cut, _) = serve(truncated, Duration::ZERO).await;
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let answers = source(vec![html, error, slow, cut, closed, good.clone() + "/"]).alerts().await;
    let errors: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert_eq!(errors.len(), 5, "{answers:?}");
    assert!(errors[0].contains("not Alertmanager's API answer"), "{}", errors[0]);
    assert!(errors[1].contains("HTTP 500"), "{}", errors[1]);
    assert!(errors[2].contains("no answer within"), "{}", errors[2]);
    assert!(errors[3].contains("not Alertmanager's API answer"), "{}", errors[3]);
    assert!(errors[4].contains("cannot connect"), "{}", errors[4]);
    assert_eq!(answers[5].as_ref().unwrap().len(), 3);
    let head = requests.recv().await.unwrap();
    assert!(head.starts_with(&format!("GET {ALERTS_QUERY} HTTP/1.1")), "{head}");
    assert!(head.to_lowercase().contains("authorization: bearer am-token"), "{head}");
}
