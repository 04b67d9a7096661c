//! What istiod pushes to ztunnel and waypoints, and what they decide with it: the
//! AuthorizationPolicies, PeerAuthentications and HTTPRoutes of the API server reach them after a
//! delay, and only while an istiod serves; ztunnel decides each inbound connection, a waypoint each
//! request, from what it was sent, by the upstream rules.
//!
//! Conversion, istio/istio@1.30.3 pilot/pkg/serviceregistry/ambient/authorization.go
//! `convertAuthorizationPolicy`/`handleRule`/`stringToMatch`:
//! - a policy with `targetRefs` is not for ztunnel (waypoints enforce it); ALLOW and DENY only;
//! - scope: with a `selector`, the workloads it matches in the policy's namespace; without, every
//!   workload of the namespace; in the root namespace (`istio-system`) without one, the mesh;
//! - each rule is an AND of its clauses (`to`, `from`, each `when`); a clause is an OR of its
//!   entries; an entry is an AND of its fields;
//! - an ALLOW rule with an L7 attribute (methods, paths, hosts, request principals, an L7 `when`
//!   key) never matches; in a DENY rule those attributes are left out (it matches more);
//! - strings: `*` is presence, `*x` a suffix, `x*` a prefix, otherwise exact; principals are
//!   matched after `spiffe://` is taken off the peer's identity.
//!
//! Decision, istio/ztunnel@1.30.3 src/state.rs `assert_rbac` and src/rbac.rs `matches`: a
//! matching DENY denies; no ALLOW policy allows; a matching ALLOW allows; otherwise deny. A policy
//! with no rules matches nothing (so an ALLOW without rules denies all). A plaintext peer has no
//! identity: principals and namespaces never match it.

use std::time::Instant;

use serde_json::Value;

use super::{
    Shared, State,
    mesh::{Program, program, serving},
    shapes::s,
    store::{Key, match_labels},
};

/// The kinds istiod pushes here.
const PUSHED: [(&str, &str); 3] = [
    ("security.istio.io", "authorizationpolicies"),
    ("security.istio.io", "peerauthentications"),
    ("gateway.networking.k8s.io", "httproutes"),
];

/// Istio's root namespace (the chart's `meshConfig.rootNamespace` default, istio-system).
const ROOT_NAMESPACE: &str = "istio-system";

/// What ztunnel holds and what istiod has yet to push.
#[derive(Debug, Default)]
pub struct Xds {
    /// The policies ztunnel enforces, as last pushed.
    view: std::collections::BTreeMap<Key, Value>,
    /// Changes seen in the API server and not pushed yet, oldest first (`None`: deleted).
    pending: Vec<(Key, Option<Value>, Instant)>,
}

fn key(group: &str, plural: &str, o: &Value) -> Key {
    (group.into(), plural.into(), s(o, "/metadata/namespace").into(), s(o, "/metadata/name").into())
}

/// Records what changed in the API server since the last call, and pushes the changes that have
/// waited the push delay, if an istiod serves. Called on every write of a policy (so a change is
/// seen when it is made), before every decision, and by the controllers' loop (istiod debounces config
/// events, 100 ms quiet by default, up to `PILOT_DEBOUNCE_MAX` 10 s: istio/istio@1.30.3
/// pilot/pkg/features/tuning.go).
pub(super) fn push(shared: &Shared, st: &mut State) {
    let now = Instant::now();
    let mut latest = st.xds.view.clone();
    for (k, v, _) in &st.xds.pending {
        match v {
            Some(v) => latest.insert(k.clone(), v.clone()),
            None => latest.remove(k),
        };
    }
    let mut current = std::collections::BTreeMap::new();
    for (group, plural) in PUSHED {
        for o in st.store.iter(group, plural, None) {
            current.insert(key(group, plural, o), o);
        }
    }
    let mut changed = Vec::new();
    for (k, v) in &current {
        if latest.get(k).map(|l| (&l["spec"], &l["metadata"]["annotations"]))
            != Some((&v["spec"], &v["metadata"]["annotations"]))
        {
            changed.push((k.clone(), Some((*v).clone()), now));
        }
    }
    let gone: Vec<_> = latest.keys().filter(|k| !current.contains_key(*k)).map(|k| (k.clone(), None, now)).collect();
    st.xds.pending.extend(changed.into_iter().chain(gone));
    let istiod_serves =
        st.store.iter("", "pods", Some(ROOT_NAMESPACE)).any(|p| program(p) == Program::Istiod && serving(p));
    if !istiod_serves {
        return;
    }
    let delay = shared.sim(st.faults.policy_push_delay.unwrap_or(shared.timings.policy_push));
    let (due, waiting): (Vec<_>, Vec<_>) =
        std::mem::take(&mut st.xds.pending).into_iter().partition(|(_, _, t)| t.elapsed() >= delay);
    st.xds.pending = waiting;
    for (k, v, _) in due {
        match v {
            Some(v) => st.xds.view.insert(k, v),
            None => st.xds.view.remove(&k),
        };
    }
}

