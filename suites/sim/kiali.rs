//! Kiali v2.29.0 as its custom resource configures it (suites/sim/UPSTREAM-RULES.md §3): routes
//! under `server.web_root`, authentication by `auth.strategy`, the graph computed from what the
//! Prometheus at `external_services.prometheus.url` answers, and query parameters validated as
//! `graph/options.go` does.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{State, shapes::s};

/// Kiali's configuration: its custom resource, with the operator's defaults filled in.
pub(super) struct Config {
    pub web_root: String,
    pub strategy: String,
    pub prometheus_url: String,
    pub port: u16,
}

/// The Kiali CR a Kiali pod was made from (the operator labels the pods
/// `app.kubernetes.io/instance: <deployment.instance_name>`), and its defaults:
/// `auth.strategy` `token` off OpenShift (kiali-operator v2.29.0
/// roles/default/kiali-deploy/tasks/main.yml#L334-L336), `server.web_root` `/kiali` off OpenShift,
/// trailing `/` stripped (#L300-L306), `external_services.prometheus.url`
/// `http://prometheus.<Kiali's namespace>:9090` (#L265-L266), `server.port` 20001
/// (defaults/main.yml#L465).
pub(super) fn config(st: &State, pod: &Value) -> Option<Config> {
    let ns = s(pod, "/metadata/namespace");
    let instance = s(pod, "/metadata/labels/app.kubernetes.io~1instance");
    let cr = st.store.list("kiali.io", "kialis", None).into_iter().find(|cr| {
        let name = cr.pointer("/spec/deployment/instance_name").and_then(Value::as_str).unwrap_or("kiali");
        name == instance && s(cr, "/metadata/namespace") == ns
    })?;
    let spec = &cr["spec"];
    let web_root = spec.pointer("/server/web_root").and_then(Value::as_str).unwrap_or("/kiali");
    let web_root = if web_root == "/" { String::new() } else { web_root.trim_end_matches('/').to_string() };
    Some(Config {
        web_root,
        strategy: spec.pointer("/auth/strategy").and_then(Value::as_str).unwrap_or("token").to_string(),
        prometheus_url: spec
            .pointer("/external_services/prometheus/url")
            .and_then(Value::as_str)
            .map_or_else(|| format!("http://prometheus.{ns}:9090"), String::from),
        port: spec.pointer("/server/port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).unwrap_or(20001),
    })
}

/// Asks the Prometheus at a URL an instant query: its JSON answer, or `None` when it cannot be
/// reached.
pub(super) type Prometheus<'a> = &'a dyn Fn(&str, &str) -> Option<Value>;

/// What Kiali answers: status code, content type, body.
pub(super) fn serve(st: &State, config: &Config, path: &str, prometheus: Prometheus) -> (u16, &'static str, Vec<u8>) {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let Some(route) = route.strip_prefix(&config.web_root).filter(|r| r.is_empty() || r.starts_with('/')) else {
        return (404, "text/plain", b"404 page not found\n".to_vec());
    };
    let authenticated = matches!(route, "/api/status" | "/api/namespaces/graph" | "/api/config");
    // handlers/authentication.go: token and openid read only the `kiali-token` cookie, which the
    // API server's service proxy never carries; without it, 401 `Unauthorized` in plain text.
    if authenticated && config.strategy != "anonymous" {
        return (401, "text/plain; charset=utf-8", b"Unauthorized\n".to_vec());
    }
    let body = |v: Value| (200, "application/json", serde_json::to_vec(&v).expect("json"));
    match route {
        "/healthz" => (200, "text/plain", Vec::new()),
        "/api" | "/api/status" => body(status(st)),
        "/api/namespaces/graph" => match graph(config, query, prometheus) {
            Ok(g) => body(g),
            Err((code, message)) => {
                (code, "application/json", serde_json::to_vec(&json!({"error": message})).expect("json"))
            }
        },
        _ => (404, "text/plain", b"404 page not found\n".to_vec()),
    }
}

