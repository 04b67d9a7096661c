//! book-info's waypoint: the `istio-waypoint` Gateway is Programmed, its pods serve, and every
//! ztunnel sends each book-info Service's traffic through it. Without the last, L7 policy and
//! the waypoint's spans silently do not happen: ztunnel carries the traffic at L4 alone.
//!
//! istiod assigns a Service its namespace's waypoint (label `istio.io/use-waypoint`) and sends
//! ztunnel the waypoint's address as the Gateway's status gives it, the hostname preferred, else an
//! IP (istio/istio@1.30.3 pilot/pkg/serviceregistry/ambient/waypoints.go `getGatewayAddress`).
//! ztunnel 1.30.3 lists it on the Service as `waypoint: {destination, hboneMtlsPort}`, the
//! destination `<namespace>/<hostname>` or `<network>/<ip>` (src/state/service.rs `Service`,
//! src/state/workload.rs `GatewayAddress`, `NamespacedHostname`'s Display).

use serde_json::Value;

use super::{
    BoxFuture, CheckDef, Collector,
    ztunnel::{self, Parts},
};
use crate::{
    cluster::live::{Live, LiveError},
    common::{catalog, names},
    evidence::{Evidence, Findings, Verdict},
    formats::kjson,
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::WAYPOINT, collect: Collector::Cluster(collect), judge };

const CHECK_DIR: &str = "waypoint";
const EXPECT: &str = "waypoint/expect.json";
const GATEWAYS: &str = "waypoint/gateways.json";
const PODS: &str = "waypoint/pods.json";

/// `waypoint/expect.json`: the waypoint and the Services that must go through it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expect {
    /// The namespace of the waypoint and the Services.
    pub namespace: String,
    /// The waypoint Gateway's name.
    pub gateway: String,
    /// The Services whose traffic the waypoint must carry.
    pub services: Vec<String>,
}

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let ns = names::BOOKINFO_NS;
        let expect = Expect {
            namespace: ns.into(),
            gateway: names::WAYPOINT.into(),
            services: super::mtls::APPS.iter().map(|a| a.to_string()).collect(),
        };
        live.save_json(EXPECT, &expect)?;
        let gateways = live.get_raw(&format!("/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/gateways")).await?;
        live.save(GATEWAYS, &gateways)?;
        // The waypoint template labels its pods with the Gateway's name (istio/istio@1.30.3
        // manifests/charts/istio-control/istio-discovery/files/waypoint.yaml).
        let selector = format!("gateway.networking.k8s.io%2Fgateway-name%3D{}", names::WAYPOINT);
        let pods = live.get_raw(&format!("/api/v1/namespaces/{ns}/pods?labelSelector={selector}")).await?;
        live.save(PODS, &pods)?;
        ztunnel::collect(live, CHECK_DIR, Parts::ConfigDump).await
    })
}

