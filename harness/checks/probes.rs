//! Probes still pass under default-deny: with a default-deny ingress NetworkPolicy on book-info
//! (HBONE 15008 allowed) and the allow-ambient-hostprobes Cilium policy in place, every pod stays
//! Ready with no restarts and no new `Unhealthy` events, and nothing outside book-info suffers. The
//! optional negative control removes the Cilium policy and requires probes to fail, proving the
//! check can see the problem.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    BoxFuture, CheckDef, Collector, Curl,
    ztunnel::{self, Parts},
};
use crate::{
    cluster::live::{Live, LiveError},
    common::catalog,
    evidence::{Evidence, Findings, Format, Verdict},
    formats::kjson,
    plan::fixtures,
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::PROBES, collect: Collector::Cluster(collect), judge };

/// Namespaces that must not suffer collateral damage.
pub const COLLATERAL: &[&str] = &["kube-system", "monitoring", "tempo"];
const NS: &str = "book-info";

/// This check's folder; ztunnel's config dumps from before the policy are under `probes/ztunnel/`.
const CHECK_DIR: &str = "probes";
/// The plaintext probe that proves default-deny is enforced at all.
const ENFORCEMENT: &str = "probes/enforcement.json";
/// The Prometheus targets before the policy: only a target that was up and went down is collateral.
const TARGETS_BEFORE: &str = "probes/targets-before.json";
const TARGETS_AFTER: &str = "probes/targets-after.json";
const NEGATIVE_PODS: &str = "probes/negative/pods-after.json";
const NEGATIVE_EVENTS: &str = "probes/negative/events-after.json";

/// The annotation istio-cni sets on a pod once it has set up its redirection to ztunnel, with the
/// value that means the pod is captured (istio/istio@1.30.3 cni/pkg/util/podutil.go,
/// `PodFullyEnrolled`: `annotation.AmbientRedirection.Name == constants.AmbientRedirectionEnabled`;
/// pkg/config/constants/constants.go: "The presence of this annotation with this specific value
/// indicates the pod is captured. Anything else indicates it is not.").
const REDIRECTION_ANNOTATION: &str = "ambient.istio.io/redirection";
/// Its value on a captured pod (`constants.AmbientRedirectionEnabled`).
const REDIRECTION_ENABLED: &str = "enabled";

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let deny = fixtures::manifest("default-deny.yaml")?;
        let pods = live.get_raw(&format!("/api/v1/namespaces/{NS}/pods")).await?;
        live.save("probes/pods-before.json", &pods)?;
        // Who ztunnel holds captured before the policy: a probed pod outside ambient proves nothing.
        ztunnel::collect(live, CHECK_DIR, Parts::ConfigDump).await?;
        let pods: Value = serde_json::from_slice(&pods).unwrap_or(Value::Null);
        let wait = live.scenario.settle(probe_wait(&pods, live.scenario.probes.periods));
        // Targets before the policy: only a target that was up and went down is collateral damage.
        let targets = live.prometheus_get("api/v1/targets?state=active").await?;
        live.save(TARGETS_BEFORE, &targets)?;
        let target = enforcement_target(&pods);
        let before = match &target {
            Some(url) => Some(plaintext_curl(live, url).await),
            None => None,
        };
        let applied_at = crate::common::util::now_rfc3339();
        // Default-deny is undone by the session (Live::revert_all) if anything below fails or the
        // collector runs out of time; on success it comes off at the end of this collector.
        let deny = live.apply(&deny, Some(NS), true).await?;
        live.save_json(
            "probes/policy.json",
            &json!({ "applied_at": applied_at, "wait_secs": wait.as_secs_f64(),
                     "objects": ["NetworkPolicy book-info/meshcheck-default-deny", "NetworkPolicy book-info/meshcheck-allow-hbone"],
                     "requires": "CiliumClusterwideNetworkPolicy allow-ambient-hostprobes" }),
        )?;
        let mut result = observe(live, wait, "probes", &applied_at).await;
        if result.is_ok() {
            let during = match &target {
                Some(url) => Some(plaintext_curl(live, url).await),
                None => None,
            };
            result = live.save_json(
                ENFORCEMENT,
                &json!({ "client": format!("{}/curl-outside", crate::common::names::OUTSIDE_NS), "target": target,
                         "before": before, "during": during }),
            );
        }
        if result.is_ok() && live.scenario.probes.negative_control {
            let ccnp = fixtures::manifest("cilium-allow-ambient-hostprobes.yaml")?;
            let removed_at = crate::common::util::now_rfc3339();
            let removed = live.delete(&ccnp, None).await?;
            let negative = observe(live, wait, "probes/negative", &removed_at).await;
            live.revert(removed).await?;
            negative?;
        }
        let cleanup = live.revert(deny).await;
        result.and(cleanup)
    })
}

