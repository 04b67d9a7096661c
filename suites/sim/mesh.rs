//! Who is in the mesh: a namespace enrolled in ambient mode, and the pod of a workload.

use serde_json::Value;

use super::{State, controllers::pod_ready, shapes::s};

/// The pod of a workload (`book-info/details-v1`) and its node, service account and IP.
pub(super) fn workload_pod(st: &State, workload: &str) -> Option<Value> {
    let (ns, wl) = workload.split_once('/')?;
    st.store
        .list("", "pods", Some(ns))
        .into_iter()
        .find(|p| s(p, "/metadata/name").starts_with(&format!("{wl}-")) && pod_ready(p))
}

pub(super) fn ambient(st: &State, ns: &str) -> bool {
    st.store
        .get("", "namespaces", "", ns)
        .is_some_and(|n| s(n, "/metadata/labels/istio.io~1dataplane-mode") == "ambient")
}
