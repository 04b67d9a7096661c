//! The conformance checks. Each is one file: a collector (the I/O against a live cluster, writing
//! evidence) and a judge (a pure function from the evidence folder to a [`Verdict`]).
//!
//! Adding a check means one new file here, one line in [`REGISTRY`], and its description in
//! [`crate::common::catalog`] (kept apart so that scenarios and plans can name checks without importing
//! collectors).

use std::{future::Future, pin::Pin};

use crate::{
    cluster::live::{Live, LiveError},
    common::catalog::CheckInfo,
    evidence::{Evidence, Verdict},
    scenario::Scenario,
};

pub mod bundle;
pub mod cilium_prerequisites;
pub(crate) mod enforcement;
pub mod footprint;
pub mod gateway_binding;
pub mod health;
pub mod image_architectures;
pub mod kiali;
pub mod kiali_login;
pub mod l4_authorization;
pub mod l7_policy;
pub mod l7_routing;
pub mod l7_traces;
pub mod latency;
pub mod metrics;
pub mod mtls;
pub mod node_architecture;
pub mod probes;
pub mod traces;
pub mod traffic_continuity;
pub mod waypoint;
pub mod ztunnel;

/// A boxed future, for collectors stored as function pointers.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a check gathers its evidence. The variant, not the stage, decides what the collector gets:
/// a check that runs before any cluster exists is handed the scenario alone.
#[derive(Clone, Copy)]
pub enum Collector {
    /// Gathers evidence from a live cluster into the run's evidence folder.
    Cluster(for<'a> fn(&'a Live) -> BoxFuture<'a, Result<(), LiveError>>),
    /// Gathers evidence from the scenario and the network alone (no cluster yet).
    Scenario(for<'a> fn(&'a Scenario, &'a Evidence) -> BoxFuture<'a, Result<(), LiveError>>),
}

/// A registered check: its description and how it runs.
pub struct CheckDef {
    /// Name, stage and what it asserts.
    pub info: &'static CheckInfo,
    /// Gathers evidence.
    pub collect: Collector,
    /// Decides from evidence alone.
    pub judge: fn(&Evidence) -> Verdict,
}

/// Every check, in the order of [`crate::common::catalog::CATALOG`] (a test holds the two to the same names).
pub static REGISTRY: &[CheckDef] = &[
    image_architectures::CHECK,
    node_architecture::CHECK,
    cilium_prerequisites::CHECK,
    gateway_binding::CHECK,
    mtls::CHECK,
    l4_authorization::CHECK,
    waypoint::CHECK,
    l7_policy::CHECK,
    l7_routing::CHECK,
    l7_traces::CHECK,
    traces::CHECK,
    metrics::CHECK,
    kiali::CHECK,
    health::CHECK,
    footprint::CHECK,
    latency::CHECK,
    probes::CHECK,
    traffic_continuity::CHECK,
];

/// curl from a client pod to `url`, printing only the HTTP code, within `max_time_secs`. The record
/// holds the HTTP code (`000` when no answer came), curl's exit code (what tells a reset from a
/// DNS failure or a timeout) and the API's exec status, or the error when the exec itself failed.
pub(crate) async fn curl_from(live: &Live, ns: &str, pod: &str, url: &str, max_time_secs: u32) -> serde_json::Value {
    let max_time = max_time_secs.to_string();
    let argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", &max_time, url];
    match live.exec(ns, pod, &argv).await {
        Ok(out) => {
            serde_json::json!({ "http_code": out.stdout.trim(), "exit_code": out.exit_code, "exec_status": out.status })
        }
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    }
}

