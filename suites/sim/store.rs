//! The simulated cluster's object store: what etcd and the API machinery do for the API server.
//! Objects are kept as JSON exactly as a real API server returns them (metadata filled in, a
//! global resourceVersion, generation bumped on spec changes); every change is an event that
//! watches replay from any resourceVersion they name.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// A resource the API serves: what discovery lists and what a path names.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    pub subresources: Vec<&'static str>,
    /// When a CRD's kind enters aggregated discovery: it is served from the moment its CRD is
    /// Established, but discovery lists it only once the API server's own discovery controller has
    /// synced it ([`DISCOVERY_LAG`]). `None` for built-in kinds, always listed.
    pub discoverable_from: Option<std::time::Instant>,
}

/// How long after a CRD is Established its kind is missing from aggregated discovery. The real
/// API server adds it from a controller of its own, which syncs the CRD's group-version off its
/// informer through a work queue (apiextensions-apiserver v0.35.4
/// pkg/apiserver/customresource_discovery_controller.go, `sync` → `resourceManager.AddGroupVersion`);
/// the real control-plane tier, loaded, saw a ServiceMonitor refused as not served right after its
/// CRD's Established wait. Longer than the harness's re-ask interval, so that a plan which applies
/// a CR right after its CRD's wait is rehearsed against the gap.
pub const DISCOVERY_LAG: std::time::Duration = std::time::Duration::from_millis(600);

impl ResourceType {
    fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> ResourceType {
        ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            subresources: Vec::new(),
            discoverable_from: None,
        }
    }

    /// Whether aggregated discovery lists this kind now.
    pub fn discoverable(&self) -> bool {
        self.discoverable_from.is_none_or(|at| at <= std::time::Instant::now())
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }
}

