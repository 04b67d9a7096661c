//! Metric scraping: Prometheus reports the istiod ServiceMonitor and ztunnel PodMonitor targets as
//! up, a query returns ztunnel TCP metrics for book-info, and a direct scrape of each ztunnel and
//! istiod parses and holds the expected families.

use serde_json::Value;

use super::{BoxFuture, CheckDef, Collector};
use crate::{
    cluster::live::{Live, LiveError},
    common::catalog,
    evidence::{Evidence, Verdict},
    formats::kjson,
    formats::promtext,
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::METRICS, collect: Collector::Cluster(collect), judge };

/// Scrape pools (job names) the operator creates from fixtures/manifests/istio-monitors.yaml.
pub const ISTIOD_POOL: &str = "serviceMonitor/monitoring/istiod/";
/// The ztunnel PodMonitor's pool.
pub const ZTUNNEL_POOL: &str = "podMonitor/monitoring/ztunnel/";
/// The query whose result must not be empty.
pub const ZTUNNEL_QUERY: &str = "sum by (source_workload, destination_workload) (istio_tcp_connections_opened_total{destination_workload_namespace=\"book-info\"})";
/// Families every ztunnel scrape must contain.
pub const ZTUNNEL_FAMILIES: &[&str] = &[
    "istio_tcp_connections_opened",
    "istio_tcp_connections_closed",
    "istio_tcp_sent_bytes",
    "istio_tcp_received_bytes",
];

/// Something that answers GETs on Prometheus' HTTP API paths (the API-server service proxy on a
/// live cluster, plain HTTP in the local Prometheus test).
pub trait PromApi: Sync {
    /// GET `path` (e.g. `api/v1/targets?state=active`), returning the body.
    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<u8>, LiveError>>;
}

struct ViaServiceProxy<'a>(&'a Live);

impl PromApi for ViaServiceProxy<'_> {
    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<u8>, LiveError>> {
        Box::pin(self.0.service_get("monitoring", "prom-prometheus", 9090, path))
    }
}

/// This check's own ztunnel evidence (`metrics/ztunnel/<node>/metrics.prom`).
const ZTUNNEL_DIR: &str = "metrics/ztunnel";
/// The ztunnel pods as the API listed them, to hold the targets against.
const ZTUNNEL_PODS: &str = "metrics/ztunnel-pods.json";

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        crate::cluster::traffic::drive_bookinfo(live, 20).await;
        // Two scrape intervals, so the traffic just sent is in Prometheus.
        tokio::time::sleep(live.scenario.settle(std::time::Duration::from_secs(35))).await;
        collect_prometheus(&ViaServiceProxy(live), &live.evidence).await?;
        live.save(
            ZTUNNEL_PODS,
            &live.get_raw("/api/v1/namespaces/istio-system/pods?labelSelector=app%3Dztunnel").await?,
        )?;
        super::mtls::collect_ztunnels(live, ZTUNNEL_DIR).await?;
        for pod in live.running_pods("istio-system", "app=istiod").await? {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let body = live.pod_get("istio-system", &name, 15014, "/metrics").await?;
            live.save(&format!("metrics/istiod/{name}.prom"), &body)?;
        }
        Ok(())
    })
}

/// Saves `metrics/targets.json` and the query result with its PromQL.
pub async fn collect_prometheus(api: &dyn PromApi, ev: &Evidence) -> Result<(), LiveError> {
    let save = |rel: &str, bytes: &[u8]| {
        ev.write(rel, bytes).map(|_| ()).map_err(|source| LiveError::Write { path: rel.into(), source })
    };
    let targets = api.get("api/v1/targets?state=active").await?;
    save("metrics/targets.json", &targets)?;
    let query = form_urlencoded::Serializer::new(String::new()).append_pair("query", ZTUNNEL_QUERY).finish();
    let result = api.get(&format!("api/v1/query?{query}")).await?;
    save("metrics/query-ztunnel-tcp.json", &result)?;
    save("metrics/query-ztunnel-tcp.promql", ZTUNNEL_QUERY.as_bytes())
}