/// Judges the Gateway, its pods and every ztunnel's routing.
pub fn judge(ev: &Evidence) -> Verdict {
    let Expect { namespace: ns, gateway, services } = match ev.read_json(EXPECT) {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    if services.is_empty() {
        return Verdict::error(format!("{EXPECT} names no Services: there is nothing to route through the waypoint"))
            .with_evidence([EXPECT.to_string()]);
    }
    let (gateways, pods): (Value, Value) = match (ev.read_json(GATEWAYS), ev.read_json(PODS)) {
        (Ok(g), Ok(p)) => (g, p),
        (Err(e), _) | (_, Err(e)) => return e.into(),
    };
    let mut found = Findings::reading([EXPECT.to_string(), GATEWAYS.to_string(), PODS.to_string()]);
    let Some(gw) = kjson::items(&gateways).iter().find(|g| kjson::name(g) == gateway) else {
        found.fail(format!(
            "no Gateway {ns}/{gateway} (istio.io docs/ambient/usage/waypoint: `istioctl waypoint apply`)"
        ));
        return found.verdict("", |n| format!("{n} waypoint finding(s) in {ns}"));
    };
    let class = gw.pointer("/spec/gatewayClassName").and_then(Value::as_str).unwrap_or("");
    if class != "istio-waypoint" {
        found.fail(format!(
            "Gateway {ns}/{gateway} has class `{class}`, not `istio-waypoint`: istiod deploys no waypoint for it"
        ));
    }
    judge_programmed(gw, &format!("{ns}/{gateway}"), &mut found);
    let serving = kjson::items(&pods)
        .iter()
        .filter(|p| kjson::pod_phase(p) == "Running" && kjson::pod_ready(p) && !ztunnel::is_draining(p))
        .count();
    if serving == 0 {
        found.fail(format!("no Ready pod of waypoint {ns}/{gateway} ({} pod(s) listed)", kjson::items(&pods).len()));
    } else {
        found.note(format!("{serving} Ready waypoint pod(s)"));
    }
    let addresses = destinations(gw);
    let (root, nodes) = match ztunnel::nodes(ev, CHECK_DIR) {
        Ok(n) => n,
        Err(v) => return v,
    };
    ztunnel::note_draining(ev, CHECK_DIR, &mut found);
    for node in &nodes {
        let file = format!("{root}/{node}/config_dump.json");
        let dump: Value = match ev.read_json(&file) {
            Ok(v) => v,
            Err(e) => return e.into(),
        };
        found.read(file.clone());
        for svc in &services {
            let host = format!("{svc}.{ns}.svc.cluster.local");
            let Some(entry) = dump_services(&dump).into_iter().find(|s| s["hostname"] == host.as_str()) else {
                found.fail(format!("{file}: ztunnel lists no Service {host}"));
                continue;
            };
            match entry.pointer("/waypoint/destination").and_then(Value::as_str) {
                Some(d) if addresses.iter().any(|a| a == d) => {}
                Some(d) => found.fail(format!(
                    "{file}: {host} goes through waypoint {d}, not {ns}/{gateway} ({})",
                    addresses.join(", ")
                )),
                None => found.fail(format!(
                    "{file}: {host} has no waypoint: ztunnel carries its traffic at L4 alone (is {ns} labelled istio.io/use-waypoint={gateway}?)"
                )),
            }
        }
    }
    found.verdict(
        format!(
            "waypoint {ns}/{gateway} is Programmed, serves, and carries {} Service(s) on every ztunnel",
            services.len()
        ),
        |n| format!("{n} waypoint finding(s) in {ns}"),
    )
}

/// The Gateway's `Programmed` condition: istiod sets it True once the waypoint's Service exists
/// and False with a reason (`AddressNotUsable`, …) otherwise (istio/istio@1.30.3
/// pilot/pkg/config/kube/gateway/testdata/waypoint.status.yaml.golden).
fn judge_programmed(gw: &Value, name: &str, found: &mut Findings) {
    let conditions = gw.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    match conditions.iter().find(|c| c["type"] == "Programmed") {
        Some(c) if c["status"] == "True" => found.note(format!("Gateway {name} Programmed")),
        Some(c) => found.fail(format!(
            "Gateway {name} is not Programmed: {}: {}",
            c["reason"].as_str().unwrap_or("?"),
            c["message"].as_str().unwrap_or("")
        )),
        None => found.fail(format!("Gateway {name} has no Programmed condition: no controller has taken it")),
    }
}

/// The destinations ztunnel may name for this Gateway: `<ns>/<hostname>` for each Hostname
/// address of its status, `/<ip>` and `<network>/<ip>` forms for each IPAddress one.
fn destinations(gw: &Value) -> Vec<String> {
    let ns = kjson::namespace(gw);
    gw.pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let value = a["value"].as_str()?;
            Some(match a["type"].as_str() {
                Some("IPAddress") => format!("/{value}"),
                _ => format!("{ns}/{value}"),
            })
        })
        .collect()
}

/// The Services of a config dump: a list in ztunnel 1.30 (src/state.rs), keyed by address in
/// istioctl's older test data.
fn dump_services(dump: &Value) -> Vec<&Value> {
    match dump.get("services") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(Value::Object(m)) => m.values().collect(),
        _ => Vec::new(),
    }
}
