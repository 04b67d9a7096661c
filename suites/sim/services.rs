//! What answers inside and around the simulated cluster, in the shapes of the pinned upstream
//! versions: ztunnel's admin (15000 `/config_dump`) and stats (15020 `/stats/prometheus`) ports,
//! istiod's monitoring port (15014), Prometheus' targets and query API, Tempo's trace-by-id API
//! (JSON or OTLP protobuf), Kiali's status and graph API, curl in the client pods, the ingress
//! gateway on the host (bookinfo traffic, and a trace per `traceparent`), and a mirror of the
//! upstream manifests and registry indexes. Templates come from `../shared/upstream/observed`.

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use base64::Engine;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::{
    Shared, State,
    apiserver::{Body, respond, status_error},
    controllers::{deny_ingress, pod_ready},
    store::{match_labels, now},
};

/// One span as the gateway reports it to Tempo.
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub span_id: [u8; 8],
    pub parent: [u8; 8],
    pub start_ns: u64,
    pub attributes: Vec<(String, String)>,
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn observed(shared: &Shared, file: &str) -> Value {
    std::fs::read(shared.upstream.join("observed").join(file))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("../shared/upstream/observed/{file} is needed by the simulation"))
}

type Handler = fn(Arc<Shared>, Request<Incoming>) -> futures::future::BoxFuture<'static, Response<Body>>;