/// Judges targets, query, and direct scrapes.
pub fn judge(ev: &Evidence) -> Verdict {
    let mut files = vec!["metrics/targets.json".to_string(), "metrics/query-ztunnel-tcp.json".to_string()];
    let targets: Value = match ev.read_json("metrics/targets.json") {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    if targets["status"] != "success" {
        return Verdict::error(format!("Prometheus /api/v1/targets answered status {}", targets["status"]))
            .with_evidence(files);
    }
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let active = targets.pointer("/data/activeTargets").and_then(Value::as_array).cloned().unwrap_or_default();
    let in_pool = |pool: &str| -> Vec<&Value> {
        active.iter().filter(|t| t["scrapePool"].as_str().unwrap_or_default().starts_with(pool)).collect()
    };
    let describe = |t: &Value| {
        format!(
            "{} is {} ({})",
            t["scrapeUrl"].as_str().unwrap_or("?"),
            t["health"].as_str().unwrap_or("?"),
            t["lastError"].as_str().unwrap_or("")
        )
    };
    let istiod = in_pool(ISTIOD_POOL);
    if istiod.is_empty() {
        let pools: std::collections::BTreeSet<&str> = active.iter().filter_map(|t| t["scrapePool"].as_str()).collect();
        problems.push(format!(
            "no active target of the istiod ServiceMonitor (scrape pool {ISTIOD_POOL}*): Prometheus does not select it; pools seen: {pools:?}"
        ));
    } else {
        let down: Vec<String> = istiod.iter().filter(|t| t["health"] != "up").map(|t| describe(t)).collect();
        if down.is_empty() {
            notes.push(format!("istiod ServiceMonitor: {} target(s) up", istiod.len()));
        } else {
            problems.push(format!(
                "istiod ServiceMonitor: {} of {} targets not up: {}",
                down.len(),
                istiod.len(),
                down.join("; ")
            ));
        }
    }
    // Every running ztunnel must be scraped: one up target is not "every ztunnel".
    let pods: Value = match ev.read_json(ZTUNNEL_PODS) {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    files.push(ZTUNNEL_PODS.to_string());
    let ztunnel = in_pool(ZTUNNEL_POOL);
    let running: Vec<&Value> = kjson::items(&pods).iter().filter(|p| kjson::pod_phase(p) == "Running").collect();
    if running.is_empty() {
        problems.push(format!("{ZTUNNEL_PODS}: no running ztunnel pod"));
    }
    let mut scraped = 0;
    for pod in &running {
        let (name, node) = (kjson::name(pod), pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("?"));
        let ip = pod.pointer("/status/podIP").and_then(Value::as_str).unwrap_or_default();
        // By the pod label the PodMonitor sets; by IP only for a target without one.
        let target =
            ztunnel.iter().find(|t| t.pointer("/labels/pod").and_then(Value::as_str) == Some(name)).or_else(|| {
                ztunnel.iter().find(|t| {
                    t.pointer("/labels/pod").is_none()
                        && !ip.is_empty()
                        && t["scrapeUrl"].as_str().is_some_and(|u| u.contains(&format!("//{ip}:")))
                })
            });
        match target {
            Some(t) if t["health"] == "up" => scraped += 1,
            Some(t) => problems.push(format!("ztunnel on node {node} (pod {name}): target {}", describe(t))),
            None => problems.push(format!(
                "ztunnel on node {node} (pod {name}, IP {ip}) is not scraped: no target of the ztunnel PodMonitor (scrape pool {ZTUNNEL_POOL}*) points at it"
            )),
        }
    }
    if scraped > 0 {
        notes.push(format!("ztunnel PodMonitor: {scraped} of {} running ztunnel(s) scraped and up", running.len()));
    }
    match ev.read_json::<Value>("metrics/query-ztunnel-tcp.json") {
        Err(e) => return e.into(),
        Ok(q) => {
            let n = q.pointer("/data/result").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
            if q["status"] != "success" || n == 0 {
                let promql = ev.read_text("metrics/query-ztunnel-tcp.promql").unwrap_or_default();
                problems.push(format!("query `{}` returned no series (status {})", promql.trim(), q["status"]));
            } else {
                notes.push(format!("ztunnel TCP query: {n} series"));
            }
        }
    }
    let root = super::mtls::ztunnel_root(ev, ZTUNNEL_DIR);
    let nodes = ev.subdirs(&root);
    if nodes.is_empty() {
        problems.push(format!("no direct ztunnel scrape under {ZTUNNEL_DIR}/<node>/metrics.prom"));
    }
    for node in nodes {
        let file = format!("{root}/{node}/metrics.prom");
        let text = match ev.read_text(&file) {
            Ok(t) => t,
            Err(e) => return e.into(),
        };
        files.push(file.clone());
        let scrape = promtext::parse(&text);
        if !scrape.bad_lines.is_empty() {
            problems.push(format!(
                "{file}: {} unparsable line(s), first at line {}",
                scrape.bad_lines.len(),
                scrape.bad_lines[0].0
            ));
        }
        let missing: Vec<&str> = ZTUNNEL_FAMILIES.iter().copied().filter(|f| !scrape.has_family(f)).collect();
        if !missing.is_empty() {
            problems.push(format!("{file}: missing families {}", missing.join(", ")));
        }
    }
    let istiod = ev.files("metrics/istiod");
    if istiod.is_empty() {
        problems.push("no direct istiod scrape under metrics/istiod/".into());
    }
    for f in istiod {
        let file = format!("metrics/istiod/{f}");
        let text = match ev.read_text(&file) {
            Ok(t) => t,
            Err(e) => return e.into(),
        };
        files.push(file.clone());
        let scrape = promtext::parse(&text);
        if !scrape.samples.iter().any(|s| s.name.starts_with("pilot_")) {
            problems.push(format!("{file}: no pilot_* metrics in istiod's monitoring endpoint"));
        }
    }
    Verdict::from_findings(
        problems,
        notes,
        files,
        "istiod and ztunnel are scraped and their metrics are queryable",
        |n| format!("{n} metric-scraping finding(s): expected both monitors up and ztunnel TCP series for book-info"),
    )
}
