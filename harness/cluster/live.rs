//! The thin I/O layer that collectors and the executor share: a kube client plus the run folder.
//!
//! In-cluster HTTP goes through the Kubernetes API, never `kubectl`: the API-server service proxy for
//! the observability services (which live in non-ambient namespaces), pod port-forward for ztunnel's
//! localhost-only admin port (field guide §6). Application traffic never goes through the API
//! server: STRICT mTLS rejects it.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Client,
    api::{Api, AttachParams, DynamicObject, ListParams},
    core::GroupVersionKind,
    discovery::{ApiCapabilities, ApiResource, Discovery, Scope},
};
use serde_json::Value;
use tokio::io::AsyncReadExt;

use crate::{
    common::names::{BOOKINFO_NS, INSIDE_NS, OUTSIDE_NS},
    evidence::Evidence,
    plan::fixtures::ManifestError,
    scenario::Scenario,
};

/// Namespaces whose pods and events a run keeps at its end.
pub const SNAPSHOT_NAMESPACES: &[&str] = &[
    "kube-system",
    "istio-system",
    "istio-ingress",
    "monitoring",
    "tempo",
    "kiali-operator",
    BOOKINFO_NS,
    INSIDE_NS,
    OUTSIDE_NS,
];

/// Errors of the live layer. Each names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// A Kubernetes API call failed. The message carries the whole cause chain: kube's own text for
    /// a refused connection is only "ServiceError: client error (Connect)".
    #[error("{what}: {}", with_causes(.source))]
    Kube {
        /// What was being done.
        what: String,
        /// The kube error.
        #[source]
        source: kube::Error,
    },
    /// An HTTP request (registry, gateway) failed.
    #[error("{what}: {message}")]
    Http {
        /// What was being requested.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// A part of the observability stack is not where the scenario says (or where meshcheck's guide
    /// puts it, by default): the API server has no such Service.
    #[error(
        "{what}: the API server has no Service {at}; on a cluster set up otherwise, set `{field}` to where it answers (namespace/service:port)"
    )]
    NoService {
        /// What was being requested.
        what: String,
        /// Where meshcheck looked.
        at: String,
        /// The scenario field that points elsewhere.
        field: &'static str,
    },
    /// A wait ran out of time.
    #[error("timed out after {after:?} waiting for {what}; last seen: {last_seen}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
        /// The last observed state.
        last_seen: String,
    },
    /// Evidence could not be written.
    #[error("writing evidence {path}: {source}")]
    Write {
        /// Path.
        path: String,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A manifest could not be understood.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// An external command failed (see the command log in the run folder).
    #[error(transparent)]
    Command(#[from] crate::cluster::runner::CommandError),
}

/// Everything a collector may touch.
pub struct Live {
    /// Client for the run's cluster.
    pub client: Client,
    /// The scenario being run.
    pub scenario: Scenario,
    /// The run folder.
    pub run_dir: PathBuf,
    /// `run_dir/evidence`.
    pub evidence: Evidence,
    /// What a check changed on the cluster and has not taken back yet.
    pub changes: Changes,
    /// The one HTTP client for traffic straight from the host (the ingress gateway), built once so
    /// that collectors share its connection pool.
    pub http: reqwest::Client,
}

/// Deadline of one request straight from the host to the ingress gateway.
pub const GATEWAY_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A body as a service sent it, with its `Content-Type` (empty when it sent none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

/// A kubeconfig error as one line that is safe to record. kube's YAML errors quote the source
/// around the fault (`  7 |     password: …`), and that may be a token, a password or a key of
/// the kubeconfig: only the first line (what and where: "line 9 column 9: …") is kept, run through
/// [`crate::redact::redact`] as well.
pub fn kubeconfig_error(e: &dyn std::fmt::Display) -> String {
    crate::redact::redact(crate::common::util::first_line(&e.to_string()).trim_end())
}

/// The client for a kubeconfig's cluster, through the proxy the environment names the way the Go
/// tools of the same run (kubectl, helm, kind, istioctl) use it: kube-rs reads `HTTPS_PROXY`
/// (kube-client 5.0.0 config/file_loader.rs `proxy_url`) and skips hosts `NO_PROXY` matches, but
/// would send a loopback API server (kind's and k3d's 127.0.0.1) to the proxy, which Go's
/// net/http never does (golang.org/x/net/http/httpproxy `useProxy`: "localhost" and loopback
/// addresses are never proxied). A corporate proxy cannot reach this machine's loopback.
pub fn client_for(mut config: kube::Config) -> Result<kube::Client, kube::Error> {
    let host = config.cluster_url.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        config.proxy_url = None;
    }
    kube::Client::try_from(config)
}

/// How a client reaches its API server, for messages: `through the proxy <url>` (credentials
/// left out) or nothing when it connects directly.
pub fn proxy_note(config: &kube::Config) -> Option<String> {
    let proxy = config.proxy_url.as_ref()?;
    let host = config.cluster_url.host().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| {
        format!(
            "through the proxy {}://{}{} (HTTPS_PROXY; NO_PROXY does not exclude it)",
            proxy.scheme_str().unwrap_or("http"),
            proxy.host().unwrap_or_default(),
            proxy.port_u16().map(|p| format!(":{p}")).unwrap_or_default()
        )
    })
}

