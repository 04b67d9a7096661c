//! The diagnostic bundle (issue 25, item 6): at a run's first failure, what a person debugging it
//! would fetch next, kept under `evidence/bundle/` before cleanup deletes the cluster. It is
//! collected once, bounded (each log, each file, the whole folder) and redacted like all evidence:
//! API objects structurally ([`crate::redact::api_json`]), then every file as text
//! ([`crate::redact::redact`]).
//!
//! - pods and events of the mesh's and Cilium's namespaces, and each container's log (its previous
//!   one too when it restarted: a crash loop's cause is there);
//! - each serving ztunnel's `/config_dump` (admin port 15000);
//! - istiod's `/debug/syncz` and `/debug/registryz` (istio pilot/pkg/xds/debug.go `InitDebug`
//!   registers them on the monitoring mux, port 15014; a refusal lands in the index);
//! - each Cilium agent's `cilium-dbg status --verbose` (cilium 1.19 ships the agent CLI as
//!   `cilium-dbg`);
//! - the policies in force: Kubernetes NetworkPolicies, Cilium's namespaced and cluster-wide
//!   policies, Istio's AuthorizationPolicies and PeerAuthentications.
//!
//! What could not be collected is listed in `index.json` with the reason; it is never an error of
//! the run. `istioctl bug-report` is not run: its archive holds every log of the cluster in one
//! file, which this bundle's bounds and redaction could not cover.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    cluster::live::{Live, LiveError},
    formats::kjson,
};

/// The bundle's folder under `evidence/`.
pub const DIR: &str = "bundle";

/// Its index, under [`DIR`].
pub const INDEX: &str = "bundle/index.json";

/// The whole bundle's size at most: a nightly artifact, not a second copy of the cluster.
pub const MAX_BYTES: u64 = 32 * 1024 * 1024;

/// The last this many lines of each container's log, and at most [`LOG_BYTES`] of them.
const LOG_LINES: i64 = 2_000;
const LOG_BYTES: i64 = 256 * 1024;

/// Any other file at most this large (a ztunnel config dump of a big mesh); the rest is cut.
const FILE_BYTES: usize = 4 * 1024 * 1024;

/// Pods read per namespace: a bookinfo namespace has seven; a user's could have hundreds.
const PODS_PER_NAMESPACE: usize = 30;

/// Where the pods come from: namespace and label selector (empty for all). Cilium's pods carry
/// `app.kubernetes.io/part-of: cilium` (cilium 1.19.6 chart templates).
const POD_SOURCES: &[(&str, &str)] = &[
    ("istio-system", ""),
    ("istio-ingress", ""),
    ("kube-system", "app.kubernetes.io/part-of=cilium"),
    (crate::common::names::BOOKINFO_NS, ""),
];

/// The policy lists, by API path.
const POLICIES: &[(&str, &str)] = &[
    ("networkpolicies", "/apis/networking.k8s.io/v1/networkpolicies"),
    ("ciliumnetworkpolicies", "/apis/cilium.io/v2/ciliumnetworkpolicies"),
    ("ciliumclusterwidenetworkpolicies", "/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies"),
    ("authorizationpolicies", "/apis/security.istio.io/v1/authorizationpolicies"),
    ("peerauthentications", "/apis/security.istio.io/v1/peerauthentications"),
];

/// `bundle/index.json`: why the bundle was written, what it holds and what it lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// The trial whose failure started it (`checks::traces`).
    pub trigger: String,
    /// When it was collected (RFC 3339).
    pub collected_at: String,
    /// Every file, with its size after redaction.
    pub files: Vec<File>,
    /// What could not be collected, and why.
    pub missing: Vec<String>,
    /// The bundle's size.
    pub bytes: u64,
}

/// One file of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    /// Path under `evidence/`.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Whether it was cut to its bound.
    pub truncated: bool,
}

/// Writes files under the bound, redacted, and keeps the index.
struct Writer<'a> {
    live: &'a Live,
    index: Index,
}

impl Writer<'_> {
    /// Keeps `bytes` as `rel` under [`DIR`], cut to `limit`, redacted; over the whole bound it is
    /// left out and listed as missing.
    fn put(&mut self, rel: &str, bytes: &[u8], limit: usize) {
        let truncated = bytes.len() > limit;
        let kept = if truncated { &bytes[bytes.len() - limit..] } else { bytes };
        let structural = if rel.ends_with(".json") && !truncated { crate::redact::api_json(kept) } else { kept.into() };
        let text = crate::redact::redact(&String::from_utf8_lossy(&structural));
        let size = text.len() as u64;
        if self.index.bytes + size > MAX_BYTES {
            self.index.missing.push(format!("{rel}: the bundle reached its bound of {} MiB", MAX_BYTES >> 20));
            return;
        }
        let path = format!("{DIR}/{rel}");
        match self.live.evidence.write(&path, text.as_bytes()) {
            Ok(_) => {
                self.index.bytes += size;
                self.index.files.push(File { path, bytes: size, truncated });
            }
            Err(e) => self.index.missing.push(format!("{rel}: {e}")),
        }
    }

    /// Keeps a file the cluster gave, or records why it did not.
    fn keep(&mut self, rel: &str, got: Result<Vec<u8>, LiveError>) {
        match got {
            Ok(bytes) => self.put(rel, &bytes, FILE_BYTES),
            Err(e) => self.lack(rel, &e),
        }
    }

    /// Records what `what` could not give.
    fn lack(&mut self, what: &str, e: &LiveError) {
        self.index.missing.push(format!("{what}: {}", crate::redact::redact(&e.to_string())));
    }
}