/// `http://<pod IP>:9080/` of a Running book-info pod serving 9080 (bookinfo's port): plaintext
/// straight to a pod, which a default-deny ingress policy that only allows HBONE must drop.
fn enforcement_target(pods: &Value) -> Option<String> {
    kjson::items(pods).iter().filter(|p| kjson::pod_ready(p)).find_map(|p| {
        let serves = p.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten().any(|c| {
            c.get("ports").and_then(Value::as_array).into_iter().flatten().any(|port| port["containerPort"] == 9080)
        });
        let ip = p.pointer("/status/podIP").and_then(Value::as_str)?;
        serves.then(|| format!("http://{ip}:9080/"))
    })
}

async fn plaintext_curl(live: &Live, url: &str) -> Value {
    super::curl_from(live, crate::common::names::OUTSIDE_NS, "curl-outside", url, 5).await
}

async fn observe(live: &Live, wait: Duration, dir: &str, since: &str) -> Result<(), LiveError> {
    tokio::time::sleep(wait).await;
    live.save(&format!("{dir}/pods-after.json"), &live.get_raw(&format!("/api/v1/namespaces/{NS}/pods")).await?)?;
    let events: Value = live.list_json(&format!("/api/v1/namespaces/{NS}/events")).await?;
    let recent: Vec<Value> = kjson::items(&events).iter().filter(|e| event_time(e) >= since).cloned().collect();
    live.save_json(
        &format!("{dir}/events-after.json"),
        &json!({ "kind": "EventList", "apiVersion": "v1", "items": recent }),
    )?;
    if dir == "probes" {
        for ns in COLLATERAL {
            live.save(
                &format!("probes/collateral-pods-{ns}.json"),
                &live.get_raw(&format!("/api/v1/namespaces/{ns}/pods")).await?,
            )?;
        }
        let targets = live.prometheus_get("api/v1/targets?state=active").await?;
        live.save(TARGETS_AFTER, &targets)?;
    }
    Ok(())
}

/// How long to watch: `periods` times the longest probe period in the namespace, plus slack.
pub fn probe_wait(pods: &Value, periods: u32) -> Duration {
    let longest = kjson::items(pods)
        .iter()
        .flat_map(|p| p.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default())
        .flat_map(|c| {
            ["readinessProbe", "livenessProbe"]
                .map(|k| c.get(k).and_then(|p| p.get("periodSeconds")).and_then(Value::as_u64).or(c.get(k).map(|_| 10)))
        })
        .flatten()
        .max()
        .unwrap_or(10);
    Duration::from_secs(longest * u64::from(periods) + 10)
}

fn event_time(e: &Value) -> &str {
    ["lastTimestamp", "eventTime", "firstTimestamp"]
        .iter()
        .find_map(|k| e.get(*k).and_then(Value::as_str))
        .or_else(|| e.pointer("/metadata/creationTimestamp").and_then(Value::as_str))
        .unwrap_or("")
}

fn probed_pods(pods: &Value) -> Vec<&Value> {
    kjson::items(pods)
        .iter()
        .filter(|p| {
            p.pointer("/spec/containers").and_then(Value::as_array).is_some_and(|cs| {
                cs.iter().any(|c| c.get("readinessProbe").is_some() || c.get("livenessProbe").is_some())
            })
        })
        .collect()
}

fn unhealthy(events: &Value) -> Vec<String> {
    kjson::items(events)
        .iter()
        .filter(|e| e["reason"] == "Unhealthy")
        .map(|e| {
            format!(
                "{}: {}",
                e.pointer("/involvedObject/name").and_then(Value::as_str).unwrap_or("?"),
                e["message"].as_str().unwrap_or("").trim()
            )
        })
        .collect()
}

