//! Health sentinels of the mesh and the CNI, read beside the other reading checks (in the release
//! gate, once in each pass: before and after the upgrade): no container of Istio (istio-system,
//! istio-ingress) or Cilium (kube-system, `app.kubernetes.io/part-of: cilium`, the label the
//! cilium 1.19.6 chart puts on the agent, operator and envoy pods) was OOM-killed or is
//! crash-looping; their restarts and the error-level lines of ztunnel, istio-cni and istiod logs
//! are counted and the first quoted, so the release gate's two passes can be compared.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{BoxFuture, CheckDef, Collector};
use crate::{
    cluster::live::{Live, LiveError},
    common::catalog,
    evidence::{Evidence, Measurement, Unit, Verdict},
    formats::kjson,
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::HEALTH, collect: Collector::Cluster(collect), judge };

/// Where the pods are, and which (label selector, empty for all).
const SCOPE: &[(&str, &str)] =
    &[("istio-system", ""), ("istio-ingress", ""), ("kube-system", "app.kubernetes.io%2Fpart-of%3Dcilium")];

/// The pods whose logs are read, by their `app` or `k8s-app` label (istio 1.30.3 charts:
/// ztunnel/templates/daemonset.yaml `app: ztunnel`, istiod/templates/deployment.yaml `app: istiod`,
/// cni/templates/daemonset.yaml `k8s-app: istio-cni-node`).
const LOGGED: &[&str] = &["ztunnel", "istio-cni-node", "istiod"];

/// The last this many lines of each log, at most this many bytes.
const LOG_LINES: i64 = 5_000;
const LOG_BYTES: i64 = 4 * 1024 * 1024;

/// Error-level lines quoted per pod.
const QUOTED: usize = 3;

const LOGS: &str = "health/log-errors.json";

fn pods_file(ns: &str) -> String {
    format!("health/pods-{ns}.json")
}

/// The error-level lines of one container's log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogErrors {
    /// `namespace/pod`.
    pub pod: String,
    /// Error-level lines among those read.
    pub errors: usize,
    /// Lines read.
    pub lines: usize,
    /// The first few, redacted.
    pub first: Vec<String>,
}

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let mut logs = Vec::new();
        for (ns, selector) in SCOPE {
            let query = if selector.is_empty() { String::new() } else { format!("?labelSelector={selector}") };
            let list = live.get_raw(&format!("/api/v1/namespaces/{ns}/pods{query}")).await?;
            live.save(&pods_file(ns), &list)?;
            let pods: Value = serde_json::from_slice(&list)
                .map_err(|e| LiveError::Http { what: format!("pods of {ns}"), message: e.to_string() })?;
            for pod in kjson::items(&pods) {
                let app = kjson::label(pod, "app").or(kjson::label(pod, "k8s-app")).unwrap_or_default();
                if !LOGGED.contains(&app) || kjson::pod_phase(pod) != "Running" {
                    continue;
                }
                let name = kjson::name(pod);
                let text = live.pod_logs(ns, name, LOG_LINES, LOG_BYTES, None).await?;
                logs.push(errors_in(&format!("{ns}/{name}"), &text));
            }
        }
        live.save_json(LOGS, &logs)
    })
}

/// Counts the error-level lines of a log, in the formats Istio's programs write: Go's
/// istio.io/istio/pkg/log (`<RFC 3339 time>\terror\t…`), ztunnel's plain tracing format
/// (`<time>  error  <scope> …`, `ERROR` in older releases) and either as JSON (`"level":"error"`).
pub fn errors_in(pod: &str, text: &str) -> LogErrors {
    let mut out = LogErrors { pod: pod.to_string(), errors: 0, lines: 0, first: Vec::new() };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        out.lines += 1;
        if level(line).is_some_and(|l| l.eq_ignore_ascii_case("error")) {
            out.errors += 1;
            if out.first.len() < QUOTED {
                out.first.push(crate::redact::redact(&line.chars().take(300).collect::<String>()));
            }
        }
    }
    out
}

