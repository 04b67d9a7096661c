//! Upstream shapes the components answer in: recordings under `observed/` of the upstream data,
//! and a JSON pointer helper.

use serde_json::Value;

use super::{Shared, State};

pub(super) fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The value of a container's `--name=value` argument.
pub(super) fn container_flag<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    let args = container["args"].as_array()?.iter().filter_map(Value::as_str);
    args.filter_map(|a| a.strip_prefix(name)?.strip_prefix('=')).next()
}

/// The value of a `--name=value` argument of a container of some Deployment: an operator's flag
/// (no other workload takes the ones asked for here).
pub(super) fn deployment_flag(st: &State, name: &str) -> Option<String> {
    st.store.iter("apps", "deployments", None).find_map(|d| {
        let containers = d.pointer("/spec/template/spec/containers")?.as_array()?;
        containers.iter().find_map(|c| container_flag(c, name).map(String::from))
    })
}

pub(super) fn observed(shared: &Shared, file: &str) -> Value {
    std::fs::read(shared.upstream.join("observed").join(file))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("../shared/upstream/observed/{file} is needed by the simulation"))
}
