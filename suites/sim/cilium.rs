//! Cilium's network policy, evaluated: which CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy
//! and Kubernetes NetworkPolicy select a pod, whether they put its ingress into default-deny, and
//! whether a source address is allowed in. The rules (suites/sim/UPSTREAM-RULES.md §4, Cilium 1.19):
//! - a rule selects endpoints by `endpointSelector` against the pod's labels, where a key may carry
//!   a source prefix (`k8s:`, `any:`) and the namespace is the label
//!   `io.kubernetes.pod.namespace`; a CNP selects only in its own namespace
//!   (pkg/k8s/apis/cilium.io/utils/utils.go `ParseToCiliumRule`);
//! - an endpoint is in ingress default-deny when a rule selecting it has an ingress section (or
//!   `ingressDeny`) and does not set `enableDefaultDeny.ingress: false`
//!   (Documentation/security/policy/intro.rst "Policy Enforcement Modes", the CCNP schema's
//!   `enableDefaultDeny`), or a NetworkPolicy selecting it has policy type Ingress;
//! - `fromCIDR`/`fromCIDRSet` (minus `except`) and `fromEntities: [world|all]` admit a source
//!   without a cluster identity, such as 169.254.7.127, istio-cni's SNAT address for kubelet
//!   probes of ambient pods; the node itself (`host`) is always admitted (allow-localhost,
//!   layer3.rst "Access to/from local host"), so probes of pods outside the mesh never fail.

use std::net::Ipv4Addr;

use serde_json::Value;

use super::store::{Store, label_selector_matches};

/// Where a connection to a pod comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Source {
    /// The pod's own node: kubelet probes of pods outside the mesh.
    Host,
    /// An address outside every cluster identity (world).
    World(Ipv4Addr),
    /// Another pod of the cluster outside the mesh (a plaintext client). Only peers that admit
    /// any cluster endpoint are evaluated: a rule without `from`, `fromEntities` `cluster` or
    /// `all`, `fromEndpoints: [{}]`.
    Cluster,
}

/// The address istio-cni SNATs kubelet probes of ambient pods from (istio/istio 1.30.3
/// cni/pkg/iptables/iptables.go `ProbeIPSet`; Istio's platform prerequisites for Cilium).
pub(super) const PROBE_SNAT: Ipv4Addr = Ipv4Addr::new(169, 254, 7, 127);

/// The labels Cilium gives a pod's endpoint: the pod's own and its namespace's.
fn endpoint_labels(store: &Store, pod: &Value) -> Value {
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let mut labels = pod.pointer("/metadata/labels").cloned().unwrap_or(serde_json::json!({}));
    labels["io.kubernetes.pod.namespace"] = ns.into();
    if let Some(ns_labels) = store.get("", "namespaces", "", ns).and_then(|n| n.pointer("/metadata/labels")) {
        for (k, v) in ns_labels.as_object().into_iter().flatten() {
            labels[format!("io.cilium.k8s.namespace.labels.{k}")] = v.clone();
        }
    }
    labels
}

/// A Cilium selector with its keys' source prefixes taken off (`k8s:app` and `any:app` match a
/// pod label `app`).
fn without_sources(selector: &Value) -> Value {
    let strip = |k: &str| k.strip_prefix("k8s:").or_else(|| k.strip_prefix("any:")).unwrap_or(k).to_string();
    let mut out = selector.clone();
    if let Some(m) = selector.get("matchLabels").and_then(Value::as_object) {
        out["matchLabels"] = m.iter().map(|(k, v)| (strip(k), v.clone())).collect::<serde_json::Map<_, _>>().into();
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        out["matchExpressions"] = exprs
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["key"] = strip(e["key"].as_str().unwrap_or_default()).into();
                e
            })
            .collect::<Vec<_>>()
            .into();
    }
    out
}

/// The Cilium rules (a policy's `spec` and every entry of its `specs`) that select the pod.
fn cilium_rules_selecting(store: &Store, pod: &Value) -> Vec<Value> {
    let labels = endpoint_labels(store, pod);
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let clusterwide = store.list("cilium.io", "ciliumclusterwidenetworkpolicies", None);
    let namespaced = store.list("cilium.io", "ciliumnetworkpolicies", Some(ns));
    clusterwide
        .iter()
        .chain(&namespaced)
        .flat_map(|p| p.get("spec").into_iter().chain(p["specs"].as_array().into_iter().flatten()).cloned())
        .filter(|rule| {
            rule.get("endpointSelector").is_some_and(|sel| label_selector_matches(&without_sources(sel), &labels))
        })
        .collect()
}

/// The Kubernetes NetworkPolicies of the pod's namespace whose `podSelector` selects it.
fn network_policies_selecting(store: &Store, pod: &Value) -> Vec<Value> {
    let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
    let labels = pod.pointer("/metadata/labels").cloned().unwrap_or(Value::Null);
    store
        .list("networking.k8s.io", "networkpolicies", Some(ns))
        .into_iter()
        .filter(|p| p.pointer("/spec/podSelector").is_some_and(|sel| label_selector_matches(sel, &labels)))
        .collect()
}

