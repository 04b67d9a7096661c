//! Every Istio `Gateway` in book-info is served: it selects at least one Ready gateway pod, and each
//! of its server ports is reachable through a Service that selects those pods.
//!
//! The traps it names:
//! - bookinfo's Gateway selects `istio: ingressgateway`, but the gateway chart derives that label
//!   from the Helm release name minus `istio-` (release `istio-ingress` gives `istio: ingress`), so
//!   the documented commands as written leave bookinfo unreachable;
//! - since Istio 1.20 (istio/istio#45943) bookinfo's Gateway server is on port 8080, while the
//!   gateway chart's default `http2` Service port targets 80: the pod then listens on 8080 and
//!   every request through the Service is reset (the symptom of istio/istio#50693);
//! - a crash-looping gateway pod stays in phase Running: only Ready counts;
//! - a gateway Deployment whose pods are never created: the gateway chart's pods carry
//!   `sidecar.istio.io/inject: "true"`, so each create goes through istiod's sidecar-injector
//!   webhook (failurePolicy Fail), and while istiod does not answer it the ReplicaSet's creates are
//!   refused; the verdict names the Deployment and its `ReplicaFailure` (the real control-plane
//!   tier's ingress gateway, whose istiod no kubelet runs, shows it).

use std::collections::BTreeSet;

use serde_json::Value;

use super::{BoxFuture, CheckDef, Collector};
use crate::{
    cluster::live::{Live, LiveError},
    common::catalog,
    evidence::{Evidence, Findings, Format, Verdict},
    formats::kjson,
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::GATEWAY_BINDING, collect: Collector::Cluster(collect), judge };

const GATEWAYS: &str = "gateway/gateways.json";
const PODS: &str = "gateway/pods.json";
/// `gateway/deployments.json`: the Deployments labelled `istio` (the gateway chart's and istiod's),
/// to tell a Gateway whose pods are never created from one whose label matches no gateway.
const DEPLOYMENTS: &str = "gateway/deployments.json";
/// `gateway/services-<namespace>.json`: the Services of each namespace holding a selected pod.
const SERVICES_PREFIX: &str = "services-";

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let gws = live.get_raw("/apis/networking.istio.io/v1/namespaces/book-info/gateways").await?;
        live.save(GATEWAYS, &gws)?;
        let pods = live.get_raw("/api/v1/pods?labelSelector=istio").await?;
        live.save(PODS, &pods)?;
        live.save(DEPLOYMENTS, &live.get_raw("/apis/apps/v1/deployments?labelSelector=istio").await?)?;
        let (gws, pods): (Value, Value) =
            (serde_json::from_slice(&gws).unwrap_or_default(), serde_json::from_slice(&pods).unwrap_or_default());
        for ns in selected_namespaces(&gws, &pods) {
            let services = live.get_raw(&format!("/api/v1/namespaces/{ns}/services")).await?;
            live.save(&format!("gateway/{SERVICES_PREFIX}{ns}.json"), &services)?;
        }
        Ok(())
    })
}

/// Namespaces of the pods any Gateway selects.
fn selected_namespaces(gws: &Value, pods: &Value) -> BTreeSet<String> {
    let selectors: Vec<serde_json::Map<String, Value>> =
        kjson::items(gws).iter().map(selector).filter(|s| !s.is_empty()).collect();
    kjson::items(pods)
        .iter()
        .filter(|p| selectors.iter().any(|s| kjson::labels_match(p, s)))
        .map(|p| kjson::namespace(p).to_string())
        .collect()
}

fn selector(gw: &Value) -> serde_json::Map<String, Value> {
    gw.pointer("/spec/selector").and_then(Value::as_object).cloned().unwrap_or_default()
}

/// A Service port's numeric targetPort (absent means the port itself); `None` for a named one.
fn target_port(p: &Value) -> Option<i64> {
    match p.get("targetPort") {
        None => p["port"].as_i64(),
        Some(t) => t.as_i64(),
    }
}