/// Judges the before/after pod lists, events, collateral namespaces and the negative control.
pub fn judge(ev: &Evidence) -> Verdict {
    let files = [
        "probes/policy.json".to_string(),
        "probes/pods-before.json".into(),
        "probes/pods-after.json".into(),
        "probes/events-after.json".into(),
    ];
    let read = |f: &str| ev.read_json::<Value>(f);
    let (policy, before, after, events) = match (
        read("probes/policy.json"),
        read("probes/pods-before.json"),
        read("probes/pods-after.json"),
        read("probes/events-after.json"),
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return e.into(),
    };
    let probed = probed_pods(&before);
    if probed.is_empty() {
        return Verdict::error(
            "no pod in book-info has a readiness or liveness probe: default-deny would prove nothing",
        )
        .with_evidence(files);
    }
    let not_ready_before: Vec<&str> =
        kjson::items(&before).iter().filter(|p| !kjson::pod_ready(p)).map(kjson::name).collect();
    if !not_ready_before.is_empty() {
        return Verdict::error(format!(
            "pods were not Ready before the policy was applied: {}",
            not_ready_before.join(", ")
        ))
        .with_evidence(files);
    }
    let mut found = Findings::reading(files);
    judge_capture(ev, &probed, &mut found);
    for p in kjson::items(&after) {
        let name = kjson::name(p);
        if !kjson::pod_ready(p) {
            found.fail(format!("pod {name} is not Ready under default-deny"));
        }
        if let Some(b) = kjson::items(&before).iter().find(|b| kjson::name(b) == name) {
            let (r0, r1) = (kjson::pod_restarts(b), kjson::pod_restarts(p));
            if r1 > r0 {
                found.fail(format!("pod {name} restarted {} time(s) under default-deny", r1 - r0));
            }
        }
    }
    for b in kjson::items(&before) {
        if !kjson::items(&after).iter().any(|a| kjson::name(a) == kjson::name(b)) {
            found.fail(format!(
                "pod {} disappeared under default-deny (replaced after failing probes?)",
                kjson::name(b)
            ));
        }
    }
    for u in unhealthy(&events) {
        found.fail(format!("Unhealthy event after {}: {u}", policy["applied_at"].as_str().unwrap_or("?")));
    }
    for ns in COLLATERAL {
        let f = format!("probes/collateral-pods-{ns}.json");
        match read(&f) {
            Ok(list) => {
                found.read(f.clone());
                for p in
                    kjson::items(&list).iter().filter(|p| kjson::pod_phase(p) != "Succeeded" && !kjson::pod_ready(p))
                {
                    found.fail(format!("collateral: pod {ns}/{} is not Ready", kjson::name(p)));
                }
            }
            Err(e) => found.unreadable(e),
        }
    }
    match (ev.read_json_added::<Value>(TARGETS_BEFORE, Format::Two), read(TARGETS_AFTER)) {
        (Ok(before), Ok(after)) => {
            found.read(TARGETS_BEFORE);
            found.read(TARGETS_AFTER);
            targets_gone_down(&before, &after).into_iter().for_each(|f| found.fail(f));
        }
        (before, after) => before.err().into_iter().chain(after.err()).for_each(|e| found.unreadable(e)),
    }
    match ev.read_json_added::<Value>(ENFORCEMENT, Format::Two) {
        Ok(e) => {
            found.read(ENFORCEMENT);
            judge_enforcement(&e, &mut found);
        }
        Err(e) => found.unreadable(e),
    }
    // The negative control ran when either of its files is there; then both are needed.
    if ev.exists(NEGATIVE_PODS) || ev.exists(NEGATIVE_EVENTS) {
        match (read(NEGATIVE_PODS), read(NEGATIVE_EVENTS)) {
            (Ok(pods), Ok(events)) => {
                found.read(NEGATIVE_PODS);
                found.read(NEGATIVE_EVENTS);
                let failing =
                    kjson::items(&pods).iter().filter(|p| !kjson::pod_ready(p)).count() + unhealthy(&events).len();
                if failing == 0 {
                    found.fail("negative control: without allow-ambient-hostprobes probes still passed, so this check cannot see the problem (is default-deny enforced?)");
                }
            }
            (pods, events) => pods.err().into_iter().chain(events.err()).for_each(|e| found.unreadable(e)),
        }
    }
    let pass = format!(
        "{} probed pod(s) stayed Ready under default-deny; no restarts, no Unhealthy events, no collateral damage",
        probed.len()
    );
    found.verdict(pass, |n| format!("{n} finding(s) under default-deny: expected probes to keep passing"))
}

