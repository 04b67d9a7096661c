//! The ingress gateway on the host: bookinfo's answers through it, and the calls and spans one
//! request makes inside the mesh.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{
    Shared, State,
    controllers::pod_ready,
    store::match_labels,
    web::{Body, respond},
};
use super::{host_servers::serve_http, shapes::s, tempo::Span};

/// The gateway answers on the host port only if the cluster maps it (kind's extraPortMappings,
/// k3d's `-p`) or, for an existing cluster, always; and only while a gateway pod runs.
pub async fn serve_gateway(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    serve_http(listener, shared, gateway_reachable, |s, r| Box::pin(gateway(s, r))).await
}

pub(super) fn gateway_reachable(shared: &Shared) -> bool {
    let st = shared.lock();
    let mapped =
        shared.provider == "existing" || st.cluster.as_ref().is_some_and(|c| c.host_port == Some(shared.ingress_port));
    mapped && !ready_pods(&st, "istio-ingress", &json!({"app": "istio-ingress"})).is_empty()
}

pub(super) fn ready_pods(st: &State, ns: &str, selector: &Value) -> Vec<Value> {
    st.store
        .list("", "pods", Some(ns))
        .into_iter()
        .filter(|p| pod_ready(p) && match_labels(selector, p.pointer("/metadata/labels").unwrap_or(&Value::Null)))
        .collect()
}

/// Whether a Service has a Ready endpoint.
pub(super) fn has_endpoints(st: &State, ns: &str, svc: &str) -> bool {
    st.store
        .get("", "services", ns, svc)
        .is_some_and(|s| !ready_pods(st, ns, s.pointer("/spec/selector").unwrap_or(&Value::Null)).is_empty())
}

pub(super) async fn gateway(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
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
