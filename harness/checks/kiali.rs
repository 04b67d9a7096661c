//! Kiali reachability: its status API reports it running with a version, and its graph of
//! book-info has the edges productpage→details, productpage→reviews, reviews→ratings.

use serde_json::Value;

use super::{
    BoxFuture, CheckDef, Collector,
    kiali_login::{self, LoggedIn},
};
use crate::{
    cluster::live::{Live, LiveError},
    common::catalog,
    evidence::{Evidence, ServiceEdge, Verdict},
    scenario::{Backend, KialiAuth},
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::KIALI, collect: Collector::Cluster(collect), judge };

/// Edges (source app, destination app) the graph must contain.
pub const EDGES: &[(&str, &str)] = &[("productpage", "details"), ("productpage", "reviews"), ("reviews", "ratings")];

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        if live.scenario.kiali.auth == KialiAuth::Openid {
            return collect_with_login(live).await;
        }
        // The kiali-server chart and the operator's default web_root is /kiali on Kubernetes.
        let status =
            live.backend_get(Backend::Kiali, "kiali/api/status", "").await.map(|f| f.body).map_err(login_needed)?;
        live.save("kiali/status.json", &status)?;
        crate::cluster::traffic::drive_bookinfo(live, 30).await;
        tokio::time::sleep(live.scenario.settle(std::time::Duration::from_secs(30))).await;
        let graph = live
            .backend_get(Backend::Kiali, &format!("kiali/api/namespaces/graph?{}", kiali_login::GRAPH_QUERY), "")
            .await?
            .body;
        live.save(GRAPH, &graph)
    })
}

/// Kiali behind OpenID Connect: the anonymous call and the login ([`kiali_login`]), then status
/// and graph with the session the login got, over the same port-forwards.
async fn collect_with_login(live: &Live) -> Result<(), LiveError> {
    let LoggedIn { mut browser, login } = kiali_login::log_in(live).await?;
    live.save_json(kiali_login::LOGIN, &login)?;
    if !login.session {
        return Ok(());
    }
    let status = browser.get(&format!("{}/api/status", kiali_login::KIALI_URL)).await?;
    live.save("kiali/status.json", &status.body)?;
    crate::cluster::traffic::drive_bookinfo(live, 30).await;
    tokio::time::sleep(live.scenario.settle(std::time::Duration::from_secs(30))).await;
    let graph =
        browser.get(&format!("{}/api/namespaces/graph?{}", kiali_login::KIALI_URL, kiali_login::GRAPH_QUERY)).await?;
    live.save(GRAPH, &graph.body)
}

/// A 401 from Kiali's status API said plainly: Kiali's `auth.strategy` asks for a login, and the
/// API server's service proxy carries no Kiali session (kiali v2.29.0 handlers/authentication.go:
/// `token` and `openid` read only the `kiali-token` cookie; `/api/status` is an authenticated
/// route, routing/routes.go). meshcheck's own install sets `anonymous`.
fn login_needed(e: LiveError) -> LiveError {
    let unauthorized = match &e {
        LiveError::Kube { source: kube::Error::Api(status), .. } => status.code == 401,
        LiveError::Http { message, .. } => message.starts_with("HTTP 401"),
        _ => false,
    };
    if !unauthorized {
        return e;
    }
    LiveError::Http {
        what: "Kiali's status API (kiali/api/status through the API server's service proxy)".into(),
        message: format!(
            "401 Unauthorized ({e}); Kiali's auth.strategy asks for a login, which the service proxy cannot give: \
             set `auth.strategy: anonymous` in the Kiali CR (meshcheck's install does, fixtures/values/kiali-operator.yaml) \
             or leave the kiali check out of this run's `checks`"
        ),
    }
}

/// The service graph a run's Kiali evidence holds (empty when there is none or it does not parse),
/// for the report to draw.
pub fn recorded_graph(evidence: &Evidence) -> Vec<ServiceEdge> {
    evidence.read_bytes(GRAPH).ok().and_then(|b| graph_edges(&b).ok()).unwrap_or_default()
}