/// Deadline of one apply, delete or namespace call (each object of it, and the discovery before it).
pub const MUTATION_DEADLINE: Duration = Duration::from_secs(60);

/// A change a check made to the cluster, and how to take it back.
#[derive(Debug, Clone)]
pub(super) enum Undo {
    /// The check applied these objects: delete them.
    Delete { objects: Vec<DynamicObject>, namespace: Option<String> },
    /// The check deleted these objects: apply them again.
    Restore { objects: Vec<DynamicObject>, namespace: Option<String> },
}

impl Undo {
    pub(super) fn describe(&self) -> String {
        let (verb, objects, ns) = match self {
            Undo::Delete { objects, namespace } => ("delete", objects, namespace),
            Undo::Restore { objects, namespace } => ("re-apply", objects, namespace),
        };
        let names: Vec<String> = objects
            .iter()
            .map(|o| {
                let kind = o.types.as_ref().map(|t| t.kind.as_str()).unwrap_or("object");
                let name = o.metadata.name.as_deref().unwrap_or("unnamed");
                match o.metadata.namespace.as_deref().or(ns.as_deref()) {
                    Some(ns) => format!("{kind} {ns}/{name}"),
                    None => format!("{kind} {name}"),
                }
            })
            .collect();
        format!("{verb} {}", names.join(", "))
    }
}

/// The changes a check has made and not yet taken back, registered *before* each call so that a
/// call cut off by a deadline is still undone (Kyverno Chainsaw registers cleanup per applied
/// resource; cilium-cli's connectivity tests remove their policies in the test's finalizer). The
/// session takes back whatever is left when the collector returns, fails or runs out of time.
#[derive(Debug, Clone, Default)]
pub struct Changes(Arc<Mutex<Vec<(u64, Undo)>>>);

/// One change a check made; hand it to [`Live::revert`] to take it back before the check ends.
#[must_use = "revert it with Live::revert, or the session reverts it when the check ends"]
#[derive(Debug)]
pub struct Change(u64);

/// How one left-over change was taken back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reverted {
    /// What was done (`delete NetworkPolicy book-info/meshcheck-default-deny`).
    pub action: String,
    /// `None` when it worked, else why not.
    pub error: Option<String>,
}

impl Changes {
    pub(super) fn register(&self, undo: Undo) -> Change {
        let mut list = self.0.lock().expect("changes lock");
        let id = list.last().map_or(0, |(id, _)| id + 1);
        list.push((id, undo));
        Change(id)
    }

    pub(super) fn take(&self, change: &Change) -> Option<Undo> {
        let mut list = self.0.lock().expect("changes lock");
        let at = list.iter().position(|(id, _)| *id == change.0)?;
        Some(list.remove(at).1)
    }

    pub(super) fn take_all(&self) -> Vec<Undo> {
        std::mem::take(&mut *self.0.lock().expect("changes lock")).into_iter().rev().map(|(_, u)| u).collect()
    }
}

/// Deadline of one exec or port-forward exchange.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// Runs `fut` with a deadline; running out is a [`LiveError::Timeout`] naming the call.
pub async fn within<T>(
    deadline: Duration,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, LiveError>>,
) -> Result<T, LiveError> {
    tokio::time::timeout(deadline, fut).await.unwrap_or_else(|_| {
        Err(LiveError::Timeout { what: what.to_string(), after: deadline, last_seen: "no answer".into() })
    })
}

