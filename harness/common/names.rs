//! Names a run shares across layers: its namespaces, the labels that mark what it owns, and its
//! server-side-apply field manager. A leaf, so the plan, the live layer, the namespace owner and the
//! checks agree on one spelling without importing each other.

/// Label key whose value is the run id, on every namespace a run creates.
pub const RUN_LABEL: &str = "meshcheck.io/run";
/// Label every object meshcheck creates carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "meshcheck");
/// Field manager of every server-side apply meshcheck makes.
pub const FIELD_MANAGER: &str = "meshcheck";
/// Namespace of the plaintext client outside the mesh.
pub const OUTSIDE_NS: &str = "meshcheck-outside";
/// Ambient namespace of the meshed client.
pub const INSIDE_NS: &str = "meshcheck-inside";
/// The bookinfo namespace.
pub const BOOKINFO_NS: &str = "book-info";
/// The namespace label that enrols every pod of a namespace in ambient mode
/// (istio.io docs/ambient/usage/add-workloads: `istio.io/dataplane-mode=ambient`).
pub const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
/// The namespace label that sends its Services' traffic through the waypoint of that name
/// (istio.io docs/ambient/usage/waypoint: `istio.io/use-waypoint=waypoint`).
pub const USE_WAYPOINT: (&str, &str) = ("istio.io/use-waypoint", WAYPOINT);
/// The name of book-info's waypoint Gateway, its Deployment and its Service.
pub const WAYPOINT: &str = "waypoint";

/// The phases of a run, in order. Each is a JUnit suite; its checks' evidence goes to
/// [`Phase::evidence_root`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Tools and images, before anything is created.
    Preflight,
    /// The cluster and Cilium.
    Provision,
    /// Istio and the observability stack.
    Install,
    /// bookinfo and the test clients.
    Deploy,
    /// The conformance checks.
    Checks,
    /// A release gate's checks before the upgrade.
    Baseline,
    /// The Istio upgrade under traffic.
    Upgrade,
    /// A release gate's checks after the upgrade.
    Candidate,
    /// Deleting what the run created.
    Cleanup,
}

impl Phase {
    /// The name in plans, reports and trial names (`checks::mtls`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Preflight => "preflight",
            Phase::Provision => "provision",
            Phase::Install => "install",
            Phase::Deploy => "deploy",
            Phase::Checks => "checks",
            Phase::Baseline => "baseline",
            Phase::Upgrade => "upgrade",
            Phase::Candidate => "candidate",
            Phase::Cleanup => "cleanup",
        }
    }

    /// The evidence folder of this phase's checks, relative to the run folder. A release gate
    /// judges the same checks twice, so the baseline keeps its own folder.
    pub fn evidence_root(self) -> &'static str {
        match self {
            Phase::Baseline => "baseline/evidence",
            _ => "evidence",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
