//! Small readers over Kubernetes objects as the API returned them (raw JSON), so judges work on
//! evidence exactly as recorded, whatever fields newer API versions add.

use serde_json::Value;

/// `items` of a List response.
pub fn items(list: &Value) -> &[Value] {
    list.get("items").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default()
}

/// A label's value.
pub fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/labels").and_then(|l| l.get(key)).and_then(Value::as_str)
}

/// Whether a condition of `status.conditions` has status "True".
pub fn condition_true(obj: &Value, kind: &str) -> bool {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// A pod's phase.
pub fn pod_phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Unknown")
}

/// Whether a pod is Running and Ready.
pub fn pod_ready(pod: &Value) -> bool {
    pod_phase(pod) == "Running" && condition_true(pod, "Ready")
}

/// Total container restarts of a pod.
pub fn pod_restarts(pod: &Value) -> u64 {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("restartCount").and_then(Value::as_u64))
        .sum()
}

/// Whether an object's labels contain every pair of `selector`.
pub fn labels_match(obj: &Value, selector: &serde_json::Map<String, Value>) -> bool {
    selector.iter().all(|(k, v)| label(obj, k) == v.as_str())
}