/// What a command run in a pod did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecOutcome {
    /// Its standard output.
    pub stdout: String,
    /// Its exit code: 0 on success, the `ExitCode` cause of a `NonZeroExitCode` failure, `None`
    /// when the API reported no status or a failure without an exit code.
    pub exit_code: Option<i32>,
    /// The API's status, as `Status: message`.
    pub status: String,
}

impl ExecOutcome {
    /// Reads the exit code from the status the API sends on the exec error channel
    /// (`reason: NonZeroExitCode`, `details.causes[{reason: ExitCode, message: "56"}]`).
    pub fn from_status(
        stdout: String,
        status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
    ) -> Self {
        let Some(st) = status else { return ExecOutcome { stdout, exit_code: None, status: "no status".into() } };
        let text =
            format!("{}: {}", st.status.as_deref().unwrap_or_default(), st.message.as_deref().unwrap_or_default());
        let exit_code = if st.status.as_deref() == Some("Success") {
            Some(0)
        } else {
            st.details
                .as_ref()
                .and_then(|d| d.causes.as_ref())
                .into_iter()
                .flatten()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .and_then(|c| c.message.as_deref()?.trim().parse().ok())
        };
        ExecOutcome { stdout, exit_code, status: text }
    }
}

/// Resolves an object's kind to its API resource.
pub(super) fn resolve(discovery: &Discovery, obj: &DynamicObject) -> Result<(ApiResource, ApiCapabilities), LiveError> {
    let types = obj.types.as_ref().ok_or_else(|| ManifestError {
        origin: obj.metadata.name.clone().unwrap_or_default(),
        message: "object without apiVersion/kind".into(),
    })?;
    let gvk = GroupVersionKind::try_from(types)
        .map_err(|e| ManifestError { origin: types.kind.clone(), message: e.to_string() })?;
    Ok(discovery.resolve_gvk(&gvk).ok_or_else(|| ManifestError {
        origin: format!("{}/{}", gvk.api_version(), gvk.kind),
        message: "the cluster does not serve this kind (missing CRD?)".into(),
    })?)
}

impl LiveError {
    /// An HTTP failure whose message is `err` with its causes ([`with_causes`]).
    pub fn http(what: impl Into<String>, err: &(dyn std::error::Error + 'static)) -> LiveError {
        LiveError::Http { what: what.into(), message: with_causes(err) }
    }
}

/// `err`'s message followed by each of its causes (`std::error::Error::source`), joined with `: `.
/// HTTP clients put the reason one or more levels down: reqwest says "error sending request for
/// url (…)", hyper "client error (Connect)", and only the innermost I/O error says "Connection
/// refused" or "failed to lookup address information". A cause whose text is already in the
/// message is not repeated (kube's `ServiceError: {0}` quotes its source).
pub fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let line = c.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = c.source();
    }
    text
}

pub(super) fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> LiveError {
    let what = what.into();
    move |source| LiveError::Kube { what, source }
}

impl Live {
    /// A `Live` for a cluster client, with the shared HTTP client built.
    pub fn new(client: Client, scenario: Scenario, run_dir: PathBuf, evidence: Evidence) -> Result<Live, LiveError> {
        let http = reqwest::Client::builder()
            .timeout(GATEWAY_REQUEST_TIMEOUT)
            .build()
            .map_err(|e| LiveError::Http { what: "building the HTTP client".into(), message: e.to_string() })?;
        Ok(Live { client, scenario, run_dir, evidence, changes: Changes::default(), http })
    }

    /// Writes an evidence file; I/O errors become [`LiveError::Write`]. JSON goes through
    /// [`crate::redact::api_json`] first: pods and other objects lose their env values, secret
    /// flags' values and secret annotations.
    pub fn save(&self, rel: &str, bytes: &[u8]) -> Result<(), LiveError> {
        let bytes = if rel.ends_with(".json") { crate::redact::api_json(bytes) } else { bytes.into() };
        self.evidence.write(rel, &bytes).map(|_| ()).map_err(|source| LiveError::Write { path: rel.into(), source })
    }

    /// Writes a JSON evidence file.
    pub fn save_json<T: serde::Serialize + ?Sized>(&self, rel: &str, value: &T) -> Result<(), LiveError> {
        self.save(rel, &serde_json::to_vec_pretty(value).expect("JSON serializes"))
    }

