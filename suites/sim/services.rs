//! What answers inside and around the simulated cluster, in the shapes of the pinned upstream
//! versions: ztunnel's admin (15000 `/config_dump`) and stats (15020 `/stats/prometheus`) ports,
//! istiod's monitoring port (15014), Prometheus' targets and query API, Tempo's trace-by-id API
//! (JSON or OTLP protobuf), Kiali's status and graph API, curl in the client pods, the ingress
//! gateway on the host (bookinfo traffic, and a trace per `traceparent`), and a mirror of the
//! upstream manifests and registry indexes. Templates come from `../shared/upstream/observed`.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde_json::Value;

use super::{
    Shared, State,
    host_servers::serve_http,
    mesh::{Program, deleting, host_port, program, resolve, resolve_host},
    shapes::{observed, s},
    store::now,
    tempo::http_port,
    web::{Body, HttpReply, HttpRequest, respond, status_error},
};

pub use super::clients::exec;
pub use super::gateway::serve_gateway;
use super::istiod::istiod_metrics;
pub use super::mirror::serve_mirror;
use super::prometheus;
pub use super::tempo::Span;
use super::tempo::{tempo_json, tempo_protobuf};
use super::ztunnel::{access_log, config_dump, ztunnel_metrics};
use super::{keycloak, kiali};

/// The API server's service proxy (`/api/v1/namespaces/{ns}/services/{name}/proxy/{path}`): the
/// Service port, a Ready pod behind it and that pod's target port, then whatever the program in
/// the pod answers there (kubernetes v1.35 pkg/registry/core/service/proxy.go; a Service without
/// a Ready endpoint is 503 `no endpoints available`, a closed port 503 `error trying to reach
/// service`).
pub async fn proxy(shared: &Arc<Shared>, ns: &str, name: &str, path: &str, accept: &str) -> Response<Body> {
    let parts: Vec<&str> = name.split(':').collect();
    let (svc, port) = match parts.as_slice() {
        [_, svc, port] => (*svc, port.parse::<u16>().unwrap_or(0)),
        [svc, port] => (*svc, port.parse().unwrap_or(0)),
        [svc] => (*svc, 80),
        _ => return status_error(400, "BadRequest", "bad service name"),
    };
    let st = shared.lock();
    let (pod, target) = match resolve(&st, ns, svc, port) {
        Ok(found) => found,
        Err(e) if st.store.get("", "services", ns, svc).is_none() => return status_error(404, "NotFound", &e),
        Err(e) => return status_error(503, "ServiceUnavailable", &e),
    };
    match answer(shared, &st, &pod, target, path, accept) {
        Some((code, content_type, body)) => {
            respond(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY), content_type, body)
        }
        None => status_error(
            503,
            "ServiceUnavailable",
            &format!(
                "error trying to reach service: dial tcp {}:{target}: connect: connection refused",
                s(&pod, "/status/podIP")
            ),
        ),
    }
}

/// A forward HTTP proxy into the pods, for requests in absolute form (`GET
/// http://<podIP>:<port>/<path>`, RFC 9112 §3.2.2): how a real Prometheus given `proxy_url`
/// scrapes the simulated programs without a packet leaving loopback. An address or port where
/// nothing listens, and a pod the fault `ztunnel_target_down` closes, get 502, as a proxy whose
/// dial failed answers.
pub async fn serve_scrape_proxy(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    serve_http(listener, shared, |_| true, |s, r| Box::pin(async move { scrape_through(&s, r.uri()) })).await
}

fn scrape_through(shared: &Shared, uri: &http::Uri) -> Response<Body> {
    let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
        return respond(StatusCode::BAD_REQUEST, "text/plain", "a request target in absolute form is expected\n");
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let st = shared.lock();
    let answered = st
        .store
        .iter("", "pods", None)
        .filter(|p| s(p, "/status/podIP") == host && !prometheus::refuses_scrapes(&st, p))
        .find_map(|p| answer(shared, &st, p, port, path, ""));
    match answered {
        Some((code, content_type, body)) => {
            respond(StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY), content_type, body)
        }
        None => respond(
            StatusCode::BAD_GATEWAY,
            "text/plain",
            format!("dial tcp {host}:{port}: connect: connection refused\n"),
        ),
    }
}

