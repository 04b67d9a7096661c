//! The simulated API server: what meshcheck's kube client calls, on plain HTTP/1.1.
//!
//! Aggregated discovery (apidiscovery.k8s.io/v2, CRD kinds included once established), get/list/
//! watch with label and field selectors and resourceVersions, create, server-side apply (with
//! `dryRun`), delete (namespaces terminate with their contents), `pods/log`, `services/proxy`,
//! and `pods/exec` and `pods/portforward` over WebSocket in the binary `v4.channel.k8s.io`
//! framing kube-rs speaks (channel byte first; exec status as a `Status` on channel 3; a port's
//! data and error channels announced with its number).

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::Role},
};

use super::{
    Shared, services, store, web,
    web::{Body, decode, full, json_reply, respond, status_error},
};

/// Accepts connections while the API server is up; when it goes away, open connections (and the
/// watches and streams on them) are cut.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        if !*shared.api_up.borrow() {
            drop(stream);
            continue;
        }
        let s = shared.clone();
        let mut up = shared.api_up.subscribe();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let s = s.clone();
                async move { Ok::<_, Infallible>(handle(s, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn.with_upgrades() => {}
                _ = up.wait_for(|u| !*u) => {}
            }
        });
    }
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in req.uri().query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(decode(k)).or_default().push(decode(v));
    }
    out
}

fn first<'a>(q: &'a BTreeMap<String, Vec<String>>, k: &str) -> Option<&'a str> {
    q.get(k).and_then(|v| v.first()).map(String::as_str)
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segs: Vec<String> = path.trim_matches('/').split('/').map(decode).collect();
    let q = query(&req);
    match segs.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["api"] => return json_reply(StatusCode::OK, &discovery(&shared, true)),
        ["apis"] => return json_reply(StatusCode::OK, &discovery(&shared, false)),
        ["version"] => {
            return json_reply(StatusCode::OK, &json!({"major": "1", "minor": "35", "gitVersion": "v1.35.0"}));
        }
        // What meshcheck's preflight asks before a run on an existing cluster: the simulated
        // user may do everything, as the cluster-admin user of a kind or k3d kubeconfig may.
        ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] if req.method() == Method::POST => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let spec = parse_body(&body).map(|r| r["spec"].clone()).unwrap_or(Value::Null);
            return json_reply(
                StatusCode::CREATED,
                &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                        "spec": spec, "status": {"allowed": true}}),
            );
        }
        _ => {}
    }
    let (group, rest) = match segs.first().map(String::as_str) {
        Some("api") if segs.len() >= 3 => (String::new(), segs[2..].to_vec()),
        Some("apis") if segs.len() >= 4 => (segs[1].clone(), segs[3..].to_vec()),
        _ => return status_error(404, "NotFound", "the server could not find the requested resource"),
    };
    let (ns, plural, name, sub) = if rest.len() >= 3 && rest[0] == "namespaces" {
        (rest[1].clone(), rest[2].clone(), rest.get(3).cloned(), rest.get(4..).map(|s| s.to_vec()).unwrap_or_default())
    } else {
        (String::new(), rest[0].clone(), rest.get(1).cloned(), rest.get(2..).map(|s| s.to_vec()).unwrap_or_default())
    };
    let Some(rtype) = shared.lock().store.type_of(&group, &plural).cloned() else {
        return status_error(404, "NotFound", "the server could not find the requested resource");
    };
    let obj_ns = if rtype.namespaced { ns.clone() } else { String::new() };
    if let (Some(name), Some(s)) = (&name, sub.first()) {
        return subresource(shared, req, &ns, &plural, name, s, &sub[1..], &q).await;
    }
    let method = req.method().clone();
    let content_type =
        req.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    match (method, name) {
        (Method::GET, None) if matches!(first(&q, "watch"), Some("true" | "1")) => {
            watch(&shared, &group, &plural, &ns, &q)
        }
        (Method::GET, None) => list(&shared, &group, &plural, &ns, &q, &rtype).await,
        (Method::GET, Some(name)) => match shared.lock().store.get(&group, &plural, &obj_ns, &name) {
            Some(o) => json_reply(StatusCode::OK, o),
            None => not_found(&plural, &name),
        },
        (Method::POST, None) => create(&shared, &group, &plural, &obj_ns, &body, &q, &rtype),
        (Method::PATCH, Some(name)) => match content_type.split(';').next().unwrap_or_default().trim() {
            "application/apply-patch+yaml" => apply(&shared, &group, &plural, &obj_ns, &name, &body, &q, &rtype),
            "application/merge-patch+json" => merge_patch(&shared, &group, &plural, &obj_ns, &name, &body, &rtype),
            // JSON Patch and strategic merge are not simulated: refused, never taken for another kind.
            other => status_error(
                415,
                "UnsupportedMediaType",
                &format!("the simulated API server serves apply and merge patches only, not `{other}`"),
            ),
        },
        (Method::DELETE, Some(name)) => delete(&shared, &group, &plural, &obj_ns, &name, &body),
        _ => status_error(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"),
    }
}