    /// GET on an API path, the body returned exactly as the API server sent it.
    pub async fn get_raw(&self, path: &str) -> Result<Vec<u8>, LiveError> {
        let req = http::Request::get(path).body(Vec::new()).expect("valid request");
        let text = self.client.request_text(req).await.map_err(kube_err(format!("GET {path}")))?;
        Ok(text.into_bytes())
    }

    /// Lists objects of a core or apps kind as raw JSON (e.g. `/api/v1/namespaces/x/pods`).
    pub async fn list_json(&self, path: &str) -> Result<Value, LiveError> {
        let bytes = self.get_raw(path).await?;
        serde_json::from_slice(&bytes).map_err(|e| LiveError::http(format!("GET {path}"), &e))
    }

    /// HTTP GET to `localhost:{port}` inside a pod, over a port-forward (bypasses the mesh).
    /// Returns the body of a 2xx answer; any other status is an error, because an error page is
    /// not evidence. The whole exchange has [`CALL_DEADLINE`]: a port-forward that never answers
    /// must not eat the check's whole timeout.
    pub async fn pod_get(&self, ns: &str, pod: &str, port: u16, path: &str) -> Result<Vec<u8>, LiveError> {
        let what = format!("port-forward {ns}/{pod}:{port} GET {path}");
        let request = http::Request::get(path)
            .header(http::header::HOST, "localhost")
            .body(Bytes::new())
            .map_err(|e| LiveError::http(&what, &e))?;
        let answer = within(CALL_DEADLINE, &what, self.pod_request(ns, pod, port, request, &what)).await?;
        if !answer.status().is_success() {
            return Err(http_status_error(what, answer.status(), answer.body()));
        }
        Ok(answer.into_body().to_vec())
    }

    /// Any HTTP/1 request to a port inside a pod, over a port-forward, within [`CALL_DEADLINE`]:
    /// the answer whatever its status, headers included (a login flow reads `Location` and
    /// `Set-Cookie`). The request's `Host` header is what the program in the pod sees.
    pub async fn pod_http(
        &self,
        ns: &str,
        pod: &str,
        port: u16,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, LiveError> {
        let what = format!("port-forward {ns}/{pod}:{port} {} {}", request.method(), request.uri().path());
        within(CALL_DEADLINE, &what, self.pod_request(ns, pod, port, request, &what)).await
    }

    /// One HTTP/1 exchange over a port-forward stream, with hyper's client connection as kube-rs's
    /// own example does it (kube-rs/kube examples/pod_portforward_hyper_http.rs at ac95b19:
    /// `hyper::client::conn::http1::handshake(TokioIo::new(port))`). `Connection: close` ends the
    /// connection after the answer. When the exchange fails, the port-forward's error channel
    /// usually says why (e.g. nothing listens on the port).
    async fn pod_request(
        &self,
        ns: &str,
        pod: &str,
        port: u16,
        request: http::Request<Bytes>,
        what: &str,
    ) -> Result<http::Response<Bytes>, LiveError> {
        let fail = |message: String| LiveError::Http { what: what.to_string(), message };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut pf = pods.portforward(pod, &[port]).await.map_err(kube_err(what))?;
        let stream = pf.take_stream(port).ok_or_else(|| fail("no stream for port".into()))?;
        let forward_error = pf.take_error(port);
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| LiveError::http(what, &e))?;
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        let request = http::Request::from_parts(parts, Full::new(body));
        // The sender moves into the exchange and is dropped with it, which lets the connection end.
        let exchange = async move {
            let (parts, body) = sender.send_request(request).await?.into_parts();
            Ok::<_, hyper::Error>(http::Response::from_parts(parts, body.collect().await?.to_bytes()))
        };
        let (answer, _closed) = tokio::join!(exchange, connection);
        let answer = match answer {
            Ok(answer) => Ok(answer),
            Err(e) => {
                let cause = match forward_error {
                    Some(error) => error.await,
                    None => None,
                };
                let message = with_causes(&e);
                Err(fail(cause.map_or_else(|| message.clone(), |c| format!("{message}: {c}"))))
            }
        };
        pf.join().await.ok();
        answer
    }