/// Whether a NetworkPolicy restricts ingress: policy type Ingress, or (types unset) always
/// (networking/v1 NetworkPolicySpec.policyTypes: "Ingress" is implied when unset).
fn restricts_ingress(np: &Value) -> bool {
    match np.pointer("/spec/policyTypes").and_then(Value::as_array) {
        Some(types) => types.iter().any(|t| t == "Ingress"),
        None => true,
    }
}

/// Whether the pod's ingress is in default-deny.
pub(super) fn ingress_default_deny(store: &Store, pod: &Value) -> bool {
    let by_cilium = cilium_rules_selecting(store, pod).iter().any(|rule| {
        let has_rules = rule.get("ingress").is_some() || rule.get("ingressDeny").is_some();
        let opted_out = rule.pointer("/enableDefaultDeny/ingress") == Some(&Value::Bool(false));
        has_rules && !opted_out
    });
    by_cilium || network_policies_selecting(store, pod).iter().any(restricts_ingress)
}

fn in_cidr(addr: Ipv4Addr, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let (Ok(net), Ok(bits)) = (net.parse::<Ipv4Addr>(), bits.parse::<u32>()) else { return false };
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits.min(32)) };
    u32::from(addr) & mask == u32::from(net) & mask
}

/// Whether a rule's port list (`toPorts[].ports` of Cilium, `ports` of a NetworkPolicy) lets
/// `port` in: no list admits every port.
fn port_listed(ports: Option<&Vec<Value>>, port: u16) -> bool {
    ports.is_none_or(|ports| {
        ports.iter().any(|p| {
            let wanted = &p["port"];
            wanted.is_null()
                || wanted.as_u64() == Some(u64::from(port))
                || wanted.as_str().and_then(|s| s.parse::<u16>().ok()) == Some(port)
        })
    })
}

/// Whether one Cilium ingress rule admits `source` to `port`.
fn cilium_admits(rule: &Value, source: Source, port: u16) -> bool {
    let to_ports: Option<Vec<Value>> = rule["toPorts"]
        .as_array()
        .map(|tp| tp.iter().flat_map(|t| t["ports"].as_array().cloned().unwrap_or_default()).collect());
    if !port_listed(to_ports.as_ref(), port) {
        return false;
    }
    let Source::World(addr) = source else {
        let entities = rule["fromEntities"].as_array().into_iter().flatten().any(|e| e == "cluster" || e == "all");
        let endpoints =
            rule["fromEndpoints"].as_array().into_iter().flatten().any(|e| e.as_object().is_some_and(|m| m.is_empty()));
        return entities || endpoints;
    };
    let cidrs = rule["fromCIDR"].as_array().into_iter().flatten().filter_map(Value::as_str).any(|c| in_cidr(addr, c));
    let cidr_sets = rule["fromCIDRSet"].as_array().into_iter().flatten().any(|set| {
        set["cidr"].as_str().is_some_and(|c| in_cidr(addr, c))
            && !set["except"].as_array().into_iter().flatten().filter_map(Value::as_str).any(|e| in_cidr(addr, e))
    });
    let entities = rule["fromEntities"].as_array().into_iter().flatten().any(|e| e == "world" || e == "all");
    cidrs || cidr_sets || entities
}

/// Whether one NetworkPolicy ingress rule admits `source` to `port`: the port listed (or no
/// `ports`), and no `from` (everyone), or for a world source an `ipBlock` holding the address
/// outside its `except`.
fn network_policy_admits(rule: &Value, source: Source, port: u16) -> bool {
    if !port_listed(rule.get("ports").and_then(Value::as_array), port) {
        return false;
    }
    match rule.get("from").and_then(Value::as_array) {
        None => true,
        Some(_) if source == Source::Cluster => false,
        Some(from) => from.iter().any(|peer| {
            let Source::World(addr) = source else { return false };
            peer.pointer("/ipBlock/cidr").and_then(Value::as_str).is_some_and(|c| in_cidr(addr, c))
                && !peer
                    .pointer("/ipBlock/except")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .any(|e| in_cidr(addr, e))
        }),
    }
}

/// Whether a connection from `source` reaches the pod's `port`.
pub(super) fn ingress_allowed(store: &Store, pod: &Value, source: Source, port: u16) -> bool {
    if source == Source::Host || !ingress_default_deny(store, pod) {
        return true;
    }
    let by_cilium = cilium_rules_selecting(store, pod)
        .iter()
        .flat_map(|rule| rule["ingress"].as_array().cloned().unwrap_or_default())
        .any(|r| cilium_admits(&r, source, port));
    let by_network_policy = network_policies_selecting(store, pod)
        .iter()
        .flat_map(|np| np.pointer("/spec/ingress").and_then(Value::as_array).cloned().unwrap_or_default())
        .any(|r| network_policy_admits(&r, source, port));
    by_cilium || by_network_policy
}
