//! The ingress gateway on the host: bookinfo's answers through it, and the calls and spans one
//! request makes inside the mesh.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use super::{
    Shared, State,
    store::match_labels,
    web::{Body, respond},
};
use super::{
    host_servers::serve_http,
    mesh::{Program, ambient, container_port, program, ready_on, resolve_host, serving, waypoint_of},
    shapes::s,
    tempo::Span,
};

/// The gateway answers on the host port only along the path a real request takes: the host port
/// the cluster maps (kind's `extraPortMappings`, k3d's `-p`) to a node port, a Service port with
/// that `nodePort`, its `targetPort` on a Ready Istio proxy pod the Service selects, and a
/// bookinfo Gateway server on that port selecting the pod (istio/istio#45943: the gateway chart's
/// `http2` port must reach the Gateway's 8080). On an existing cluster the host port reaches the
/// gateway Service as its LoadBalancer would.
pub async fn serve_gateway(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    serve_http(listener, shared, gateway_reachable, |s, r| Box::pin(gateway(s, r))).await
}

pub(super) fn gateway_reachable(shared: &Shared) -> bool {
    let st = shared.lock();
    gateway_pod(&st, shared).is_some()
}

/// The gateway pod a request on the host port reaches, with the port it arrives on.
fn gateway_pod(st: &State, shared: &Shared) -> Option<(Value, u16)> {
    let node_port = match (&st.cluster, shared.provider) {
        (_, "existing") => None,
        (Some(c), _) if c.host_port == Some(shared.ingress_port) => Some(c.node_port?),
        _ => return None,
    };
    st.store.list("", "services", None).into_iter().find_map(|svc| {
        let ports = svc.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
        let sp = ports.iter().find(|p| match node_port {
            Some(np) => p["nodePort"].as_u64() == Some(u64::from(np)),
            None => p["port"].as_u64() == Some(80),
        })?;
        let selector = svc.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
        let pods = ready_pods(st, s(&svc, "/metadata/namespace"), &selector);
        pods.into_iter().filter(|p| program(p) == Program::Proxy).find_map(|pod| {
            let target = container_port(&pod, sp.get("targetPort").unwrap_or(&sp["port"]))?;
            serves_gateway_port(st, &pod, target).then_some((pod, target))
        })
    })
}

