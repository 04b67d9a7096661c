//! Kiali: its status and graph API.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::State;

pub(super) fn kiali_status(st: &State) -> Value {
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

pub(super) fn kiali_graph(st: &State) -> Value {
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