/// What one curl record of [`curl_from`] shows. The exit codes are curl's
/// (curl/curl@curl-8_17_0 docs/cmdline-opts/_EXITCODES.md; the client image is curl 8.17.0).
/// Whether a result proves anything depends on the question: no answer proves nothing where one
/// was expected (a baseline, a meshed client), while it is the very proof where a block was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Curl {
    /// The exec itself failed (the API's error): nothing was tried.
    NotRun(String),
    /// An HTTP answer came, with this code.
    Answered(String),
    /// The server end closed the connection without an answer: 52 ("the server did not reply
    /// anything") or 56 ("failure in receiving network data", a reset). What ztunnel does to
    /// plaintext under STRICT.
    Reset(i64),
    /// No connection at all: 6 ("could not resolve host"), 7 ("failed to connect to host") or
    /// 28 ("operation timeout"). Says nothing about mTLS, and where an answer was expected,
    /// nothing about the mesh either: DNS, a dead pod, a dropped packet.
    NoConnection(i64),
    /// No answer, with another exit code or none recorded.
    Failed(Option<i64>),
}

/// curl exits that mean the server end closed the connection.
const RESET_EXITS: [i64; 2] = [52, 56];
/// curl exits that mean no connection was made.
const NO_CONNECTION_EXITS: [i64; 3] = [6, 7, 28];

impl Curl {
    /// Reads a record of [`curl_from`]: `{http_code, exit_code, exec_status}` or `{error}`.
    pub(crate) fn of(record: &serde_json::Value) -> Curl {
        if let Some(error) = record["error"].as_str() {
            return Curl::NotRun(error.to_string());
        }
        let code = record["http_code"].as_str().unwrap_or("").trim();
        let exit = record["exit_code"].as_i64();
        match exit {
            // curl -w %{http_code} writes 000 when no response came.
            _ if !code.is_empty() && code != "000" => Curl::Answered(code.to_string()),
            Some(x) if RESET_EXITS.contains(&x) => Curl::Reset(x),
            Some(x) if NO_CONNECTION_EXITS.contains(&x) => Curl::NoConnection(x),
            other => Curl::Failed(other),
        }
    }

    /// A 2xx or 3xx answer: the request got through.
    pub(crate) fn got_through(&self) -> bool {
        matches!(self, Curl::Answered(c) if c.starts_with('2') || c.starts_with('3'))
    }
}

impl std::fmt::Display for Curl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let meaning = |x: i64| match x {
            6 => "could not resolve host",
            7 => "failed to connect",
            28 => "timed out",
            52 => "empty reply from server",
            56 => "connection reset while receiving",
            _ => "see curl's exit codes",
        };
        match self {
            Curl::NotRun(error) => write!(f, "the exec could not run: {error}"),
            Curl::Answered(code) => write!(f, "HTTP {code}"),
            Curl::Reset(x) | Curl::NoConnection(x) | Curl::Failed(Some(x)) => {
                write!(f, "HTTP 000, curl exit {x}: {}", meaning(*x))
            }
            Curl::Failed(None) => write!(f, "HTTP 000, no exit code recorded"),
        }
    }
}

/// Looks a check up by name.
pub fn find(name: &str) -> Option<&'static CheckDef> {
    REGISTRY.iter().find(|c| c.info.name == name)
}

/// Where a check that measures keeps the baseline pass's files in the candidate pass, inside its
/// own folder.
pub const BASELINE_COPY: &str = "baseline";

/// In a release gate's candidate pass, copies the files of the baseline pass's `dir` (its
/// evidence folder's `dir/`, subfolders left out) to `dir/baseline/` of this pass, so that the
/// judge compares the two from this evidence folder alone and `meshcheck judge` does the same
/// offline. In any other pass (no baseline folder, or this is it) nothing happens.
pub(crate) fn copy_baseline(live: &Live, dir: &str) -> Result<(), LiveError> {
    let from = live.run_dir.join(crate::common::names::Phase::Baseline.evidence_root()).join(dir);
    if live.evidence.path(dir) == from || !from.is_dir() {
        return Ok(());
    }
    let io = |path: &std::path::Path, e: std::io::Error| LiveError::Http {
        what: format!("the baseline's {dir} files in {}", path.display()),
        message: e.to_string(),
    };
    for entry in std::fs::read_dir(&from).map_err(|e| io(&from, e))?.flatten().filter(|e| e.path().is_file()) {
        let bytes = std::fs::read(entry.path()).map_err(|e| io(&entry.path(), e))?;
        live.save(&format!("{dir}/{BASELINE_COPY}/{}", entry.file_name().to_string_lossy()), &bytes)?;
    }
    Ok(())
}