type Answer = (u16, &'static str, Vec<u8>);

/// What the program a pod runs answers on a port and path, or `None` when nothing listens there.
/// Which program and which ports come from the pod and its configuration objects, never from its
/// name: a Service or monitor that points elsewhere meets a closed port.
fn answer(shared: &Shared, st: &State, pod: &Value, port: u16, path: &str, accept: &str) -> Option<Answer> {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let metrics = |text: String| -> Answer { (200, "text/plain; version=0.0.4", text.into_bytes()) };
    let json_body =
        |code: u16, v: &Value| -> Answer { (code, "application/json", serde_json::to_vec(v).expect("json")) };
    let not_found = || -> Answer { (404, "text/plain", b"404 page not found".to_vec()) };
    let ok = |text: &str| -> Answer { (200, "text/plain", text.as_bytes().to_vec()) };
    // A draining ztunnel accepts nothing on any listener, admin and stats included (ztunnel 1.30.3
    // src/hyper_util.rs#L232: `take_until(drain.wait_for_drain())` on the accept stream).
    if program(pod) == Program::Ztunnel && deleting(pod) {
        return None;
    }
    let answer = match (program(pod), port, route) {
        // ztunnel 1.30.3 src/admin.rs (15000), src/metrics/server.rs (15020), readiness 15021.
        (Program::Ztunnel, 15000, "/config_dump") => json_body(200, &config_dump(shared, st)),
        // Both paths serve the same registry (src/metrics/server.rs#L56): the PodMonitor asks for
        // /stats/prometheus, an annotation-driven scrape (no `prometheus.io/path`) for /metrics.
        (Program::Ztunnel, 15020, "/metrics" | "/stats/prometheus") => metrics(ztunnel_metrics(shared, st, pod)),
        (Program::Ztunnel, 15021, "/healthz/ready") => ok(""),
        (Program::Ztunnel, 15000 | 15020 | 15021, _) => not_found(),
        // istiod's monitoring port (pilot/pkg/features: monitoringPort 15014).
        (Program::Istiod, 15014, "/metrics") => metrics(istiod_metrics(st)),
        (Program::Istiod, 15014, _) => not_found(),
        (Program::CoreDns, 9153, "/metrics") => {
            metrics("# TYPE coredns_build_info gauge\ncoredns_build_info{version=\"1.12.1\"} 1\n".into())
        }
        (Program::Prometheus, prometheus::PORT, "/-/healthy") => ok("Prometheus Server is Healthy.\n"),
        (Program::Prometheus, prometheus::PORT, "/metrics") => {
            metrics("# TYPE prometheus_build_info gauge\nprometheus_build_info{version=\"3.5.0\"} 1\n".into())
        }
        (Program::Prometheus, prometheus::PORT, _) => {
            let template =
                observed(shared, "prometheus-api-v1-targets.docs-example.json")["data"]["activeTargets"][0].clone();
            let scraper = |p: &Value, port: u16, path: &str| {
                answer(shared, st, p, port, path, "").map(|(code, _, body)| (code, body))
            };
            match prometheus::serve(st, pod, &template, route, query, &scraper) {
                (404, _) => not_found(),
                (code, v) => json_body(code, &v),
            }
        }
        (Program::Tempo, p, r) if p == http_port(st, pod) => {
            match (r.strip_prefix("/api/traces/"), r.strip_prefix("/api/v2/traces/")) {
                (Some(id), _) => tempo_trace(&exported(shared, st, id), id, accept),
                (_, Some(id)) => tempo_trace_v2(&exported(shared, st, id), id),
                _ => not_found(),
            }
        }
        (Program::Kiali, p, _) if kiali::config(st, pod).is_some_and(|c| c.port == p) => {
            let config = kiali::config(st, pod).expect("checked");
            kiali::serve(st, &config, path, false, &|url, promql| kiali_prometheus(shared, st, url, promql))
        }
        _ => return None,
    };
    Some(answer)
}

/// Kiali's instant query to the Prometheus at `url`: its JSON answer, or `None` when it cannot be
/// reached or does not answer 200.
fn kiali_prometheus(shared: &Shared, st: &State, url: &str, promql: &str) -> Option<Value> {
    let (host, port) = host_port(url)?;
    let (p, target) = resolve_host(st, &host, port).ok()?;
    let q = format!("/api/v1/query?query={}", super::web::encode(promql));
    let (code, _, body) = answer(shared, st, &p, target, &q, "")?;
    (code == 200).then(|| serde_json::from_slice(&body).ok()).flatten()
}

/// Any HTTP request to a port inside a pod over a port-forward, headers and body included: the
/// programs of a login flow (Keycloak, Kiali with its OpenID routes and sessions) answer it as
/// they would; any other GET gets [`answer`]'s answer. `None` when nothing listens there.
pub fn pod_exchange(shared: &Shared, ns: &str, pod: &str, port: u16, req: &HttpRequest) -> Option<HttpReply> {
    let mut st = shared.lock();
    let p = st.store.get("", "pods", ns, pod)?.clone();
    exchange(shared, &mut st, &p, port, req)
}

fn exchange(shared: &Shared, st: &mut State, pod: &Value, port: u16, req: &HttpRequest) -> Option<HttpReply> {
    match program(pod) {
        // Keycloak's HTTP listener (`http-port`, default 8080; KC_HTTP_ENABLED or start-dev).
        Program::Keycloak if port == 8080 => Some(keycloak::serve(st, pod, req)),
        Program::Kiali => {
            let config = kiali::config(st, pod).filter(|c| c.port == port)?;
            // Kiali's own calls to the OpenID provider, by the provider's in-cluster name.
            let mut fetch = |st: &mut State, url: &str, mut call: HttpRequest| -> Option<HttpReply> {
                let (host, port) = host_port(url)?;
                let (target, target_port) = resolve_host(st, &host, port).ok()?;
                let authority = url.split_once("://").map_or(url, |(_, r)| r).split('/').next().unwrap_or_default();
                if call.target.is_empty() {
                    call.target = url.split_once("://").and_then(|(_, r)| r.find('/').map(|i| r[i..].to_string()))?;
                }
                call.headers.push(("host".into(), authority.to_string()));
                exchange(shared, st, &target, target_port, &call)
            };
            if let Some(reply) = kiali::openid(st, &config, req, &mut fetch) {
                return Some(reply);
            }
            let session = kiali::has_session(st, req);
            let (code, content_type, body) = kiali::serve(st, &config, &req.target, session, &|url, promql| {
                kiali_prometheus(shared, st, url, promql)
            });
            Some(HttpReply::new(code, content_type, body))
        }
        _ if req.method == "GET" => answer(shared, st, pod, port, &req.target, "")
            .map(|(code, content_type, body)| HttpReply::new(code, content_type, body)),
        _ => Some(HttpReply::new(405, "text/plain", "405 method not allowed\n")),
    }
}

/// The spans of a trace that have reached Tempo: those the proxy has exported
/// (each at its proxy's next flush, [`Span::export_after`] of cluster time after it finished).
fn exported(shared: &Shared, st: &State, id: &str) -> Vec<Span> {
    let spans = st.traces.get(&id.to_ascii_lowercase()).map(Vec::as_slice).unwrap_or_default();
    spans.iter().filter(|sp| sp.recorded.elapsed() >= shared.sim(sp.export_after)).cloned().collect()
}

/// Tempo's v2 trace-by-id (JSON): `{"trace": {"resourceSpans": …}}`, and for an unknown id 200
/// with an empty trace, not 404 (tempo v2.10.0 modules/frontend/combiner/trace_by_id_v2.go#L30-L34;
/// the frontend test "empty returns").
fn tempo_trace_v2(spans: &[Span], id: &str) -> Answer {
    let id = id.to_ascii_lowercase();
    let trace = match spans {
        [] => serde_json::json!({}),
        spans => serde_json::json!({"resourceSpans": tempo_json(&id, spans)["batches"].clone()}),
    };
    (200, "application/json", serde_json::to_vec(&serde_json::json!({"trace": trace, "metrics": {}})).expect("json"))
}

/// Tempo's v1 trace-by-id: the spans, or for an unknown id 404 with an empty body
/// (tempo v2.10.0 modules/frontend/combiner/trace_by_id.go#L37-L68).
fn tempo_trace(spans: &[Span], id: &str, accept: &str) -> Answer {
    let id = id.to_ascii_lowercase();
    match spans {
        [] => (404, "text/plain", Vec::new()),
        spans if accept.contains("application/protobuf") => (200, "application/protobuf", tempo_protobuf(&id, spans)),
        spans => (200, "application/json", serde_json::to_vec(&tempo_json(&id, spans)).expect("json")),
    }
}

/// `pods/log`: for a ztunnel pod its access log ([`access_log`]), for any other a start line.
pub fn pod_log(shared: &Shared, ns: &str, pod: &str) -> Option<String> {
    let st = shared.lock();
    let p = st.store.get("", "pods", ns, pod)?.clone();
    if s(&p, "/metadata/labels/app") != "ztunnel" {
        return Some(format!("{} INFO started\n", now()));
    }
    Some(format!("{}\tinfo\tztunnel::app\tztunnel started\n{}", now(), access_log(&st, &p)))
}
