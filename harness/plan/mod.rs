//! The plan: every step a run takes, computed from the scenario without touching anything, as a
//! dependency graph.
//!
//! `meshcheck plan` prints it and the executor runs exactly it, so what a user reviews is what runs.
//! Each step names the steps it needs, each with the reason; the executor starts every step whose
//! needs have finished. Phases stay in order (each is a JUnit suite, and a phase's checks judge what
//! its steps built): a phase's steps start once the phase before it and its checks have ended, and
//! its checks once its steps have. The one exception is a step that says it starts during an
//! earlier phase ([`PlannedStep::starts_during`]): bookinfo is applied as soon as ztunnel is up,
//! while the observability stack is still installing, so its images pull in the meantime. Plan
//! order (the step numbers) is one valid order of the graph, which the sequential executor follows.
//!
//! The Istio install order is the one of istio.io's "Install with Helm" for ambient mode at Istio
//! 1.30 (docs/ambient/install/helm: base → Gateway API CRDs → istiod → cni → ztunnel → gateway), and
//! the upgrade order that of "Upgrade with Helm" (docs/ambient/upgrade/helm: base → istiod → cni →
//! ztunnel → gateway); each is a chain in the graph. The observability stack needs none of it but
//! the CRDs of base, and installs beside it.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    common::catalog::{self, Component, Effect, Stage},
    common::names::{AMBIENT, BOOKINFO_NS, INSIDE_NS, OUTSIDE_NS, Phase, RUN_LABEL},
    scenario::{Provider, Scenario},
};

mod command;
mod condition;
pub mod fixtures;
pub mod providers;

pub use command::CommandSpec;
pub use condition::Condition;

/// Everything a run needs to know to execute.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Scenario name.
    pub scenario: String,
    /// Provider.
    pub provider: Provider,
    /// Run id.
    pub run_id: String,
    /// Run folder.
    pub run_dir: String,
    /// Cluster name for kind/k3d (prefixed `meshcheck-` so `meshcheck gc` finds it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Kubeconfig the run uses.
    pub kubeconfig: String,
    /// Context within it, if not the current one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Phases in order.
    pub phases: Vec<PhasePlan>,
}

/// One phase and its steps.
#[derive(Debug, Clone, Serialize)]
pub struct PhasePlan {
    /// Which phase.
    pub name: Phase,
    /// Steps in plan order, checks last.
    pub steps: Vec<PlannedStep>,
}

/// A step's number: its position in the whole plan, from 1, as `meshcheck plan` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StepId(pub usize);

impl std::fmt::Display for StepId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A step that must have finished before another starts, and why.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Need {
    /// The step needed (always an earlier one).
    pub step: StepId,
    /// Why, in one line.
    pub why: &'static str,
}

/// An earlier phase during which a step may already start, once its needs have finished.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Overlap {
    /// The phase it may start during.
    pub phase: Phase,
    /// Why it is worth starting early.
    pub why: &'static str,
}

/// A step in the plan's graph.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    /// Its number.
    pub id: StepId,
    /// What must have finished before it starts. Needs on steps of earlier phases are met when
    /// the phase starts; they are listed where they say why the step belongs after them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<Need>,
    /// An earlier phase it may start during; `None`: it starts within its own phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_during: Option<Overlap>,
    /// What it does.
    #[serde(flatten)]
    pub step: Step,
}

impl Plan {
    /// Every step with its phase, in plan order.
    pub fn steps(&self) -> impl Iterator<Item = (Phase, &PlannedStep)> {
        self.phases.iter().flat_map(|p| p.steps.iter().map(move |s| (p.name, s)))
    }

    /// The phase during which a step may start: its own, or the earlier one it overlaps.
    pub fn host_phase(phase: Phase, step: &PlannedStep) -> Phase {
        step.starts_during.map_or(phase, |o| o.phase)
    }
}

/// Reads checks can run beside each other; one that changes the mesh runs alone.
const AFTER_MUTATING: &str = "that check changes the mesh while it runs (STRICT, default-deny): nothing runs beside it";
const MUTATING_ALONE: &str =
    "this check changes the mesh while it runs (STRICT, default-deny): it waits for the checks before it";
const READS_VALUES: &str = "helm reads this values file";
const FROM_REPOSITORY: &str = "the chart comes from this repository (helm repo add)";

/// Builds the graph phase by phase, numbering steps in plan order.
struct Graph {
    phases: Vec<PhasePlan>,
    count: usize,
}

impl Graph {
    fn phase(&mut self, name: Phase) {
        self.phases.push(PhasePlan { name, steps: Vec::new() });
    }

