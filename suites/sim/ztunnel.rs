//! ztunnel: its admin port's config dump (15000), its stats (15020) and its access log.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::shapes::{observed, s};
use super::store::now;
use super::{Shared, State};

use super::mesh::{captured, waypoint_of, workload_pod};

/// ztunnel's config dump in the shape ztunnel 1.30.3 serves (src/admin.rs, src/state.rs: lists
/// `workloads`, `services`, `policies` sorted by uid/hostname/key, camelCase, and `capacity`
/// always serialized, src/state/workload.rs#L286-L292), from the recorded dump of
/// `observed/ztunnel-config-dump.kiali-testdata.json`: every running pod not on the host network,
/// `HBONE` where ambient captures it ([`captured`]). The recording's own workloads and services
/// are dropped; its other sections stay as recorded.
pub(super) fn config_dump(shared: &Shared, st: &State) -> Value {
    let mut dump = observed(shared, "ztunnel-config-dump.kiali-testdata.json");
    let template = dump["workloads"].as_array().and_then(|w| w.first()).cloned().unwrap_or(json!({}));
    let mut workloads = Vec::new();
    for p in st
        .store
        .list("", "pods", None)
        .iter()
        .filter(|p| s(p, "/status/phase") == "Running" && p.pointer("/spec/hostNetwork").is_none())
    {
        let (ns, name, ip) = (s(p, "/metadata/namespace"), s(p, "/metadata/name"), s(p, "/status/podIP"));
        let labels = p.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
        let app = labels["app"].as_str().unwrap_or(name);
        let captured = captured(st, p) && !(st.faults.ztunnel_reports_tcp && ns == "book-info");
        let mut w = template.clone();
        let workload_name = name.rsplitn(3, '-').nth(2).unwrap_or(name);
        w["workloadIps"] = json!([ip]);
        w["protocol"] = json!(if captured { "HBONE" } else { "TCP" });
        w["uid"] = json!(format!("Kubernetes//Pod/{ns}/{name}"));
        w["clusterId"] = json!("Kubernetes");
        w["name"] = json!(name);
        w["namespace"] = json!(ns);
        w["serviceAccount"] = json!(s(p, "/spec/serviceAccountName"));
        w["workloadName"] = json!(workload_name);
        w["canonicalName"] = json!(app);
        w["canonicalRevision"] = json!(labels["version"].as_str().unwrap_or("latest"));
        w["node"] = json!(s(p, "/spec/nodeName"));
        w["services"] = json!([]);
        w["capacity"] = json!(1);
        workloads.push(w);
    }
    workloads.sort_by(|a, b| a["uid"].as_str().cmp(&b["uid"].as_str()));
    dump["workloads"] = Value::Array(workloads);
    dump["services"] = Value::Array(services(st));
    dump
}

/// The Services as ztunnel 1.30.3 lists them (src/state/service.rs `Service`, camelCase, sorted by
/// hostname): name, namespace, hostname, `vips` (the simulation gives Services no cluster IP),
/// `ports` (service port → target port), no endpoints, and `waypoint` when istiod assigned one
/// ([`waypoint_of`]): `{destination: "<ns>/<hostname>", hboneMtlsPort: 15008}`, the hostname from
/// the Gateway's status address (pilot/pkg/serviceregistry/ambient/waypoints.go `getGatewayAddress`).
fn services(st: &State) -> Vec<Value> {
    let mut out: Vec<Value> = st
        .store
        .list("", "services", None)
        .iter()
        .map(|svc| {
            let (ns, name) = (s(svc, "/metadata/namespace"), s(svc, "/metadata/name"));
            let ports: serde_json::Map<String, Value> = svc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| (p["port"].to_string(), p.get("targetPort").filter(|t| t.is_u64()).unwrap_or(&p["port"]).clone()))
                .collect();
            let mut entry = json!({"name": name, "namespace": ns, "hostname": format!("{name}.{ns}.svc.cluster.local"),
                                   "vips": [], "ports": ports, "endpoints": {}, "subjectAltNames": [], "canonical": true});
            if let Some(gw) = waypoint_of(st, svc) {
                let host = gw.pointer("/status/addresses/0/value").and_then(Value::as_str).unwrap_or_default();
                entry["waypoint"] = json!({"destination": format!("{ns}/{host}"), "hboneMtlsPort": 15008});
            }
            entry
        })
        .collect();
    out.sort_by(|a, b| a["hostname"].as_str().cmp(&b["hostname"].as_str()));
    out
}

