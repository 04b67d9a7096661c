//! mTLS between bookinfo workloads, from three independent signals that must all agree:
//! ztunnel's workload view (every bookinfo workload captured with HBONE), ztunnel's metrics (every
//! connection between bookinfo workloads is `mutual_tls` with SPIFFE principals of book-info
//! service accounts), and behaviour (under STRICT, a client outside the mesh is refused while a
//! client inside gets through).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{BoxFuture, CheckDef, Stage};
use crate::{
    evidence::{Evidence, Verdict},
    fixtures,
    live::{Live, LiveError},
    plan, promtext,
};

/// Registration.
pub const CHECK: CheckDef = CheckDef {
    name: "mtls",
    stage: Stage::Checks,
    default_on: true,
    asserts: "HBONE capture in ztunnel's config, mutual_tls with book-info SPIFFE principals in ztunnel metrics, STRICT refuses plaintext from outside the mesh",
    collect,
    judge,
};

/// Namespace whose workloads must be in the mesh.
pub const NAMESPACE: &str = "book-info";
/// Bookinfo's apps; each must have a captured workload.
pub const APPS: &[&str] = &["productpage", "details", "ratings", "reviews"];

const STRICT: &str = "mtls/strict.json";
const EXPECT: &str = "mtls/expect.json";

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        live.save_json(EXPECT, &json!({ "namespace": NAMESPACE, "apps": APPS }))?;
        crate::traffic::drive_bookinfo(live, 20).await;
        collect_ztunnels(live).await?;
        let policy = fixtures::manifest("mtls-strict.yaml")?;
        live.apply(&policy, Some(NAMESPACE), true).await?;
        // istiod converts the PeerAuthentication into a ztunnel DENY policy; give it time to propagate.
        tokio::time::sleep(live.scenario.settle(std::time::Duration::from_secs(10))).await;
        let target = format!("http://productpage.{NAMESPACE}.svc.cluster.local:9080/productpage");
        let mut results = Vec::new();
        for (client, ns, pod) in
            [("outside", plan::OUTSIDE_NS, "curl-outside"), ("inside", plan::INSIDE_NS, "curl-inside")]
        {
            let outcome = live
                .exec(ns, pod, &["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", &target])
                .await;
            results.push(match outcome {
                Ok((stdout, status)) => json!({ "client": client, "namespace": ns, "pod": pod, "target": target,
                                                "http_code": stdout.trim(), "exec_status": status }),
                Err(e) => {
                    json!({ "client": client, "namespace": ns, "pod": pod, "target": target, "error": e.to_string() })
                }
            });
        }
        let removed = live.delete(&policy, Some(NAMESPACE)).await;
        live.save_json(
            STRICT,
            &json!({ "policy": "PeerAuthentication book-info/meshcheck-strict mode STRICT", "results": results }),
        )?;
        removed
    })
}

/// Saves each ztunnel's config dump, metrics and access log under `ztunnel/<node>/`.
pub async fn collect_ztunnels(live: &Live) -> Result<(), LiveError> {
    let pods = live.running_pods("istio-system", "app=ztunnel").await?;
    if pods.is_empty() {
        return Err(LiveError::Http {
            what: "ztunnel pods".into(),
            message: "no running ztunnel pod in istio-system".into(),
        });
    }
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(live.client.clone(), "istio-system");
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| name.clone());
        let (_, dump) = live.pod_get("istio-system", &name, 15000, "/config_dump").await?;
        live.save(&format!("ztunnel/{node}/config_dump.json"), &dump)?;
        let (_, metrics) = live.pod_get("istio-system", &name, 15020, "/stats/prometheus").await?;
        live.save(&format!("ztunnel/{node}/metrics.prom"), &metrics)?;
        let logs = api
            .logs(&name, &kube::api::LogParams { since_seconds: Some(3600), ..Default::default() })
            .await
            .map_err(|source| LiveError::Kube { what: format!("logs of istio-system/{name}"), source })?;
        let access: String = logs.lines().filter(|l| l.contains("access")).map(|l| format!("{l}\n")).collect();
        live.save(&format!("ztunnel/{node}/access.log"), access.as_bytes())?;
    }
    Ok(())
}

/// Workloads of a config dump (a list, or a map keyed by uid in older ztunnels).
pub fn dump_workloads(dump: &Value) -> Vec<&Value> {
    match dump.get("workloads") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(Value::Object(m)) => m.values().collect(),
        _ => Vec::new(),
    }
}