/// A log line's level: the `level` of a JSON line, or the word after a leading RFC 3339 time.
fn level(line: &str) -> Option<String> {
    if line.trim_start().starts_with('{') {
        let v: Value = serde_json::from_str(line).ok()?;
        return v.get("level").and_then(Value::as_str).map(String::from);
    }
    let mut words = line.split_whitespace();
    let time = words.next()?;
    let looks_like_time = time.len() >= 20 && time.as_bytes().get(4) == Some(&b'-') && time.contains('T');
    looks_like_time.then(|| words.next().map(String::from)).flatten()
}

/// Judges the pods and the log counts.
pub fn judge(ev: &Evidence) -> Verdict {
    let mut files: Vec<String> = SCOPE.iter().map(|(ns, _)| pods_file(ns)).collect();
    files.push(LOGS.to_string());
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let (mut pods_seen, mut restarts) = (0usize, 0i64);
    for (ns, _) in SCOPE {
        let list: Value = match ev.read_json(&pods_file(ns)) {
            Ok(v) => v,
            Err(e) => return e.into(),
        };
        for pod in kjson::items(&list) {
            pods_seen += 1;
            let name = format!("{ns}/{}", kjson::name(pod));
            let statuses = ["/status/initContainerStatuses", "/status/containerStatuses"]
                .iter()
                .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
                .flatten();
            for c in statuses {
                let container = c["name"].as_str().unwrap_or("?");
                let count = c["restartCount"].as_i64().unwrap_or(0);
                restarts += count;
                let reason = |state: &str, kind: &str| {
                    c.pointer(&format!("/{state}/{kind}/reason"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                if reason("lastState", "terminated") == "OOMKilled" || reason("state", "terminated") == "OOMKilled" {
                    problems.push(format!(
                        "{name} container {container} was OOM-killed (restarts {count}): its memory limit is below what it needs"
                    ));
                } else if reason("state", "waiting") == "CrashLoopBackOff" {
                    problems.push(format!(
                        "{name} container {container} is crash-looping (restarts {count}, last exit: {})",
                        c.pointer("/lastState/terminated/reason").and_then(Value::as_str).unwrap_or("unknown")
                    ));
                } else if count > 0 {
                    notes.push(format!(
                        "{name} container {container} restarted {count} time(s) (last: {})",
                        c.pointer("/lastState/terminated/reason").and_then(Value::as_str).unwrap_or("unknown")
                    ));
                }
            }
        }
    }
    if pods_seen == 0 {
        return Verdict::error("no Istio or Cilium pod was found: health cannot be judged").with_evidence(files);
    }
    let logs: Vec<LogErrors> = match ev.read_json(LOGS) {
        Ok(l) => l,
        Err(e) => return e.into(),
    };
    let errors: usize = logs.iter().map(|l| l.errors).sum();
    for l in logs.iter().filter(|l| l.errors > 0) {
        notes.push(format!("{}: {} error-level line(s) of {} read", l.pod, l.errors, l.lines));
        notes.extend(l.first.iter().map(|q| format!("  {q}")));
    }
    let summary = format!(
        "{pods_seen} Istio and Cilium pods, {restarts} restart(s), {errors} error-level log line(s) in {} ztunnel, istio-cni and istiod logs",
        logs.len()
    );
    // The sentinels' counts, so that a release gate's two passes can be set side by side.
    let count = |metric: &str, value: f64| Measurement::new(metric, Unit::Count, value);
    let measurements = [count("health.restarts", restarts as f64), count("health.log_errors", errors as f64)];
    let verdict = if problems.is_empty() {
        Verdict::pass(format!("none OOM-killed or crash-looping; {summary}")).with_details(notes)
    } else {
        Verdict::fail(format!("{} sick container(s)", problems.len()))
            .with_details(problems.into_iter().chain([summary]).chain(notes))
    };
    verdict.with_evidence(files).with_measurements(measurements)
}
