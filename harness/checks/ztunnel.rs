//! ztunnel evidence several checks gather and read: the ztunnel pods, and from each one that is
//! serving, its config dump (and for some checks its metrics and access log).
//!
//! A ztunnel pod being deleted is skipped, by collectors and judges alike, and named in the
//! verdict's notes: the chart rolls ztunnel with `maxSurge: 1, maxUnavailable: 0` and gives it
//! `terminationGracePeriodSeconds: 30` (istio/istio@1.30.3 manifests/charts/ztunnel/values.yaml,
//! `updateStrategy`; templates/daemonset.yaml), so during an upgrade a node briefly has the new pod
//! and the old one, which stays `Running` with a `deletionTimestamp` while it drains, its stats port
//! closed. Reading it would fail a healthy rollout or port-forward to a dying pod.

use serde_json::Value;

use crate::{
    cluster::live::{Live, LiveError},
    evidence::{Evidence, Findings, Format, Verdict},
    formats::{kjson, ztunnel_log},
};

/// The namespace ztunnel runs in (istio.io docs/ambient/install/helm installs it there).
const NAMESPACE: &str = "istio-system";

/// The last this many lines of a ztunnel's log are read: ztunnel writes one access line per
/// connection (about 600 bytes), so 20 000 lines hold the traffic of any check many times over.
const LOG_LINES: i64 = 20_000;
/// And at most this many bytes of them, whatever the lines' length (`limitBytes` of `pods/log`).
const LOG_BYTES: i64 = 16 * 1024 * 1024;

/// What to read from each serving ztunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parts {
    /// `/config_dump` only: who is captured.
    ConfigDump,
    /// `/config_dump`, `/stats/prometheus` and the access log.
    All,
}

/// `<check>/ztunnel-pods.json`: the ztunnel PodList as the API returned it, which the collector
/// chose the pods from and the judge reads the same way.
pub fn pods_file(check: &str) -> String {
    format!("{check}/ztunnel-pods.json")
}

/// `<check>/ztunnel`: the folder of a check's per-node ztunnel evidence.
pub fn dir(check: &str) -> String {
    format!("{check}/ztunnel")
}

/// Whether a pod is being deleted (`metadata.deletionTimestamp` set): draining, not serving.
pub fn is_draining(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// The pods of a PodList that serve: phase `Running` and not being deleted.
pub fn serving(pods: &Value) -> Vec<&Value> {
    kjson::items(pods).iter().filter(|p| kjson::pod_phase(p) == "Running" && !is_draining(p)).collect()
}

/// One note per pod of a PodList that is being deleted, for a verdict's notes.
pub fn draining_notes(pods: &Value) -> Vec<String> {
    kjson::items(pods)
        .iter()
        .filter(|p| is_draining(p))
        .map(|p| {
            format!(
                "skipped ztunnel {} on node {}: being deleted since {} (draining during a rollout)",
                kjson::name(p),
                node_of(p),
                p.pointer("/metadata/deletionTimestamp").and_then(Value::as_str).unwrap_or("?")
            )
        })
        .collect()
}

/// The node a pod runs on, or its name when it has none.
pub fn node_of(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_else(|| kjson::name(pod))
}

/// Saves the ztunnel PodList as [`pods_file`], and from each serving ztunnel the `parts` under
/// `<check>/ztunnel/<node>/`: `config_dump.json` (admin port 15000), `metrics.prom` (15020
/// `/stats/prometheus`) and `access.log` (its `access` events, [`ztunnel_log`]). Pods being deleted are skipped; the PodList shows them.
pub async fn collect(live: &Live, check: &str, parts: Parts) -> Result<(), LiveError> {
    let list = live.get_raw(&format!("/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3Dztunnel")).await?;
    live.save(&pods_file(check), &list)?;
    let pods: Value = serde_json::from_slice(&list)
        .map_err(|e| LiveError::Http { what: "ztunnel pods".into(), message: e.to_string() })?;
    let serving = serving(&pods);
    if serving.is_empty() {
        return Err(LiveError::Http {
            what: "ztunnel pods".into(),
            message: format!("no running ztunnel pod in {NAMESPACE} that is not being deleted"),
        });
    }
    for pod in serving {
        let (name, node) = (kjson::name(pod), node_of(pod));
        let folder = format!("{}/{node}", dir(check));
        let dump = live.pod_get(NAMESPACE, name, 15000, "/config_dump").await?;
        live.save(&format!("{folder}/config_dump.json"), &dump)?;
        if parts == Parts::ConfigDump {
            continue;
        }
        let metrics = live.pod_get(NAMESPACE, name, 15020, "/stats/prometheus").await?;
        live.save(&format!("{folder}/metrics.prom"), &metrics)?;
        let logs = live.pod_logs(NAMESPACE, name, LOG_LINES, LOG_BYTES, Some(3600)).await?;
        let access: String =
            logs.lines().filter(|l| !ztunnel_log::parse(l).is_empty()).map(|l| format!("{l}\n")).collect();
        live.save(&format!("{folder}/access.log"), access.as_bytes())?;
    }
    Ok(())
}

/// The folder holding a check's per-node ztunnel evidence: its own `<check>/ztunnel/`, or in a
/// folder of format 1 the shared `ztunnel/` (which metrics overwrote after mtls was judged on it).
pub fn root(ev: &Evidence, check: &str) -> String {
    match ev.format() {
        Format::One => "ztunnel".to_string(),
        Format::Two => dir(check),
    }
}

/// Notes each ztunnel pod the check's collector skipped because it was being deleted, reading
/// the PodList it chose from; nothing when the folder predates the list (it came with the
/// draining-pod rule).
pub fn note_draining(ev: &Evidence, check: &str, found: &mut Findings) {
    let Ok(pods) = ev.read_json::<Value>(&pods_file(check)) else { return };
    found.read(pods_file(check));
    draining_notes(&pods).into_iter().for_each(|n| found.note(n));
}

/// The folder of a check's per-node ztunnel evidence and its node folders, or the error verdict
/// when no ztunnel was read.
pub fn nodes(ev: &Evidence, check: &str) -> Result<(String, Vec<String>), Verdict> {
    let root = root(ev, check);
    let nodes = ev.subdirs(&root);
    if nodes.is_empty() {
        return Err(Verdict::error(format!("needed evidence folder {root}/<node>/ is missing: no ztunnel was read")));
    }
    Ok((root, nodes))
}

/// Workloads of a config dump. ztunnel 1.30 writes a list (istio/ztunnel@1.30.3 src/state.rs,
/// `ProxyStateSerialization { workloads: Vec<Arc<Workload>> }`, sorted by uid); older ztunnels
/// and istioctl's test data key them by address or uid, so a map is read too.
pub fn dump_workloads(dump: &Value) -> Vec<&Value> {
    match dump.get("workloads") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(Value::Object(m)) => m.values().collect(),
        _ => Vec::new(),
    }
}
