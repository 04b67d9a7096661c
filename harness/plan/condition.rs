//! What a wait step waits for, as data. The cluster stage watches for it
//! ([`crate::cluster::waits::wait_for`]).

use serde::Serialize;

/// What a wait waits for.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// DaemonSet: every scheduled pod updated and ready.
    DaemonSetReady,
    /// Deployment: Available and every replica updated.
    DeploymentAvailable,
    /// StatefulSet: every replica ready.
    StatefulSetReady,
    /// Every node Ready.
    NodesReady,
    /// CRD Established.
    CrdEstablished,
    /// Pod Ready.
    PodReady,
}
