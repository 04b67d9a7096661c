//! Every Istio `Gateway` in book-info selects at least one running gateway pod.
//!
//! The trap it names: bookinfo's Gateway selects `istio: ingressgateway`, but the gateway chart
//! derives that label from the Helm release name minus `istio-` (release `istio-ingress` gives
//! `istio: ingress`), so the documented commands as written leave bookinfo unreachable.

use serde_json::Value;

use super::{BoxFuture, CheckDef, Stage};
use crate::{
    evidence::{Evidence, Verdict},
    kjson,
    live::{Live, LiveError},
};

/// Registration.
pub const CHECK: CheckDef = CheckDef {
    name: "gateway-binding",
    stage: Stage::Deploy,
    default_on: true,
    asserts: "every Istio Gateway in book-info selects at least one running gateway pod",
    collect,
    judge,
};

const GATEWAYS: &str = "gateway/gateways.json";
const PODS: &str = "gateway/pods.json";

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let gws = live.get_raw("/apis/networking.istio.io/v1/namespaces/book-info/gateways").await?;
        live.save(GATEWAYS, &gws)?;
        let pods = live.get_raw("/api/v1/pods?labelSelector=istio").await?;
        live.save(PODS, &pods)
    })
}

/// Judges gateways against the pods carrying an `istio` label.
pub fn judge(ev: &Evidence) -> Verdict {
    let files = vec![GATEWAYS.to_string(), PODS.to_string()];
    let (gws, pods): (Value, Value) = match (ev.read_json(GATEWAYS), ev.read_json(PODS)) {
        (Ok(g), Ok(p)) => (g, p),
        (Err(e), _) | (_, Err(e)) => return e.into(),
    };
    let gateways = kjson::items(&gws);
    if gateways.is_empty() {
        return Verdict::fail("no Istio Gateway in book-info: bookinfo's gateway manifest was not applied")
            .with_evidence(files);
    }
    let pods = kjson::items(&pods);
    let mut problems = Vec::new();
    for gw in gateways {
        let selector = gw.pointer("/spec/selector").and_then(Value::as_object).cloned().unwrap_or_default();
        let running =
            pods.iter().filter(|p| kjson::labels_match(p, &selector) && kjson::pod_phase(p) == "Running").count();
        if running == 0 {
            let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
            let seen: Vec<String> = pods
                .iter()
                .filter_map(|p| {
                    kjson::label(p, "istio")
                        .map(|l| format!("{}/{} has istio={l}", kjson::namespace(p), kjson::name(p)))
                })
                .collect();
            problems.push(format!(
                "Gateway {} selects {{{}}} but no running pod matches; gateway pods seen: [{}]. The istio/gateway chart \
                 derives `istio:` from the release name minus `istio-`; set `labels.istio` in the gateway values",
                kjson::name(gw),
                sel.join(","),
                seen.join("; ")
            ));
        }
    }
    let pass = format!("all {} Gateway(s) in book-info select a running gateway pod", gateways.len());
    Verdict::from_findings(problems, Vec::new(), files, pass, |n| {
        format!("{n} of {} Gateway(s) in book-info select no running gateway pod", gateways.len())
    })
}
