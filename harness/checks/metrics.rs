//! Metric scraping: Prometheus reports istiod and every serving ztunnel as scraped targets that are
//! up (meshcheck's ServiceMonitor and PodMonitor, or any other scrape config that reaches those pods,
//! such as Istio's addon Prometheus), a query returns ztunnel TCP metrics for book-info, and a direct
//! scrape of each ztunnel and istiod parses and holds the expected families.

use serde_json::Value;

use super::{
    BoxFuture, CheckDef, Collector,
    ztunnel::{self, Parts},
};
use crate::{
    cluster::live::{Live, LiveError},
    common::catalog,
    evidence::{Evidence, Findings, Format, Verdict},
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
        Box::pin(self.0.prometheus_get(path))
    }
}

/// This check's folder; its own ztunnel evidence is under `metrics/ztunnel/<node>/`, and the
/// ztunnel pods as the API listed them (to hold the targets against) in `metrics/ztunnel-pods.json`.
const CHECK_DIR: &str = "metrics";

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        crate::cluster::traffic::drive_bookinfo(live, 20).await;
        // Two scrape intervals, so the traffic just sent is in Prometheus.
        tokio::time::sleep(live.scenario.settle(std::time::Duration::from_secs(35))).await;
        collect_prometheus(&ViaServiceProxy(live), &live.evidence).await?;
        ztunnel::collect(live, CHECK_DIR, Parts::All).await?;
        // An istiod being replaced drains too (its Deployment rolls with surge): read the serving ones.
        let istiods = live.running_pods("istio-system", "app=istiod").await?;
        for pod in istiods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
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
    let targets: Value = match ev.read_json("metrics/targets.json") {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    let mut found = Findings::reading(["metrics/targets.json".to_string()]);
    if targets["status"] != "success" {
        return Verdict::error(format!("Prometheus /api/v1/targets answered status {}", targets["status"]))
            .with_evidence(["metrics/targets.json".to_string()]);
    }
    let active = targets.pointer("/data/activeTargets").and_then(Value::as_array).cloned().unwrap_or_default();
    let pool = |t: &Value| t["scrapePool"].as_str().unwrap_or_default().to_string();
    let pools: std::collections::BTreeSet<String> = active.iter().map(pool).collect();
    let describe = |t: &Value| {
        format!(
            "{} is {} ({})",
            t["scrapeUrl"].as_str().unwrap_or("?"),
            t["health"].as_str().unwrap_or("?"),
            t["lastError"].as_str().unwrap_or("")
        )
    };
    // A target is told by the pod it scrapes, whatever pool holds it: meshcheck's monitors make
    // the pools `serviceMonitor/monitoring/istiod/*` and `podMonitor/monitoring/ztunnel/*`, and a
    // Prometheus no operator runs (Istio's addon, samples/addons/prometheus.yaml) scrapes the same
    // pods by their `prometheus.io/*` annotations in its `kubernetes-pods` job. Both label a target
    // with its `pod` (prometheus-operator v0.85.0 promcfg.go; the addon's relabel_configs).
    let pod_of = |t: &Value| t.pointer("/labels/pod").and_then(Value::as_str).unwrap_or_default().to_string();
    let istiod_pods: Vec<String> =
        ev.files("metrics/istiod").iter().filter_map(|f| f.strip_suffix(".prom")).map(String::from).collect();
    let istiod: Vec<&Value> =
        active.iter().filter(|t| pool(t).starts_with(ISTIOD_POOL) || istiod_pods.contains(&pod_of(t))).collect();
    if istiod.is_empty() {
        found.fail(format!(
            "no active target scrapes istiod: none of the istiod ServiceMonitor (scrape pool {ISTIOD_POOL}*: Prometheus does not select it) and none of another pool labelled with an istiod pod ({}); pools seen: {pools:?}",
            istiod_pods.join(", ")
        ));
    } else {
        let down: Vec<String> = istiod.iter().filter(|t| t["health"] != "up").map(|t| describe(t)).collect();
        let seen: std::collections::BTreeSet<String> = istiod.iter().map(|t| pool(t)).collect();
        if down.is_empty() {
            found.note(format!("istiod: {} target(s) up (scrape pools {seen:?})", istiod.len()));
        } else {
            found.fail(format!("istiod: {} of {} targets not up: {}", down.len(), istiod.len(), down.join("; ")));
        }
    }
    // Every serving ztunnel must be scraped: one up target is not "every ztunnel". One being
    // deleted (draining during a rollout, its stats port closed) is skipped and noted.
    let pods_file = ztunnel::pods_file(CHECK_DIR);
    let pods: Value = match ev.read_json_added(&pods_file, Format::Two) {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    found.read(pods_file.clone());
    ztunnel::draining_notes(&pods).into_iter().for_each(|n| found.note(n));
    let serving = ztunnel::serving(&pods);
    if serving.is_empty() {
        found.fail(format!("{pods_file}: no running ztunnel pod that is not being deleted"));
    }
    let mut scraped = 0;
    for pod in &serving {
        let (name, node) = (kjson::name(pod), ztunnel::node_of(pod));
        let ip = pod.pointer("/status/podIP").and_then(Value::as_str).unwrap_or_default();
        // By the pod label, in any pool; by IP only for a target of the PodMonitor without one
        // (an IP alone could be another pod's, once that pod is gone).
        let of_pod: Vec<&Value> = active
            .iter()
            .filter(|t| match t.pointer("/labels/pod").and_then(Value::as_str) {
                Some(p) => p == name,
                None => {
                    pool(t).starts_with(ZTUNNEL_POOL)
                        && !ip.is_empty()
                        && t["scrapeUrl"].as_str().is_some_and(|u| u.contains(&format!("//{ip}:")))
                }
            })
            .collect();
        match (of_pod.iter().any(|t| t["health"] == "up"), of_pod.first()) {
            (true, _) => scraped += 1,
            (false, Some(t)) => found.fail(format!("ztunnel on node {node} (pod {name}): target {}", describe(t))),
            (false, None) => found.fail(format!(
                "ztunnel on node {node} (pod {name}, IP {ip}) is not scraped: no target of the ztunnel PodMonitor (scrape pool {ZTUNNEL_POOL}*) or of another pool points at it"
            )),
        }
    }
    if scraped > 0 {
        found.note(format!("ztunnel: {scraped} of {} serving ztunnel(s) scraped and up", serving.len()));
    }
    match ev.read_json::<Value>("metrics/query-ztunnel-tcp.json") {
        Err(e) => return e.into(),
        Ok(q) => {
            found.read("metrics/query-ztunnel-tcp.json");
            let promql = ev.read_text("metrics/query-ztunnel-tcp.promql").unwrap_or_default();
            let n = q.pointer("/data/result").and_then(Value::as_array).map(Vec::len).unwrap_or(0);
            if q["status"] != "success" {
                // Prometheus could not answer the query: nothing was learnt about the series.
                found.unjudged(format!(
                    "query `{}` was not answered: status {}, {}",
                    promql.trim(),
                    q["status"],
                    q["error"].as_str().unwrap_or("no error given")
                ));
            } else if n == 0 {
                found.fail(format!("query `{}` returned no series", promql.trim()));
            } else {
                found.note(format!("ztunnel TCP query: {n} series"));
            }
        }
    }
    let root = ztunnel::root(ev, CHECK_DIR);
    let nodes = ev.subdirs(&root);
    if nodes.is_empty() {
        found.unjudged(format!(
            "needed evidence {root}/<node>/metrics.prom is missing: no ztunnel was scraped directly"
        ));
    }
    for node in nodes {
        let file = format!("{root}/{node}/metrics.prom");
        let text = match ev.read_text(&file) {
            Ok(t) => t,
            Err(e) => return e.into(),
        };
        found.read(file.clone());
        let scrape = promtext::parse(&text);
        if !scrape.bad_lines.is_empty() {
            found.fail(format!(
                "{file}: {} unparsable line(s), first at line {}",
                scrape.bad_lines.len(),
                scrape.bad_lines[0].0
            ));
        }
        let missing: Vec<&str> = ZTUNNEL_FAMILIES.iter().copied().filter(|f| !scrape.has_family(f)).collect();
        if !missing.is_empty() {
            found.fail(format!("{file}: missing families {}", missing.join(", ")));
        }
    }
    let istiod = ev.files("metrics/istiod");
    if istiod.is_empty() {
        found.unjudged("needed evidence metrics/istiod/<pod>.prom is missing: no istiod was scraped directly");
    }
    for f in istiod {
        let file = format!("metrics/istiod/{f}");
        let text = match ev.read_text(&file) {
            Ok(t) => t,
            Err(e) => return e.into(),
        };
        found.read(file.clone());
        let scrape = promtext::parse(&text);
        if !scrape.samples.iter().any(|s| s.name.starts_with("pilot_")) {
            found.fail(format!("{file}: no pilot_* metrics in istiod's monitoring endpoint"));
        }
    }
    found.verdict("istiod and ztunnel are scraped and their metrics are queryable", |n| {
        format!("{n} metric-scraping finding(s): expected istiod and every serving ztunnel scraped and up, and ztunnel TCP series for book-info")
    })
}
