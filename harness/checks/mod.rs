//! The conformance checks. Each is one file: a collector (the I/O against a live cluster, writing
//! evidence) and a judge (a pure function from the evidence folder to a [`Verdict`]).
//!
//! Adding a check means one new file here plus one line in [`REGISTRY`].

use std::{future::Future, pin::Pin};

use crate::{
    evidence::{Evidence, Verdict},
    live::{Live, LiveError},
};

pub mod cilium_prerequisites;
pub mod gateway_binding;
pub mod image_architectures;
pub mod kiali;
pub mod metrics;
pub mod mtls;
pub mod node_architecture;
pub mod probes;
pub mod traces;
pub mod traffic_continuity;

/// A boxed future, for collectors stored as function pointers.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A collector: gathers evidence from a live cluster into the run's evidence folder.
pub type Collect = for<'a> fn(&'a Live) -> BoxFuture<'a, Result<(), LiveError>>;

/// When in the run a check is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Before anything is created.
    Preflight,
    /// Right after the cluster and Cilium are up.
    Provision,
    /// After bookinfo is deployed.
    Deploy,
    /// The conformance checks proper, after everything is installed.
    Checks,
    /// During an Istio upgrade.
    Upgrade,
}

/// A registered check.
pub struct CheckDef {
    /// Name used in scenarios, trial names and reports.
    pub name: &'static str,
    /// When it runs.
    pub stage: Stage,
    /// Whether a scenario without an explicit `checks:` list runs it.
    pub default_on: bool,
    /// What it asserts, for plans and reports.
    pub asserts: &'static str,
    /// Gathers evidence on a live cluster.
    pub collect: Collect,
    /// Decides from evidence alone.
    pub judge: fn(&Evidence) -> Verdict,
}

/// Every check, in the order a run executes them within a stage.
pub static REGISTRY: &[CheckDef] = &[
    image_architectures::CHECK,
    node_architecture::CHECK,
    cilium_prerequisites::CHECK,
    gateway_binding::CHECK,
    mtls::CHECK,
    traces::CHECK,
    metrics::CHECK,
    kiali::CHECK,
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

/// Looks a check up by name.
pub fn find(name: &str) -> Option<&'static CheckDef> {
    REGISTRY.iter().find(|c| c.name == name)
}