async fn serve_http(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    accept: fn(&Shared) -> bool,
    handler: Handler,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        if !accept(&shared) {
            drop(stream);
            continue;
        }
        let s = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let s = s.clone();
                async move { Ok::<_, Infallible>(handler(s, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The mirror: upstream manifests and registry indexes.

/// Serves `/<host>/<path>` for the URLs a scenario's `mirrors` point here.
pub async fn serve_mirror(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    serve_http(listener, shared, |_| true, |s, r| Box::pin(mirror(s, r))).await
}

async fn mirror(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').collect();
    match segs.as_slice() {
        ["raw.githubusercontent.com", "istio", "istio", release, "samples", "bookinfo", rest @ ..] => {
            let file = match rest.join("/").as_str() {
                "platform/kube/bookinfo.yaml" => "bookinfo",
                "platform/kube/bookinfo-versions.yaml" => "bookinfo-versions",
                "networking/bookinfo-gateway.yaml" => "networking-bookinfo-gateway",
                _ => "",
            };
            match std::fs::read(shared.upstream.join(format!("bookinfo/istio-{release}-{file}.yaml"))) {
                Ok(b) if !file.is_empty() => respond(StatusCode::OK, "text/plain; charset=utf-8", b),
                _ => respond(StatusCode::NOT_FOUND, "text/plain", "404: Not Found"),
            }
        }
        ["github.com", "kubernetes-sigs", "gateway-api", "releases", "download", version, "standard-install.yaml"] => {
            respond(StatusCode::OK, "application/octet-stream", super::charts::gateway_api_bundle(version))
        }
        // A chart repository's index, which meshcheck's preflight reads as `helm repo add` would:
        // empty, because the stand-in helm renders charts from the simulation, not from a repository.
        [_host, .., "index.yaml"] => respond(StatusCode::OK, "application/x-yaml", "apiVersion: v1\nentries: {}\n"),
        // The registry API version check (OCI distribution spec end-1 `GET /v2/`); Docker Hub
        // answers 401 until it gets a token.
        [registry, "v2", ""] => {
            let status = if *registry == "registry-1.docker.io" { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
            respond(status, "application/json", "{}")
        }
        ["token"] => {
            respond(StatusCode::OK, "application/json", r#"{"token":"sim","access_token":"sim","expires_in":300}"#)
        }
        [registry, "v2", repo @ .., "manifests", _reference] => {
            let authorized = req.headers().get("authorization").is_some_and(|a| a.as_bytes().starts_with(b"Bearer "));
            if *registry == "registry-1.docker.io" && !authorized {
                let realm = format!("http://127.0.0.1:{}/token", shared.mirror_port);
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header(
                        "www-authenticate",
                        format!(
                            "Bearer realm=\"{realm}\",service=\"registry.docker.io\",scope=\"repository:{}:pull\"",
                            repo.join("/")
                        ),
                    )
                    .header("content-type", "application/json")
                    .body(super::apiserver::full(
                        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                    ))
                    .expect("response");
            }
            let index = observed(&shared, "oci-image-index.amd64-arm64-with-attestations.regclient-testrepo-v1.json");
            respond(
                StatusCode::OK,
                "application/vnd.oci.image.index.v1+json",
                serde_json::to_vec(&index).expect("json"),
            )
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "404 page not found"),
    }
}

// ---------------------------------------------------------------------------------------------
// The ingress gateway on the host.

/// The gateway answers on the host port only if the cluster maps it (kind's extraPortMappings,
/// k3d's `-p`) or, for an existing cluster, always; and only while a gateway pod runs.
pub async fn serve_gateway(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    serve_http(listener, shared, gateway_reachable, |s, r| Box::pin(gateway(s, r))).await
}

fn gateway_reachable(shared: &Shared) -> bool {
    let st = shared.lock();
    let mapped =
        shared.provider == "existing" || st.cluster.as_ref().is_some_and(|c| c.host_port == Some(shared.ingress_port));
    mapped && !ready_pods(&st, "istio-ingress", &json!({"app": "istio-ingress"})).is_empty()
}

fn ready_pods(st: &State, ns: &str, selector: &Value) -> Vec<Value> {
    st.store
        .list("", "pods", Some(ns))
        .into_iter()
        .filter(|p| pod_ready(p) && match_labels(selector, p.pointer("/metadata/labels").unwrap_or(&Value::Null)))
        .collect()
}

/// Whether a Service has a Ready endpoint.
fn has_endpoints(st: &State, ns: &str, svc: &str) -> bool {
    st.store
        .get("", "services", ns, svc)
        .is_some_and(|s| !ready_pods(st, ns, s.pointer("/spec/selector").unwrap_or(&Value::Null)).is_empty())
}

async fn gateway(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let traceparent = req.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(String::from);
    let mut st = shared.lock();
    // The bookinfo Gateway must select the gateway pods and a VirtualService must route the path.
    let gw_pods = ready_pods(&st, "istio-ingress", &json!({"app": "istio-ingress"}));
    let bound = st.store.list("networking.istio.io", "gateways", Some("book-info")).iter().any(|g| {
        let sel = g.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
        gw_pods.iter().any(|p| match_labels(&sel, p.pointer("/metadata/labels").unwrap_or(&Value::Null)))
    });
    let routed = st
        .store
        .list("networking.istio.io", "virtualservices", Some("book-info"))
        .iter()
        .any(|vs| vs.to_string().contains("/productpage"));
    if !bound || !routed || req.uri().path() != "/productpage" {
        return respond(StatusCode::NOT_FOUND, "text/plain", "");
    }
    if !has_endpoints(&st, "book-info", "productpage") {
        return respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no healthy upstream");
    }
    st.requests_served(&traceparent);
    drop(st);
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        "<!DOCTYPE html>\n<html><head><title>Simple Bookstore App</title></head><body><h3>The Comedy of Errors</h3></body></html>\n",
    )
}

impl State {
    /// Bookinfo's calls for one productpage request, and the gateway's span when the request
    /// carries a sampled `traceparent` and tracing to Tempo is configured.
    fn requests_served(&mut self, traceparent: &Option<String>) {
        let n = self.connections.values().sum::<u64>();
        let reviews = ["reviews-v1", "reviews-v2", "reviews-v3"][(n % 3) as usize];
        let mut edges = vec![
            ("istio-ingress/istio-ingress", "book-info/productpage-v1"),
            ("book-info/productpage-v1", "book-info/details-v1"),
        ];
        let to_reviews = format!("book-info/{reviews}");
        edges.push(("book-info/productpage-v1", to_reviews.as_str()));
        if reviews != "reviews-v1" {
            edges.push((to_reviews.as_str(), "book-info/ratings-v1"));
        }
        for (a, b) in edges {
            *self.connections.entry((a.to_string(), b.to_string())).or_default() += 1;
        }
        let Some(tp) = traceparent else { return };
        let parts: Vec<&str> = tp.split('-').collect();
        if parts.len() != 4 || parts[3] != "01" || self.faults.tempo_drops_traces || !self.tracing_configured() {
            return;
        }
        let tags = self.custom_tags();
        let hex8 = |h: &str| -> [u8; 8] {
            let mut out = [0u8; 8];
            for (i, b) in out.iter_mut().enumerate() {
                *b = u8::from_str_radix(h.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
            }
            out
        };
        let start = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
        let mut attributes = vec![
            ("http.method".to_string(), "GET".to_string()),
            ("http.url".to_string(), "http://127.0.0.1/productpage".to_string()),
            ("http.status_code".to_string(), "200".to_string()),
            ("istio.canonical_service".to_string(), "istio-ingress".to_string()),
            ("istio.namespace".to_string(), "istio-ingress".to_string()),
            ("upstream_cluster".to_string(), "outbound|9080||productpage.book-info.svc.cluster.local".to_string()),
        ];
        attributes.extend(tags);
        let span = Span {
            service: "istio-ingress.istio-ingress".into(),
            name: "productpage.book-info.svc.cluster.local:9080/productpage".into(),
            span_id: hex8(&format!("{:016x}", start ^ 0x5eed)),
            parent: hex8(parts[2]),
            start_ns: start,
            attributes,
        };
        self.traces.entry(parts[1].to_ascii_lowercase()).or_default().push(span);
    }

    /// istiod exports spans when a Telemetry names a provider of its mesh config whose service
    /// is Tempo's, and Tempo runs.
    fn tracing_configured(&self) -> bool {
        let mesh = self
            .store
            .get("", "configmaps", "istio-system", "istio")
            .map(|c| s(c, "/data/mesh").to_string())
            .unwrap_or_default();
        let mesh: Value = serde_json::from_str(&mesh).unwrap_or(Value::Null);
        let providers: Vec<&Value> = mesh["extensionProviders"].as_array().into_iter().flatten().collect();
        let telemetry = self.store.list("telemetry.istio.io", "telemetries", Some("istio-system"));
        let named = telemetry
            .iter()
            .flat_map(|t| t.pointer("/spec/tracing").and_then(Value::as_array).cloned().unwrap_or_default())
            .flat_map(|t| t["providers"].as_array().cloned().unwrap_or_default())
            .any(|p| {
                providers.iter().any(|m| {
                    m["name"] == p["name"] && s(m, "/opentelemetry/service") == "tempo.tempo.svc.cluster.local"
                })
            });
        named && has_endpoints(self, "tempo", "tempo")
    }

    fn custom_tags(&self) -> Vec<(String, String)> {
        self.store
            .list("telemetry.istio.io", "telemetries", Some("istio-system"))
            .iter()
            .flat_map(|t| t.pointer("/spec/tracing").and_then(Value::as_array).cloned().unwrap_or_default())
            .flat_map(|t| t["customTags"].as_object().cloned().unwrap_or_default())
            .filter_map(|(k, v)| v.pointer("/literal/value").and_then(Value::as_str).map(|v| (k, v.to_string())))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The API server's service proxy.

pub async fn proxy(shared: &Arc<Shared>, ns: &str, name: &str, path: &str, accept: &str) -> Response<Body> {
    let parts: Vec<&str> = name.split(':').collect();
    let (svc, port) = match parts.as_slice() {
        [_, svc, port] => (*svc, port.parse::<u16>().unwrap_or(0)),
        [svc, port] => (*svc, port.parse().unwrap_or(0)),
        [svc] => (*svc, 80),
        _ => return status_error(400, "BadRequest", "bad service name"),
    };
    let st = shared.lock();
    if st.store.get("", "services", ns, svc).is_none() {
        return status_error(404, "NotFound", &format!("services \"{svc}\" not found"));
    }
    if !has_endpoints(&st, ns, svc) {
        return status_error(503, "ServiceUnavailable", &format!("no endpoints available for service \"{svc}\""));
    }
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    match (ns, svc, port, route) {
        ("monitoring", "prom-prometheus", 9090, "/api/v1/targets") => json(&prom_targets(shared, &st)),
        ("monitoring", "prom-prometheus", 9090, "/api/v1/query") => json(&prom_query(&st, query)),
        ("tempo", "tempo", 3200, r) if r.starts_with("/api/traces/") => {
            let id = r.trim_start_matches("/api/traces/").to_ascii_lowercase();
            match st.traces.get(&id) {
                None => respond(StatusCode::NOT_FOUND, "text/plain", format!("trace not found: {id}")),
                Some(spans) if accept.contains("application/protobuf") => {
                    respond(StatusCode::OK, "application/protobuf", tempo_protobuf(&id, spans))
                }
                Some(spans) => json(&tempo_json(&id, spans)),
            }
        }
        ("istio-system", "kiali", 20001, "/kiali/api/status") => json(&kiali_status(&st)),
        ("istio-system", "kiali", 20001, "/kiali/api/namespaces/graph") => json(&kiali_graph(&st)),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "404 page not found"),
    }
}

fn json(v: &Value) -> Response<Body> {
    respond(StatusCode::OK, "application/json", serde_json::to_vec(v).expect("json"))
}

fn prom_targets(shared: &Shared, st: &State) -> Value {
    let template = observed(shared, "prometheus-api-v1-targets.docs-example.json")["data"]["activeTargets"][0].clone();
    let mut targets = Vec::new();
    let mut target = |pool: &str, job: &str, url: &str, labels: Value, down: Option<String>| {
        let mut t = template.clone();
        let instance = url.split('/').nth(2).unwrap_or("").to_string();
        let mut l = json!({"instance": instance, "job": job});
        for (k, v) in labels.as_object().into_iter().flatten() {
            l[k] = v.clone();
        }
        t["labels"] = l;
        t["discoveredLabels"] =
            json!({"__address__": instance, "__metrics_path__": "/metrics", "__scheme__": "http", "job": pool});
        t["scrapePool"] = json!(pool);
        t["scrapeUrl"] = json!(url);
        t["globalUrl"] = json!(url);
        t["lastScrape"] = json!(now());
        t["scrapeInterval"] = json!("15s");
        t["health"] = json!(if down.is_some() { "down" } else { "up" });
        t["lastError"] = json!(down.unwrap_or_default());
        targets.push(t);
    };
    let monitor =
        |plural: &str, name: &str| st.store.get("monitoring.coreos.com", plural, "monitoring", name).is_some();
    if monitor("podmonitors", "ztunnel") {
        for (i, p) in ready_pods(st, "istio-system", &json!({"app": "ztunnel"})).iter().enumerate() {
            let ip = s(p, "/status/podIP");
            let url = format!("http://{ip}:15020/stats/prometheus");
            let down = (i == 0 && st.faults.ztunnel_target_down)
                .then(|| format!("Get \"{url}\": dial tcp {ip}:15020: connect: connection refused"));
            target(
                "podMonitor/monitoring/ztunnel/0",
                "monitoring/ztunnel",
                &url,
                json!({"namespace": "istio-system", "pod": s(p, "/metadata/name"), "container": "istio-proxy", "node": s(p, "/spec/nodeName")}),
                down,
            );
        }
    }
    if monitor("servicemonitors", "istiod") {
        for p in ready_pods(st, "istio-system", &json!({"app": "istiod"})) {
            let url = format!("http://{}:15014/metrics", s(&p, "/status/podIP"));
            target(
                "serviceMonitor/monitoring/istiod/0",
                "istiod",
                &url,
                json!({"namespace": "istio-system", "pod": s(&p, "/metadata/name"), "service": "istiod", "endpoint": "http-monitoring"}),
                None,
            );
        }
    }
    // kube-prometheus-stack's default monitors. On kind the control plane binds its metrics
    // ports to 127.0.0.1, so Prometheus cannot reach them.
    let cp = st
        .store
        .list("", "nodes", None)
        .first()
        .map(|n| s(n, "/status/addresses/0/address").to_string())
        .unwrap_or_default();
    for (job, port, scheme) in [
        ("apiserver", 6443, "https"),
        ("kubelet", 10250, "https"),
        ("kube-controller-manager", 10257, "https"),
        ("kube-scheduler", 10259, "https"),
        ("kube-etcd", 2381, "http"),
    ] {
        let url = format!("{scheme}://{cp}:{port}/metrics");
        let down = (st.faults.control_plane_targets_down && !matches!(job, "apiserver" | "kubelet"))
            .then(|| format!("Get \"{url}\": dial tcp {cp}:{port}: connect: connection refused"));
        target(
            &format!("serviceMonitor/monitoring/prom-{job}/0"),
            job,
            &url,
            json!({"namespace": "kube-system"}),
            down,
        );
    }
    json!({"status": "success", "data": {"activeTargets": targets, "droppedTargets": [], "droppedTargetCounts": {}}})
}

fn prom_query(st: &State, query: &str) -> Value {
    let q = super::apiserver::decode(query.trim_start_matches("query="));
    let scraped = st.store.get("monitoring.coreos.com", "podmonitors", "monitoring", "ztunnel").is_some();
    let result: Vec<Value> = if scraped
        && q.contains("istio_tcp_connections_opened_total")
        && q.contains("destination_workload_namespace=\"book-info\"")
    {
        st.connections
            .iter()
            .filter(|((_, d), _)| d.starts_with("book-info/"))
            .map(|((src, dst), n)| {
                json!({"metric": {"source_workload": src.split('/').nth(1), "destination_workload": dst.split('/').nth(1)},
                       "value": [chrono::Utc::now().timestamp() as f64, (2 * n).to_string()]})
            })
            .collect()
    } else {
        Vec::new()
    };
    json!({"status": "success", "data": {"resultType": "vector", "result": result}})
}

fn tempo_json(id: &str, spans: &[Span]) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let trace_id: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap_or(0)).collect();
    let batches: Vec<Value> = spans
        .iter()
        .map(|sp| json!({
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": sp.service}}]},
            "scopeSpans": [{"scope": {"name": "envoy"}, "spans": [{
                "traceId": b64(&trace_id), "spanId": b64(&sp.span_id), "parentSpanId": b64(&sp.parent),
                "name": sp.name, "kind": "SPAN_KIND_SERVER",
                "startTimeUnixNano": sp.start_ns.to_string(), "endTimeUnixNano": (sp.start_ns + 4_000_000).to_string(),
                "attributes": sp.attributes.iter().map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})).collect::<Vec<_>>(),
                "status": {},
            }]}],
        }))
        .collect();
    json!({"batches": batches})
}

fn tempo_protobuf(id: &str, spans: &[Span]) -> Vec<u8> {
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
        resource::v1::Resource,
        trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan, TracesData, span::SpanKind},
    };
    use prost::Message;
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    };
    let trace_id: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap_or(0)).collect();
    TracesData {
        resource_spans: spans
            .iter()
            .map(|sp| ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("service.name", &sp.service)], ..Default::default() }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "envoy".into(), ..Default::default() }),
                    spans: vec![PSpan {
                        trace_id: trace_id.clone(),
                        span_id: sp.span_id.to_vec(),
                        parent_span_id: sp.parent.to_vec(),
                        name: sp.name.clone(),
                        kind: SpanKind::Server as i32,
                        start_time_unix_nano: sp.start_ns,
                        end_time_unix_nano: sp.start_ns + 4_000_000,
                        attributes: sp.attributes.iter().map(|(k, v)| kv(k, v)).collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

fn kiali_status(st: &State) -> Value {
    let istio = st
        .releases
        .get(&("istio-system".to_string(), "istiod".to_string()))
        .map(|r| r.version.clone())
        .unwrap_or_default();
    json!({
        "status": {"Kiali commit hash": "5e1f0000", "Kiali container version": "v2.29.0", "Kiali state": "running", "Kiali version": "v2.29.0", "Meshes": ""},
        "externalServices": [{"name": "Istio", "version": istio}, {"name": "Prometheus", "version": "3.5.0"}, {"name": "Kubernetes", "version": "v1.35.0"}, {"name": "tempo", "version": "2.8.2"}],
        "warningMessages": [],
        "istioEnvironment": {"isMaistra": false, "istioAPIEnabled": true},
    })
}

fn kiali_graph(st: &State) -> Value {
    let id = |w: &str| super::controllers::template_hash(&json!(w));
    let mut nodes: BTreeMap<String, Value> = BTreeMap::new();
    let mut edges = Vec::new();
    for ((src, dst), n) in &st.connections {
        for w in [src, dst] {
            let (ns, wl) = w.split_once('/').unwrap_or(("", w));
            let app = wl.rsplit_once("-v").map(|(a, _)| a).unwrap_or(wl);
            nodes.entry(w.clone()).or_insert_with(|| json!({"data": {"id": id(w), "nodeType": "workload", "cluster": "Kubernetes", "namespace": ns, "workload": wl, "app": app, "version": wl.rsplit('-').next(), "traffic": [{"protocol": "tcp", "rates": {"tcpIn": "1.00"}}], "healthData": null}}));
        }
        let mtls = src.starts_with("book-info/");
        edges.push(json!({"data": {"id": id(&format!("{src}>{dst}")), "source": id(src), "target": id(dst),
                                   "isMTLS": if mtls { "100" } else { "0" },
                                   "traffic": {"protocol": "tcp", "rates": {"tcp": format!("{:.2}", *n as f64)}}}}));
    }
    json!({"timestamp": chrono::Utc::now().timestamp(), "duration": 600, "graphType": "workload",
           "elements": {"nodes": nodes.into_values().collect::<Vec<_>>(), "edges": edges}})
}

// ---------------------------------------------------------------------------------------------
// Pods: port-forwarded ports, logs, exec.

/// The pod of a workload (`book-info/details-v1`) and its node, service account and IP.
fn workload_pod(st: &State, workload: &str) -> Option<Value> {
    let (ns, wl) = workload.split_once('/')?;
    st.store
        .list("", "pods", Some(ns))
        .into_iter()
        .find(|p| s(p, "/metadata/name").starts_with(&format!("{wl}-")) && pod_ready(p))
}

fn ambient(st: &State, ns: &str) -> bool {
    st.store
        .get("", "namespaces", "", ns)
        .is_some_and(|n| s(n, "/metadata/labels/istio.io~1dataplane-mode") == "ambient")
}

/// An HTTP answer from a port inside a pod, or `None` when nothing listens there.
pub fn pod_port(shared: &Shared, ns: &str, pod: &str, port: u16, path: &str) -> Option<(u16, &'static str, Vec<u8>)> {
    let st = shared.lock();
    let p = st.store.get("", "pods", ns, pod)?.clone();
    let app = s(&p, "/metadata/labels/app");
    match (app, port, path) {
        ("ztunnel", 15000, "/config_dump") => {
            Some((200, "application/json", serde_json::to_vec_pretty(&config_dump(shared, &st)).expect("json")))
        }
        ("ztunnel", 15020, "/stats/prometheus") => {
            Some((200, "text/plain; version=0.0.4", ztunnel_metrics(shared, &st, &p).into_bytes()))
        }
        ("istiod", 15014, "/metrics") => Some((200, "text/plain; version=0.0.4", istiod_metrics(&st).into_bytes())),
        ("ztunnel" | "istiod", _, _) => Some((404, "text/plain", b"404 page not found".to_vec())),
        _ => None,
    }
}

/// ztunnel's config dump: every pod it knows, HBONE for pods of ambient namespaces on a node
/// with a ztunnel, in the shape of istioctl's testdata.
fn config_dump(shared: &Shared, st: &State) -> Value {
    let mut dump = observed(shared, "ztunnel-config-dump.istioctl-testdata.json");
    let template = dump["workloads"].as_object().and_then(|w| w.values().next()).cloned().unwrap_or(json!({}));
    let mut workloads = serde_json::Map::new();
    for p in st
        .store
        .list("", "pods", None)
        .iter()
        .filter(|p| s(p, "/status/phase") == "Running" && p.pointer("/spec/hostNetwork").is_none())
    {
        let (ns, name, ip) = (s(p, "/metadata/namespace"), s(p, "/metadata/name"), s(p, "/status/podIP"));
        let labels = p.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
        let app = labels["app"].as_str().unwrap_or(name);
        let captured = ambient(st, ns) && !(st.faults.ztunnel_reports_tcp && ns == "book-info");
        let mut w = template.clone();
        if let Some(m) = w.as_object_mut() {
            m.remove("waypoint");
            m.remove("network");
        }
        let workload_name = name.rsplitn(3, '-').nth(2).unwrap_or(name);
        w["workloadIps"] = json!([ip]);
        w["protocol"] = json!(if captured { "HBONE" } else { "TCP" });
        w["uid"] = json!(format!("Kubernetes//Pod/{ns}/{name}"));
        w["name"] = json!(name);
        w["namespace"] = json!(ns);
        w["serviceAccount"] = json!(s(p, "/spec/serviceAccountName"));
        w["workloadName"] = json!(workload_name);
        w["canonicalName"] = json!(app);
        w["canonicalRevision"] = json!(labels["version"].as_str().unwrap_or("latest"));
        w["node"] = json!(s(p, "/spec/nodeName"));
        w["nativeTunnel"] = json!(captured);
        workloads.insert(format!("/{ip}"), w);
    }
    dump["workloads"] = Value::Object(workloads);
    dump
}

/// Service account and app of a workload (`book-info/reviews-v2`).
fn identity(st: &State, workload: &str) -> (String, String, String) {
    let (ns, wl) = workload.split_once('/').unwrap_or(("", workload));
    let pod = workload_pod(st, workload);
    let sa = pod.as_ref().map(|p| s(p, "/spec/serviceAccountName").to_string()).unwrap_or_else(|| "default".into());
    let app = pod
        .as_ref()
        .and_then(|p| p.pointer("/metadata/labels/app").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| wl.to_string());
    (ns.to_string(), sa, app)
}

/// ztunnel's Prometheus text: the TCP families for connections it saw on its node, labelled
/// as ztunnel labels them (label names as in the upstream sample, workload labels added).
fn ztunnel_metrics(shared: &Shared, st: &State, ztunnel: &Value) -> String {
    let sample = std::fs::read_to_string(
        shared.upstream.join("observed/ztunnel-metric-tcp-opened.istio-docs-verify-mtls.ELIDED.txt"),
    )
    .unwrap_or_default();
    let upstream_labels: Vec<String> =
        sample.split(['{', ',', '\n']).filter_map(|l| l.trim().split_once('=').map(|(k, _)| k.to_string())).collect();
    let node = s(ztunnel, "/spec/nodeName");
    let mut out = String::new();
    for (family, help, factor) in [
        ("istio_tcp_connections_opened", "The total number of TCP connections opened.", 1u64),
        ("istio_tcp_connections_closed", "The total number of TCP connections closed.", 1),
        ("istio_tcp_sent_bytes", "The size of total bytes sent during response in case of a TCP connection.", 1843),
        (
            "istio_tcp_received_bytes",
            "The size of total bytes received during request in case of a TCP connection.",
            421,
        ),
    ] {
        out.push_str(&format!("# HELP {family} {help}\n# TYPE {family} counter\n"));
        for ((src, dst), n) in &st.connections {
            let (dst_pod, src_pod) = (workload_pod(st, dst), workload_pod(st, src));
            let on = |p: &Option<Value>| p.as_ref().is_some_and(|p| s(p, "/spec/nodeName") == node);
            let (sns, ssa, sapp) = identity(st, src);
            let (dns, dsa, dapp) = identity(st, dst);
            let secure = ambient(st, &sns) && ambient(st, &dns);
            for reporter in ["source", "destination"] {
                let here = if reporter == "source" {
                    on(&src_pod) && ambient(st, &sns)
                } else {
                    on(&dst_pod) && ambient(st, &dns)
                };
                if !here {
                    continue;
                }
                let mut labels: BTreeMap<&str, String> = BTreeMap::new();
                labels.insert("app", "ztunnel".into());
                labels.insert("reporter", reporter.into());
                labels.insert("connection_security_policy", if secure { "mutual_tls" } else { "unknown" }.into());
                labels.insert(
                    "source_principal",
                    if secure || ambient(st, &sns) {
                        format!("spiffe://cluster.local/ns/{sns}/sa/{ssa}")
                    } else {
                        "unknown".into()
                    },
                );
                labels.insert("destination_principal", format!("spiffe://cluster.local/ns/{dns}/sa/{dsa}"));
                labels.insert("destination_service", format!("{dapp}.{dns}.svc.cluster.local"));
                labels.insert("request_protocol", "tcp".into());
                labels.insert("response_flags", "-".into());
                labels.insert("source_app", sapp.clone());
                labels.insert("source_workload", src.split('/').nth(1).unwrap_or("").into());
                labels.insert("source_workload_namespace", sns.clone());
                labels.insert("destination_app", dapp.clone());
                labels.insert("destination_workload", dst.split('/').nth(1).unwrap_or("").into());
                labels.insert("destination_workload_namespace", dns.clone());
                let mut keys: Vec<&str> =
                    upstream_labels.iter().map(String::as_str).filter(|k| labels.contains_key(k)).collect();
                keys.extend(labels.keys().filter(|k| !keys.contains(k)).copied().collect::<Vec<_>>());
                let text: Vec<String> = keys.iter().map(|k| format!("{k}=\"{}\"", labels[k])).collect();
                out.push_str(&format!("{family}_total{{{}}} {}\n", text.join(","), n * factor));
            }
        }
    }
    out.push_str("# HELP istio_build Istio component build info.\n# TYPE istio_build gauge\nistio_build{component=\"ztunnel\",tag=\"");
    out.push_str(
        &st.releases
            .get(&("istio-system".to_string(), "ztunnel".to_string()))
            .map(|r| r.version.clone())
            .unwrap_or_default(),
    );
    out.push_str("\"} 1\n");
    out
}

fn istiod_metrics(st: &State) -> String {
    let version = st
        .releases
        .get(&("istio-system".to_string(), "istiod".to_string()))
        .map(|r| r.version.clone())
        .unwrap_or_default();
    let pods = st.store.list("", "pods", None).len();
    format!(
        "# HELP pilot_xds Number of endpoints connected to this pilot using XDS.\n# TYPE pilot_xds gauge\n\
         pilot_xds{{type=\"ads\",version=\"{version}\"}} 1\npilot_xds{{type=\"wds\",version=\"{version}\"}} 3\n\
         # HELP pilot_services Total services known to pilot.\n# TYPE pilot_services gauge\npilot_services {}\n\
         # HELP pilot_k8s_reg_events Events from k8s registry.\n# TYPE pilot_k8s_reg_events counter\n\
         pilot_k8s_reg_events{{event=\"add\",type=\"Pods\"}} {pods}\n\
         # HELP istio_build Istio component build info.\n# TYPE istio_build gauge\nistio_build{{component=\"pilot\",tag=\"{version}\"}} 1\n",
        st.store.list("", "services", None).len()
    )
}

/// `pods/log`: ztunnel's access log of the connections it carried.
pub fn pod_log(shared: &Shared, ns: &str, pod: &str) -> Option<String> {
    let st = shared.lock();
    let p = st.store.get("", "pods", ns, pod)?.clone();
    if s(&p, "/metadata/labels/app") != "ztunnel" {
        return Some(format!("{} INFO started\n", now()));
    }
    let node = s(&p, "/spec/nodeName");
    let mut out = format!("{} INFO ztunnel::app: ztunnel started\n", now());
    for (src, dst) in st.connections.keys() {
        let Some(d) = workload_pod(&st, dst).filter(|d| s(d, "/spec/nodeName") == node) else { continue };
        let (sns, ssa, _) = identity(&st, src);
        let (dns, dsa, dapp) = identity(&st, dst);
        out.push_str(&format!(
            "{} INFO access: connection complete src.addr=10.244.0.1:46238 src.workload=\"{}\" src.namespace=\"{sns}\" src.identity=\"spiffe://cluster.local/ns/{sns}/sa/{ssa}\" dst.addr={}:15008 dst.service=\"{dapp}.{dns}.svc.cluster.local\" dst.workload=\"{}\" dst.namespace=\"{dns}\" dst.identity=\"spiffe://cluster.local/ns/{dns}/sa/{dsa}\" direction=\"inbound\" bytes_sent=1843 bytes_recv=421 duration=\"3ms\"\n",
            now(), src.split('/').nth(1).unwrap_or(""), s(&d, "/status/podIP"), s(&d, "/metadata/name")
        ));
    }
    Some(out)
}

/// A command in a pod. Only curl is installed in the client images; it behaves as curl does:
/// `-w %{http_code}` prints `000` when no response came, and the exit code says why (6 no such
/// host, 7 refused, 28 timed out, 56 connection reset).
pub async fn exec(shared: &Arc<Shared>, ns: &str, pod: &str, command: &[String]) -> (String, i32) {
    if command.first().map(String::as_str) != Some("curl") {
        return (String::new(), 127);
    }
    let max_time: u64 = command
        .iter()
        .position(|a| a == "--max-time")
        .and_then(|i| command.get(i + 1))
        .and_then(|t| t.parse().ok())
        .unwrap_or(300);
    let Some(url) = command.iter().rev().find(|a| a.starts_with("http://")) else { return ("000".into(), 3) };
    let host = url.trim_start_matches("http://").split(['/', ':']).next().unwrap_or("").to_string();
    enum Outcome {
        Ok,
        Fail(i32),
        Hang,
        TimeOut,
    }
    let outcome = {
        let mut st = shared.lock();
        let labels: Vec<&str> = host.split('.').collect();
        // A pod IP reaches that pod directly; a name goes through its Service.
        let by_ip = host
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .and_then(|_| st.store.list("", "pods", None).into_iter().find(|p| s(p, "/status/podIP") == host));
        let (svc, target_ns) = match (&by_ip, labels.as_slice()) {
            (Some(p), _) => (String::new(), s(p, "/metadata/namespace").to_string()),
            (None, [svc, tns, "svc", ..]) => (svc.to_string(), tns.to_string()),
            (None, [svc, tns]) => (svc.to_string(), tns.to_string()),
            (None, [svc]) => (svc.to_string(), ns.to_string()),
            _ => (String::new(), String::new()),
        };
        let strict = st.store.list("security.istio.io", "peerauthentications", None).iter().any(|pa| {
            (s(pa, "/metadata/namespace") == target_ns || s(pa, "/metadata/namespace") == "istio-system")
                && s(pa, "/spec/mtls/mode") == "STRICT"
        });
        let in_mesh = ambient(&st, ns);
        if by_ip.is_none() && st.store.get("", "services", &target_ns, &svc).is_none() {
            Outcome::Fail(if host.parse::<std::net::Ipv4Addr>().is_ok() { 7 } else { 6 })
        } else if by_ip.is_none() && !has_endpoints(&st, &target_ns, &svc) {
            Outcome::Fail(7)
        } else if strict && st.faults.curl_hangs_under_strict {
            Outcome::Hang
        } else if !in_mesh && deny_ingress(&st.store, &target_ns) {
            Outcome::TimeOut
        } else if !in_mesh && strict && ambient(&st, &target_ns) {
            Outcome::Fail(56)
        } else if by_ip.is_some() {
            Outcome::Ok
        } else {
            let client = format!("{ns}/{}", pod);
            *st.connections.entry((client, format!("{target_ns}/{svc}-v1"))).or_default() += 1;
            Outcome::Ok
        }
    };
    match outcome {
        Outcome::Ok => ("200".into(), 0),
        Outcome::Fail(code) => ("000".into(), code),
        Outcome::TimeOut => {
            tokio::time::sleep(shared.sim(Duration::from_secs(max_time))).await;
            ("000".into(), 28)
        }
        Outcome::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            ("000".into(), 28)
        }
    }
}