    /// Adds a step to the current phase; every need names an earlier step.
    fn add(&mut self, step: Step, needs: &[(StepId, &'static str)]) -> StepId {
        self.count += 1;
        let id = StepId(self.count);
        let mut needs: Vec<Need> = needs.iter().map(|&(step, why)| Need { step, why }).collect();
        needs.sort_by_key(|n| n.step);
        needs.dedup_by_key(|n| n.step);
        let phase = self.phases.last_mut().expect("a phase is open");
        phase.steps.push(PlannedStep { id, needs, starts_during: None, step });
        id
    }

    /// Adds a step that may start during the earlier phase `overlap.phase`.
    fn add_early(&mut self, step: Step, needs: &[(StepId, &'static str)], overlap: Overlap) -> StepId {
        let id = self.add(step, needs);
        let phase = self.phases.last_mut().expect("a phase is open");
        phase.steps.last_mut().expect("just added").starts_during = Some(overlap);
        id
    }

    /// The scenario's checks of a stage, in catalog order: those that only read run side by side,
    /// one that changes the mesh runs alone, between the reads before and after it.
    fn checks(&mut self, s: &Scenario, stage: Stage) {
        let mut mutating: Option<StepId> = None;
        let mut reads: Vec<StepId> = Vec::new();
        for c in catalog::CATALOG.iter().filter(|c| c.stage == stage && s.runs_check(c.name)) {
            let needs: Vec<(StepId, &'static str)> = match c.effect {
                Effect::Reads => mutating.map(|m| (m, AFTER_MUTATING)).into_iter().collect(),
                Effect::Mutates if reads.is_empty() => mutating.map(|m| (m, AFTER_MUTATING)).into_iter().collect(),
                Effect::Mutates => reads.iter().map(|&r| (r, MUTATING_ALONE)).collect(),
            };
            let id = self.add(Step::Check { name: c.name.into(), asserts: c.asserts.into() }, &needs);
            match c.effect {
                Effect::Reads => reads.push(id),
                Effect::Mutates => {
                    mutating = Some(id);
                    reads.clear();
                }
            }
        }
    }
}

/// Where a manifest comes from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Source {
    /// A file under `fixtures/` (embedded), with placeholder values.
    Fixture {
        /// Path under `fixtures/`.
        path: String,
        /// `{{KEY}}` → value.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        vars: Vec<(String, String)>,
    },
    /// An upstream URL pinned to a release (bookinfo, Gateway API CRDs).
    Url {
        /// The URL.
        url: String,
    },
}

impl Source {
    /// Where it comes from, for messages and the plan text.
    pub fn describe(&self) -> String {
        match self {
            Source::Fixture { path, .. } => format!("fixtures/{path}"),
            Source::Url { url } => url.clone(),
        }
    }
}

/// One step.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Step {
    /// Run an external command.
    Command {
        /// What it is for.
        name: String,
        /// The command.
        command: CommandSpec,
        /// For an advisory command (istioctl analysis), the evidence file its output goes to: it
        /// is skipped when the program is not installed, and its findings, a non-zero exit
        /// included, are evidence for the reader rather than a failed install.
        #[serde(skip_serializing_if = "Option::is_none")]
        advisory: Option<String>,
        /// This command creates the cluster: from the moment it starts, cleanup must delete the
        /// cluster (even a failed create can leave node containers behind).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        creates_cluster: bool,
    },
    /// Write a file into the run folder (values files, cluster configs).
    WriteFile {
        /// Path relative to the working directory.
        path: String,
        /// Fixture it comes from, or `generated`.
        from: String,
        /// Content.
        content: String,
    },
    /// Server-side apply manifests.
    Apply {
        /// Source.
        source: Source,
        /// Namespace for objects without one.
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// `Kind/namespace/name` of each object when known before the run.
        objects: Vec<String>,
        /// Whether a server-side dry run of all objects precedes the apply (off for CRD bundles).
        dry_run_first: bool,
    },
    /// Wait on an object with a watch.
    Wait {
        /// Kind (`DaemonSet`, `Deployment`, `StatefulSet`, `Node`, `CustomResourceDefinition`).
        kind: String,
        /// Namespace.
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        /// Name (empty for all nodes).
        name: String,
        /// Condition.
        condition: Condition,
        /// Deadline in seconds.
        timeout_secs: u64,
    },
    /// Collect and judge a check.
    Check {
        /// Check name.
        name: String,
        /// What it asserts.
        asserts: String,
    },
    /// Create a namespace labelled as this run's own, unless it exists: an existing namespace is
    /// used as it is and never labelled, so cleanup can never take it for one of ours.
    Namespace {
        /// Name.
        name: String,
        /// Labels besides the ownership labels (`istio.io/dataplane-mode`).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        labels: Vec<(String, String)>,
        /// Value of the [`RUN_LABEL`] a created namespace gets: the run id, lowercased.
        run: String,
    },
    /// Delete the namespaces carrying this run's ownership labels (the cleanup of an existing cluster).
    DeleteOwnedNamespaces {
        /// Value of the [`RUN_LABEL`] to delete by.
        run: String,
    },
    /// Write the gateway chart's Service ports, derived from the server ports of the Istio
    /// `Gateway` in `gateway` (so the Service follows the bookinfo sample across releases).
    GatewayPorts {
        /// Manifest holding the Gateway.
        gateway: Source,
        /// NodePort the `http2` Service port gets (mapped to the host by kind/k3d).
        node_port: u16,
        /// Values file to write.
        path: String,
    },
    /// Start the traffic generator, relabel its phase, or stop it and save its record.
    Traffic {
        /// What to do.
        action: TrafficAction,
    },
}

/// What a [`Step::Traffic`] does with the traffic generator of an upgrade.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TrafficAction {
    /// Start sending, and let it run for `traffic.settle` (the window before the upgrade).
    Start,
    /// Label what follows as sent during the upgrade.
    During,
    /// Label what follows as sent after it, and let it run for `traffic.settle`.
    After,
    /// Stop and save the record (`upgrade/traffic.json`).
    Stop,
}

impl TrafficAction {
    /// The name in the plan and in the traffic record's phases.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficAction::Start => "start",
            TrafficAction::During => "during",
            TrafficAction::After => "after",
            TrafficAction::Stop => "stop",
        }
    }
}

impl Step {
    /// A short name for progress output.
    pub fn label(&self) -> String {
        match self {
            Step::Command { name, .. } => name.clone(),
            Step::WriteFile { path, .. } => format!("write {}", path.rsplit('/').next().unwrap_or(path)),
            Step::Apply { source: Source::Fixture { path, .. }, .. } => format!("apply {path}"),
            Step::Apply { source: Source::Url { url }, .. } => {
                format!("apply {}", url.rsplit('/').next().unwrap_or(url))
            }
            Step::Wait { kind, namespace, name, .. } => match (namespace, name.as_str()) {
                (_, "") => format!("wait for every {kind}"),
                (Some(ns), n) => format!("wait for {kind} {ns}/{n}"),
                (None, n) => format!("wait for {kind} {n}"),
            },
            Step::Check { name, .. } => format!("check {name}"),
            Step::Namespace { name, .. } => format!("namespace {name}"),
            Step::DeleteOwnedNamespaces { .. } => "delete the run's namespaces".into(),
            Step::Traffic { action } => format!("traffic {}", action.as_str()),
            Step::GatewayPorts { path, .. } => format!("write {}", path.rsplit('/').next().unwrap_or(path)),
        }
    }
}

