//! What a wait step waits for, as data. The cluster stage watches for it
//! ([`crate::cluster::waits::wait_for`]).

use std::fmt;

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
    /// Every node Ready, and (where the run created the cluster) as many nodes as it asked for:
    /// a node that never registered is not "every node Ready".
    NodesReady {
        /// Control planes plus workers, for a cluster the run creates; `None` on an existing one.
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
    },
    /// CRD Established.
    CrdEstablished,
    /// Pod Ready.
    PodReady,
}

impl fmt::Display for Condition {
    /// The kebab-case name the plan shows, with the node count when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::DaemonSetReady => f.write_str("daemon-set-ready"),
            Condition::DeploymentAvailable => f.write_str("deployment-available"),
            Condition::StatefulSetReady => f.write_str("stateful-set-ready"),
            Condition::NodesReady { count: None } => f.write_str("nodes-ready"),
            Condition::NodesReady { count: Some(n) } => write!(f, "nodes-ready ({n} nodes)"),
            Condition::CrdEstablished => f.write_str("crd-established"),
            Condition::PodReady => f.write_str("pod-ready"),
        }
    }
}