/// Service account and app of a workload (`book-info/reviews-v2`).
pub(super) fn identity(st: &State, workload: &str) -> (String, String, String) {
    let (ns, wl) = workload.split_once('/').unwrap_or(("", workload));
    let pod = workload_pod(st, workload);
    let sa = pod.as_ref().map(|p| s(p, "/spec/serviceAccountName").to_string()).unwrap_or_else(|| "default".into());
    let app = pod
        .as_ref()
        .and_then(|p| p.pointer("/metadata/labels/app").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| wl.to_string());
    (ns.to_string(), sa, app)
}

/// ztunnel's Prometheus text: the TCP families for connections it saw on its node, labelled
/// as ztunnel labels them (label names as in the upstream sample, workload labels added).
pub(super) fn ztunnel_metrics(shared: &Shared, st: &State, ztunnel: &Value) -> String {
    let sample = std::fs::read_to_string(
        shared.upstream.join("observed/ztunnel-metric-tcp-opened.istio-docs-verify-mtls.ELIDED.txt"),
    )
    .unwrap_or_default();
    let upstream_labels: Vec<String> =
        sample.split(['{', ',', '\n']).filter_map(|l| l.trim().split_once('=').map(|(k, _)| k.to_string())).collect();
    let node = s(ztunnel, "/spec/nodeName");
    let mut out = String::new();
    for (family, help, factor) in [
        ("istio_tcp_connections_opened", "The total number of TCP connections opened.", 1u64),
        ("istio_tcp_connections_closed", "The total number of TCP connections closed.", 1),
        ("istio_tcp_sent_bytes", "The size of total bytes sent during response in case of a TCP connection.", 1843),
        (
            "istio_tcp_received_bytes",
            "The size of total bytes received during request in case of a TCP connection.",
            421,
        ),
    ] {
        out.push_str(&format!("# HELP {family} {help}\n# TYPE {family} counter\n"));
        for ((src, dst), n) in &st.connections {
            let (dst_pod, src_pod) = (workload_pod(st, dst), workload_pod(st, src));
            let on = |p: &Option<Value>| p.as_ref().is_some_and(|p| s(p, "/spec/nodeName") == node);
            let (sns, ssa, sapp) = identity(st, src);
            let (dns, dsa, dapp) = identity(st, dst);
            let in_mesh = |p: &Option<Value>| p.as_ref().is_some_and(|p| captured(st, p));
            let (src_captured, dst_captured) = (in_mesh(&src_pod), in_mesh(&dst_pod));
            let secure = src_captured && dst_captured;
            for reporter in ["source", "destination"] {
                let here =
                    if reporter == "source" { on(&src_pod) && src_captured } else { on(&dst_pod) && dst_captured };
                if !here {
                    continue;
                }
                let mut labels: BTreeMap<&str, String> = BTreeMap::new();
                labels.insert("app", "ztunnel".into());
                labels.insert("reporter", reporter.into());
                labels.insert("connection_security_policy", if secure { "mutual_tls" } else { "unknown" }.into());
                labels.insert(
                    "source_principal",
                    if secure || src_captured {
                        format!("spiffe://cluster.local/ns/{sns}/sa/{ssa}")
                    } else {
                        "unknown".into()
                    },
                );
                labels.insert("destination_principal", format!("spiffe://cluster.local/ns/{dns}/sa/{dsa}"));
                labels.insert("destination_service", format!("{dapp}.{dns}.svc.cluster.local"));
                labels.insert("request_protocol", "tcp".into());
                labels.insert("response_flags", "-".into());
                labels.insert("source_app", sapp.clone());
                labels.insert("source_workload", src.split('/').nth(1).unwrap_or("").into());
                labels.insert("source_workload_namespace", sns.clone());
                labels.insert("destination_app", dapp.clone());
                labels.insert("destination_workload", dst.split('/').nth(1).unwrap_or("").into());
                labels.insert("destination_workload_namespace", dns.clone());
                let mut keys: Vec<&str> =
                    upstream_labels.iter().map(String::as_str).filter(|k| labels.contains_key(k)).collect();
                keys.extend(labels.keys().filter(|k| !keys.contains(k)).copied().collect::<Vec<_>>());
                let text: Vec<String> = keys.iter().map(|k| format!("{k}=\"{}\"", labels[k])).collect();
                out.push_str(&format!("{family}_total{{{}}} {}\n", text.join(","), n * factor));
            }
        }
    }
    out.push_str("# HELP istio_build Istio component build info.\n# TYPE istio_build gauge\nistio_build{component=\"ztunnel\",tag=\"");
    out.push_str(
        &st.releases
            .get(&("istio-system".to_string(), "ztunnel".to_string()))
            .map(|r| r.version.clone())
            .unwrap_or_default(),
    );
    out.push_str("\"} 1\n");
    out
}

