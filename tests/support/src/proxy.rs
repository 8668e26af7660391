//! A fault-injecting HTTP proxy in front of moto: counts AWS calls by API, fails spot
//! launches with capacity errors, takes DynamoDB "down", and can swallow the answer of a
//! RunInstances (after moto has executed it, or before forwarding it) to simulate a crash,
//! and plays EC2's DescribeSpotInstanceRequests answer for instances EC2 marked for
//! interruption (moto creates no spot request for a RunInstances spot launch). It also keeps
//! EC2's idempotency contract, which moto lacks: a RunInstances whose ClientToken already
//! launched answers with the first answer and launches nothing new. And DynamoDB's: a
//! conditional write is atomic, which moto's threaded server is not (three concurrent
//! conditional UpdateItems on one item can all pass their condition there), so the proxy
//! sends DynamoDB writes to moto one at a time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};

/// What happens to RunInstances calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunInstancesFault {
    /// Forward normally.
    None,
    /// Forward to moto, then never answer (the crash happens after EC2 acted).
    AnswerLost,
    /// Never forward, never answer (the crash happens before EC2 saw it).
    NeverArrives,
}

#[derive(Default)]
struct Faults {
    spot_capacity_error: AtomicBool,
    dynamodb_down: AtomicBool,
    run_instances: Mutex<Option<RunInstancesFault>>,
    /// Instance id → spot request status code EC2 reports for it.
    spot_status: Mutex<BTreeMap<String, String>>,
    /// Faults armed with `fail_next`, first match wins.
    rules: Mutex<Vec<Rule>>,
    /// Called with (API, body) of every call about to reach moto.
    on_call: Mutex<Option<CallHook>>,
}

/// A fault the proxy plays on a matching AWS call (`Proxy::fail_next`).
#[derive(Debug, Clone, PartialEq)]
pub enum AwsFault {
    /// Answer this HTTP status and error code without forwarding, in the call's protocol
    /// (EC2's XML or DynamoDB's JSON): `RequestLimitExceeded`, `ThrottlingException`,
    /// `ProvisionedThroughputExceededException`, `InternalError`, `InsufficientInstanceCapacity`.
    Error { status: u16, code: String },
    /// Forward after this delay (past `call_timeout`, the caller gives up first).
    Delay(std::time::Duration),
    /// Forward to moto, then break the connection mid-answer (the caller cannot tell whether
    /// the call took effect).
    Reset,
    /// Forward to moto, then never answer.
    AnswerLost,
}

/// One armed fault: calls of `api` whose body contains every needle, `times` more times.
struct Rule {
    api: String,
    needles: Vec<String>,
    fault: AwsFault,
    times: usize,
}

/// What the proxy tells a test before a call goes to moto: its API name and body.
type CallHook = Arc<dyn Fn(&str, &[u8]) + Send + Sync>;

/// When one call reached the proxy and when its answer left (benchmarks time RunInstances
/// and find which calls overlapped).
#[derive(Debug, Clone)]
pub struct CallTiming {
    pub api: String,
    pub start: std::time::Instant,
    pub end: std::time::Instant,
}

/// One RunInstances answer, kept per ClientToken.
type StoredAnswer = (u16, Vec<(String, Vec<u8>)>, Bytes);

/// One ClientToken's slot: locked while its first request is at moto.
type TokenSlot = Arc<tokio::sync::Mutex<Option<StoredAnswer>>>;

/// Shared proxy state.
#[derive(Clone)]
pub struct Proxy {
    faults: Arc<Faults>,
    /// ClientToken → the first successful RunInstances answer (a lock per token, so a repeat
    /// that arrives while the first is at moto waits for it, as EC2 does).
    client_tokens: Arc<Mutex<BTreeMap<String, TokenSlot>>>,
    /// Held while a DynamoDB write is at moto: conditional writes are atomic, as in DynamoDB.
    dynamodb_writes: Arc<tokio::sync::Mutex<()>>,
    calls: Arc<Mutex<Vec<(String, std::time::SystemTime)>>>,
    timings: Arc<Mutex<Vec<CallTiming>>>,
    upstream: String,
    client: reqwest::Client,
    /// `http://127.0.0.1:<port>` of the proxy.
    pub url: String,
}