/// The pushed objects of one kind.
fn pushed<'a>(st: &'a State, plural: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    st.xds.view.iter().filter(move |(k, _)| k.1 == plural).map(|(_, v)| v)
}

/// The backend Service a waypoint sends a request for Service `svc` to: by the weights of the
/// first pushed HTTPRoute whose `parentRefs` name the Service (kind `Service`, group `""`), drawn
/// with `draw` in [0, 1); `None` without such a route (the Service itself). The Gateway API's
/// weight rule: each backendRef gets `weight / Σ weight` of the requests, weight 1 by default
/// (the pinned CRD, gateway-api v1.5.1 standard-install.yaml: HTTPRoute backendRefs `weight`,
/// `default: 1`).
pub(super) fn routed_backend(st: &State, svc: &Value, draw: f64) -> Option<String> {
    let (ns, name) = (s(svc, "/metadata/namespace"), s(svc, "/metadata/name"));
    let route = pushed(st, "httproutes").find(|r| {
        s(r, "/metadata/namespace") == ns
            && r.pointer("/spec/parentRefs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|p| p["kind"] == "Service" && p["name"] == name && p.get("group").is_none_or(|g| g == ""))
    })?;
    let backends: Vec<(String, f64)> = route
        .pointer("/spec/rules/0/backendRefs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|b| (s(b, "/name").to_string(), b.get("weight").and_then(Value::as_f64).unwrap_or(1.0)))
        .collect();
    let total: f64 = backends.iter().map(|b| b.1).sum();
    let mut at = draw * total;
    for (backend, weight) in &backends {
        if at < *weight {
            return Some(backend.clone());
        }
        at -= weight;
    }
    backends.last().map(|b| b.0.clone())
}

/// Whether ztunnel holds a STRICT PeerAuthentication for the namespace (its own or the root's).
pub(super) fn strict(st: &State, ns: &str) -> bool {
    pushed(st, "peerauthentications").any(|pa| {
        (s(pa, "/metadata/namespace") == ns || s(pa, "/metadata/namespace") == ROOT_NAMESPACE)
            && s(pa, "/spec/mtls/mode") == "STRICT"
    })
}

/// The peer of a connection as ztunnel knows it: its SPIFFE identity's namespace and service
/// account, or none for plaintext.
pub(super) type Peer<'a> = Option<(&'a str, &'a str)>;

/// What a policy is matched against: the peer, the destination port and, at a waypoint, the
/// HTTP method and path.
#[derive(Clone, Copy)]
pub(super) struct Request<'a> {
    pub peer: Peer<'a>,
    pub port: u16,
    pub http: Option<(&'a str, &'a str)>,
}

/// ztunnel's decision for a connection to the captured pod `dst`: `Err` names the policy that
/// denied it (or says none allowed it). Policies with `targetRefs` are a waypoint's, not ztunnel's.
pub(super) fn decide(st: &State, peer: Peer, dst: &Value, port: u16) -> Result<(), String> {
    let (ns, labels) = (s(dst, "/metadata/namespace"), dst.pointer("/metadata/labels").cloned().unwrap_or(Value::Null));
    let applies = |p: &&Value| {
        let pns = s(p, "/metadata/namespace");
        p.pointer("/spec/targetRefs").is_none()
            && p.pointer("/spec/targetRef").is_none()
            && match p.pointer("/spec/selector/matchLabels") {
                Some(sel) => pns == ns && match_labels(sel, &labels),
                None => pns == ns || pns == ROOT_NAMESPACE,
            }
    };
    let policies: Vec<&Value> = pushed(st, "authorizationpolicies").filter(applies).collect();
    evaluate(&policies, Request { peer, port, http: None })
}

/// A waypoint's decision for a request to Service `svc` through Gateway `gateway`: the policies
/// whose `targetRefs` name that Gateway or that Service, in their namespace (istio.io
/// docs/ambient/usage/l7-features), with their L7 attributes.
pub(super) fn decide_at_waypoint(st: &State, gateway: &Value, svc: &Value, request: Request) -> Result<(), String> {
    let ns = s(gateway, "/metadata/namespace");
    let names = |p: &Value, kind: &str, name: &str| {
        p.pointer("/spec/targetRefs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|r| r["kind"] == kind && r["name"] == name)
    };
    let policies: Vec<&Value> = pushed(st, "authorizationpolicies")
        .filter(|p| s(p, "/metadata/namespace") == ns)
        .filter(|p| names(p, "Gateway", s(gateway, "/metadata/name")) || names(p, "Service", s(svc, "/metadata/name")))
        .collect();
    evaluate(&policies, request)
}

/// DENY first, then ALLOW, then deny when ALLOW policies exist (src/state.rs `assert_rbac`).
fn evaluate(policies: &[&Value], request: Request) -> Result<(), String> {
    let action = |p: &Value| p.pointer("/spec/action").and_then(Value::as_str).unwrap_or("ALLOW").to_string();
    let name = |p: &Value| format!("{}/{}", s(p, "/metadata/namespace"), s(p, "/metadata/name"));
    if let Some(deny) = policies.iter().find(|p| action(p) == "DENY" && matches(p, request, false)) {
        return Err(format!("denied by DENY policy {}", name(deny)));
    }
    let allow: Vec<&&Value> = policies.iter().filter(|p| action(p) == "ALLOW").collect();
    if allow.is_empty() || allow.iter().any(|p| matches(p, request, true)) {
        return Ok(());
    }
    Err(format!("no ALLOW policy matched ({})", allow.iter().map(|p| name(p)).collect::<Vec<_>>().join(", ")))
}

/// Whether any rule of a policy matches. Without HTTP (ztunnel) an ALLOW rule with an L7
/// attribute never matches and a DENY rule's L7 attributes are left out.
fn matches(policy: &Value, request: Request, allow: bool) -> bool {
    let rules = policy.pointer("/spec/rules").and_then(Value::as_array).cloned().unwrap_or_default();
    rules.iter().any(|rule| {
        if allow && request.http.is_none() && has_l7(rule) {
            return false;
        }
        let clause = |entries: Option<&Value>, field: &str, f: &dyn Fn(&Value) -> bool| {
            entries.and_then(Value::as_array).is_none_or(|list| list.iter().any(|e| f(&e[field])))
        };
        clause(rule.get("from"), "source", &|src| source_matches(src, request.peer))
            && clause(rule.get("to"), "operation", &|op| operation_matches(op, request))
            && rule
                .get("when")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .all(|w| when_matches(w, request.peer, request.port))
    })
}

/// L7 attributes ztunnel cannot see (authorization.go `httpOperations`, `httpSources`,
/// `l4WhenAttributes`).
fn has_l7(rule: &Value) -> bool {
    let any = |list: Option<&Value>, field: &str, keys: &[&str]| {
        list.and_then(Value::as_array).into_iter().flatten().any(|e| keys.iter().any(|k| e[field].get(*k).is_some()))
    };
    let l4_when = ["source.ip", "source.namespace", "source.principal", "destination.ip", "destination.port"];
    any(rule.get("to"), "operation", &["methods", "notMethods", "paths", "notPaths", "hosts", "notHosts"])
        || any(
            rule.get("from"),
            "source",
            &["requestPrincipals", "notRequestPrincipals", "remoteIpBlocks", "notRemoteIpBlocks"],
        )
        || rule.get("when").and_then(Value::as_array).into_iter().flatten().any(|w| !l4_when.contains(&s(w, "/key")))
}

/// Istio's string match: `*` any non-empty, `*x` suffix, `x*` prefix, else exact.
fn string_match(pattern: &str, value: &str) -> bool {
    match pattern {
        "*" => !value.is_empty(),
        p if p.starts_with('*') => value.ends_with(&p[1..]),
        p if p.ends_with('*') => value.starts_with(&p[..p.len() - 1]),
        p => p == value,
    }
}

/// A field of positive and negative patterns: the positive list, when present, must match; the
/// negative, when present, must not (src/rbac.rs `matches_internal`).
fn field(entry: &Value, positive: &str, negative: &str, value: Option<&str>) -> bool {
    let list = |k: &str| {
        entry.get(k).and_then(Value::as_array).map(|l| l.iter().filter_map(Value::as_str).collect::<Vec<_>>())
    };
    let hit = |patterns: &[&str]| value.is_some_and(|v| patterns.iter().any(|p| string_match(p, v)));
    list(positive).is_none_or(|p| hit(&p)) && list(negative).is_none_or(|n| !hit(&n))
}

fn source_matches(src: &Value, peer: Peer) -> bool {
    let principal = peer.map(|(ns, sa)| format!("cluster.local/ns/{ns}/sa/{sa}"));
    field(src, "principals", "notPrincipals", principal.as_deref())
        && field(src, "namespaces", "notNamespaces", peer.map(|p| p.0))
}

/// A `to.operation`: its ports always; its methods and paths only where HTTP is seen.
fn operation_matches(op: &Value, request: Request) -> bool {
    let ports = field(op, "ports", "notPorts", Some(&request.port.to_string()));
    match request.http {
        Some((method, path)) => {
            ports && field(op, "methods", "notMethods", Some(method)) && field(op, "paths", "notPaths", Some(path))
        }
        None => ports,
    }
}

fn when_matches(when: &Value, peer: Peer, port: u16) -> bool {
    let principal = peer.map(|(ns, sa)| format!("cluster.local/ns/{ns}/sa/{sa}"));
    let value = match s(when, "/key") {
        "source.principal" => principal,
        "source.namespace" => peer.map(|p| p.0.to_string()),
        "destination.port" => Some(port.to_string()),
        // L7 keys are left out of a DENY rule (they match); ALLOW rules with them never got here.
        _ => return true,
    };
    field(when, "values", "notValues", value.as_deref())
}