/// At most this many access-log lines per connection pair: enough for every hop to show, few
/// enough that a long rehearsal's log stays small.
const LOGGED_PER_PAIR: u64 = 20;

/// ztunnel's access log on its node, computed from the connections bookinfo's traffic opened, by
/// ztunnel 1.30.3's rules (istio/ztunnel@1.30.3 src/proxy/metrics.rs `access_log!`,
/// src/telemetry.rs `IstioFormat`): the source's ztunnel logs `outbound` when the source is
/// captured, the destination's ztunnel logs `inbound` when the destination is; the connection is
/// mutual TLS only when both ends are captured (HBONE), and only then are `src.identity` and
/// `dst.identity` written. Plain format: `<time>\t<level>\taccess\tconnection complete\t<k=v …>`,
/// strings quoted, addresses not.
pub(super) fn access_log(st: &State, ztunnel: &Value) -> String {
    let node = s(ztunnel, "/spec/nodeName");
    let mut out = String::new();
    for ((src, dst), n) in &st.connections {
        let (Some(src_pod), Some(dst_pod)) = (workload_pod(st, src), workload_pod(st, dst)) else { continue };
        let (src_captured, dst_captured) = (captured(st, &src_pod), captured(st, &dst_pod));
        let mtls = src_captured && dst_captured;
        let (sns, ssa, _) = identity(st, src);
        let (dns, dsa, dapp) = identity(st, dst);
        let dst_ip = s(&dst_pod, "/status/podIP");
        for (direction, logs) in [
            ("outbound", src_captured && s(&src_pod, "/spec/nodeName") == node),
            ("inbound", dst_captured && s(&dst_pod, "/spec/nodeName") == node),
        ] {
            if !logs {
                continue;
            }
            let mut line = format!(
                "src.addr={}:46238 src.workload=\"{}\" src.namespace=\"{sns}\"",
                s(&src_pod, "/status/podIP"),
                s(&src_pod, "/metadata/name")
            );
            if mtls {
                line.push_str(&format!(" src.identity=\"spiffe://cluster.local/ns/{sns}/sa/{ssa}\""));
                line.push_str(&format!(" dst.addr={dst_ip}:15008 dst.hbone_addr={dst_ip}:9080"));
            } else {
                line.push_str(&format!(" dst.addr={dst_ip}:9080"));
            }
            line.push_str(&format!(
                " dst.service=\"{dapp}.{dns}.svc.cluster.local\" dst.workload=\"{}\" dst.namespace=\"{dns}\"",
                s(&dst_pod, "/metadata/name")
            ));
            if mtls {
                line.push_str(&format!(" dst.identity=\"spiffe://cluster.local/ns/{dns}/sa/{dsa}\""));
            }
            line.push_str(&format!(" direction=\"{direction}\" bytes_sent=1843 bytes_recv=421 duration=\"3ms\""));
            for _ in 0..(*n).min(LOGGED_PER_PAIR) {
                out.push_str(&format!("{}\tinfo\taccess\tconnection complete\t{line}\n", now()));
            }
        }
    }
    out
}