impl Proxy {
    /// Starts a proxy to `upstream` on a free loopback port.
    pub async fn start(upstream: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let proxy = Proxy {
            faults: Arc::default(),
            client_tokens: Arc::default(),
            dynamodb_writes: Arc::default(),
            calls: Arc::default(),
            timings: Arc::default(),
            upstream: upstream.to_string(),
            client: reqwest::Client::new(),
            url,
        };
        let app = axum::Router::new().fallback(forward).with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.expect("proxy serve") });
        proxy
    }

    /// Spot RunInstances answer InsufficientInstanceCapacity.
    pub fn fail_spot(&self, on: bool) {
        self.faults.spot_capacity_error.store(on, Ordering::SeqCst);
    }

    /// DynamoDB answers 503 to everything.
    pub fn dynamodb_down(&self, down: bool) {
        self.faults.dynamodb_down.store(down, Ordering::SeqCst);
    }

    /// Applies `fault` to RunInstances calls.
    pub fn run_instances(&self, fault: RunInstancesFault) {
        *self.faults.run_instances.lock().unwrap() = Some(fault);
    }

    /// DescribeSpotInstanceRequests for `instance_id` answers a request whose status code is
    /// `code` (`marked-for-termination` is what EC2 reports once it sent the warning).
    pub fn spot_request_status(&self, instance_id: &str, code: &str) {
        self.faults.spot_status.lock().unwrap().insert(instance_id.into(), code.into());
    }

    /// The next `times` calls of `api` whose body contains every one of `needles` (e.g. a
    /// subnet id and `MarketType=spot`: a capacity error per zone and market) get `fault`.
    pub fn fail_next(&self, api: &str, needles: &[&str], fault: AwsFault, times: usize) {
        let needles = needles.iter().map(|n| n.to_string()).collect();
        self.faults.rules.lock().unwrap().push(Rule { api: api.into(), needles, fault, times });
    }

    /// Forgets every armed `fail_next` fault.
    pub fn clear_faults(&self) {
        self.faults.rules.lock().unwrap().clear();
    }

    /// Calls `hook(api, body)` for every call about to reach moto (no injected error answered
    /// it), e.g. a test checks what still ran on a node when its TerminateInstances went out.
    pub fn on_call(&self, hook: impl Fn(&str, &[u8]) + Send + Sync + 'static) {
        *self.faults.on_call.lock().unwrap() = Some(Arc::new(hook));
    }

    /// Every call seen, as API names, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().iter().map(|(api, _)| api.clone()).collect()
    }

    /// When each call of `api` arrived, in order.
    pub fn times(&self, api: &str) -> Vec<std::time::SystemTime> {
        self.calls.lock().unwrap().iter().filter(|(a, _)| a == api).map(|(_, t)| *t).collect()
    }

    /// How many calls of `api` were seen.
    pub fn count(&self, api: &str) -> usize {
        self.calls().iter().filter(|c| *c == api).count()
    }

    /// Calls by API.
    pub fn histogram(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for call in self.calls() {
            *counts.entry(call).or_default() += 1;
        }
        counts
    }

    /// Forgets the calls seen so far.
    pub fn reset_calls(&self) {
        self.calls.lock().unwrap().clear();
        self.timings.lock().unwrap().clear();
    }

    /// The answered calls since the last reset, in the order their answers left.
    pub fn timings(&self) -> Vec<CallTiming> {
        self.timings.lock().unwrap().clone()
    }
}

fn api_name(headers: &HeaderMap, body: &[u8]) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.rsplit('.').next().unwrap_or(target).to_string();
    }
    let text = String::from_utf8_lossy(body);
    text.split('&').find_map(|kv| kv.strip_prefix("Action=")).unwrap_or("unknown").to_string()
}

fn ec2_error(code: &str, message: &str) -> Response<Body> {
    ec2_error_status(500, code, message)
}

fn ec2_error_status(status: u16, code: &str, message: &str) -> Response<Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>proxy</RequestID></Response>"
    );
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Response::builder().status(status).body(Body::from(xml)).expect("response")
}

/// DynamoDB's JSON error answer.
fn dynamodb_error(status: u16, code: &str) -> Response<Body> {
    let body = format!(
        "{{\"__type\":\"com.amazonaws.dynamodb.v20120810#{code}\",\"message\":\"injected (proxy)\"}}"
    );
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .body(Body::from(body))
        .expect("response")
}

/// The first armed fault matching this call, used up by one.
fn armed_fault(proxy: &Proxy, api: &str, body: &[u8]) -> Option<AwsFault> {
    let text = String::from_utf8_lossy(body);
    let mut rules = proxy.faults.rules.lock().unwrap();
    let rule = rules
        .iter_mut()
        .find(|r| r.times > 0 && r.api == api && r.needles.iter().all(|n| text.contains(n.as_str())))?;
    rule.times -= 1;
    Some(rule.fault.clone())
}

/// EC2's DescribeSpotInstanceRequests answer: one one-time request behind `instance`.
fn spot_requests_answer(instance: &str, code: &str) -> Response<Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeSpotInstanceRequestsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>proxy</requestId><spotInstanceRequestSet><item><spotInstanceRequestId>sir-{instance}</spotInstanceRequestId><state>closed</state><status><code>{code}</code><updateTime>2026-11-24T08:00:00.000Z</updateTime><message>Spot Instance is marked for interruption (proxy)</message></status><instanceId>{instance}</instanceId><type>one-time</type><productDescription>Linux/UNIX</productDescription></item></spotInstanceRequestSet></DescribeSpotInstanceRequestsResponse>"
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/xml;charset=UTF-8")
        .body(Body::from(xml))
        .expect("response")
}

