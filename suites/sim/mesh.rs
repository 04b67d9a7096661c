//! Who is who in the simulated cluster, computed from the objects: the program a pod runs (by its
//! image, as a kubelet would start it), whether ambient captures a pod, and where a Service name
//! and port lead (Service → a Ready pod it selects → the container port its `targetPort` names).

use serde_json::Value;

use super::{
    State,
    shapes::s,
    store::{label_selector_matches, match_labels},
};

/// The program a pod runs: the first of its containers whose image names one (the repository
/// name, the last path segment before the tag: `quay.io/prometheus/prometheus:v3.5.0` →
/// Prometheus). A helper beside it (Istio's addon Prometheus runs
/// `prometheus-config-reloader` first, samples/addons/prometheus.yaml) is no program of the
/// simulation's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Program {
    Ztunnel,
    Istiod,
    IstioCni,
    /// Istio's proxy: the ingress gateway and waypoints.
    Proxy,
    Prometheus,
    PrometheusOperator,
    Tempo,
    Kiali,
    KialiOperator,
    /// Keycloak (quay.io/keycloak/keycloak).
    Keycloak,
    CiliumAgent,
    CiliumOperator,
    CoreDns,
    Other,
}

pub(super) fn program(pod: &Value) -> Program {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    containers
        .into_iter()
        .flatten()
        .map(|c| image_program(c["image"].as_str().unwrap_or_default()))
        .find(|p| *p != Program::Other)
        .unwrap_or(Program::Other)
}

fn image_program(image: &str) -> Program {
    let repository = image.split('@').next().unwrap_or(image);
    let repository = repository.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(repository, |(r, _)| r);
    match repository.rsplit('/').next().unwrap_or_default() {
        "ztunnel" => Program::Ztunnel,
        "pilot" => Program::Istiod,
        "install-cni" => Program::IstioCni,
        "proxyv2" => Program::Proxy,
        "prometheus" => Program::Prometheus,
        "prometheus-operator" => Program::PrometheusOperator,
        "tempo" => Program::Tempo,
        "kiali" => Program::Kiali,
        "kiali-operator" => Program::KialiOperator,
        "keycloak" => Program::Keycloak,
        "cilium" => Program::CiliumAgent,
        "operator-generic" => Program::CiliumOperator,
        "coredns" => Program::CoreDns,
        _ => Program::Other,
    }
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Whether a new connection to the pod reaches it: Ready and not being deleted. A terminating pod
/// is not a ready endpoint of its Services (kubernetes v1.35.4
/// pkg/controller/util/endpointslice/utils.go: `ready = … && !terminating`), and a draining
/// ztunnel has stopped accepting on its listeners (ztunnel 1.30.3 src/hyper_util.rs#L232: the
/// accept stream ends at the drain signal).
pub fn serving(p: &Value) -> bool {
    pod_ready(p) && !deleting(p)
}

/// Whether a pod is being deleted (its grace period running: `metadata.deletionTimestamp` set).
pub fn deleting(p: &Value) -> bool {
    p.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// The pod of a workload (`book-info/details-v1`) and its node, service account and IP.
pub(super) fn workload_pod(st: &State, workload: &str) -> Option<Value> {
    let (ns, wl) = workload.split_once('/')?;
    let prefix = format!("{wl}-");
    st.store.iter("", "pods", Some(ns)).find(|p| s(p, "/metadata/name").starts_with(&prefix) && serving(p)).cloned()
}

/// Whether a namespace is labelled into ambient mode.
pub(super) fn ambient(st: &State, ns: &str) -> bool {
    st.store
        .get("", "namespaces", "", ns)
        .is_some_and(|n| s(n, "/metadata/labels/istio.io~1dataplane-mode") == "ambient")
}

/// Whether a program serves on a node: a pod of it Ready there and not draining ([`serving`]).
pub(super) fn ready_on(st: &State, wanted: Program, node: &str) -> bool {
    st.store.iter("", "pods", None).any(|p| program(p) == wanted && s(p, "/spec/nodeName") == node && serving(p))
}

/// Whether Cilium leaves other CNI plugins' configuration in place: `cni-exclusive: "false"` in
/// `cilium-config` (cilium 1.19.6 chart templates/cilium-configmap.yaml from `cni.exclusive`;
/// Istio's Cilium prerequisites: with the default `true` Cilium removes istio-cni's chained
/// configuration and no pod is captured).
fn cni_chaining_kept(st: &State) -> bool {
    st.store.iter("", "configmaps", None).any(|c| {
        s(c, "/metadata/name") == "cilium-config"
            && c.pointer("/data/cni-exclusive").and_then(Value::as_str) == Some("false")
    })
}

/// istio-cni's ambient enablement as its chart configures it: `AMBIENT_ENABLED` and the
/// `AMBIENT_ENABLEMENT_SELECTOR` list of `{podSelector, namespaceSelector}` terms of ConfigMap
/// `istio-cni-config` (istio 1.30.3 manifests/charts/istio-cni/templates/configmap-cni.yaml;
/// `ambient.enabled` comes from the `ambient` profile, off by default).
fn enablement(st: &State) -> Option<Vec<Value>> {
    let config = st.store.iter("", "configmaps", None).find(|c| s(c, "/metadata/name") == "istio-cni-config")?;
    if s(config, "/data/AMBIENT_ENABLED") != "true" {
        return None;
    }
    serde_saphyr::from_str(s(config, "/data/AMBIENT_ENABLEMENT_SELECTOR")).ok()
}

/// Whether ambient captures a pod: istio-cni's enablement selector selects it (by default: the pod
/// or its namespace labelled `istio.io/dataplane-mode=ambient`, and the pod not opted out with
/// `istio.io/dataplane-mode: none`; istio/istio cni/pkg/util/podutil.go `PodRedirectionEnabled`),
/// it is not on the host network, and istio-cni and ztunnel run Ready on its node with Cilium
/// keeping istio-cni's chained plugin.
pub(super) fn captured(st: &State, pod: &Value) -> bool {
    let ns = s(pod, "/metadata/namespace");
    let node = s(pod, "/spec/nodeName");
    let pod_labels = pod.pointer("/metadata/labels").cloned().unwrap_or(Value::Null);
    let ns_labels = st.store.get("", "namespaces", "", ns).and_then(|n| n.pointer("/metadata/labels").cloned());
    let ns_labels = ns_labels.unwrap_or(Value::Null);
    let selected = enablement(st).is_some_and(|terms| {
        terms.iter().any(|t| {
            let matches =
                |sel: Option<&Value>, labels: &Value| sel.is_none_or(|sel| label_selector_matches(sel, labels));
            matches(t.get("namespaceSelector"), &ns_labels) && matches(t.get("podSelector"), &pod_labels)
        })
    });
    selected
        && pod.pointer("/spec/hostNetwork") != Some(&Value::Bool(true))
        && ready_on(st, Program::Ztunnel, node)
        && ready_on(st, Program::IstioCni, node)
        && cni_chaining_kept(st)
}

/// A container port of the pod by number or name (a Service's `targetPort`, a probe's `port`).
pub(super) fn container_port(pod: &Value, port: &Value) -> Option<u16> {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).ok();
    }
    let name = port.as_str()?;
    if let Ok(n) = name.parse::<u16>() {
        return Some(n);
    }
    pod.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
}