/// Kiali's graph of book-info, as the collector saves it and the judge and the report read it.
const GRAPH: &str = "kiali/graph-book-info.json";

/// Reads the edges of a Kiali graph response, naming nodes by workload, app or service.
pub fn graph_edges(body: &[u8]) -> Result<Vec<ServiceEdge>, String> {
    let g: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let nodes = g.pointer("/elements/nodes").and_then(Value::as_array).ok_or("no elements.nodes in the graph")?;
    let name_of = |id: &str| -> String {
        nodes
            .iter()
            .find(|n| n.pointer("/data/id").and_then(Value::as_str) == Some(id))
            .map(|n| {
                let d = &n["data"];
                d["workload"].as_str().or(d["app"].as_str()).or(d["service"].as_str()).unwrap_or(id).to_string()
            })
            .unwrap_or_else(|| id.to_string())
    };
    let edges = g.pointer("/elements/edges").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok(edges
        .iter()
        .map(|e| ServiceEdge {
            source: name_of(e.pointer("/data/source").and_then(Value::as_str).unwrap_or_default()),
            target: name_of(e.pointer("/data/target").and_then(Value::as_str).unwrap_or_default()),
            mtls_percent: match &e["data"]["isMTLS"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            },
        })
        .collect())
}

fn app_of(name: &str) -> &str {
    // Workload names look like `reviews-v2`; the app is the part before the version suffix.
    match name.rsplit_once("-v") {
        Some((app, v)) if v.chars().all(|c| c.is_ascii_digit()) && !v.is_empty() => app,
        _ => name,
    }
}

/// Judges status and graph.
pub fn judge(ev: &Evidence) -> Verdict {
    let mut files = vec!["kiali/status.json".to_string(), GRAPH.to_string()];
    let mut login_note = "";
    if let Some(login) = kiali_login::recorded(ev) {
        files.insert(0, kiali_login::LOGIN.to_string());
        let login = match login {
            Ok(l) => l,
            Err(e) => return e.into(),
        };
        let stopped = kiali_login::judge_login(&login);
        if !stopped.is_empty() {
            return Verdict::fail(format!("the Kiali login through {} failed", login.issuer))
                .with_details(stopped)
                .with_evidence([kiali_login::LOGIN.to_string()]);
        }
        login_note = " after an OpenID login (anonymous call refused)";
    }
    let status: Value = match ev.read_json("kiali/status.json") {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    let mut problems = Vec::new();
    let state = status.pointer("/status/Kiali state").and_then(Value::as_str).unwrap_or("");
    let version = status.pointer("/status/Kiali version").and_then(Value::as_str).unwrap_or("");
    if state != "running" {
        problems.push(format!("Kiali state is `{state}`, expected `running`"));
    }
    if version.is_empty() {
        problems.push("Kiali's status has no `Kiali version`".into());
    }
    let body = match ev.read_bytes(GRAPH) {
        Ok(b) => b,
        Err(e) => return e.into(),
    };
    let edges = match graph_edges(&body) {
        Ok(e) => e,
        Err(m) => {
            return Verdict::error(format!("kiali/graph-book-info.json is not a Kiali graph: {m}"))
                .with_evidence(files);
        }
    };
    for (src, dst) in EDGES {
        if !edges.iter().any(|e| app_of(&e.source) == *src && app_of(&e.target) == *dst) {
            problems.push(format!("graph lacks the edge {src} → {dst}"));
        }
    }
    if problems.is_empty() {
        Verdict::pass(format!(
            "Kiali {version} running{login_note}; graph has productpage→details, productpage→reviews, reviews→ratings ({} edges)",
            edges.len()
        ))
        .with_evidence(files)
    } else {
        let seen: Vec<String> = edges.iter().map(|e| format!("{} → {}", e.source, e.target)).collect();
        Verdict::fail(format!("{} Kiali finding(s)", problems.len()))
            .with_details(problems.into_iter().chain([format!("edges seen: {}", seen.join(", "))]))
            .with_evidence(files)
    }
}