async fn forward(
    State(proxy): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let api = api_name(&headers, &body);
    let start = std::time::Instant::now();
    proxy.calls.lock().unwrap().push((api.clone(), std::time::SystemTime::now()));
    let is_dynamodb =
        headers.get("x-amz-target").and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("DynamoDB"));
    if is_dynamodb && proxy.faults.dynamodb_down.load(Ordering::SeqCst) {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Body::from("{\"__type\":\"ServiceUnavailable\",\"message\":\"proxy: down\"}"))
            .expect("response");
    }
    let armed = armed_fault(&proxy, &api, &body);
    match &armed {
        Some(AwsFault::Error { status, code }) if is_dynamodb => return dynamodb_error(*status, code),
        Some(AwsFault::Error { status, code }) => return ec2_error_status(*status, code, "injected (proxy)"),
        Some(AwsFault::Delay(delay)) => tokio::time::sleep(*delay).await,
        _ => {}
    }
    let hook = proxy.faults.on_call.lock().unwrap().clone();
    if let Some(hook) = hook {
        hook(&api, &body);
    }
    let is_spot = String::from_utf8_lossy(&body).contains("InstanceMarketOptions.MarketType=spot");
    if api == "RunInstances" && is_spot && proxy.faults.spot_capacity_error.load(Ordering::SeqCst) {
        return ec2_error(
            "InsufficientInstanceCapacity",
            "We currently do not have sufficient capacity (proxy)",
        );
    }
    if api == "DescribeSpotInstanceRequests" {
        let text = String::from_utf8_lossy(&body).into_owned();
        let marked = proxy.faults.spot_status.lock().unwrap().clone();
        if let Some((instance, code)) = marked.iter().find(|(id, _)| text.contains(id.as_str())) {
            return spot_requests_answer(instance, code);
        }
    }
    let run_fault = if api == "RunInstances" { *proxy.faults.run_instances.lock().unwrap() } else { None };
    if run_fault == Some(RunInstancesFault::NeverArrives) {
        return std::future::pending().await;
    }
    let dynamodb_write = is_dynamodb
        && matches!(
            api.as_str(),
            "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" | "TransactWriteItems"
        );
    let _atomic = match dynamodb_write {
        true => Some(proxy.dynamodb_writes.clone().lock_owned().await),
        false => None,
    };
    let token = (api == "RunInstances").then(|| client_token(&body)).flatten();
    let slot = token.map(|t| proxy.client_tokens.lock().unwrap().entry(t).or_default().clone());
    let mut guard = match &slot {
        Some(slot) => Some(slot.clone().lock_owned().await),
        None => None,
    };
    if let Some((status, headers, bytes)) = guard.as_ref().and_then(|g| g.as_ref()).cloned() {
        proxy.timings.lock().unwrap().push(CallTiming { api, start, end: std::time::Instant::now() });
        return stored_response(status, &headers, bytes);
    }
    let mut request = proxy.client.request(
        method,
        format!("{}{}", proxy.upstream, uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")),
    );
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let upstream = match request.body(body).send().await {
        Ok(response) => response,
        Err(e) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from(e.to_string()))
                .expect("response");
        }
    };
    let status = upstream.status();
    let upstream_headers: Vec<(String, Vec<u8>)> = upstream
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection"))
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    let bytes = upstream.bytes().await.unwrap_or_default();
    if let Some(guard) = guard.as_mut().filter(|_| status.is_success()) {
        // EC2 remembers the token even when its answer never reached the caller.
        **guard = Some((status.as_u16(), upstream_headers.clone(), bytes.clone()));
    }
    drop(guard);
    if run_fault == Some(RunInstancesFault::AnswerLost) || armed == Some(AwsFault::AnswerLost) {
        return std::future::pending().await;
    }
    if armed == Some(AwsFault::Reset) {
        let broken = futures_util::stream::once(async {
            Err::<Bytes, _>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "proxy: reset"))
        });
        return Response::builder()
            .status(status.as_u16())
            .body(Body::from_stream(broken))
            .expect("response");
    }
    let end = std::time::Instant::now();
    proxy.timings.lock().unwrap().push(CallTiming { api: api.clone(), start, end });
    stored_response(status.as_u16(), &upstream_headers, bytes)
}

/// The `ClientToken` of a RunInstances form body, if it has one.
fn client_token(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    text.split('&').find_map(|kv| kv.strip_prefix("ClientToken=")).map(str::to_string)
}

fn stored_response(status: u16, headers: &[(String, Vec<u8>)], bytes: Bytes) -> Response<Body> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(name.as_str(), value.as_slice());
    }
    response.body(Body::from(bytes)).expect("response")
}