/// Inputs that are not in the scenario: where the run lives.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Run id.
    pub run_id: String,
    /// Run folder.
    pub run_dir: String,
    /// A private folder outside the run folder for what must not be uploaded with it: the
    /// throw-away cluster's kubeconfig holds a client key, and CI uploads all of `reports/`.
    pub private_dir: String,
}

impl RunContext {
    /// The stable context used by `meshcheck plan` and the golden tests.
    pub fn for_plan() -> RunContext {
        RunContext {
            run_id: "RUN-ID".into(),
            run_dir: "reports/RUN-ID".into(),
            private_dir: "$TMPDIR/meshcheck-RUN-ID".into(),
        }
    }
}

/// One Istio chart of the install guide: its release, the values fixture, and the rollout that
/// shows it is up (none for `base`, which `helm --wait` covers).
struct IstioChart<'a> {
    release: &'a str,
    chart: &'a str,
    namespace: &'a str,
    fixture: &'a str,
    /// For the gateway: the manifest whose `Gateway` server ports the Service must reach.
    ports_from: Option<Source>,
    helm_wait: bool,
    rollout: Option<(&'a str, &'a str, Condition)>,
}

const ISTIO_REPO: &str = "https://istio-release.storage.googleapis.com/charts";

/// Why a rollout wait follows its helm command.
const ROLLOUT: &str = "the workload this chart installs";

struct Builder<'a> {
    s: &'a Scenario,
    ctx: &'a RunContext,
    kubeconfig: String,
    context: Option<String>,
    cluster: Option<String>,
}