/// Where a Service port leads: a serving pod the Service selects and the pod's port its
/// `targetPort` names (defaulting to `port`). `Err` is what the API server's proxy would answer.
pub(super) fn resolve(st: &State, ns: &str, svc: &str, port: u16) -> Result<(Value, u16), String> {
    let service = st.store.get("", "services", ns, svc).ok_or_else(|| format!("services \"{svc}\" not found"))?;
    let sp = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .and_then(|ports| ports.iter().find(|p| p["port"].as_u64() == Some(u64::from(port))))
        .cloned()
        .ok_or_else(|| format!("no service port {port} found for service \"{svc}\""))?;
    let selector = service.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
    let pod = st
        .store
        .list("", "pods", Some(ns))
        .into_iter()
        .find(|p| serving(p) && match_labels(&selector, p.pointer("/metadata/labels").unwrap_or(&Value::Null)))
        .ok_or_else(|| format!("no endpoints available for service \"{svc}\""))?;
    let target = sp.get("targetPort").cloned().unwrap_or_else(|| sp["port"].clone());
    let target =
        container_port(&pod, &target).ok_or_else(|| format!("no endpoints available for service \"{svc}\""))?;
    Ok((pod, target))
}

/// A cluster DNS name (`svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`) and port, resolved.
pub(super) fn resolve_host(st: &State, host: &str, port: u16) -> Result<(Value, u16), String> {
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [svc, ns] | [svc, ns, "svc"] | [svc, ns, "svc", "cluster", "local"] => resolve(st, ns, svc, port),
        _ => Err(format!("dial tcp: lookup {host}: no such host")),
    }
}

/// A URL's host and port (`http://prom-prometheus.monitoring:9090` → (`prom-prometheus.monitoring`, 9090)).
pub(super) fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, if url.starts_with("https://") { 443 } else { 80 }),
    };
    Some((host.to_string(), port))
}

/// The waypoint Gateway a Service's traffic goes through, by istiod's rules (istio/istio@1.30.3
/// pilot/pkg/serviceregistry/ambient/waypoints.go): the Service's `istio.io/use-waypoint` label,
/// else its namespace's (`none` opts out), naming a Gateway of class `istio-waypoint` in the
/// namespace for `service` or `all` traffic (`istio.io/waypoint-for`, default `service`) that has
/// an address in its status (`getGatewayAddress`: none, no waypoint). A waypoint's own Service
/// has none.
pub(super) fn waypoint_of(st: &State, svc: &Value) -> Option<Value> {
    let ns = s(svc, "/metadata/namespace");
    if svc.pointer("/metadata/labels/gateway.networking.k8s.io~1gateway-name").is_some() {
        return None;
    }
    let label = "/metadata/labels/istio.io~1use-waypoint";
    let name = svc.pointer(label).and_then(Value::as_str).map(String::from).or_else(|| {
        st.store.get("", "namespaces", "", ns).and_then(|n| n.pointer(label).and_then(Value::as_str).map(String::from))
    })?;
    let gw = st.store.get("gateway.networking.k8s.io", "gateways", ns, &name)?;
    let for_traffic =
        gw.pointer("/metadata/labels/istio.io~1waypoint-for").and_then(Value::as_str).unwrap_or("service");
    let addressed = gw.pointer("/status/addresses").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
    (name != "none"
        && s(gw, "/spec/gatewayClassName") == "istio-waypoint"
        && matches!(for_traffic, "service" | "all")
        && addressed)
        .then(|| gw.clone())
}
