//! What each check is, apart from how it runs: its name, stage, whether it is on by default, what it
//! asserts, and whether it changes the mesh. A leaf: the scenario (which checks exist), the plan
//! (where each check's trial goes) and the check registry ([`crate::checks::REGISTRY`], which adds
//! each check's collector and judge) all read it, and it imports nothing of meshcheck.
//!
//! Adding a check: its entry here, one file in `checks/`, and its line in the registry.

use serde::Serialize;

/// When in the run a check is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// What a check's collector does to the mesh. A check that mutates (STRICT, default-deny) changes
/// what every other check would observe, so it runs alone; checks that only read run side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// Only reads the cluster and sends ordinary traffic.
    Reads,
    /// Applies a policy that changes the mesh's behaviour while it is in place.
    Mutates,
    /// Only reads and sends its own load, but measures: another check's traffic beside it would
    /// be counted in its numbers, so it runs alone.
    Measures,
}

impl Effect {
    /// Whether nothing else may run beside a check of this effect.
    pub fn runs_alone(self) -> bool {
        self != Effect::Reads
    }
}

/// A part of the observability stack a check reads from. A scenario's `checks:` subset installs
/// only the parts its checks read (Istio, bookinfo and the Cilium probe policy are the system under
/// test and always installed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Component {
    /// kube-prometheus-stack with the istiod ServiceMonitor and ztunnel PodMonitor.
    Prometheus,
    /// Tempo and the `Telemetry` resource that sends Istio's spans to it.
    Tempo,
    /// The Kiali operator and its Kiali.
    Kiali,
    /// A waypoint for book-info: the `istio-waypoint` Gateway istiod deploys, and the namespace
    /// labelled to use it (istio.io docs/ambient/usage/waypoint).
    Waypoint,
}

/// A check's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckInfo {
    /// Name used in scenarios, trial names and reports.
    pub name: &'static str,
    /// When it runs.
    pub stage: Stage,
    /// Whether a scenario without an explicit `checks:` list runs it.
    pub default_on: bool,
    /// What it asserts, for plans and reports.
    pub asserts: &'static str,
    /// Whether it changes the mesh while it runs.
    pub effect: Effect,
    /// What of the observability stack it reads.
    pub reads: &'static [Component],
}

/// [`crate::checks::image_architectures`].
pub const IMAGE_ARCHITECTURES: CheckInfo = CheckInfo {
    name: "image-architectures",
    stage: Stage::Preflight,
    default_on: true,
    asserts: "every image the run starts publishes a linux manifest for the node architecture",
    effect: Effect::Reads,
    reads: &[],
};

/// [`crate::checks::node_architecture`].
pub const NODE_ARCHITECTURE: CheckInfo = CheckInfo {
    name: "node-architecture",
    stage: Stage::Provision,
    default_on: true,
    asserts: "every node is Ready and reports the expected architecture",
    effect: Effect::Reads,
    reads: &[],
};

/// [`crate::checks::cilium_prerequisites`].
pub const CILIUM_PREREQUISITES: CheckInfo = CheckInfo {
    name: "cilium-prerequisites",
    stage: Stage::Provision,
    default_on: true,
    asserts: "cilium-config has socket LB host-namespace-only, non-exclusive CNI, no BPF masquerade, legacy host routing, no Cilium ztunnel",
    effect: Effect::Reads,
    reads: &[],
};

/// [`crate::checks::gateway_binding`].
pub const GATEWAY_BINDING: CheckInfo = CheckInfo {
    name: "gateway-binding",
    stage: Stage::Deploy,
    default_on: true,
    asserts: "every Istio Gateway in book-info selects a Ready gateway pod, and each server port is the target of a port of a Service selecting it",
    effect: Effect::Reads,
    reads: &[],
};

/// [`crate::checks::mtls`].
pub const MTLS: CheckInfo = CheckInfo {
    name: "mtls",
    stage: Stage::Checks,
    default_on: true,
    asserts: "HBONE capture in ztunnel's config, mutual_tls with book-info SPIFFE principals in ztunnel metrics, both SPIFFE identities in ztunnel's access log for each bookinfo hop, STRICT refuses plaintext from outside the mesh",
    effect: Effect::Mutates,
    reads: &[],
};

/// [`crate::checks::l4_authorization`].
pub const L4_AUTHORIZATION: CheckInfo = CheckInfo {
    name: "l4-authorization",
    stage: Stage::Checks,
    default_on: true,
    asserts: "ztunnel enforces an ALLOW AuthorizationPolicy by principal without a waypoint: another meshed identity is refused within the propagation budget, the allowed one served, both served before and after",
    effect: Effect::Mutates,
    reads: &[],
};

/// [`crate::checks::waypoint`].
pub const WAYPOINT: CheckInfo = CheckInfo {
    name: "waypoint",
    stage: Stage::Checks,
    default_on: false,
    asserts: "book-info's istio-waypoint Gateway is Programmed, its pods Ready, and every ztunnel routes each book-info Service through it",
    effect: Effect::Reads,
    reads: &[Component::Waypoint],
};

/// [`crate::checks::l7_policy`].
pub const L7_POLICY: CheckInfo = CheckInfo {
    name: "l7-policy",
    stage: Stage::Checks,
    default_on: false,
    asserts: "an AuthorizationPolicy on the waypoint denying GET /ratings/* to a meshed client answers it 403 there and 200 on another path, within the propagation budget, and is taken back",
    effect: Effect::Mutates,
    reads: &[Component::Waypoint],
};

