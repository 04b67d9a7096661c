//! What answers inside and around the simulated cluster, in the shapes of the pinned upstream
//! versions: ztunnel's admin (15000 `/config_dump`) and stats (15020 `/stats/prometheus`) ports,
//! istiod's monitoring port (15014), Prometheus' targets and query API, Tempo's trace-by-id API
//! (JSON or OTLP protobuf), Kiali's status and graph API, curl in the client pods, the ingress
//! gateway on the host (bookinfo traffic, and a trace per `traceparent`), and a mirror of the
//! upstream manifests and registry indexes. Templates come from `../shared/upstream/observed`.

use std::sync::Arc;

use http::{Response, StatusCode};

use super::{
    Shared,
    mesh::workload_pod,
    store::now,
    web::{Body, respond, status_error},
};

pub use super::clients::exec;
use super::gateway::has_endpoints;
pub use super::gateway::serve_gateway;
use super::istiod::istiod_metrics;
use super::kiali::{kiali_graph, kiali_status};
pub use super::mirror::serve_mirror;
use super::prometheus::{prom_query, prom_targets};
use super::shapes::{json, s};
pub use super::tempo::Span;
use super::tempo::{tempo_json, tempo_protobuf};
use super::ztunnel::{config_dump, identity, ztunnel_metrics};

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