fn status(st: &State) -> Value {
    let istio = st
        .releases
        .get(&("istio-system".to_string(), "istiod".to_string()))
        .map(|r| r.version.clone())
        .unwrap_or_default();
    json!({
        "status": {"Kiali commit hash": "5e1f0000", "Kiali container version": "v2.29.0", "Kiali state": "running", "Kiali version": "v2.29.0", "Meshes": ""},
        "externalServices": [{"name": "Istio", "version": istio}, {"name": "Prometheus", "version": "3.5.0"}, {"name": "Kubernetes", "version": "v1.35.0"}],
        "warningMessages": [],
        "istioEnvironment": {"isMaistra": false, "istioAPIEnabled": true},
    })
}

/// The query parameters graph/options.go validates (the ones the harness sends and their
/// neighbours): 400 with its message on a bad value.
fn validate(query: &str) -> Result<(Vec<String>, String), (u16, String)> {
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), super::web::decode(v)))
        .collect();
    let graph_type = params.get("graphType").cloned().unwrap_or_else(|| "workload".into());
    if !matches!(graph_type.as_str(), "app" | "service" | "versionedApp" | "workload") {
        return Err((400, format!("Invalid graphType [{graph_type}]")));
    }
    if let Some(d) = params.get("duration") {
        let digits = d.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &d[digits.len()..];
        if digits.is_empty()
            || digits.parse::<u64>().is_err()
            || !matches!(unit, "ms" | "s" | "m" | "h" | "d" | "w" | "y")
        {
            return Err((400, format!("Invalid duration [{d}]")));
        }
    }
    let namespaces: Vec<String> = params
        .get("namespaces")
        .map(|n| n.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect())
        .unwrap_or_default();
    if namespaces.is_empty() {
        return Err((400, "At least one namespace must be specified via the namespaces query parameter.".into()));
    }
    Ok((namespaces, graph_type))
}

/// The graph from Prometheus' ztunnel series: every (source, destination) workload pair that
/// touches a requested namespace, mTLS where `connection_security_policy` says `mutual_tls`. An
/// unreachable Prometheus gives an empty graph, as Kiali's lazy client does until Prometheus
/// answers `/-/healthy` (prometheus/lazy_client.go, noop_client.go: empty results, no error).
fn graph(config: &Config, query: &str, prometheus: Prometheus) -> Result<Value, (u16, String)> {
    let (namespaces, graph_type) = validate(query)?;
    let mut nodes: BTreeMap<String, Value> = BTreeMap::new();
    let mut edges = Vec::new();
    let promql = "sum by (source_workload_namespace, source_workload, source_app, destination_workload_namespace, destination_workload, destination_app, connection_security_policy) (istio_tcp_sent_bytes_total{reporter=\"destination\"})";
    let answer = prometheus(&config.prometheus_url, promql).unwrap_or(Value::Null);
    let id = |w: &str| super::controllers::template_hash(&json!(w));
    for series in answer.pointer("/data/result").and_then(Value::as_array).into_iter().flatten() {
        let m = &series["metric"];
        let (sns, dns) = (s(m, "/source_workload_namespace"), s(m, "/destination_workload_namespace"));
        if !namespaces.iter().any(|n| n == sns || n == dns) {
            continue;
        }
        let mut node = |ns: &str, wl: &str, app: &str| {
            let key = format!("{ns}/{wl}");
            nodes.entry(key.clone()).or_insert_with(|| json!({"data": {"id": id(&key), "nodeType": "workload", "cluster": "Kubernetes", "namespace": ns, "workload": wl, "app": app, "version": wl.rsplit('-').next(), "traffic": [{"protocol": "tcp", "rates": {"tcpIn": "1.00"}}], "healthData": null}}));
            id(&key)
        };
        let source = node(sns, s(m, "/source_workload"), s(m, "/source_app"));
        let target = node(dns, s(m, "/destination_workload"), s(m, "/destination_app"));
        let mtls = s(m, "/connection_security_policy") == "mutual_tls";
        let rate =
            series.pointer("/value/1").and_then(Value::as_str).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        edges.push(json!({"data": {"id": id(&format!("{source}>{target}")), "source": source, "target": target,
                                   "isMTLS": if mtls { "100" } else { "0" },
                                   "traffic": {"protocol": "tcp", "rates": {"tcp": format!("{rate:.2}")}}}}));
    }
    Ok(json!({"timestamp": chrono::Utc::now().timestamp(), "duration": 600, "graphType": graph_type,
              "elements": {"nodes": nodes.into_values().collect::<Vec<_>>(), "edges": edges}}))
}