impl Builder<'_> {
    fn helm_globals(&self) -> Vec<String> {
        let mut g = vec!["--kubeconfig".into(), self.kubeconfig.clone()];
        if let Some(c) = &self.context {
            g.extend(["--kube-context".into(), c.clone()]);
        }
        g.extend(["--repository-config".into(), format!("{}/helm/repositories.yaml", self.ctx.run_dir)]);
        g
    }

    fn repo_add(&self, name: &str, url: &str) -> Step {
        // The same mirrored URL preflight checks (`mirrors` covers chart repositories too).
        let mut args =
            vec!["repo".to_string(), "add".into(), name.into(), self.s.mirrored(url), "--force-update".into()];
        args.extend(self.helm_globals());
        Step::Command {
            name: format!("helm repo {name}"),
            command: CommandSpec::new("helm", args, self.s.timeouts.install.0),
            advisory: None,
            creates_cluster: false,
        }
    }

    fn values(&self, fixture: &str) -> (Step, String) {
        let file = fixture.trim_start_matches("values/");
        let path = format!("{}/values/{file}", self.ctx.run_dir);
        let step = Step::WriteFile {
            path: path.clone(),
            from: format!("fixtures/{fixture}"),
            content: crate::plan::fixtures::text(fixture).to_string(),
        };
        (step, path)
    }

    fn generated(&self, file: &str, content: String) -> (Step, String) {
        let path = format!("{}/{file}", self.ctx.run_dir);
        (Step::WriteFile { path: path.clone(), from: "generated".into(), content }, path)
    }

    #[allow(clippy::too_many_arguments)]
    /// `helm upgrade [--install] …`: `install` for a first install, plain `upgrade` for the
    /// documented in-place upgrade. Namespaces come from [`Step::Namespace`], not from helm, so
    /// that the run knows which ones it created.
    fn helm_release(
        &self,
        install: bool,
        release: &str,
        chart: &str,
        version: &str,
        ns: &str,
        values: &[String],
        wait: bool,
    ) -> Step {
        let mut args: Vec<String> = vec!["upgrade".into()];
        if install {
            args.push("--install".into());
        }
        args.extend([
            release.into(),
            chart.into(),
            "--version".into(),
            version.into(),
            "--namespace".into(),
            ns.into(),
        ]);
        for v in values {
            args.extend(["--values".into(), v.clone()]);
        }
        if wait {
            args.push("--wait".into());
        }
        args.extend(["--timeout".into(), format!("{}s", self.s.timeouts.install.0.as_secs())]);
        args.extend(self.helm_globals());
        let timeout = self.s.timeouts.install.0 + std::time::Duration::from_secs(60);
        Step::Command {
            name: format!("helm {release}"),
            command: CommandSpec::new("helm", args, timeout),
            advisory: None,
            creates_cluster: false,
        }
    }

    /// The steps of one Istio chart: its values file(s), the helm command (after `needs`), the
    /// rollout wait. Returns the step after which the chart is up: its rollout wait, or for a chart
    /// without one (`base`, which `helm --wait` covers) the helm command.
    fn istio_release(
        &self,
        g: &mut Graph,
        c: IstioChart,
        version: &str,
        install: bool,
        needs: &[(StepId, &'static str)],
    ) -> StepId {
        let mut needs = needs.to_vec();
        let generated = c.ports_from.map(|gateway| {
            let path = format!("{}/values/istio-gateway-ports.yaml", self.ctx.run_dir);
            let ports =
                g.add(Step::GatewayPorts { gateway, node_port: self.s.ingress.node_port, path: path.clone() }, &[]);
            needs.push((ports, "helm reads the Service ports written from bookinfo's Gateway"));
            path
        });
        let (w, values) = self.values(c.fixture);
        needs.push((g.add(w, &[]), READS_VALUES));
        let files: Vec<String> = std::iter::once(values).chain(generated).collect();
        let helm =
            g.add(self.helm_release(install, c.release, c.chart, version, c.namespace, &files, c.helm_wait), &needs);
        match c.rollout {
            Some((kind, name, condition)) => g.add(
                self.wait(kind, Some(c.namespace), name, condition, self.s.timeouts.install.0),
                &[(helm, ROLLOUT)],
            ),
            None => helm,
        }
    }

    fn wait(
        &self,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        condition: Condition,
        timeout: std::time::Duration,
    ) -> Step {
        Step::Wait {
            kind: kind.into(),
            namespace: ns.map(String::from),
            name: name.into(),
            condition,
            timeout_secs: timeout.as_secs(),
        }
    }

    fn namespace(&self, name: &str, labels: &[(&str, &str)]) -> Step {
        Step::Namespace {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            run: self.run_label(),
        }
    }

    /// The run's [`RUN_LABEL`] value: label values must be lowercase-friendly, run ids need not be.
    fn run_label(&self) -> String {
        self.ctx.run_id.to_lowercase()
    }

    /// The test clients of the mTLS check, each in a namespace of the run's own. `early` lets
    /// them start during the install, once `captured` (ztunnel up) has finished.
    fn mesh_clients(&self, g: &mut Graph, early: Option<(Overlap, (StepId, &'static str))>) {
        let add = |g: &mut Graph, step: Step, needs: &[(StepId, &'static str)]| match early {
            Some((overlap, _)) => g.add_early(step, needs, overlap),
            None => g.add(step, needs),
        };
        let outside = add(g, self.namespace(OUTSIDE_NS, &[]), &[]);
        let inside = add(g, self.namespace(INSIDE_NS, &[AMBIENT]), &[]);
        let mut needs = vec![(outside, INTO_NAMESPACE), (inside, INTO_NAMESPACE)];
        needs.extend(early.map(|(_, captured)| captured));
        let clients = add(g, self.fixture_apply("mesh-clients.yaml", None, &[]), &needs);
        let t = self.s.timeouts.deploy.0;
        g.add(self.wait("Pod", Some(OUTSIDE_NS), "curl-outside", Condition::PodReady, t), &[(clients, APPLIED)]);
        g.add(self.wait("Pod", Some(INSIDE_NS), "curl-inside", Condition::PodReady, t), &[(clients, APPLIED)]);
    }

    fn fixture_apply(&self, name: &str, ns: Option<&str>, vars: &[(&str, &str)]) -> Step {
        let objects = crate::plan::fixtures::manifest_rendered(name, vars)
            .expect("fixtures parse (tested)")
            .iter()
            .map(|o| {
                let kind = o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
                let ns = o.metadata.namespace.clone().or(ns.map(String::from)).unwrap_or_else(|| "-".into());
                format!("{kind}/{ns}/{}", o.metadata.name.clone().unwrap_or_default())
            })
            .collect();
        Step::Apply {
            source: Source::Fixture {
                path: format!("manifests/{name}"),
                vars: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            },
            namespace: ns.map(String::from),
            objects,
            dry_run_first: true,
        }
    }
}

/// Why a step follows the namespace it puts objects into.
const INTO_NAMESPACE: &str = "its objects go into this namespace, which the run creates and owns";
/// Why a wait follows the apply of what it awaits.
const APPLIED: &str = "the objects this applies";

/// Builds the plan for a scenario.
pub fn build(s: &Scenario, ctx: &RunContext) -> Plan {
    let cluster = (s.provider != Provider::Existing).then(|| format!("meshcheck-{}", ctx.run_id.to_lowercase()));
    let (kubeconfig, context) = match &s.existing {
        Some(e) => {
            (e.kubeconfig.clone().map(|k| expand_home(&k)).unwrap_or_else(default_kubeconfig), e.context.clone())
        }
        // Never under reports/: CI uploads that folder as an artifact.
        None => (format!("{}/kubeconfig", ctx.private_dir), None),
    };
    let b = Builder { s, ctx, kubeconfig: kubeconfig.clone(), context: context.clone(), cluster: cluster.clone() };
    let mut g = Graph { phases: Vec::new(), count: 0 };
    g.phase(Phase::Preflight);
    g.checks(s, Stage::Preflight);
    g.phase(Phase::Provision);
    let cilium_operator = provision(&b, &mut g);
    if s.installs() {
        g.phase(Phase::Install);
        let installed = istio(&b, &mut g, &s.versions.istio, false, &[]);
        observability(&b, &mut g, &installed, cilium_operator);
        g.phase(Phase::Deploy);
        deploy(&b, &mut g, &installed);
    } else {
        // Observe only: the mesh and bookinfo are the user's; the run adds just its test clients.
        g.phase(Phase::Deploy);
        b.mesh_clients(&mut g, None);
        g.checks(s, Stage::Deploy);
    }
    g.phase(if s.versions.upgrade_to.is_some() { Phase::Baseline } else { Phase::Checks });
    g.checks(s, Stage::Checks);
    if let Some(target) = &s.versions.upgrade_to {
        g.phase(Phase::Upgrade);
        let start = g.add(Step::Traffic { action: TrafficAction::Start }, &[]);
        let during = g.add(
            Step::Traffic { action: TrafficAction::During },
            &[(start, "traffic flows for `traffic.settle` before the upgrade begins")],
        );
        let upgraded =
            istio(&b, &mut g, target, true, &[(during, "what is sent from here on counts as during the upgrade")]);
        let after = g.add(
            Step::Traffic { action: TrafficAction::After },
            &[(upgraded.gateway, "the upgrade ends with the last rollout, the gateway's")],
        );
        g.add(
            Step::Traffic { action: TrafficAction::Stop },
            &[(after, "traffic flows for `traffic.settle` after the upgrade")],
        );
        g.checks(s, Stage::Upgrade);
        g.phase(Phase::Candidate);
        g.checks(s, Stage::Checks);
    }
    g.phase(Phase::Cleanup);
    cleanup(&b, &mut g);
    Plan {
        scenario: s.name.clone(),
        provider: s.provider,
        run_id: ctx.run_id.clone(),
        run_dir: ctx.run_dir.clone(),
        cluster_name: cluster,
        kubeconfig,
        context,
        phases: g.phases,
    }
}

/// The cluster and Cilium. Returns the wait for Cilium's operator, which registers Cilium's CRDs,
/// when the run installs Cilium.
fn provision(b: &Builder, g: &mut Graph) -> Option<StepId> {
    let s = b.s;
    let t = s.timeouts.provision.0;
    let Some(cluster) = &b.cluster else {
        g.add(b.wait("Node", None, "", Condition::NodesReady, t), &[]);
        g.checks(s, Stage::Provision);
        return None;
    };
    // The steps Cilium's install needs from the cluster's creation, and the creation itself.
    let (host, created, mut cilium_needs) = match s.provider {
        Provider::Kind => {
            let (w, path) = b.generated("kind-config.yaml", crate::plan::providers::kind_config(s, cluster));
            let config = g.add(w, &[]);
            let args = [
                "create",
                "cluster",
                "--name",
                cluster,
                "--config",
                &path,
                "--kubeconfig",
                &b.kubeconfig,
                "--wait",
                "0s",
            ];
            let create = g.add(
                Step::Command {
                    name: "create kind cluster".into(),
                    command: CommandSpec::new("kind", args, t),
                    advisory: None,
                    creates_cluster: true,
                },
                &[(config, "kind reads the cluster config written here")],
            );
            let needs = vec![(create, "helm installs into the cluster kind creates, with the kubeconfig it writes")];
            (format!("{cluster}-control-plane"), create, needs)
        }
        Provider::K3d => {
            let deadline = crate::plan::providers::k3d_create_deadline(s);
            let create = CommandSpec::new("k3d", crate::plan::providers::k3d_create_args(s, cluster), deadline)
                .env("K3D_FIX_MOUNTS", "1");
            let create = g.add(
                Step::Command {
                    name: "create k3d cluster".into(),
                    command: create,
                    advisory: None,
                    creates_cluster: true,
                },
                &[],
            );
            let kc = ["kubeconfig", "write", cluster, "--output", &b.kubeconfig];
            let kubeconfig = g.add(
                Step::Command {
                    name: "export kubeconfig".into(),
                    command: CommandSpec::new("k3d", kc, t),
                    advisory: None,
                    creates_cluster: false,
                },
                &[(create, "k3d writes the kubeconfig of the cluster it created")],
            );
            let mut needs = vec![(kubeconfig, "helm connects with the kubeconfig k3d writes")];
            for node in crate::plan::providers::k3d_nodes(s, cluster) {
                let args = ["exec", &node, "sh", "-c", crate::plan::providers::K3D_MOUNT_SCRIPT];
                let mount = g.add(
                    Step::Command {
                        name: format!("shared mounts on {node}"),
                        command: CommandSpec::new("docker", args, t),
                        advisory: None,
                        creates_cluster: false,
                    },
                    &[(create, "runs in the node's container, which k3d creates")],
                );
                needs.push((
                    mount,
                    "Cilium's agent needs bpffs and cgroup v2 mounted shared on every node (field guide §2.3)",
                ));
            }
            (format!("k3d-{cluster}-server-0"), create, needs)
        }
        Provider::Existing => unreachable!("handled above"),
    };
    if let Some(archive) = &s.cluster.image_archive {
        let command = match s.provider {
            Provider::Kind => CommandSpec::new("kind", ["load", "image-archive", archive, "--name", cluster], t),
            _ => CommandSpec::new("k3d", ["image", "import", archive, "--cluster", cluster], t),
        };
        let load = g.add(
            Step::Command {
                name: "load cached images into the nodes".into(),
                command,
                advisory: None,
                creates_cluster: false,
            },
            &[(created, "loads the archive into the nodes of the new cluster")],
        );
        cilium_needs.push((
            load,
            "Cilium starts the first pods: their images come from the archive, so it is loaded first (the rest overlaps it)",
        ));
    }
    let (w1, base) = b.values("values/cilium.yaml");
    let (w2, cluster_values) =
        b.generated("values/cilium-cluster.yaml", format!("k8sServiceHost: {host}\nk8sServicePort: 6443\n"));
    cilium_needs.push((g.add(w1, &[]), READS_VALUES));
    cilium_needs.push((g.add(w2, &[]), READS_VALUES));
    cilium_needs.push((g.add(b.repo_add("cilium", "https://helm.cilium.io/"), &[]), FROM_REPOSITORY));
    let cilium = g.add(
        b.helm_release(
            true,
            "cilium",
            "cilium/cilium",
            &s.versions.cilium,
            "kube-system",
            &[base, cluster_values],
            false,
        ),
        &cilium_needs,
    );
    g.add(b.wait("DaemonSet", Some("kube-system"), "cilium", Condition::DaemonSetReady, t), &[(cilium, ROLLOUT)]);
    g.add(b.wait("DaemonSet", Some("kube-system"), "cilium-envoy", Condition::DaemonSetReady, t), &[(cilium, ROLLOUT)]);
    let operator = g.add(
        b.wait("Deployment", Some("kube-system"), "cilium-operator", Condition::DeploymentAvailable, t),
        &[(cilium, ROLLOUT)],
    );
    let nodes = g.add(
        b.wait("Node", None, "", Condition::NodesReady, t),
        &[(cilium, "the nodes have no CNI (kind and k3d are created without one) until Cilium's agent runs on them")],
    );
    g.add(
        b.wait("Deployment", Some("kube-system"), "coredns", Condition::DeploymentAvailable, t),
        &[(nodes, "CoreDNS is scheduled once a node is Ready")],
    );
    g.checks(s, Stage::Provision);
    Some(operator)
}

/// The steps of the Istio chain other steps need.
struct Istio {
    /// The namespaces the first install creates, by name.
    namespaces: Vec<(&'static str, StepId)>,
    /// istiod available.
    istiod: StepId,
    /// ztunnel ready on every node.
    ztunnel: StepId,
    /// The ingress gateway available.
    gateway: StepId,
}

impl Istio {
    /// The need on a namespace the first install created; none on an upgrade.
    fn namespace(&self, name: &str) -> Option<(StepId, &'static str)> {
        self.namespaces.iter().find(|(n, _)| *n == name).map(|&(_, id)| (id, INTO_NAMESPACE))
    }
}

/// The Istio part of the install, or (with `upgrade`) the documented in-place upgrade order:
/// base (CRDs) → istiod → cni → ztunnel → gateway, each with its full values file and a rollout
/// wait (field guide §4.4), each after the one before it is up. `after` is what the chain's first
/// link waits for besides.
fn istio(b: &Builder, g: &mut Graph, istio: &str, upgrade: bool, after: &[(StepId, &'static str)]) -> Istio {
    let s = b.s;
    let t = s.timeouts.install.0;
    let install = !upgrade;
    let mut namespaces = Vec::new();
    if install {
        for ns in ["istio-system", "istio-ingress", "monitoring", "tempo", "kiali-operator"] {
            namespaces.push((ns, g.add(b.namespace(ns, &[]), &[])));
        }
    }
    let ns_need = |name: &str| namespaces.iter().find(|(n, _)| *n == name).map(|&(_, id)| (id, INTO_NAMESPACE));
    let repo = (g.add(b.repo_add("istio", ISTIO_REPO), &[]), FROM_REPOSITORY);
    let chart = |release, chart, fixture, rollout| IstioChart {
        release,
        chart,
        namespace: "istio-system",
        fixture,
        ports_from: None,
        helm_wait: false,
        rollout,
    };
    let base = IstioChart { helm_wait: true, ..chart("istio-base", "istio/base", "values/istio-base.yaml", None) };
    let cni = chart(
        "istio-cni",
        "istio/cni",
        "values/istio-cni.yaml",
        Some(("DaemonSet", "istio-cni-node", Condition::DaemonSetReady)),
    );
    let istiod = chart(
        "istiod",
        "istio/istiod",
        "values/istiod.yaml",
        Some(("Deployment", "istiod", Condition::DeploymentAvailable)),
    );
    let ztunnel = chart(
        "ztunnel",
        "istio/ztunnel",
        "values/ztunnel.yaml",
        Some(("DaemonSet", "ztunnel", Condition::DaemonSetReady)),
    );
    let gateway = IstioChart {
        namespace: "istio-ingress",
        ports_from: Some(Source::Url { url: bookinfo_url(s, "networking/bookinfo-gateway.yaml") }),
        ..chart(
            "istio-ingress",
            "istio/gateway",
            "values/istio-gateway.yaml",
            Some(("Deployment", "istio-ingress", Condition::DeploymentAvailable)),
        )
    };
    // Install (istio.io ambient/install/helm, Istio 1.30): base → Gateway API CRDs → istiod → cni →
    // ztunnel → gateway. Upgrade (istio.io ambient/upgrade/helm): base → istiod → cni → ztunnel →
    // gateway, "the control plane must be upgraded before Istio CNI". One chain serves both.
    let mut needs: Vec<(StepId, &'static str)> = after.to_vec();
    needs.extend(ns_need("istio-system"));
    needs.push(repo);
    let base = b.istio_release(g, base, istio, install, &needs);
    let before_istiod = if upgrade {
        (base, "istio.io ambient/upgrade/helm: base (the CRDs) before istiod")
    } else {
        let url = format!(
            "https://github.com/kubernetes-sigs/gateway-api/releases/download/{}/standard-install.yaml",
            s.versions.gateway_api
        );
        let apply = g.add(
            Step::Apply {
                source: Source::Url { url: s.mirrored(&url) },
                namespace: None,
                objects: Vec::new(),
                dry_run_first: false,
            },
            &[(base, "istio.io ambient/install/helm: the Gateway API CRDs come after base")],
        );
        let established = g.add(
            b.wait(
                "CustomResourceDefinition",
                None,
                "gateways.gateway.networking.k8s.io",
                Condition::CrdEstablished,
                t,
            ),
            &[(apply, APPLIED)],
        );
        (established, "istio.io ambient/install/helm: istiod after the Gateway API CRDs")
    };
    let istiod = b.istio_release(g, istiod, istio, install, &[before_istiod, repo]);
    let cni = b.istio_release(
        g,
        cni,
        istio,
        install,
        &[(istiod, "the control plane before istio-cni: CNI 1.x works with control plane 1.x and 1.x+1 (istio.io ambient/upgrade/helm)"), repo],
    );
    let ztunnel =
        b.istio_release(g, ztunnel, istio, install, &[(cni, "the documented order: istio-cni up, then ztunnel"), repo]);
    let mut needs = vec![(ztunnel, "the documented order: ztunnel up, then the gateway")];
    needs.extend(ns_need("istio-ingress"));
    needs.push(repo);
    let gateway = b.istio_release(g, gateway, istio, install, &needs);
    Istio { namespaces, istiod, ztunnel, gateway }
}

/// kube-prometheus-stack, Tempo and Kiali, beside the Istio chain: they need only its namespaces,
/// base's CRDs and a serving istiod for the Istio config they come with; then `istioctl analyze`
/// of the whole mesh.
fn observability(b: &Builder, g: &mut Graph, istio: &Istio, cilium_operator: Option<StepId>) {
    let s = b.s;
    let t = s.timeouts.install.0;
    let release = |g: &mut Graph, repo: (&str, &str), fixture: &str, release: (&str, &str, &str, &str)| {
        let (name, chart, version, ns) = release;
        let repo = g.add(b.repo_add(repo.0, repo.1), &[]);
        let (w, v) = b.values(fixture);
        let w = g.add(w, &[]);
        let mut needs: Vec<(StepId, &'static str)> = istio.namespace(ns).into_iter().collect();
        needs.extend([(repo, FROM_REPOSITORY), (w, READS_VALUES)]);
        (b.helm_release(true, name, chart, version, ns, &[v], false), needs)
    };
    // A `checks:` subset installs only what its checks read (catalog::CheckInfo::reads).
    let wanted = |c: Component| catalog::any_reads(&s.checks, c);
    if wanted(Component::Prometheus) {
        let (helm, needs) = release(
            g,
            ("prometheus-community", "https://prometheus-community.github.io/helm-charts"),
            "values/kube-prometheus-stack.yaml",
            ("kps", "prometheus-community/kube-prometheus-stack", &s.versions.kube_prometheus_stack, "monitoring"),
        );
        let kps = g.add(helm, &needs);
        g.add(
            b.wait("Deployment", Some("monitoring"), "prom-operator", Condition::DeploymentAvailable, t),
            &[(kps, ROLLOUT)],
        );
        g.add(
            b.wait("StatefulSet", Some("monitoring"), "prometheus-prom-prometheus", Condition::StatefulSetReady, t),
            &[(kps, "the operator creates Prometheus from the CR this chart installs")],
        );
        g.add(
            b.fixture_apply("istio-monitors.yaml", None, &[]),
            &[(kps, "ServiceMonitor and PodMonitor are CRDs of kube-prometheus-stack")],
        );
    }
    let telemetry = if wanted(Component::Tempo) {
        let (helm, needs) = release(
            g,
            ("grafana-community", "https://grafana-community.github.io/helm-charts"),
            "values/tempo.yaml",
            ("tempo", "grafana-community/tempo", &s.versions.tempo, "tempo"),
        );
        let tempo = g.add(helm, &needs);
        g.add(b.wait("StatefulSet", Some("tempo"), "tempo", Condition::StatefulSetReady, t), &[(tempo, ROLLOUT)]);
        let telemetry = g.add(
            b.fixture_apply("telemetry.yaml", None, &[]),
            &[(
                istio.istiod,
                "Telemetry is Istio config: its CRD comes with base, and istiod's validating webhook must answer (llm-d/llm-d-benchmark#1920)",
            )],
        );
        Some(telemetry)
    } else {
        None
    };
    if wanted(Component::Kiali) {
        let (helm, mut needs) = release(
            g,
            ("kiali", "https://kiali.org/helm-charts"),
            "values/kiali-operator.yaml",
            ("kiali-operator", "kiali/kiali-operator", &s.versions.kiali, "kiali-operator"),
        );
        needs.extend(
            istio
                .namespace("istio-system")
                .map(|(id, _)| (id, "its Kiali CR goes into istio-system (values/kiali-operator.yaml)")),
        );
        let kiali = g.add(helm, &needs);
        g.add(
            b.wait("Deployment", Some("istio-system"), "kiali", Condition::DeploymentAvailable, t),
            &[(kiali, "the operator creates Kiali from the CR this chart installs")],
        );
    }
    let ccnp: Vec<(StepId, &'static str)> = cilium_operator
        .map(|op| (op, "CiliumClusterwideNetworkPolicy is a CRD Cilium's operator registers"))
        .into_iter()
        .collect();
    g.add(b.fixture_apply("cilium-allow-ambient-hostprobes.yaml", None, &[]), &ccnp);
    let mut analyze =
        vec!["analyze".to_string(), "--all-namespaces".into(), "--kubeconfig".into(), b.kubeconfig.clone()];
    if let Some(c) = &b.context {
        analyze.extend(["--context".into(), c.clone()]);
    }
    g.add(
        Step::Command {
            name: "istioctl analyze".into(),
            command: CommandSpec::new("istioctl", analyze, t),
            advisory: Some("istioctl-analyze.txt".into()),
            creates_cluster: false,
        },
        &[(istio.gateway, "analyzes the mesh once every Istio chart is up")]
            .into_iter()
            .chain(telemetry.map(|t| (t, "and the Istio config the install applies")))
            .collect::<Vec<_>>(),
    );
}

/// bookinfo, the probe target and the test clients. They need only their namespaces and ztunnel
/// up, so they are applied during the install; their rollouts are awaited in this phase.
fn deploy(b: &Builder, g: &mut Graph, istio: &Istio) {
    let s = b.s;
    let t = s.timeouts.deploy.0;
    let ns = Some(BOOKINFO_NS);
    let release = s.versions.bookinfo();
    let early = Overlap {
        phase: Phase::Install,
        why: "bookinfo and the test clients need only ztunnel up: their images pull while the observability stack installs",
    };
    let captured = (
        istio.ztunnel,
        "ambient captures a pod when istio-cni and ztunnel run on its node: started after them, it is in the mesh from its first request",
    );
    let namespace = g.add_early(b.namespace(BOOKINFO_NS, &[AMBIENT]), &[], early);
    let mut applies = Vec::new();
    for file in ["platform/kube/bookinfo.yaml", "platform/kube/bookinfo-versions.yaml"] {
        let apply = Step::Apply {
            source: Source::Url { url: bookinfo_url(s, file) },
            namespace: ns.map(String::from),
            objects: Vec::new(),
            dry_run_first: true,
        };
        applies.push(g.add_early(apply, &[(namespace, INTO_NAMESPACE), captured], early));
    }
    let gateway = Step::Apply {
        source: Source::Url { url: bookinfo_url(s, "networking/bookinfo-gateway.yaml") },
        namespace: ns.map(String::from),
        objects: Vec::new(),
        dry_run_first: true,
    };
    g.add_early(
        gateway,
        &[
            (namespace, INTO_NAMESPACE),
            (istio.istiod, "an Istio Gateway is Istio config: istiod's validating webhook must answer"),
        ],
        early,
    );
    let hub = crate::plan::fixtures::istio_hub(release);
    let probe_target = g.add_early(
        b.fixture_apply("probe-target.yaml", ns, &[("BOOKINFO_HUB", hub)]),
        &[(namespace, INTO_NAMESPACE), captured],
        early,
    );
    b.mesh_clients(g, Some((early, captured)));
    for d in ["details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1"] {
        g.add(b.wait("Deployment", ns, d, Condition::DeploymentAvailable, t), &[(applies[0], APPLIED)]);
    }
    g.add(b.wait("Deployment", ns, "probe-target", Condition::DeploymentAvailable, t), &[(probe_target, APPLIED)]);
    g.checks(s, Stage::Deploy);
}

fn bookinfo_url(s: &Scenario, file: &str) -> String {
    s.mirrored(&format!(
        "https://raw.githubusercontent.com/istio/istio/{}/samples/bookinfo/{file}",
        s.versions.bookinfo()
    ))
}

fn cleanup(b: &Builder, g: &mut Graph) {
    let t = std::time::Duration::from_secs(300);
    let step = match (&b.cluster, b.s.provider) {
        (Some(c), Provider::Kind) => Step::Command {
            name: "delete kind cluster".into(),
            command: CommandSpec::new("kind", ["delete", "cluster", "--name", c], t),
            advisory: None,
            creates_cluster: false,
        },
        (Some(c), Provider::K3d) => Step::Command {
            name: "delete k3d cluster".into(),
            command: CommandSpec::new("k3d", ["cluster", "delete", c], t),
            advisory: None,
            creates_cluster: false,
        },
        _ => Step::DeleteOwnedNamespaces { run: b.run_label() },
    };
    g.add(step, &[]);
}

fn expand_home(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => p.to_string(),
    }
}

fn default_kubeconfig() -> String {
    std::env::var("KUBECONFIG").ok().filter(|k| !k.is_empty()).unwrap_or_else(|| expand_home("~/.kube/config"))
}

/// Renders the plan for people: one numbered line per step with what it comes after, grouped by phase.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "meshcheck plan: scenario {} (provider {})", plan.scenario, plan.provider.as_str());
    let _ = writeln!(out, "run folder: {}", plan.run_dir);
    if let Some(c) = &plan.cluster_name {
        let _ = writeln!(out, "cluster: {c}");
    }
    let _ = writeln!(
        out,
        "kubeconfig: {}{}",
        plan.kubeconfig,
        plan.context.as_ref().map(|c| format!(" (context {c})")).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "Each step starts once the steps it comes after have finished; a phase starts once the one \
         before it and its checks have ended, but for steps marked to start during an earlier phase."
    );
    for phase in &plan.phases {
        let _ = writeln!(out, "\n== {} ==", phase.name);
        if phase.steps.is_empty() {
            let _ = writeln!(out, "  (nothing)");
        }
        for planned in &phase.steps {
            let line = match &planned.step {
                Step::Command { command, advisory, .. } => {
                    format!(
                        "run     {}{} (timeout {}s)",
                        command.display(),
                        advisory
                            .as_ref()
                            .map(|f| format!(" [if installed; findings to evidence/{f}]"))
                            .unwrap_or_default(),
                        command.timeout_secs
                    )
                }
                Step::WriteFile { path, from, .. } => format!("write   {path} (from {from})"),
                Step::Apply { source, namespace, objects, dry_run_first } => {
                    let src = source.describe();
                    let what = if objects.is_empty() { "objects as fetched".to_string() } else { objects.join(", ") };
                    format!(
                        "apply   {src}{}: {what}{}",
                        namespace.as_ref().map(|n| format!(" into {n}")).unwrap_or_default(),
                        if *dry_run_first { " (server-side dry run first)" } else { "" }
                    )
                }
                Step::Wait { kind, namespace, name, condition, timeout_secs } => {
                    let obj = match (namespace, name.as_str()) {
                        (_, "") => format!("{kind} (all)"),
                        (Some(ns), n) => format!("{kind} {ns}/{n}"),
                        (None, n) => format!("{kind} {n}"),
                    };
                    format!(
                        "wait    {obj} until {} (timeout {timeout_secs}s)",
                        serde_json::to_value(condition).expect("serializes").as_str().unwrap_or("")
                    )
                }
                Step::Check { name, asserts } => format!("check   {name}: {asserts}"),
                Step::Namespace { name, labels, run } => {
                    let extra: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!(
                        "ns      {name}: create labelled {RUN_LABEL}={run}{} unless it exists",
                        if extra.is_empty() { String::new() } else { format!(", {}", extra.join(", ")) }
                    )
                }
                Step::DeleteOwnedNamespaces { run } => format!("delete  namespaces labelled {RUN_LABEL}={run}"),
                Step::Traffic { action } => format!("traffic {}", action.as_str()),
                Step::GatewayPorts { gateway, node_port, path } => format!(
                    "write   {path} (gateway Service ports: http2 NodePort {node_port} → the server ports of the Gateway in {})",
                    gateway.describe()
                ),
            };
            let _ = writeln!(out, "{:3}. {line}", planned.id);
            for need in &planned.needs {
                let _ = writeln!(out, "       after {}: {}", need.step, need.why);
            }
            if let Some(o) = &planned.starts_during {
                let _ = writeln!(out, "       may start during {}: {}", o.phase, o.why);
            }
        }
    }
    out
}