/// [`crate::checks::l7_routing`].
pub const L7_ROUTING: CheckInfo = CheckInfo {
    name: "l7-routing",
    stage: Stage::Checks,
    default_on: false,
    asserts: "the sample HTTPRoute route-reviews-90-10 on the reviews Service splits 200 requests by its weights (exact binomial test, p >= 0.001 per backend), no other version answers, and all versions answer again once it is taken back",
    effect: Effect::Mutates,
    reads: &[Component::Waypoint],
};

/// [`crate::checks::l7_traces`].
pub const L7_TRACES: CheckInfo = CheckInfo {
    name: "l7-traces",
    stage: Stage::Checks,
    default_on: false,
    asserts: "traces sent through the gateway with chosen ids arrive in Tempo with spans from book-info's waypoint (waypoint.book-info), not only the gateway's",
    effect: Effect::Reads,
    reads: &[Component::Waypoint, Component::Tempo],
};

/// [`crate::checks::traces`].
pub const TRACES: CheckInfo = CheckInfo {
    name: "traces",
    stage: Stage::Checks,
    default_on: true,
    asserts: "traces sent through the gateway with chosen ids arrive in Tempo with gateway spans carrying the custom tag",
    effect: Effect::Reads,
    reads: &[Component::Tempo],
};

/// [`crate::checks::metrics`].
pub const METRICS: CheckInfo = CheckInfo {
    name: "metrics",
    stage: Stage::Checks,
    default_on: true,
    asserts: "Prometheus scrapes istiod and every ztunnel (the guide's ServiceMonitor and PodMonitor, or any scrape config, e.g. Istio's addon); ztunnel TCP metrics for book-info are queryable",
    effect: Effect::Reads,
    reads: &[Component::Prometheus],
};

/// [`crate::checks::kiali`].
pub const KIALI: CheckInfo = CheckInfo {
    name: "kiali",
    stage: Stage::Checks,
    default_on: true,
    asserts: "Kiali's status API says running, and its book-info graph has productpage→details, productpage→reviews, reviews→ratings; with kiali.auth openid, an anonymous call is refused and a browser login through Keycloak's authorization-code flow reaches them",
    effect: Effect::Reads,
    // Kiali draws its graph from Istio's metrics in Prometheus (values/kiali-operator.yaml points it there).
    reads: &[Component::Kiali, Component::Prometheus],
};

/// [`crate::checks::probes`].
pub const PROBES: CheckInfo = CheckInfo {
    name: "probes",
    stage: Stage::Checks,
    default_on: true,
    asserts: "under default-deny ingress, probed pods in book-info stay Ready with no restarts or Unhealthy events, nothing else breaks",
    effect: Effect::Mutates,
    // It compares Prometheus's scrape targets before and under default-deny (collateral damage).
    reads: &[Component::Prometheus],
};

/// [`crate::checks::health`].
pub const HEALTH: CheckInfo = CheckInfo {
    name: "health",
    stage: Stage::Checks,
    default_on: true,
    asserts: "no Istio or Cilium container was OOM-killed or is crash-looping; restarts and error-level lines of the ztunnel, istio-cni and istiod logs are counted and the first quoted",
    effect: Effect::Reads,
    reads: &[],
};

/// [`crate::checks::footprint`].
pub const FOOTPRINT: CheckInfo = CheckInfo {
    name: "footprint",
    stage: Stage::Checks,
    default_on: false,
    asserts: "the cluster's Prometheus has cAdvisor CPU and memory of ztunnel, istio-cni, istiod and the gateway, idle and under a fixed load; in a release gate's candidate pass each stays within `gate.footprint.max_ratio` of the baseline's",
    effect: Effect::Measures,
    reads: &[Component::Prometheus],
};

/// [`crate::checks::latency`].
pub const LATENCY: CheckInfo = CheckInfo {
    name: "latency",
    stage: Stage::Checks,
    default_on: false,
    asserts: "fortio at a fixed rate against the same echo server outside the mesh and inside it, in turns: p50/p90/p99 of each side with their spread and the overhead in the mesh, no request failed; in a release gate's candidate pass the p99 overhead grows by at most `gate.latency.p99_overhead_ms`",
    effect: Effect::Measures,
    reads: &[],
};

/// [`crate::checks::traffic_continuity`].
pub const TRAFFIC_CONTINUITY: CheckInfo = CheckInfo {
    name: "traffic-continuity",
    stage: Stage::Upgrade,
    default_on: false,
    asserts: "no request to productpage fails before or after the Istio upgrade; during it, failed requests and the longest outage stay within the budget, and each upgrade step answers its share (ztunnel 90 %, istio-cni, istiod, istio-base 100 %)",
    effect: Effect::Reads,
    reads: &[],
};

/// Every check, in the order a run executes them within a stage.
pub static CATALOG: &[CheckInfo] = &[
    IMAGE_ARCHITECTURES,
    NODE_ARCHITECTURE,
    CILIUM_PREREQUISITES,
    GATEWAY_BINDING,
    MTLS,
    L4_AUTHORIZATION,
    WAYPOINT,
    L7_POLICY,
    L7_ROUTING,
    L7_TRACES,
    TRACES,
    METRICS,
    KIALI,
    HEALTH,
    FOOTPRINT,
    LATENCY,
    PROBES,
    TRAFFIC_CONTINUITY,
];

/// Whether any of the named checks reads `component`.
pub fn any_reads(checks: &[String], component: Component) -> bool {
    checks.iter().filter_map(|name| find(name)).any(|c| c.reads.contains(&component))
}

/// Looks a check up by name.
pub fn find(name: &str) -> Option<&'static CheckInfo> {
    CATALOG.iter().find(|c| c.name == name)
}

/// The names of every check, for messages that list them.
pub fn names() -> Vec<&'static str> {
    CATALOG.iter().map(|c| c.name).collect()
}