    /// A pod's log, bounded: its last `lines` lines, at most `bytes` bytes, of the last
    /// `since_secs` seconds when given (`pods/log` tailLines, limitBytes, sinceSeconds).
    pub async fn pod_logs(
        &self,
        ns: &str,
        pod: &str,
        lines: i64,
        bytes: i64,
        since_secs: Option<i64>,
    ) -> Result<String, LiveError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let bounded = kube::api::LogParams {
            since_seconds: since_secs,
            tail_lines: Some(lines),
            limit_bytes: Some(bytes),
            ..Default::default()
        };
        api.logs(pod, &bounded).await.map_err(|source| LiveError::Kube { what: format!("logs of {ns}/{pod}"), source })
    }

    /// Runs a command in a pod's container within [`CALL_DEADLINE`] and returns its stdout, exit
    /// code and the API's status text. A command that ran and exited non-zero is an outcome, not an
    /// error: curl's exit code is what tells a refused connection from a DNS failure.
    pub async fn exec(&self, ns: &str, pod: &str, command: &[&str]) -> Result<ExecOutcome, LiveError> {
        self.exec_within(ns, pod, command, CALL_DEADLINE).await
    }

    /// [`Live::exec`] with a deadline of its own, for a command that runs longer by design (a
    /// load generator holding a rate for a set time).
    pub async fn exec_within(
        &self,
        ns: &str,
        pod: &str,
        command: &[&str],
        deadline: Duration,
    ) -> Result<ExecOutcome, LiveError> {
        let what = format!("exec in {ns}/{pod}: {}", command.join(" "));
        within(deadline, &what, async {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
            let mut attached = pods
                .exec(pod, command.iter().copied(), &AttachParams::default().stderr(false))
                .await
                .map_err(kube_err(what.clone()))?;
            let mut stdout = String::new();
            if let Some(mut out) = attached.stdout() {
                out.read_to_string(&mut stdout).await.ok();
            }
            let status = match attached.take_status() {
                Some(s) => s.await,
                None => None,
            };
            attached.join().await.ok();
            Ok(ExecOutcome::from_status(stdout, status.as_ref()))
        })
        .await
    }

    /// The API's resources now (CRDs may have just landed, so each batch runs it afresh).
    pub(super) async fn discover(&self) -> Result<Discovery, LiveError> {
        Discovery::new(self.client.clone()).run_aggregated().await.map_err(kube_err("API discovery"))
    }

    pub(super) fn api_for(
        &self,
        obj: &DynamicObject,
        ar: &ApiResource,
        caps: &ApiCapabilities,
        default_ns: Option<&str>,
    ) -> Api<DynamicObject> {
        match caps.scope {
            Scope::Cluster => Api::all_with(self.client.clone(), ar),
            Scope::Namespaced => {
                let ns = obj.metadata.namespace.as_deref().or(default_ns).unwrap_or("default");
                Api::namespaced_with(self.client.clone(), ns, ar)
            }
        }
    }

    /// Keeps the cluster's state as evidence (`cluster/pods-<ns>.json`, `cluster/events-<ns>.json`, and
    /// `cluster/nodes.json` unless a check already saved the one it judged), exactly as the API
    /// returned it, so a failed nightly can be diagnosed from the artifact.
    pub async fn snapshot_cluster(&self) -> Result<(), LiveError> {
        if !self.evidence.exists("cluster/nodes.json") {
            self.save("cluster/nodes.json", &self.get_raw("/api/v1/nodes").await?)?;
        }
        for ns in SNAPSHOT_NAMESPACES {
            self.save(
                &format!("cluster/pods-{ns}.json"),
                &self.get_raw(&format!("/api/v1/namespaces/{ns}/pods")).await?,
            )?;
            self.save(
                &format!("cluster/events-{ns}.json"),
                &self.get_raw(&format!("/api/v1/namespaces/{ns}/events")).await?,
            )?;
        }
        Ok(())
    }

    /// Running pods matching a label selector, without those being deleted: a pod with a
    /// `deletionTimestamp` still shows `Running` for its grace period while a rollout replaces it
    /// (its ports already closing), so evidence from it would judge the old pod, not the mesh.
    pub async fn running_pods(&self, ns: &str, selector: &str) -> Result<Vec<Pod>, LiveError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(kube_err(format!("list pods {ns} {selector}")))?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect())
    }
}

/// A non-2xx answer as an error naming the status and the end of the body.
pub(super) fn http_status_error(what: String, status: http::StatusCode, body: &[u8]) -> LiveError {
    let text = String::from_utf8_lossy(body);
    LiveError::Http { what, message: format!("HTTP {status}: {}", crate::common::util::tail(text.trim(), 300)) }
}