/// Built-in kinds of a Kubernetes 1.35 API server that meshcheck or the simulated controllers use.
fn builtins() -> Vec<ResourceType> {
    let mut pods = ResourceType::new("", "v1", "Pod", "pods", true);
    pods.subresources = vec!["status", "log", "exec", "portforward"];
    let mut services = ResourceType::new("", "v1", "Service", "services", true);
    services.subresources = vec!["status", "proxy"];
    let mut out = vec![
        ResourceType::new("", "v1", "Namespace", "namespaces", false),
        ResourceType::new("", "v1", "Node", "nodes", false),
        pods,
        services,
        ResourceType::new("", "v1", "ConfigMap", "configmaps", true),
        ResourceType::new("", "v1", "Secret", "secrets", true),
        ResourceType::new("", "v1", "ServiceAccount", "serviceaccounts", true),
        ResourceType::new("", "v1", "Event", "events", true),
        ResourceType::new("", "v1", "Endpoints", "endpoints", true),
        ResourceType::new("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true),
        ResourceType::new("events.k8s.io", "v1", "Event", "events", true),
        ResourceType::new("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true),
        ResourceType::new("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", false),
        ResourceType::new("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false),
        ResourceType::new("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false),
        ResourceType::new("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
        ResourceType::new("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true),
        ResourceType::new("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true),
        ResourceType::new("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true),
        ResourceType::new("batch", "v1", "Job", "jobs", true),
        ResourceType::new(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            false,
        ),
        ResourceType::new(
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
        ),
        ResourceType::new(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
            false,
        ),
        ResourceType::new(
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            false,
        ),
    ];
    for (kind, plural) in [
        ("Deployment", "deployments"),
        ("DaemonSet", "daemonsets"),
        ("StatefulSet", "statefulsets"),
        ("ReplicaSet", "replicasets"),
        ("ControllerRevision", "controllerrevisions"),
    ] {
        let mut t = ResourceType::new("apps", "v1", kind, plural, true);
        t.subresources = vec!["status", "scale"];
        out.push(t);
    }
    out
}

/// Identity of a stored object: group, plural, namespace ("" when cluster-scoped), name.
pub type Key = (String, String, String, String);

/// One recorded change, for watches.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub kind: &'static str,
    pub group: String,
    pub plural: String,
    pub object: Value,
}

/// The store.
pub struct Store {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    pub types: Vec<ResourceType>,
    pub history: Vec<Change>,
    notify: tokio::sync::watch::Sender<u64>,
    /// CRDs created and not yet Established: the apiextensions controller establishes them after
    /// the call that created them ([`Store::establish_pending`]).
    pending_crds: Vec<Key>,
}

/// A Secret's `stringData` merged into `data`, base64-encoded, and dropped: it is write-only
/// (kubernetes v1.35 pkg/apis/core/v1/conversion.go Convert_v1_Secret_To_core_Secret: "StringData
/// overwrites Data").
fn string_data_into_data(secret: &mut Value) {
    use base64::Engine as _;
    let Some(Value::Object(strings)) = secret.as_object_mut().and_then(|o| o.remove("stringData")) else { return };
    let data = secret["data"].as_object().cloned().unwrap_or_default();
    let mut data = data;
    for (k, v) in strings {
        let text = v.as_str().unwrap_or_default();
        data.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(text)));
    }
    secret["data"] = Value::Object(data);
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Store {
    pub fn new() -> Store {
        Store {
            rv: 1000,
            uid: 0,
            objects: BTreeMap::new(),
            types: builtins(),
            history: Vec::new(),
            notify: tokio::sync::watch::channel(1000).0,
            pending_crds: Vec::new(),
        }
    }

    /// Forgets everything (a deleted cluster).
    pub fn reset(&mut self) {
        self.objects.clear();
        self.types = builtins();
        self.pending_crds.clear();
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The served type for a group and plural (any version of it).
    pub fn type_of(&self, group: &str, plural: &str) -> Option<&ResourceType> {
        self.types.iter().find(|t| t.group == group && t.plural == plural)
    }

    /// The type of an object by its apiVersion and kind.
    pub fn type_for(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        self.types.iter().find(|t| t.group == group && t.kind == kind).cloned()
    }

    pub fn get(&self, group: &str, plural: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(group.into(), plural.into(), ns.into(), name.into()))
    }

    /// Objects of a type, in one namespace or all.
    /// Keys sort by group, plural, namespace and name, so the objects of a type (and of a
    /// namespace) are one range of the map: the controllers list many times per pass.
    pub fn list(&self, group: &str, plural: &str, ns: Option<&str>) -> Vec<Value> {
        self.iter(group, plural, ns).cloned().collect()
    }

    /// [`Store::list`] without the copies, for the questions the controllers ask of every pod on
    /// every pass (kube-prometheus-stack's dashboards alone are megabytes of ConfigMaps).
    pub fn iter<'a>(
        &'a self,
        group: &'a str,
        plural: &'a str,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        let start = (group.to_string(), plural.to_string(), ns.unwrap_or_default().to_string(), String::new());
        self.objects
            .range(start..)
            .take_while(move |((g, p, n, _), _)| g == group && p == plural && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
    }

    /// Every object's key.
    pub fn keys(&self) -> Vec<Key> {
        self.objects.keys().cloned().collect()
    }

    fn record(&mut self, kind: &'static str, group: &str, plural: &str, object: Value) {
        self.history.push(Change { rv: self.rv, kind, group: group.into(), plural: plural.into(), object });
        self.notify.send_replace(self.rv);
    }

    /// Makes the objects of one type exactly `items`, kept as another API server serves them
    /// (the real tier's copy of kube-apiserver, [`super::mirrored`]): metadata untouched, no
    /// history, since nothing watches this store there.
    pub fn mirror(&mut self, group: &str, plural: &str, items: Vec<Value>) {
        let start = (group.to_string(), plural.to_string(), String::new(), String::new());
        let stale: Vec<Key> = self
            .objects
            .range(start..)
            .take_while(|((g, p, _, _), _)| g == group && p == plural)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.objects.remove(&key);
        }
        for item in items {
            let at = |p: &str| item.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
            let (ns, name) = (at("/metadata/namespace"), at("/metadata/name"));
            self.objects.insert((group.to_string(), plural.to_string(), ns, name), item);
        }
    }

    /// Creates or replaces an object, filling in what the API server owns. Returns it as stored;
    /// an unchanged object is not rewritten (no new resourceVersion, no event).
    pub fn put(&mut self, group: &str, plural: &str, mut obj: Value) -> Value {
        if group.is_empty() && plural == "secrets" {
            string_data_into_data(&mut obj);
        }
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string();
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        let key = (group.to_string(), plural.to_string(), ns, name);
        let old = self.objects.get(&key);
        let meta = obj["metadata"].as_object_mut().expect("objects have metadata");
        match old {
            Some(o) => {
                for k in ["uid", "creationTimestamp"] {
                    meta.insert(k.into(), o["metadata"][k].clone());
                }
                let generation = o.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
                let bump = o.get("spec") != obj.get("spec");
                obj["metadata"]["generation"] = json!(if bump { generation + 1 } else { generation });
                obj["metadata"]["resourceVersion"] = o["metadata"]["resourceVersion"].clone();
                if &obj == o {
                    return obj;
                }
            }
            None => {
                self.uid += 1;
                meta.insert("uid".into(), json!(format!("5e1f0000-0000-4000-8000-{:012x}", self.uid)));
                meta.insert("creationTimestamp".into(), json!(now()));
                meta.insert("generation".into(), json!(1));
            }
        }
        // A CRD is Established by the apiextensions controller after the create returns (its
        // kind is served, and in discovery, only then: apiextensions-apiserver v0.37.0
        // pkg/controller/establish/establishing_controller.go); an update keeps what it has.
        let crd = group == "apiextensions.k8s.io" && plural == "customresourcedefinitions";
        let established = crd
            && old.is_some_and(|o| {
                o.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Established" && c["status"] == "True"))
            });
        let existed = old.is_some();
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if crd {
            if established {
                obj = self.establish_crd(obj);
            } else {
                obj["status"] = json!({"conditions": []});
                if !self.pending_crds.contains(&key) {
                    self.pending_crds.push(key.clone());
                }
            }
        }
        self.objects.insert(key, obj.clone());
        self.record(if existed { "MODIFIED" } else { "ADDED" }, group, plural, obj.clone());
        obj
    }

    /// Establishes the CRDs created since the last call, as the apiextensions controller does:
    /// their kinds served and in discovery, their status `Established` (a change watchers see).
    pub fn establish_pending(&mut self) {
        for (g, p, ns, name) in std::mem::take(&mut self.pending_crds) {
            let Some(crd) = self.objects.get(&(g.clone(), p.clone(), ns.clone(), name.clone())).cloned() else {
                continue;
            };
            let mut crd = self.establish_crd(crd);
            self.rv += 1;
            crd["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            self.objects.insert((g.clone(), p.clone(), ns, name), crd.clone());
            self.record("MODIFIED", &g, &p, crd);
        }
    }

    /// Establishes the pending CRDs with their kinds in discovery at once: a cluster's state from
    /// before the run, whose discovery controller synced long ago.
    pub fn establish_long_ago(&mut self) {
        self.establish_pending();
        for t in &mut self.types {
            t.discoverable_from = None;
        }
    }

    /// Whether every CRD created so far is Established.
    pub fn crds_established(&self) -> bool {
        self.pending_crds.is_empty()
    }

    /// Registers a CRD's kind for discovery and marks it Established, as the apiextensions
    /// controller does once its names are accepted.
    fn establish_crd(&mut self, mut crd: Value) -> Value {
        let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or("").to_string();
        let kind = crd.pointer("/spec/names/kind").and_then(Value::as_str).unwrap_or("").to_string();
        let plural = crd.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or("").to_string();
        let namespaced = crd.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
        let versions: Vec<(String, bool)> = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v["served"] != false)
            .map(|v| (v["name"].as_str().unwrap_or("v1").to_string(), v["storage"] == true))
            .collect();
        // Every served version is discoverable; the storage version first (the preferred one).
        let mut ordered = versions.clone();
        ordered.sort_by_key(|(_, storage)| !storage);
        // A kind already in discovery stays there through an update of its CRD; a new one
        // enters after the discovery controller's sync.
        let listed = self
            .types
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .map(|t| t.discoverable_from)
            .unwrap_or_else(|| Some(std::time::Instant::now() + DISCOVERY_LAG));
        self.types.retain(|t| !(t.group == group && t.plural == plural));
        for (version, _) in ordered {
            let mut t = ResourceType::new(&group, &version, &kind, &plural, namespaced);
            t.subresources = vec!["status"];
            t.discoverable_from = listed;
            self.types.push(t);
        }
        let names = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
        crd["status"] = json!({
            "acceptedNames": names,
            "storedVersions": versions.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>(),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()},
            ],
        });
        crd
    }

    /// Removes an object; returns it.
    pub fn delete(&mut self, group: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self.objects.remove(&(group.into(), plural.into(), ns.into(), name.into()))?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if group == "apiextensions.k8s.io" {
            let (g, p) = (obj.pointer("/spec/group").cloned(), obj.pointer("/spec/names/plural").cloned());
            self.types.retain(|t| Some(json!(t.group)) != g || Some(json!(t.plural)) != p);
        }
        self.record("DELETED", group, plural, obj.clone());
        Some(obj)
    }
}

/// Whether an object (not a namespace: its `spec.finalizers` are the namespace controller's) has
/// `metadata.finalizers` left.
pub fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty())
}

/// The fields of an applied custom resource that its CRD's schema (at the version applied) does
/// not declare, as `.spec.foo` paths. Server-side apply converts the patch to the schema's type
/// before anything else and refuses a field it lacks, whatever `fieldValidation` says
/// (structured-merge-diff v6.4.2 typed/validate.go "field not declared in schema"; k8s.io/apimachinery
/// v0.37.0 pkg/util/managedfields/internal/structuredmerge.go "failed to create typed patch
/// object"). Below `x-kubernetes-preserve-unknown-fields`, or an object schema that lists no
/// properties, anything goes; `metadata`, `apiVersion`, `kind` and `status` are not the schema's.
pub fn undeclared_fields(crd: &Value, version: &str, applied: &Value) -> Vec<String> {
    let schema = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v["name"] == version)
        .and_then(|v| v.pointer("/schema/openAPIV3Schema"));
    let Some(schema) = schema else { return Vec::new() };
    let mut out = Vec::new();
    for (key, value) in applied.as_object().into_iter().flatten() {
        if ["metadata", "apiVersion", "kind", "status"].contains(&key.as_str()) {
            continue;
        }
        undeclared_below(schema, key, value, &format!(".{key}"), &mut out);
    }
    out
}

