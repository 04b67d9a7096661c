//! Prometheus: its targets and query API.

use serde_json::{Value, json};

use super::{Shared, State, store::now};
use super::{
    gateway::ready_pods,
    shapes::{observed, s},
};

pub(super) fn prom_targets(shared: &Shared, st: &State) -> Value {
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

pub(super) fn prom_query(st: &State, query: &str) -> Value {
    let q = super::web::decode(query.trim_start_matches("query="));
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
