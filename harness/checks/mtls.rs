//! mTLS between bookinfo workloads, from three independent signals that must all agree:
//! ztunnel's workload view (every bookinfo workload captured with HBONE), ztunnel's metrics (every
//! connection between bookinfo workloads is `mutual_tls` with SPIFFE principals of book-info
//! service accounts), and behaviour (under STRICT, a client outside the mesh is refused while a
//! client inside gets through).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{BoxFuture, CheckDef, Collector};
use crate::{
    cluster::live::{Live, LiveError},
    common::catalog,
    common::names,
    evidence::{Evidence, Verdict},
    formats::promtext,
    plan::fixtures,
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::MTLS, collect: Collector::Cluster(collect), judge };

/// Namespace whose workloads must be in the mesh.
pub const NAMESPACE: &str = "book-info";
/// Bookinfo's apps; each must have a captured workload.
pub const APPS: &[&str] = &["productpage", "details", "ratings", "reviews"];

const STRICT: &str = "mtls/strict.json";
const EXPECT: &str = "mtls/expect.json";

/// `mtls/expect.json`: whose workloads must be in the mesh. The collector writes it, the judge
/// reads it; a missing or malformed one is an error verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expect {
    /// The namespace of the workloads.
    pub namespace: String,
    /// The apps, each of which must have a captured workload.
    pub apps: Vec<String>,
}

/// Where this check keeps its ztunnel evidence (`mtls/ztunnel/<node>/`); the metrics check keeps its
/// own copy, so re-judging mtls reads exactly what the live run judged.
const ZTUNNEL_DIR: &str = "mtls/ztunnel";

/// curl exit codes that mean the server end closed the connection: what ztunnel does to a
/// plaintext connection under STRICT. istio.io's mtls-migration task shows `000` with
/// "command terminated with exit code 56" for a refused plaintext client.
const REFUSED_EXIT_CODES: &[i32] = &[52, 56];

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let expect = Expect { namespace: NAMESPACE.into(), apps: APPS.iter().map(|a| a.to_string()).collect() };
        live.save_json(EXPECT, &expect)?;
        crate::cluster::traffic::drive_bookinfo(live, 20).await;
        collect_ztunnels(live, ZTUNNEL_DIR).await?;
        let target = format!("http://productpage.{NAMESPACE}.svc.cluster.local:9080/productpage");
        // The baseline: before STRICT the plaintext client must get through, else a "refusal" under
        // STRICT could be DNS, a dead pod or a policy that blocks everything.
        let mut results = vec![curl(live, "before", Client::Outside, &target).await];
        let policy = fixtures::manifest("mtls-strict.yaml")?;
        let strict = live.apply(&policy, Some(NAMESPACE), true).await?;
        // istiod converts the PeerAuthentication into a ztunnel DENY policy; give it time to propagate.
        tokio::time::sleep(live.scenario.settle(std::time::Duration::from_secs(10))).await;
        for client in [Client::Outside, Client::Inside] {
            results.push(curl(live, "strict", client, &target).await);
        }
        // STRICT comes off before anything else can fail; had this collector failed or timed out
        // earlier, the session would have taken it off (Live::revert_all).
        let removed = live.revert(strict).await;
        live.save_json(
            STRICT,
            &json!({ "policy": "PeerAuthentication book-info/meshcheck-strict mode STRICT", "results": results }),
        )?;
        removed
    })
}

/// The two curl clients the STRICT probe uses.
#[derive(Clone, Copy)]
enum Client {
    /// Plaintext, in a namespace outside the mesh.
    Outside,
    /// Meshed, in an ambient namespace.
    Inside,
}

/// One curl from a client pod; the result records the HTTP code, curl's exit code and the API status.
async fn curl(live: &Live, phase: &str, client: Client, target: &str) -> Value {
    let (name, ns, pod) = match client {
        Client::Outside => ("outside", names::OUTSIDE_NS, "curl-outside"),
        Client::Inside => ("inside", names::INSIDE_NS, "curl-inside"),
    };
    let mut record = json!({ "phase": phase, "client": name, "namespace": ns, "pod": pod, "target": target });
    if let (Some(r), Value::Object(outcome)) =
        (record.as_object_mut(), super::curl_from(live, ns, pod, target, 10).await)
    {
        r.extend(outcome);
    }
    record
}

/// Saves each ztunnel's config dump, metrics and access log under `<dir>/<node>/`.
pub async fn collect_ztunnels(live: &Live, dir: &str) -> Result<(), LiveError> {
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
        let dump = live.pod_get("istio-system", &name, 15000, "/config_dump").await?;
        live.save(&format!("{dir}/{node}/config_dump.json"), &dump)?;
        let metrics = live.pod_get("istio-system", &name, 15020, "/stats/prometheus").await?;
        live.save(&format!("{dir}/{node}/metrics.prom"), &metrics)?;
        let logs = api
            .logs(&name, &kube::api::LogParams { since_seconds: Some(3600), ..Default::default() })
            .await
            .map_err(|source| LiveError::Kube { what: format!("logs of istio-system/{name}"), source })?;
        let access: String = logs.lines().filter(|l| l.contains("access")).map(|l| format!("{l}\n")).collect();
        live.save(&format!("{dir}/{node}/access.log"), access.as_bytes())?;
    }
    Ok(())
}

/// The folder holding a check's ztunnel evidence: its own `<check>/ztunnel/`, or the shared
/// `ztunnel/` that run folders of format 1 have.
pub fn ztunnel_root(ev: &Evidence, own: &str) -> String {
    if ev.subdirs(own).is_empty() { "ztunnel".to_string() } else { own.to_string() }
}