/// Every probed pod must be captured by ambient, or its probes passing says nothing about ambient
/// under default-deny: kubelet's probes to a captured pod arrive SNAT-ed from 169.254.7.127, which
/// the allow-ambient-hostprobes policy admits, while an uncaptured pod is probed on the plain host
/// path and passes without it. Captured means istio-cni's annotation
/// [`REDIRECTION_ANNOTATION`]`: enabled` on the pod before the policy, or a ztunnel config dump
/// from then listing the pod with protocol HBONE. Without either, the check could not tell.
fn judge_capture(ev: &Evidence, probed: &[&Value], found: &mut Findings) {
    ztunnel::note_draining(ev, CHECK_DIR, found);
    let root = ztunnel::dir(CHECK_DIR);
    let mut hbone = std::collections::BTreeSet::new();
    let nodes = ev.subdirs(&root);
    for node in &nodes {
        let file = format!("{root}/{node}/config_dump.json");
        match ev.read_json::<Value>(&file) {
            Ok(dump) => {
                found.read(file);
                for w in ztunnel::dump_workloads(&dump) {
                    if w["namespace"] == NS && w["protocol"] == "HBONE" {
                        hbone.extend(w["name"].as_str().map(str::to_string));
                    }
                }
            }
            Err(e) => found.unreadable(e),
        }
    }
    for pod in probed {
        let name = kjson::name(pod);
        let annotation =
            pod.pointer("/metadata/annotations").and_then(|a| a.get(REDIRECTION_ANNOTATION)).and_then(Value::as_str);
        if annotation == Some(REDIRECTION_ENABLED) || hbone.contains(name) {
            continue;
        }
        let seen = match annotation {
            Some(v) => format!("annotation {REDIRECTION_ANNOTATION}: {v}"),
            None => format!("no annotation {REDIRECTION_ANNOTATION}"),
        };
        found.unjudged(if nodes.is_empty() {
            format!(
                "no evidence that probed pod {NS}/{name} is captured by ambient: {seen} and no ztunnel config dump under {root}/; its probes passing would say nothing about ambient under default-deny"
            )
        } else {
            format!(
                "probed pod {NS}/{name} is not captured by ambient: {seen} (istio-cni sets `enabled` once it redirects the pod) and no ztunnel config dump under {root}/ lists it with protocol HBONE; kubelet probes it on the plain host path, so its probes passing says nothing about ambient under default-deny"
            )
        });
    }
}
/// Prometheus targets that were up before the policy and are not up under it. A target that was
/// already down (a control-plane component the cluster does not expose) is not the policy's doing.
fn targets_gone_down(before: &Value, after: &Value) -> Vec<String> {
    let active = |v: &Value| v.pointer("/data/activeTargets").and_then(Value::as_array).cloned().unwrap_or_default();
    let key =
        |t: &Value| format!("{} {}", t["scrapePool"].as_str().unwrap_or(""), t["scrapeUrl"].as_str().unwrap_or(""));
    let up_before: std::collections::BTreeSet<String> =
        active(before).iter().filter(|t| t["health"] == "up").map(key).collect();
    active(after)
        .iter()
        .filter(|t| t["health"] != "up" && up_before.contains(&key(t)))
        .map(|t| {
            format!(
                "collateral: Prometheus target {} went from up to {} under default-deny ({})",
                t["scrapeUrl"].as_str().unwrap_or("?"),
                t["health"].as_str().unwrap_or("?"),
                t["lastError"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Default-deny must be enforced, or "probes still pass" proves nothing: plaintext from the outside
/// client to a book-info pod on 9080 reaches it before the policy and gets no answer under it.
/// Under the policy no answer is the proof (Cilium drops: curl times out, 28), so only an answer
/// fails; before it, anything but an answer is a failed baseline, and nothing is judged.
fn judge_enforcement(e: &Value, found: &mut Findings) {
    let Some(target) = e["target"].as_str() else {
        found.unjudged(format!(
            "{ENFORCEMENT}: no Ready book-info pod serves 9080, so enforcement of default-deny could not be tested"
        ));
        return;
    };
    match Curl::of(&e["before"]) {
        c @ Curl::NotRun(_) => found.unjudged(format!("the probe to {target} before default-deny: {c}")),
        c if !c.got_through() => found.unjudged(format!(
            "before default-deny, plaintext from the outside client to {target} got {c}: the baseline failed, so the block under the policy would prove nothing"
        )),
        _ => {}
    }
    match Curl::of(&e["during"]) {
        c @ Curl::NotRun(_) => found.unjudged(format!("the probe to {target} under default-deny: {c}")),
        c @ Curl::Answered(_) => found.fail(format!(
            "default-deny is not enforced: under it, plaintext from the outside client still reached {target} ({c}); a cluster that enforces no NetworkPolicy would pass this check"
        )),
        c @ Curl::NoConnection(6) => {
            found.unjudged(format!("the probe to {target} under default-deny could not resolve it ({c}): that proves no block"))
        }
        c => found.note(format!("under default-deny plaintext to {target} got {c}: blocked")),
    }
}