/// [`undeclared_fields`] for the field `key` of an object whose schema is `parent`.
fn undeclared_below(parent: &Value, key: &str, value: &Value, path: &str, out: &mut Vec<String>) {
    if parent["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    let declared = parent["properties"].as_object().filter(|p| !p.is_empty());
    let schema = match (declared.and_then(|p| p.get(key)), &parent["additionalProperties"]) {
        (Some(schema), _) => schema,
        (None, Value::Object(_)) => &parent["additionalProperties"],
        (None, Value::Bool(true)) => return,
        (None, _) if declared.is_none() => return,
        (None, _) => return out.push(path.to_string()),
    };
    match value {
        Value::Object(fields) => {
            for (k, v) in fields {
                undeclared_below(schema, k, v, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter().enumerate() {
                for (k, v) in item.as_object().into_iter().flatten() {
                    undeclared_below(&schema["items"], k, v, &format!("{path}[{i}].{k}"), out);
                }
            }
        }
        _ => {}
    }
}

/// A parsed label selector (`a=b,c!=d,e,!f,g in (h,i)`).
pub fn selector_matches(selector: &str, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    split_top(selector).iter().all(|term| {
        let term = term.trim();
        if term.is_empty() {
            return true;
        }
        if let Some((k, set)) = term.split_once(" in ") {
            let set = set.trim().trim_start_matches('(').trim_end_matches(')');
            return label(k.trim()).is_some_and(|v| set.split(',').any(|s| s.trim() == v));
        }
        if let Some((k, set)) = term.split_once(" notin ") {
            let set = set.trim().trim_start_matches('(').trim_end_matches(')');
            return label(k.trim()).is_none_or(|v| !set.split(',').any(|s| s.trim() == v));
        }
        if let Some((k, v)) = term.split_once("!=") {
            return label(k) != Some(v);
        }
        if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            return label(k) == Some(v);
        }
        if let Some(k) = term.strip_prefix('!') {
            return label(k).is_none();
        }
        label(term).is_some()
    })
}

fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// Whether `labels` carry every `matchLabels` entry of a selector object.
pub fn match_labels(selector: &Value, labels: &Value) -> bool {
    selector.as_object().is_some_and(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A field selector: only `metadata.name` and `metadata.namespace` are needed.
pub fn fields_match(selector: &str, obj: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (field, want, eq) = match term.split_once("!=") {
            Some((f, v)) => (f, v, false),
            None => match term.split_once("==").or_else(|| term.split_once('=')) {
                Some((f, v)) => (f, v, true),
                None => return true,
            },
        };
        let have = obj.pointer(&format!("/{}", field.replace('.', "/"))).and_then(Value::as_str).unwrap_or("");
        (have == want) == eq
    })
}

/// A Kubernetes `LabelSelector` (`matchLabels` and `matchExpressions` with `In`, `NotIn`,
/// `Exists`, `DoesNotExist`) against labels: apimachinery v0.35 `LabelSelectorAsSelector`, where
/// an empty selector matches everything. A null selector matches nothing there; callers whose
/// upstream gives null another meaning (the monitors' namespace selectors) decide before calling.
pub fn label_selector_matches(selector: &Value, labels: &Value) -> bool {
    let Some(sel) = selector.as_object() else { return false };
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_labels =
        sel.get("matchLabels").and_then(Value::as_object).is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let by_expressions = sel.get("matchExpressions").and_then(Value::as_array).is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => label(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => label(key).is_some(),
                "DoesNotExist" => label(key).is_none(),
                _ => false,
            }
        })
    });
    by_labels && by_expressions
}

/// What the API server's validation refuses (422 Invalid) of the objects runs write, as
/// kubernetes v1.35 pkg/apis/core/validation/validation.go and pkg/apis/apps/validation say it:
/// a `nodePort` on a Service of type ClusterIP (`ValidateService`), and a changed `spec.selector`
/// of a Deployment, DaemonSet or StatefulSet (`ValidateDeploymentUpdate` and friends: "field is
/// immutable"). `existing` is the stored object an update replaces.
pub fn validate(group: &str, plural: &str, obj: &Value, existing: Option<&Value>) -> Result<(), String> {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if group.is_empty() && plural == "services" {
        let kind = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
        for (i, port) in obj.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if kind == "ClusterIP" && port.get("nodePort").is_some_and(|p| !p.is_null()) {
                return Err(format!(
                    "Service \"{name}\" is invalid: spec.ports[{i}].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"
                ));
            }
        }
    }
    if group == "apps"
        && let Some(before) = existing.and_then(|e| e.pointer("/spec/selector"))
        && obj.pointer("/spec/selector").is_some_and(|after| after != before)
    {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("object");
        return Err(format!(
            "{kind}.apps \"{name}\" is invalid: spec.selector: Invalid value: {before}: field is immutable"
        ));
    }
    Ok(())
}