/// What a curl exit code means, for explanations.
fn curl_exit_meaning(code: i64) -> &'static str {
    match code {
        0 => "success",
        6 => "could not resolve host",
        7 => "failed to connect",
        28 => "timed out",
        35 => "TLS handshake failed",
        52 => "empty reply from server",
        56 => "connection reset while receiving",
        _ => "see curl's exit codes",
    }
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
    let Expect { namespace: ns, apps } = match ev.read_json(EXPECT) {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    if apps.is_empty() {
        return Verdict::error(format!("{EXPECT} names no apps: there is nothing to hold the mesh to"))
            .with_evidence([EXPECT.to_string()]);
    }
    let root = ztunnel_root(ev, ZTUNNEL_DIR);
    let nodes = ev.subdirs(&root);
    if nodes.is_empty() {
        return Verdict::error(format!("needed evidence folder {ZTUNNEL_DIR}/<node>/ is missing: no ztunnel was read"));
    }
    let mut files = vec![EXPECT.to_string()];
    let mut problems = Vec::new();
    let mut notes = Vec::new();

    // Signal 1: capture.
    let mut captured = BTreeSet::new();
    for node in &nodes {
        let file = format!("{root}/{node}/config_dump.json");
        let dump: Value = match ev.read_json(&file) {
            Ok(v) => v,
            Err(e) => return e.into(),
        };
        files.push(file.clone());
        for w in dump_workloads(&dump).into_iter().filter(|w| w["namespace"] == ns.as_str()) {
            let name = w["name"].as_str().unwrap_or("?");
            let app = w["canonicalName"].as_str().or(w["workloadName"].as_str()).unwrap_or(name);
            let protocol = w["protocol"].as_str().unwrap_or("none");
            match (protocol, apps.iter().any(|a| a == app)) {
                ("HBONE", true) => {
                    captured.insert(app.to_string());
                }
                (_, true) => problems
                    .push(format!("{file}: workload {ns}/{name} has protocol {protocol} (not captured by ambient)")),
                // Waypoints and gateways in the namespace speak TCP by design: not bookinfo's apps.
                (_, false) => {
                    notes.push(format!("{ns}/{name} (app {app}) is not one of the expected apps; protocol {protocol}"))
                }
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
        let file = format!("{root}/{node}/metrics.prom");
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

    // Signal 3: behaviour under STRICT, against a baseline taken before it.
    match ev.read_json::<Value>(STRICT) {
        Err(e) => problems.push(e.to_string()),
        Ok(strict) => {
            files.push(STRICT.to_string());
            judge_strict(&strict, &mut problems, &mut notes);
        }
    }

    let pass = format!("mTLS confirmed by capture, metrics and STRICT behaviour for {ns}");
    Verdict::from_findings(problems, notes, files, pass, |n| {
        format!("{n} mTLS finding(s) in {ns}: expected HBONE capture, mutual_tls connections and STRICT refusal")
    })
}

/// The STRICT probe: the outside client reached productpage before STRICT, is refused at the
/// connection level under it (curl exit 56 or 52), and the inside client still gets 200.
/// Results without a `phase` (run folders of format 1) count as taken under STRICT.
fn judge_strict(strict: &Value, problems: &mut Vec<String>, notes: &mut Vec<String>) {
    let results: Vec<&Value> = strict["results"].as_array().into_iter().flatten().collect();
    let find = |phase: &str, client: &str| {
        results.iter().copied().find(|r| r["phase"].as_str().unwrap_or("strict") == phase && r["client"] == client)
    };
    let describe = |r: &Value| {
        let code = r["http_code"].as_str().filter(|c| !c.is_empty()).unwrap_or("none");
        match r["exit_code"].as_i64() {
            Some(x) => format!("HTTP {code}, curl exit {x}: {}", curl_exit_meaning(x)),
            None => format!("HTTP {code}, no exit code recorded"),
        }
    };
    let reached = |r: &Value| r["http_code"].as_str().is_some_and(|c| c.starts_with('2') || c.starts_with('3'));
    for (phase, client) in [("before", "outside"), ("strict", "outside"), ("strict", "inside")] {
        let Some(r) = find(phase, client) else {
            problems.push(match phase {
                "before" => format!(
                    "{STRICT} has no baseline: the outside client was not tried before STRICT, so a refusal proves nothing"
                ),
                _ => format!("{STRICT} has no result for the {client} client"),
            });
            continue;
        };
        if let Some(err) = r["error"].as_str() {
            problems.push(format!("{phase} probe from the {client} client could not run: {err}"));
            continue;
        }
        let target = r["target"].as_str().unwrap_or("?");
        let refused = r["exit_code"].as_i64().is_some_and(|x| REFUSED_EXIT_CODES.iter().any(|&c| i64::from(c) == x));
        match (phase, client) {
            ("before", _) if !reached(r) => problems.push(format!(
                "before STRICT the plaintext client outside the mesh could not reach {target} ({}): the baseline failed, so a refusal under STRICT would prove nothing",
                describe(r)
            )),
            ("strict", "outside") if reached(r) => problems.push(format!(
                "under STRICT a plaintext client outside the mesh still reached {target} ({}); expected refusal",
                describe(r)
            )),
            ("strict", "outside") if !refused => problems.push(format!(
                "under STRICT the plaintext client outside the mesh failed with {}, not a connection reset (curl exit 56) or empty reply (52): that is not mTLS refusing plaintext",
                describe(r)
            )),
            ("strict", "inside") if r["http_code"] != "200" => problems.push(format!(
                "under STRICT the client inside the mesh got {} from {target}; expected HTTP 200",
                describe(r)
            )),
            _ => notes.push(format!("{phase}: {client} client got {}", describe(r))),
        }
    }
}