/// Judges the three signals.
pub fn judge(ev: &Evidence) -> Verdict {
    let expect: Value = match ev.read_json(EXPECT) {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    let ns = expect["namespace"].as_str().unwrap_or(NAMESPACE).to_string();
    let apps: Vec<String> =
        expect["apps"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect();
    let nodes = ev.subdirs("ztunnel");
    if nodes.is_empty() {
        return Verdict::error("needed evidence folder ztunnel/<node>/ is missing: no ztunnel was read");
    }
    let mut files = vec![EXPECT.to_string()];
    let mut problems = Vec::new();
    let mut notes = Vec::new();

    // Signal 1: capture.
    let mut captured = BTreeSet::new();
    for node in &nodes {
        let file = format!("ztunnel/{node}/config_dump.json");
        let dump: Value = match ev.read_json(&file) {
            Ok(v) => v,
            Err(e) => return e.into(),
        };
        files.push(file.clone());
        for w in dump_workloads(&dump).into_iter().filter(|w| w["namespace"] == ns.as_str()) {
            let name = w["name"].as_str().unwrap_or("?");
            let app = w["canonicalName"].as_str().or(w["workloadName"].as_str()).unwrap_or(name);
            match w["protocol"].as_str() {
                Some("HBONE") => {
                    captured.insert(app.to_string());
                }
                other => problems.push(format!(
                    "{file}: workload {ns}/{name} has protocol {} (not captured by ambient)",
                    other.unwrap_or("none")
                )),
            }
        }
    }
    for app in &apps {
        if !captured.contains(app) {
            problems.push(format!("no ztunnel reports an HBONE workload for app `{app}` in {ns}"));
        }
    }
    notes.push(format!("HBONE workloads: {}", captured.iter().cloned().collect::<Vec<_>>().join(", ")));

    // Signal 2: metrics.
    let mut mtls_series = 0usize;
    for node in &nodes {
        let file = format!("ztunnel/{node}/metrics.prom");
        let text = match ev.read_text(&file) {
            Ok(t) => t,
            Err(e) => return e.into(),
        };
        files.push(file.clone());
        let scrape = promtext::parse(&text);
        for s in scrape.samples_named("istio_tcp_connections_opened_total") {
            let internal =
                s.label("source_workload_namespace") == ns && s.label("destination_workload_namespace") == ns;
            if !internal || s.value <= 0.0 {
                continue;
            }
            let src_ok = s.label("source_principal").starts_with("spiffe://")
                && s.label("source_principal").contains(&format!("/ns/{ns}/sa/"));
            let dst_ok = s.label("destination_principal").contains(&format!("/ns/{ns}/sa/"));
            if s.label("connection_security_policy") != "mutual_tls" || !src_ok || !dst_ok {
                problems.push(format!(
                    "{file}: {} -> {} reported by {} with connection_security_policy=\"{}\", source_principal=\"{}\", destination_principal=\"{}\"",
                    s.label("source_workload"),
                    s.label("destination_workload"),
                    s.label("reporter"),
                    s.label("connection_security_policy"),
                    s.label("source_principal"),
                    s.label("destination_principal")
                ));
            } else {
                mtls_series += 1;
            }
        }
    }
    if mtls_series == 0 {
        problems.push(format!(
            "no ztunnel metric shows a connection between {ns} workloads (istio_tcp_connections_opened_total)"
        ));
    }
    notes.push(format!("{mtls_series} mutual_tls connection series between {ns} workloads"));

    // Signal 3: behaviour under STRICT.
    match ev.read_json::<Value>(STRICT) {
        Err(e) => problems.push(e.to_string()),
        Ok(strict) => {
            files.push(STRICT.to_string());
            for r in strict["results"].as_array().into_iter().flatten() {
                let client = r["client"].as_str().unwrap_or("?");
                let code = r["http_code"].as_str().unwrap_or("");
                if let Some(err) = r["error"].as_str() {
                    problems.push(format!("STRICT probe from the {client} client could not run: {err}"));
                    continue;
                }
                match client {
                    "outside" if code.starts_with('2') || code.starts_with('3') => problems.push(format!(
                        "under STRICT a plaintext client outside the mesh still reached {} (HTTP {code}); expected refusal",
                        r["target"].as_str().unwrap_or("?")
                    )),
                    "inside" if code != "200" => problems.push(format!(
                        "under STRICT the client inside the mesh got HTTP {} from {}; expected 200",
                        if code.is_empty() { "none" } else { code },
                        r["target"].as_str().unwrap_or("?")
                    )),
                    _ => notes.push(format!("STRICT: {client} client got HTTP {}", if code.is_empty() { "none" } else { code })),
                }
            }
            let clients: Vec<&str> =
                strict["results"].as_array().into_iter().flatten().filter_map(|r| r["client"].as_str()).collect();
            for needed in ["outside", "inside"] {
                if !clients.contains(&needed) {
                    problems.push(format!("{STRICT} has no result for the {needed} client"));
                }
            }
        }
    }

    let pass = format!("mTLS confirmed by capture, metrics and STRICT behaviour for {ns}");
    Verdict::from_findings(problems, notes, files, pass, |n| {
        format!("{n} mTLS finding(s) in {ns}: expected HBONE capture, mutual_tls connections and STRICT refusal")
    })
}