/// Whether a bookinfo Gateway selecting the pod has a server on the port.
fn serves_gateway_port(st: &State, pod: &Value, port: u16) -> bool {
    let labels = pod.pointer("/metadata/labels").cloned().unwrap_or(Value::Null);
    st.store.list("networking.istio.io", "gateways", None).iter().any(|g| {
        match_labels(g.pointer("/spec/selector").unwrap_or(&Value::Null), &labels)
            && g.pointer("/spec/servers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|srv| srv.pointer("/port/number").and_then(Value::as_u64) == Some(u64::from(port)))
    })
}

pub(super) fn ready_pods(st: &State, ns: &str, selector: &Value) -> Vec<Value> {
    st.store
        .list("", "pods", Some(ns))
        .into_iter()
        .filter(|p| serving(p) && match_labels(selector, p.pointer("/metadata/labels").unwrap_or(&Value::Null)))
        .collect()
}

pub(super) async fn gateway(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let traceparent = req.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(String::from);
    let mut st = shared.lock();
    // The bookinfo Gateway must select the gateway pod and a VirtualService must route the path.
    let bound = gateway_pod(&st, &shared).is_some();
    let routed = st
        .store
        .list("networking.istio.io", "virtualservices", Some("book-info"))
        .iter()
        .any(|vs| vs.to_string().contains("/productpage"));
    if !bound || !routed || req.uri().path() != "/productpage" {
        return respond(StatusCode::NOT_FOUND, "text/plain", "");
    }
    // In an ambient namespace the gateway reaches productpage over HBONE through the ztunnel on
    // productpage's node: a pod whose node has no serving ztunnel (Ready, not draining) cannot be reached.
    let selector =
        st.store.get("", "services", "book-info", "productpage").and_then(|s| s.pointer("/spec/selector").cloned());
    let served = selector.is_some_and(|sel| {
        ready_pods(&st, "book-info", &sel).iter().any(|p| {
            !(ambient(&st, "book-info") && s(p, "/metadata/labels/istio.io~1dataplane-mode") != "none")
                || ready_on(&st, Program::Ztunnel, s(p, "/spec/nodeName"))
        })
    });
    if !served {
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
    /// Bookinfo's calls for one productpage request, and the gateway's span (and a waypoint's for
    /// each call through one) when the request carries a sampled `traceparent` and tracing to
    /// Tempo is configured.
    fn requests_served(&mut self, traceparent: &Option<String>) {
        // The reviews Service balances over its three versions: round robin, by the requests served.
        let n: u64 =
            self.connections.iter().filter(|((a, _), _)| a == "istio-ingress/istio-ingress").map(|(_, n)| n).sum();
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
        for (a, b) in &edges {
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
        let gateway_span = hex8(&format!("{:016x}", start ^ 0x5eed));
        let span = Span {
            recorded: std::time::Instant::now(),
            export_after: super::tempo::EXPORT_DELAY,
            service: "istio-ingress.istio-ingress".into(),
            name: "productpage.book-info.svc.cluster.local:9080/productpage".into(),
            span_id: gateway_span,
            parent: hex8(parts[2]),
            start_ns: start,
            attributes: attributes.clone(),
        };
        let mut spans = vec![span];
        // bookinfo forwards the trace context on its calls (istio/istio@1.30.3
        // samples/bookinfo/src/productpage/productpage.py `getForwardHeaders`: traceparent, b3, …),
        // so a waypoint on the called Service adds its own span to the trace. Its service name is
        // its workload's name and namespace (its pods have no app label: pkg/bootstrap/config.go
        // `serviceClusterOrDefault`), the workload named after the Gateway; the canonical-name
        // label the template sets carries the same name.
        // The first edge is the ingress gateway's own call, which skips a waypoint unless the Service
        // is labelled `istio.io/ingress-use-waypoint` (istio/istio@1.30.3 pilot/pkg/model/service.go).
        for (i, (_, to)) in edges.iter().skip(1).enumerate() {
            let (ns, workload) = to.split_once('/').unwrap_or(("", to));
            let svc = workload.rsplit_once('-').map_or(workload, |(app, _)| app);
            let Some(waypoint) = self.store.get("", "services", ns, svc).and_then(|sv| waypoint_of(self, sv)) else {
                continue;
            };
            let name = s(&waypoint, "/metadata/name");
            let serving = self.store.list("", "pods", Some(ns)).into_iter().find(|p| {
                s(p, "/metadata/labels/gateway.networking.k8s.io~1gateway-name") == name && super::mesh::serving(p)
            });
            let Some(pod) = serving else { continue };
            let canonical = s(&pod, "/metadata/labels/service.istio.io~1canonical-name").to_string();
            let mut attributes = attributes.clone();
            attributes.retain(|(k, _)| {
                !matches!(k.as_str(), "istio.canonical_service" | "istio.namespace" | "upstream_cluster" | "http.url")
            });
            attributes.push(("istio.canonical_service".into(), canonical.clone()));
            attributes.push(("istio.namespace".into(), ns.into()));
            spans.push(Span {
                recorded: std::time::Instant::now(),
                export_after: super::tempo::WAYPOINT_EXPORT_DELAY,
                service: format!("{canonical}.{ns}"),
                name: format!("{svc}.{ns}.svc.cluster.local:9080/*"),
                span_id: hex8(&format!("{:016x}", start ^ (0x77a7 + i as u64))),
                parent: gateway_span,
                start_ns: start + 1000 * (i as u64 + 1),
                attributes,
            });
        }
        self.traces.entry(parts[1].to_ascii_lowercase()).or_default().extend(spans);
    }

    /// Spans reach Tempo when istiod's mesh config (ConfigMap `istio`, key `mesh`, YAML as the
    /// istiod chart renders it) has an OpenTelemetry extension provider whose `service` and `port`
    /// lead to a Tempo pod's OTLP gRPC receiver, and a Telemetry in the root namespace names that
    /// provider without turning sampling off (istio 1.30.3 pilot/pkg/model/telemetry.go: root
    /// namespace Telemetry applies mesh-wide; `randomSamplingPercentage: 0` samples nothing).
    fn tracing_configured(&self) -> bool {
        let mesh: Value = self
            .store
            .get("", "configmaps", "istio-system", "istio")
            .and_then(|c| serde_saphyr::from_str(s(c, "/data/mesh")).ok())
            .unwrap_or(Value::Null);
        let root = mesh["rootNamespace"].as_str().unwrap_or("istio-system");
        let reaches_tempo = |provider: &Value| {
            let (service, port) = (s(provider, "/opentelemetry/service"), provider.pointer("/opentelemetry/port"));
            let port = port.and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
            resolve_host(self, service, port).is_ok_and(|(pod, target)| {
                program(&pod) == Program::Tempo && super::tempo::otlp_grpc_port(self, &pod) == Some(target)
            })
        };
        let providers: Vec<&Value> = mesh["extensionProviders"].as_array().into_iter().flatten().collect();
        self.store
            .list("telemetry.istio.io", "telemetries", Some(root))
            .iter()
            .flat_map(|t| t.pointer("/spec/tracing").and_then(Value::as_array).cloned().unwrap_or_default())
            .filter(|t| t.get("randomSamplingPercentage").and_then(Value::as_f64) != Some(0.0))
            .flat_map(|t| t["providers"].as_array().cloned().unwrap_or_default())
            .any(|p| providers.iter().any(|m| m["name"] == p["name"] && reaches_tempo(m)))
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