fn not_found(plural: &str, name: &str) -> Response<Body> {
    let what = plural.split('.').next().unwrap_or(plural);
    status_error(404, "NotFound", &format!("{what} \"{name}\" not found"))
}

/// Aggregated discovery: `/api` (core) or `/apis` (every other group, CRDs included).
fn discovery(shared: &Shared, core: bool) -> Value {
    let st = shared.lock();
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
    for t in st.store.types.iter().filter(|t| t.group.is_empty() == core && t.discoverable()) {
        let verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
        let rk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let subs: Vec<Value> = t
            .subresources
            .iter()
            .map(|s| {
                let verbs: &[&str] = match *s {
                    "exec" | "portforward" | "proxy" => &["create", "get"],
                    "log" => &["get"],
                    _ => &["get", "patch", "update"],
                };
                json!({"subresource": s, "responseKind": rk, "verbs": verbs})
            })
            .collect();
        groups.entry(t.group.clone()).or_default().entry(t.version.clone()).or_default().push(json!({
            "resource": t.plural,
            "responseKind": rk,
            "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": t.kind.to_lowercase(),
            "verbs": verbs,
            "subresources": subs,
        }));
    }
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(g, versions)| {
            let versions: Vec<Value> = versions
                .into_iter()
                .map(|(v, resources)| json!({"version": v, "resources": resources, "freshness": "Current"}))
                .collect();
            json!({"metadata": if core { json!({"creationTimestamp": null}) } else { json!({"name": g, "creationTimestamp": null}) },
                   "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn matches(obj: &Value, ns: &str, q: &BTreeMap<String, Vec<String>>) -> bool {
    let labels = obj.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
    (ns.is_empty() || obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
        && first(q, "labelSelector").is_none_or(|s| store::selector_matches(s, &labels))
        && first(q, "fieldSelector").is_none_or(|s| store::fields_match(s, obj))
}

async fn list(
    shared: &Arc<Shared>,
    group: &str,
    plural: &str,
    ns: &str,
    q: &BTreeMap<String, Vec<String>>,
    rtype: &store::ResourceType,
) -> Response<Body> {
    let hang = {
        let mut st = shared.lock();
        let hang = st.faults.events_hang_under_deny
            && plural == "events"
            && ns == "book-info"
            && !st.store.list("networking.k8s.io", "networkpolicies", Some("book-info")).is_empty();
        // Once: the collector's list hangs, the end-of-run snapshot's does not.
        st.faults.events_hang_under_deny &= !hang;
        hang
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let st = shared.lock();
    let items: Vec<Value> = st
        .store
        .list(group, plural, if ns.is_empty() { None } else { Some(ns) })
        .into_iter()
        .filter(|o| matches(o, ns, q))
        .collect();
    json_reply(
        StatusCode::OK,
        &json!({"kind": format!("{}List", rtype.kind), "apiVersion": rtype.api_version(),
                "metadata": {"resourceVersion": st.store.rv().to_string()}, "items": items}),
    )
}

/// A watch: the changes after the given resourceVersion (or the current objects as ADDED), then
/// every change as it happens, one JSON event per line.
fn watch(
    shared: &Arc<Shared>,
    group: &str,
    plural: &str,
    ns: &str,
    q: &BTreeMap<String, Vec<String>>,
) -> Response<Body> {
    let since: u64 = first(q, "resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
    let (tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    let (mut rx_rv, initial) = {
        let mut st = shared.lock();
        // Compacted under the client: every other watch of one object (`metadata.name=`, as a
        // wait watches) from a resourceVersion finds it gone and is answered with the 410 at once
        // (kube-runtime's watcher then relists and watches again, which the next one lets through).
        let of_one_object = first(q, "fieldSelector").is_some_and(|f| f.starts_with("metadata.name="));
        if st.faults.watches_expire && since != 0 && of_one_object {
            st.watch_requests += 1;
            if st.watch_requests % 2 == 1 {
                let now = st.store.rv();
                drop(st);
                shared.note(format!("watch {plural} expired"));
                return expired_watch(since, now);
            }
        }
        let initial: Vec<Value> = if since == 0 {
            st.store
                .list(group, plural, if ns.is_empty() { None } else { Some(ns) })
                .into_iter()
                .filter(|o| matches(o, ns, q))
                .collect()
        } else {
            Vec::new()
        };
        (st.store.subscribe(), initial)
    };
    let (shared, group, plural, ns, q) =
        (shared.clone(), group.to_string(), plural.to_string(), ns.to_string(), q.clone());
    let timeout = first(&q, "timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800u64);
    tokio::spawn(async move {
        let mut tx = tx;
        let line = |kind: &str, o: &Value| {
            let mut l = serde_json::to_vec(&json!({"type": kind, "object": o})).expect("json");
            l.push(b'\n');
            Ok(Frame::data(Bytes::from(l)))
        };
        let mut last = since;
        if since == 0 {
            last = shared.lock().store.rv();
            for o in &initial {
                if tx.send(line("ADDED", o)).await.is_err() {
                    return;
                }
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            rx_rv.borrow_and_update();
            let changes: Vec<(u64, &'static str, Value)> = {
                let st = shared.lock();
                let start = st.store.history.partition_point(|c| c.rv <= last);
                st.store.history[start..]
                    .iter()
                    .filter(|c| c.group == group && c.plural == plural && matches(&c.object, &ns, &q))
                    .map(|c| (c.rv, c.kind, c.object.clone()))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .chain(std::iter::once((st.store.rv(), "", Value::Null)))
                    .collect()
            };
            for (rv, kind, o) in changes {
                last = last.max(rv);
                if !kind.is_empty() && tx.send(line(kind, &o)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                r = rx_rv.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(rx)))
        .expect("response")
}

/// The Status of a watch whose resourceVersion etcd has compacted away (apiserver v0.35.4
/// pkg/storage/cacher/watch_cache.go: `errors.NewResourceExpired(fmt.Sprintf("too old resource
/// version: %d (%d)", …))`).
fn expired(since: u64, now: u64) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("too old resource version: {since} ({now})"), "reason": "Expired", "code": 410})
}

/// A watch that ends at once with the 410 ERROR event.
fn expired_watch(since: u64, now: u64) -> Response<Body> {
    let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": expired(since, now)})).expect("json");
    line.push(b'\n');
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(super::web::full(line))
        .expect("response")
}

fn parse_body(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(body).ok().or_else(|| serde_saphyr::from_slice(body).ok())
}

fn owned_by_run(q: &BTreeMap<String, Vec<String>>) -> bool {
    first(q, "fieldManager") == Some("meshcheck")
}

fn create(
    shared: &Arc<Shared>,
    group: &str,
    plural: &str,
    ns: &str,
    body: &[u8],
    q: &BTreeMap<String, Vec<String>>,
    rtype: &store::ResourceType,
) -> Response<Body> {
    let Some(mut obj) = parse_body(body) else { return status_error(400, "BadRequest", "invalid body") };
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
    let mut st = shared.lock();
    if st.store.get(group, plural, ns, &name).is_some() {
        return status_error(409, "AlreadyExists", &format!("{plural} \"{name}\" already exists"));
    }
    if rtype.namespaced {
        obj["metadata"]["namespace"] = json!(ns);
        if let Some(refused) = creation_refused(&st.store, group, plural, ns, &name, &obj) {
            return refused;
        }
    }
    obj["apiVersion"] = json!(rtype.api_version());
    obj["kind"] = json!(rtype.kind);
    if plural == "namespaces" && group.is_empty() {
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
        obj["status"] = json!({"phase": "Active"});
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
    }
    if let Err(message) = store::validate(group, plural, &obj, None) {
        return status_error(422, "Invalid", &message);
    }
    let stored = st.store.put(group, plural, obj);
    if owned_by_run(q) {
        st.applied.insert((group.into(), plural.into(), ns.into(), name.clone()));
    }
    st.calls.push(format!("create {plural} {ns}/{name}"));
    super::xds::push(shared, &mut st);
    json_reply(StatusCode::CREATED, &stored)
}

/// Whether objects can be created in a namespace: `Some` is the API server's answer when not, 404
/// for a namespace that does not exist and 403 for one being terminated (kubernetes v1.35.4
/// plugin/pkg/admission/namespace/lifecycle/admission.go: `unable to create new content in
/// namespace %s because it is being terminated`, apimachinery `NewForbidden`, which puts
/// `<resource> "<name>" is forbidden: ` before it; the real API server's wording, held by
/// suites/offline/controlplane/). Then the ServiceAccount admission plugin's rule for a pod
/// ([`service_account_refused`]).
fn creation_refused(
    store: &store::Store,
    group: &str,
    plural: &str,
    ns: &str,
    name: &str,
    obj: &Value,
) -> Option<Response<Body>> {
    let resource = if group.is_empty() { plural.to_string() } else { format!("{plural}.{group}") };
    match store.get("", "namespaces", "", ns) {
        None => Some(status_error(404, "NotFound", &format!("namespaces \"{ns}\" not found"))),
        Some(n) if n.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") => Some(status_error(
            403,
            "Forbidden",
            &format!(
                "{resource} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated"
            ),
        )),
        Some(_) if group.is_empty() && plural == "pods" => service_account_refused(store, ns, name, obj),
        Some(_) => None,
    }
}

/// A pod is admitted only with its ServiceAccount (`default` when it names none) already there,
/// dry run or not (kubernetes v1.35.4 plugin/pkg/admission/serviceaccount/admission.go `Admit`,
/// L155-L163: `error looking up service account %s/%s: %w`, the NotFound of
/// `serviceaccount "<name>" not found`, as `NewForbidden`). `default` is taken as there: the
/// service-account controller creates it with the namespace, and the plugin waits up to ten tries
/// for it (`getServiceAccount`). What the real server answers is held by
/// suites/offline/controlplane/run.rs, where a dry run of a ServiceAccount and its Pod in one batch
/// first met it.
fn service_account_refused(store: &store::Store, ns: &str, name: &str, pod: &Value) -> Option<Response<Body>> {
    // The deprecated `serviceAccount` stands in for an empty `serviceAccountName` (v1.35.4
    // pkg/apis/core/v1/conversion.go `Convert_v1_PodSpec_To_core_PodSpec`).
    let named = |field: &str| pod.pointer(field).and_then(Value::as_str).filter(|a| !a.is_empty());
    let account = named("/spec/serviceAccountName").or_else(|| named("/spec/serviceAccount")).unwrap_or("default");
    if account == "default" || store.get("", "serviceaccounts", ns, account).is_some() {
        return None;
    }
    Some(status_error(
        403,
        "Forbidden",
        &format!(
            "pods \"{name}\" is forbidden: error looking up service account {ns}/{account}: serviceaccount \"{account}\" not found"
        ),
    ))
}

/// Server-side apply. One field manager per object is all meshcheck uses, so the applied
/// configuration replaces what it applied before; labels and annotations merge; status stays.
#[allow(clippy::too_many_arguments)]
fn apply(
    shared: &Arc<Shared>,
    group: &str,
    plural: &str,
    ns: &str,
    name: &str,
    body: &[u8],
    q: &BTreeMap<String, Vec<String>>,
    rtype: &store::ResourceType,
) -> Response<Body> {
    let Some(applied) = parse_body(body) else { return status_error(400, "BadRequest", "invalid apply patch") };
    let dry_run = first(q, "dryRun") == Some("All");
    let mut st = shared.lock();
    let crd = st.store.get("apiextensions.k8s.io", "customresourcedefinitions", "", &format!("{plural}.{group}"));
    if let Some(field) = crd.and_then(|crd| store::undeclared_fields(crd, &rtype.version, &applied).into_iter().next())
    {
        // A plain error of the field manager, which the API server answers as 500 with no reason
        // (k8s.io/apiserver v0.35.4 pkg/endpoints/handlers/responsewriters/status.go
        // `ErrorToAPIStatus`: `StatusReasonUnknown`, ""; the real tier holds it).
        return status_error(
            500,
            "",
            &format!(
                "failed to create typed patch object ({ns}/{name}; {group}/{}, Kind={}): {field}: field not declared in schema",
                rtype.version, rtype.kind
            ),
        );
    }
    let existing = st.store.get(group, plural, ns, name).cloned();
    // Admission refuses creations only: an object already in a Terminating namespace can change.
    if rtype.namespaced
        && existing.is_none()
        && let Some(refused) = creation_refused(&st.store, group, plural, ns, name, &applied)
    {
        return refused;
    }
    let mut obj = existing.clone().unwrap_or_else(|| json!({"metadata": {}}));
    for (k, v) in applied.as_object().into_iter().flatten() {
        if k == "metadata" {
            for (mk, mv) in v.as_object().into_iter().flatten() {
                match (mk.as_str(), obj["metadata"].get_mut(mk)) {
                    ("labels" | "annotations", Some(Value::Object(have))) => {
                        have.extend(mv.as_object().cloned().unwrap_or_default());
                    }
                    _ => obj["metadata"][mk] = mv.clone(),
                }
            }
        } else if k != "status" {
            obj[k] = v.clone();
        }
    }
    obj["metadata"]["name"] = json!(name);
    if rtype.namespaced {
        obj["metadata"]["namespace"] = json!(ns);
    }
    obj["apiVersion"] = json!(rtype.api_version());
    obj["kind"] = json!(rtype.kind);
    if let Err(message) = store::validate(group, plural, &obj, existing.as_ref()) {
        return status_error(422, "Invalid", &message);
    }
    if dry_run {
        return json_reply(StatusCode::OK, &obj);
    }
    let created = existing.is_none();
    let stored = st.store.put(group, plural, obj);
    let key = (group.to_string(), plural.to_string(), ns.to_string(), name.to_string());
    // Putting back an object the run deleted restores the cluster; it is not something the run added.
    if owned_by_run(q) && !st.removed.contains(&key) {
        st.applied.insert(key);
    }
    st.applies += 1;
    st.calls.push(format!("apply {} {ns}/{name}", rtype.kind));
    super::xds::push(shared, &mut st);
    if st.faults.api_down_after_applies.is_some_and(|n| st.applies >= n) {
        st.calls.push("API server went away".into());
        let _ = shared.api_up.send(false);
    }
    json_reply(if created { StatusCode::CREATED } else { StatusCode::OK }, &stored)
}

/// A JSON merge patch (RFC 7386, what `kubectl patch --type merge` and kube-rs `Patch::Merge` send
/// as `application/merge-patch+json`) onto the stored object: objects merge key by key, `null`
/// removes a key, anything else replaces (k8s.io/apiserver v0.35.4 pkg/endpoints/handlers/patch.go
/// `jsonPatcher`, through evanphx/json-patch `MergePatch`). The object must exist.
fn merge_patch(
    shared: &Arc<Shared>,
    group: &str,
    plural: &str,
    ns: &str,
    name: &str,
    body: &[u8],
    rtype: &store::ResourceType,
) -> Response<Body> {
    fn merge(target: &mut Value, patch: &Value) {
        let Value::Object(changes) = patch else {
            *target = patch.clone();
            return;
        };
        if !target.is_object() {
            *target = json!({});
        }
        let fields = target.as_object_mut().expect("made an object above");
        for (k, v) in changes {
            if v.is_null() {
                fields.remove(k);
            } else {
                merge(fields.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status_error(400, "BadRequest", "invalid merge patch");
    };
    let mut st = shared.lock();
    let Some(existing) = st.store.get(group, plural, ns, name).cloned() else { return not_found(plural, name) };
    let mut obj = existing.clone();
    merge(&mut obj, &patch);
    obj["metadata"]["name"] = json!(name);
    if rtype.namespaced {
        obj["metadata"]["namespace"] = json!(ns);
    }
    if let Err(message) = store::validate(group, plural, &obj, Some(&existing)) {
        return status_error(422, "Invalid", &message);
    }
    let stored = st.store.put(group, plural, obj);
    st.calls.push(format!("merge-patch {} {ns}/{name}", rtype.kind));
    json_reply(StatusCode::OK, &stored)
}

/// A DELETE, with its `DeleteOptions` body's uid precondition checked (apimachinery v0.35.4
/// pkg/apis/meta/v1 `Preconditions`; a mismatch is 409 Conflict).
fn delete(shared: &Arc<Shared>, group: &str, plural: &str, ns: &str, name: &str, body: &[u8]) -> Response<Body> {
    let mut st = shared.lock();
    st.calls.push(format!("delete {plural} {ns}/{name}"));
    if st.faults.ccnp_delete_fails && plural == "ciliumclusterwidenetworkpolicies" {
        return status_error(500, "InternalError", "etcdserver: request timed out");
    }
    let Some(mut obj) = st.store.get(group, plural, ns, name).cloned() else { return not_found(plural, name) };
    let wanted_uid =
        parse_body(body).and_then(|o| o.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from));
    let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
    if let Some(wanted) = wanted_uid.filter(|w| w != uid) {
        return status_error(
            409,
            "Conflict",
            &format!("Precondition failed: UID in precondition: {wanted}, UID in object meta: {uid}"),
        );
    }
    let key = (group.to_string(), plural.to_string(), ns.to_string(), name.to_string());
    if plural != "namespaces" && !st.applied.contains(&key) {
        st.removed.insert(key);
    }
    if group.is_empty() && plural == "namespaces" {
        // Terminating until the namespace controller has removed everything in it.
        obj["metadata"]["deletionTimestamp"] = json!(store::now());
        obj["status"]["phase"] = json!("Terminating");
        let stored = st.store.put(group, plural, obj);
        return json_reply(StatusCode::OK, &stored);
    }
    if store::has_finalizers(&obj) {
        // Kept, marked for deletion, until its finalizers are removed (apiserver v0.35.4
        // pkg/registry/generic/registry/store.go `updateForGracefulDeletionAndFinalizers`).
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            obj["metadata"]["deletionTimestamp"] = json!(store::now());
        }
        let stored = st.store.put(group, plural, obj);
        return json_reply(StatusCode::OK, &stored);
    }
    if group.is_empty() && plural == "pods" {
        // Graceful: a started pod runs on through its grace period (see `delete_pod`).
        super::controllers::delete_pod(&mut st, ns, name);
        let now = st.store.get(group, plural, ns, name).cloned().unwrap_or(obj);
        return json_reply(StatusCode::OK, &now);
    }
    let gone = st.store.delete(group, plural, ns, name).unwrap_or(obj);
    super::xds::push(shared, &mut st);
    json_reply(StatusCode::OK, &gone)
}

/// `GET pods/{name}/log` with `PodLogOptions` as the API server reads them (k8s.io/kubernetes
/// v1.35 pkg/registry/core/pod/strategy.go `LogLocation`: a pod of several containers needs
/// `container`, which must be one of them; `previous` needs a container that restarted), then
/// `tailLines` (the last lines) and `limitBytes` (the first bytes of those). The call is noted
/// with its options.
fn pod_log(shared: &Shared, ns: &str, name: &str, q: &BTreeMap<String, Vec<String>>) -> Response<Body> {
    let pod = shared.lock().store.get("", "pods", ns, name).cloned();
    let Some(pod) = pod else { return not_found("pods", name) };
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let container = match first(q, "container") {
        Some(c) if containers.iter().any(|n| n == c) => c.to_string(),
        Some(c) => return status_error(400, "BadRequest", &format!("container {c} is not valid for pod {name}")),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return status_error(
                400,
                "BadRequest",
                &format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                ),
            );
        }
    };
    let restarted = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|s| s["name"] == container.as_str() && s["restartCount"].as_u64().unwrap_or(0) > 0);
    if first(q, "previous") == Some("true") && !restarted {
        return status_error(
            400,
            "BadRequest",
            &format!("previous terminated container \"{container}\" in pod \"{name}\" not found"),
        );
    }
    let options: Vec<String> = ["tailLines", "limitBytes", "sinceSeconds", "previous"]
        .iter()
        .filter_map(|k| first(q, k).map(|v| format!("{k}={v}")))
        .collect();
    shared.note(format!("log {ns}/{name}/{container} {}", options.join(" ")));
    let Some(mut text) = services::pod_log(shared, ns, name) else { return not_found("pods", name) };
    if let Some(n) = first(q, "tailLines").and_then(|n| n.parse::<usize>().ok()) {
        let lines: Vec<&str> = text.lines().collect();
        text = lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("{l}\n")).collect();
    }
    if let Some(n) = first(q, "limitBytes").and_then(|n| n.parse::<usize>().ok())
        && text.len() > n
    {
        text = String::from_utf8_lossy(&text.as_bytes()[..n]).into_owned();
    }
    respond(StatusCode::OK, "text/plain", text)
}

#[allow(clippy::too_many_arguments)]
async fn subresource(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    ns: &str,
    plural: &str,
    name: &str,
    sub: &str,
    rest: &[String],
    q: &BTreeMap<String, Vec<String>>,
) -> Response<Body> {
    match (plural, sub) {
        ("services", "proxy") => {
            let mut path = format!("/{}", rest.join("/"));
            if let Some(query) = req.uri().query() {
                path = format!("{path}?{query}");
            }
            let accept = req.headers().get("accept").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            services::proxy(&shared, ns, name, &path, &accept).await
        }
        ("pods", "log") => pod_log(&shared, ns, name, q),
        ("pods", "exec" | "portforward") => {
            let pod = shared.lock().store.get("", "pods", ns, name).cloned();
            let Some(pod) = pod else { return not_found("pods", name) };
            if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
                return status_error(400, "BadRequest", &format!("pod {name} is not running"));
            }
            let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
                return status_error(400, "BadRequest", "upgrade request required");
            };
            let upgrade = hyper::upgrade::on(&mut req);
            let (shared, ns, name, sub, q) =
                (shared.clone(), ns.to_string(), name.to_string(), sub.to_string(), q.clone());
            {
                let mut st = shared.lock();
                if let Some(rolling) = super::controllers::rollout_in_progress(&st) {
                    st.during_rollout.push(format!("{sub} {ns}/{name} while {rolling}"));
                }
            }
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                let mut up = shared.api_up.subscribe();
                let work = async {
                    if sub == "exec" {
                        exec(&shared, ws, &ns, &name, q.get("command").cloned().unwrap_or_default()).await
                    } else {
                        let ports =
                            first(&q, "ports").unwrap_or("").split(',').filter_map(|p| p.parse().ok()).collect();
                        portforward(&shared, ws, &ns, &name, ports).await
                    }
                };
                tokio::select! {
                    _ = work => {}
                    _ = up.wait_for(|u| !*u) => {}
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "Upgrade")
                .header(
                    "sec-websocket-accept",
                    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
                )
                .header("sec-websocket-protocol", "v4.channel.k8s.io")
                .body(full(Bytes::new()))
                .expect("response")
        }
        _ => status_error(404, "NotFound", "the server could not find the requested resource"),
    }
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// Runs a command "in" a pod: stdout on channel 1, then the exit status on channel 3.
async fn exec(shared: &Arc<Shared>, mut ws: Ws, ns: &str, pod: &str, command: Vec<String>) {
    let (stdout, code) = services::exec(shared, ns, pod, &command).await;
    let _ = ws.send(framed(1, stdout.as_bytes())).await;
    let status = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure",
               "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
               "reason": "NonZeroExitCode",
               "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    };
    let _ = ws.send(framed(3, &serde_json::to_vec(&status).expect("json"))).await;
    let _ = ws.close(None).await;
}

/// Port-forward: announces each port on its data and error channel, then answers one HTTP
/// request per port and closes, as a connection to a local port that closes after its answer.
async fn portforward(shared: &Arc<Shared>, mut ws: Ws, ns: &str, pod: &str, ports: Vec<u16>) {
    for (i, port) in ports.iter().enumerate() {
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if ws.send(framed(ch, &port.to_le_bytes())).await.is_err() {
                return;
            }
        }
    }
    let mut buffers: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Binary(data) = msg else {
            if msg.is_close() {
                break;
            }
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let ch = data[0];
        let buf = buffers.entry(ch).or_default();
        buf.extend_from_slice(&data[1..]);
        let Some(request) = web::parse_request(buf) else { continue };
        let Some(port) = ports.get(usize::from(ch / 2)).copied() else { break };
        let reply = match services::pod_exchange(shared, ns, pod, port, &request) {
            Some(reply) => reply.to_bytes(),
            None => {
                let msg = format!(
                    "an error occurred forwarding {port} -> {port}: error forwarding port {port} to pod {pod}: connection refused"
                );
                let _ = ws.send(framed(ch + 1, msg.as_bytes())).await;
                Vec::new()
            }
        };
        if !reply.is_empty() {
            let _ = ws.send(framed(ch, &reply)).await;
        }
        let _ = ws.close(None).await;
        break;
    }
}
