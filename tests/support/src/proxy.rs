//! A fault-injecting HTTP proxy in front of moto: counts AWS calls by API, fails spot
//! launches with capacity errors, takes DynamoDB "down", and can swallow the answer of a
//! RunInstances (after moto has executed it, or before forwarding it) to simulate a crash,
//! and plays EC2's DescribeSpotInstanceRequests answer for instances EC2 marked for
//! interruption (moto creates no spot request for a RunInstances spot launch). For CreateFleet
//! it plays EC2's per-offering capacity answer, which moto never gives: spot offerings of the
//! instance types made short are taken out of the request before moto sees it and come back
//! in the answer's `errorSet` (InsufficientInstanceCapacity), as EC2 reports them. It also
//! keeps EC2's idempotency contract, which moto lacks: a RunInstances or CreateFleet whose
//! ClientToken was seen answers with the first answer and launches nothing new. And DynamoDB's: a
//! conditional write is atomic, which moto's threaded server is not (three concurrent
//! conditional UpdateItems on one item can all pass their condition there), so the proxy
//! sends DynamoDB writes to moto one at a time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};

/// What happens to launch calls (RunInstances and CreateFleet).
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
    /// Instance types whose spot offerings have no capacity (CreateFleet).
    short_spot_types: Mutex<Vec<String>>,
    /// Instance id → spot request status code EC2 reports for it.
    spot_status: Mutex<BTreeMap<String, String>>,
    /// EC2 APIs IAM denies (UnauthorizedOperation, also to a DryRun).
    denied: Mutex<Vec<String>>,
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
    /// Every CreateFleet request as it arrived.
    fleet_requests: Arc<Mutex<Vec<FleetRequest>>>,
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
            fleet_requests: Arc::default(),
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

    /// Spot offerings of these instance types answer InsufficientInstanceCapacity in
    /// CreateFleet's `errorSet`; the other offerings of the request still serve.
    #[allow(dead_code)] // used by some test binaries only
    pub fn short_spot_types(&self, types: &[&str]) {
        *self.faults.short_spot_types.lock().unwrap() = types.iter().map(|t| t.to_string()).collect();
    }

    /// The CreateFleet requests seen, in order.
    #[allow(dead_code)] // used by some test binaries only
    pub fn fleet_requests(&self) -> Vec<FleetRequest> {
        self.fleet_requests.lock().unwrap().clone()
    }

    /// Applies `fault` to launch calls (RunInstances and CreateFleet).
    pub fn run_instances(&self, fault: RunInstancesFault) {
        *self.faults.run_instances.lock().unwrap() = Some(fault);
    }

    /// DescribeSpotInstanceRequests for `instance_id` answers a request whose status code is
    /// `code` (`marked-for-termination` is what EC2 reports once it sent the warning).
    pub fn spot_request_status(&self, instance_id: &str, code: &str) {
        self.faults.spot_status.lock().unwrap().insert(instance_id.into(), code.into());
    }

    /// EC2 answers `api` with UnauthorizedOperation (403), as when IAM denies it.
    pub fn deny(&self, api: &str) {
        self.faults.denied.lock().unwrap().push(api.into());
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
        self.fleet_requests.lock().unwrap().clear();
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
    if proxy.faults.denied.lock().unwrap().contains(&api) {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation (proxy: {api} denied).</Message></Error></Errors><RequestID>proxy</RequestID></Response>"
        );
        return Response::builder().status(StatusCode::FORBIDDEN).body(Body::from(xml)).expect("response");
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
    let mut body = body;
    let mut fleet_errors = Vec::new();
    if api == "CreateFleet" {
        let request = FleetRequest::parse(&body);
        proxy.fleet_requests.lock().unwrap().push(request.clone());
        let mut short = proxy.faults.short_spot_types.lock().unwrap().clone();
        if request.market == "spot" && proxy.faults.spot_capacity_error.load(Ordering::SeqCst) {
            short.extend(request.overrides.iter().map(|(t, _)| t.clone()));
        }
        let (kept, removed) = request.without_spot(&short);
        if !removed.is_empty() && !proxy.seen_token(&api, &body) {
            fleet_errors = removed;
            if kept.is_empty() {
                let answer = fleet_answer_with_errors(&fleet_errors);
                proxy.remember_token(&api, &body, answer.clone());
                return stored_response(answer.0, &answer.1, answer.2);
            }
            body = Bytes::from(with_overrides(&body, &kept));
        }
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
    let is_launch = matches!(api.as_str(), "RunInstances" | "CreateFleet");
    let run_fault = if is_launch { *proxy.faults.run_instances.lock().unwrap() } else { None };
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
    let slot = proxy.token_slot(&api, &body);
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
    let mut bytes = upstream.bytes().await.unwrap_or_default();
    if status.is_success() && !fleet_errors.is_empty() {
        bytes = Bytes::from(with_error_set(&bytes, &fleet_errors));
    }
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

impl Proxy {
    /// The answer slot of a launch call's ClientToken (RunInstances and CreateFleet).
    fn token_slot(&self, api: &str, body: &[u8]) -> Option<TokenSlot> {
        let token = matches!(api, "RunInstances" | "CreateFleet").then(|| client_token(body)).flatten()?;
        Some(self.client_tokens.lock().unwrap().entry(format!("{api}:{token}")).or_default().clone())
    }

    /// Whether a launch call with this ClientToken already has an answer.
    fn seen_token(&self, api: &str, body: &[u8]) -> bool {
        self.token_slot(api, body).is_some_and(|slot| slot.try_lock().map(|s| s.is_some()).unwrap_or(true))
    }

    /// Stores `answer` as the first answer of this launch call's ClientToken.
    fn remember_token(&self, api: &str, body: &[u8], answer: StoredAnswer) {
        if let Some(slot) = self.token_slot(api, body)
            && let Ok(mut stored) = slot.try_lock()
        {
            stored.get_or_insert(answer);
        }
    }
}

/// One CreateFleet request, as the tests read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetRequest {
    /// `spot` or `on-demand` (DefaultTargetCapacityType).
    pub market: String,
    /// TotalTargetCapacity.
    pub count: u32,
    /// (instance type, subnet) overrides; the type is empty when the template's is used.
    pub overrides: Vec<(String, String)>,
    /// ClientToken.
    pub token: String,
    /// Instance tags asked for (key=value).
    pub instance_tags: Vec<String>,
}

const OVERRIDES: &str = "LaunchTemplateConfigs.1.Overrides.";

/// A fleet override: (instance type, subnet).
type Override = (String, String);

impl FleetRequest {
    fn parse(body: &[u8]) -> FleetRequest {
        // The form body decoded as a query string.
        let form = reqwest::Url::parse(&format!("http://form/?{}", String::from_utf8_lossy(body)));
        let pairs: Vec<(String, String)> = form
            .map(|url| url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
            .unwrap_or_default();
        let get =
            |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
        let mut overrides = Vec::new();
        for n in 1.. {
            let field = |f: &str| {
                pairs.iter().find(|(k, _)| *k == format!("{OVERRIDES}{n}.{f}")).map(|(_, v)| v.clone())
            };
            let (instance_type, subnet) = (field("InstanceType"), field("SubnetId"));
            if instance_type.is_none() && subnet.is_none() {
                break;
            }
            overrides.push((instance_type.unwrap_or_default(), subnet.unwrap_or_default()));
        }
        let mut instance_tags = Vec::new();
        for n in 1.. {
            let prefix = format!("TagSpecification.{n}.");
            if !pairs.iter().any(|(k, _)| k.starts_with(&prefix)) {
                break;
            }
            if get(&format!("{prefix}ResourceType")) != "instance" {
                continue;
            }
            for t in 1.. {
                let key = get(&format!("{prefix}Tag.{t}.Key"));
                if key.is_empty() {
                    break;
                }
                instance_tags.push(format!("{key}={}", get(&format!("{prefix}Tag.{t}.Value"))));
            }
        }
        FleetRequest {
            market: get("TargetCapacitySpecification.DefaultTargetCapacityType"),
            count: get("TargetCapacitySpecification.TotalTargetCapacity").parse().unwrap_or_default(),
            overrides,
            token: get("ClientToken"),
            instance_tags,
        }
    }

    /// The overrides left once spot offerings of `short` types are taken out, and those taken.
    fn without_spot(&self, short: &[String]) -> (Vec<Override>, Vec<Override>) {
        if self.market != "spot" {
            return (self.overrides.clone(), Vec::new());
        }
        self.overrides.iter().cloned().partition(|(t, _)| !short.contains(t))
    }
}

/// `body` with its overrides replaced by `kept`, renumbered from 1.
fn with_overrides(body: &[u8], kept: &[(String, String)]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut parts: Vec<String> =
        text.split('&').filter(|kv| !kv.starts_with(OVERRIDES)).map(str::to_string).collect();
    for (n, (instance_type, subnet)) in kept.iter().enumerate() {
        if !instance_type.is_empty() {
            parts.push(format!("{OVERRIDES}{}.InstanceType={instance_type}", n + 1));
        }
        parts.push(format!("{OVERRIDES}{}.SubnetId={subnet}", n + 1));
    }
    parts.join("&")
}

fn error_items(errors: &[(String, String)]) -> String {
    errors
        .iter()
        .map(|(instance_type, subnet)| {
            format!(
                "<item><launchTemplateAndOverrides><overrides><instanceType>{instance_type}</instanceType><subnetId>{subnet}</subnetId></overrides></launchTemplateAndOverrides><lifecycle>spot</lifecycle><errorCode>InsufficientInstanceCapacity</errorCode><errorMessage>We currently do not have sufficient {instance_type} capacity (proxy)</errorMessage></item>"
            )
        })
        .collect()
}

/// An instant fleet's answer that launched nothing: one error per offering.
fn fleet_answer_with_errors(errors: &[(String, String)]) -> StoredAnswer {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CreateFleetResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>proxy</requestId><fleetId>fleet-proxy</fleetId><errorSet>{}</errorSet><fleetInstanceSet/></CreateFleetResponse>",
        error_items(errors)
    );
    (200, vec![("content-type".into(), b"text/xml;charset=UTF-8".to_vec())], Bytes::from(xml))
}

/// moto's CreateFleet answer with EC2's `errorSet` for the offerings taken out.
fn with_error_set(answer: &[u8], errors: &[(String, String)]) -> String {
    let text = String::from_utf8_lossy(answer);
    let set = format!("<errorSet>{}</errorSet>", error_items(errors));
    match text.rfind("</CreateFleetResponse>") {
        Some(end) => format!("{}{set}{}", &text[..end], &text[end..]),
        None => text.into_owned(),
    }
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