/// The port a gateway pod listens on for a Gateway server port, as Istio resolves it for a
/// label-selected Gateway (istio/istio 1.30.3 pilot/pkg/model/gateway.go, resolvePorts): the
/// targetPort of the selecting Service's port whose `port` equals the server port, else the server
/// port as it is.
pub fn listen_port(server_port: i64, service_ports: &[&Value]) -> Option<i64> {
    match service_ports.iter().find(|p| p["port"].as_i64() == Some(server_port)) {
        Some(p) => target_port(p),
        None => Some(server_port),
    }
}

/// Whether a Deployment's pod template carries every pair of `selector`.
fn template_matches(deployment: &Value, selector: &serde_json::Map<String, Value>) -> bool {
    let labels = deployment.pointer("/spec/template/metadata/labels");
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// What a Deployment's conditions say of its missing pods: the `ReplicaFailure` the deployment
/// controller copies from its ReplicaSet (kubernetes v1.35.4 pkg/controller/deployment/progress.go
/// `getReplicaFailures`; a create the API server refused, e.g. by an admission webhook) and an
/// `Available` that is False.
fn why_no_pods(deployment: &Value) -> String {
    let said: Vec<String> = deployment
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            matches!(
                (c["type"].as_str(), c["status"].as_str()),
                (Some("ReplicaFailure"), Some("True")) | (Some("Available"), Some("False"))
            )
        })
        .map(|c| {
            format!(
                "{}: {}: {}",
                c["type"].as_str().unwrap_or_default(),
                c["reason"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    if said.is_empty() { String::new() } else { format!("; {}", said.join("; ")) }
}

/// Judges gateways against the pods carrying an `istio` label and the Services selecting them.
pub fn judge(ev: &Evidence) -> Verdict {
    let mut files = vec![GATEWAYS.to_string(), PODS.to_string()];
    let (gws, pods): (Value, Value) = match (ev.read_json(GATEWAYS), ev.read_json(PODS)) {
        (Ok(g), Ok(p)) => (g, p),
        (Err(e), _) | (_, Err(e)) => return e.into(),
    };
    let gateways = kjson::items(&gws);
    if gateways.is_empty() {
        return Verdict::fail("no Istio Gateway in book-info: bookinfo's gateway manifest was not applied")
            .with_evidence(files);
    }
    // The collector saved the Services of every namespace holding a selected pod: each is needed,
    // or "no Service selects the pods" could be a file that is not there.
    let mut services = Vec::new();
    for ns in selected_namespaces(&gws, &pods) {
        let rel = format!("gateway/{SERVICES_PREFIX}{ns}.json");
        match ev.read_json_added::<Value>(&rel, Format::Two) {
            Ok(list) => services.extend(kjson::items(&list).iter().cloned()),
            Err(e) => return e.into(),
        }
        files.push(rel);
    }
    let pods = kjson::items(&pods);
    // Only an explanation rests on it, so a folder from before the file is still judged.
    let deployments: Value = ev.read_json(DEPLOYMENTS).unwrap_or_default();
    if !kjson::items(&deployments).is_empty() {
        files.push(DEPLOYMENTS.to_string());
    }
    let mut found = Findings::reading(files);
    for gw in gateways {
        let selector = selector(gw);
        let selected: Vec<&Value> = pods.iter().filter(|p| kjson::labels_match(p, &selector)).collect();
        let ready: Vec<&Value> = selected.iter().copied().filter(|p| kjson::pod_ready(p)).collect();
        let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
        if ready.is_empty() {
            let maker = kjson::items(&deployments).iter().find(|d| template_matches(d, &selector));
            found.fail(if let Some(d) = maker.filter(|_| selected.is_empty()) {
                format!(
                    "Gateway {} selects {{{}}}: Deployment {}/{} makes such pods but has none ({} of {} replicas){}",
                    kjson::name(gw),
                    sel.join(","),
                    kjson::namespace(d),
                    kjson::name(d),
                    d.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
                    d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1),
                    why_no_pods(d)
                )
            } else if selected.is_empty() {
                let seen: Vec<String> = pods
                    .iter()
                    .filter_map(|p| {
                        kjson::label(p, "istio")
                            .map(|l| format!("{}/{} has istio={l}", kjson::namespace(p), kjson::name(p)))
                    })
                    .collect();
                format!(
                    "Gateway {} selects {{{}}} but no pod matches; gateway pods seen: [{}]. The istio/gateway chart \
                     derives `istio:` from the release name minus `istio-`; set `labels.istio` in the gateway values",
                    kjson::name(gw),
                    sel.join(","),
                    seen.join("; ")
                )
            } else {
                let states: Vec<String> = selected
                    .iter()
                    .map(|p| {
                        format!(
                            "{}/{} phase {}, Ready {}, restarts {}",
                            kjson::namespace(p),
                            kjson::name(p),
                            kjson::pod_phase(p),
                            kjson::condition_true(p, "Ready"),
                            kjson::pod_restarts(p)
                        )
                    })
                    .collect();
                format!(
                    "Gateway {} selects {{{}}}: {} pod(s) match but none is Ready ({}); a crash-looping gateway serves nothing",
                    kjson::name(gw),
                    sel.join(","),
                    selected.len(),
                    states.join("; ")
                )
            });
            continue;
        }
        // The Services that route to the gateway pods: same namespace, a selector the pod matches.
        let fronting: Vec<&Value> = services
            .iter()
            .filter(|s| {
                let sel = s.pointer("/spec/selector").and_then(Value::as_object);
                sel.is_some_and(|sel| {
                    !sel.is_empty()
                        && ready
                            .iter()
                            .any(|p| kjson::namespace(p) == kjson::namespace(s) && kjson::labels_match(p, sel))
                })
            })
            .collect();
        if fronting.is_empty() {
            found.fail(format!(
                "Gateway {}: no Service selects its Ready pod(s) [{}]; nothing routes to the gateway",
                kjson::name(gw),
                ready
                    .iter()
                    .map(|p| format!("{}/{}", kjson::namespace(p), kjson::name(p)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            continue;
        }
        let ports: Vec<&Value> = fronting
            .iter()
            .flat_map(|s| s.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten())
            .collect();
        let servers = gw.pointer("/spec/servers").and_then(Value::as_array).cloned().unwrap_or_default();
        for server in &servers {
            let Some(number) = server.pointer("/port/number").and_then(Value::as_i64) else { continue };
            let listen = listen_port(number, &ports);
            let reached = listen.is_some_and(|l| ports.iter().any(|p| target_port(p) == Some(l)));
            let names: Vec<String> =
                fronting.iter().map(|s| format!("{}/{}", kjson::namespace(s), kjson::name(s))).collect();
            if reached {
                found.note(format!(
                    "Gateway {} server port {number}: the pod listens on {}, targeted by Service {}",
                    kjson::name(gw),
                    listen.unwrap_or(number),
                    names.join(", ")
                ));
            } else {
                let mapping: Vec<String> = ports
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {}→{}",
                            p["name"].as_str().unwrap_or("?"),
                            p["port"],
                            p.get("targetPort").unwrap_or(&p["port"])
                        )
                    })
                    .collect();
                found.fail(format!(
                    "Gateway {} server port {number}: the gateway pod listens on {}, but no port of Service {} targets it \
                     (ports: {}); every request through the Service reaches a port nothing listens on. Since Istio 1.20 \
                     bookinfo's Gateway uses 8080 (istio/istio#45943) while the gateway chart's `http2` port targets 80: \
                     set that port's targetPort to the Gateway's server port",
                    kjson::name(gw),
                    listen.map(|l| l.to_string()).unwrap_or_else(|| "a named port".into()),
                    names.join(", "),
                    mapping.join(", ")
                ));
            }
        }
    }
    let pass =
        format!("all {} Gateway(s) in book-info are served by a Ready gateway pod on their ports", gateways.len());
    found.verdict(pass, |n| format!("{n} gateway-binding finding(s) for {} Gateway(s) in book-info", gateways.len()))
}
