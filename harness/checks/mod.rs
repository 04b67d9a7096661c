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

/// Every check, in the order of [`catalog::CATALOG`] (a test holds the two to the same names).
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
    REGISTRY.iter().find(|c| c.info.name == name)
}