/// Collects the bundle for the failure of `trigger` into `live`'s evidence folder and returns its
/// index (also written as [`INDEX`]). Each part is tried whatever became of the others.
pub async fn collect(live: &Live, trigger: &str) -> Index {
    let mut w = Writer {
        live,
        index: Index { trigger: trigger.into(), collected_at: crate::common::util::now_rfc3339(), ..Index::default() },
    };
    for (ns, selector) in POD_SOURCES {
        pods_events_logs(&mut w, ns, selector).await;
    }
    ztunnel_dumps(&mut w).await;
    istiod_debug(&mut w).await;
    cilium_status(&mut w).await;
    for (name, path) in POLICIES {
        w.keep(&format!("policies/{name}.json"), live.get_raw(path).await);
    }
    let index = w.index;
    if let Err(e) = live.evidence.write_json(INDEX, &index) {
        tracing::warn!("diagnostic bundle index: {e}");
    }
    index
}

/// A namespace's pods (by `selector`) and events, and each container's log.
async fn pods_events_logs(w: &mut Writer<'_>, ns: &str, selector: &str) {
    let query = if selector.is_empty() { String::new() } else { format!("?labelSelector={}", encode(selector)) };
    let list = match w.live.get_raw(&format!("/api/v1/namespaces/{ns}/pods{query}")).await {
        Ok(list) => list,
        Err(e) => return w.lack(&format!("pods of {ns}"), &e),
    };
    w.put(&format!("pods-{ns}.json"), &list, FILE_BYTES);
    w.keep(&format!("events-{ns}.json"), w.live.get_raw(&format!("/api/v1/namespaces/{ns}/events")).await);
    let pods: Value = serde_json::from_slice(&list).unwrap_or(Value::Null);
    for pod in kjson::items(&pods).iter().take(PODS_PER_NAMESPACE) {
        let name = kjson::name(pod);
        let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
        for status in statuses {
            let container = status["name"].as_str().unwrap_or_default();
            let restarted = status["restartCount"].as_u64().unwrap_or(0) > 0;
            for previous in [false, true].into_iter().filter(|p| !p || restarted) {
                let file = format!("logs/{ns}/{name}/{container}{}.log", if previous { ".previous" } else { "" });
                match container_log(w.live, ns, name, container, previous).await {
                    Ok(log) => w.put(&file, log.as_bytes(), LOG_BYTES as usize),
                    Err(e) => w.lack(&file, &e),
                }
            }
        }
    }
}

/// A container's log (or its previous instance's), bounded by [`LOG_LINES`] and [`LOG_BYTES`].
async fn container_log(live: &Live, ns: &str, pod: &str, container: &str, previous: bool) -> Result<String, LiveError> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(live.client.clone(), ns);
    let params = kube::api::LogParams {
        container: Some(container.into()),
        previous,
        tail_lines: Some(LOG_LINES),
        limit_bytes: Some(LOG_BYTES),
        ..Default::default()
    };
    api.logs(pod, &params)
        .await
        .map_err(|source| LiveError::Kube { what: format!("logs of {ns}/{pod} {container}"), source })
}

/// Each serving ztunnel's config dump, by node.
async fn ztunnel_dumps(w: &mut Writer<'_>) {
    let list = match w.live.get_raw("/api/v1/namespaces/istio-system/pods?labelSelector=app%3Dztunnel").await {
        Ok(list) => list,
        Err(e) => return w.lack("ztunnel pods", &e),
    };
    let pods: Value = serde_json::from_slice(&list).unwrap_or(Value::Null);
    for pod in super::ztunnel::serving(&pods) {
        let (name, node) = (kjson::name(pod), super::ztunnel::node_of(pod));
        let dump = w.live.pod_get("istio-system", name, 15000, "/config_dump").await;
        w.keep(&format!("ztunnel/{node}/config_dump.json"), dump);
    }
}

/// istiod's view of its proxies and of the service registry, from each serving istiod.
async fn istiod_debug(w: &mut Writer<'_>) {
    let istiods = match w.live.running_pods("istio-system", "app=istiod").await {
        Ok(pods) => pods,
        Err(e) => return w.lack("istiod pods", &e),
    };
    for pod in istiods {
        let name = pod.metadata.name.unwrap_or_default();
        for endpoint in ["syncz", "registryz"] {
            let body = w.live.pod_get("istio-system", &name, 15014, &format!("/debug/{endpoint}")).await;
            w.keep(&format!("istiod/{name}/{endpoint}.json"), body);
        }
    }
}

/// Each Cilium agent's own status report.
async fn cilium_status(w: &mut Writer<'_>) {
    let agents = match w.live.running_pods("kube-system", "k8s-app=cilium").await {
        Ok(pods) => pods,
        Err(e) => return w.lack("Cilium agent pods", &e),
    };
    for pod in agents {
        let name = pod.metadata.name.unwrap_or_default();
        let file = format!("cilium/{name}-status.txt");
        match w.live.exec("kube-system", &name, &["cilium-dbg", "status", "--verbose"]).await {
            Ok(out) if out.exit_code == Some(0) => w.put(&file, out.stdout.as_bytes(), FILE_BYTES),
            Ok(out) => {
                w.index.missing.push(format!("{file}: cilium-dbg status exited {:?}: {}", out.exit_code, out.status))
            }
            Err(e) => w.lack(&file, &e),
        }
    }
}

/// A label selector as a query value (`=` and `,` escaped).
fn encode(selector: &str) -> String {
    selector.replace('=', "%3D").replace(',', "%2C")
}
