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
//! This stage owns the plan as data and nothing else: the graph ([`Plan`], [`PhasePlan`],
//! [`PlannedStep`], [`StepId`], [`Need`], [`Overlap`], [`Step`], [`Source`]), the commands and wait
//! conditions its steps carry ([`CommandSpec`], [`Condition`]), the embedded [`fixtures`] and the
//! [`providers`]' cluster configurations, [`build`], which computes the plan, and
//! [`render_text`], which prints it. It imports from `common` and `scenario` only: nothing from
//! `cluster` or `run`, which carry the plan out (harness/lib.rs draws the layers; the offline test
//! `layers` holds every file of this folder to them).
//!
//! [`build`] opens the phases in order; each phase's steps come from a file of their own: `checks`
//! (the checks that end a phase, all the preflight phase has), `provision` (cluster and Cilium),
//! `istio` and `observability` (the install), `deploy` (bookinfo and the test clients), `upgrade`
//! (the Istio chain again, under traffic), `cleanup`. `graph` numbers the steps and records their
//! needs, `builder` makes the steps the phases share (helm, values files, waits, namespaces,
//! fixture applies), `render` prints the plan for people.

use serde::Serialize;

use crate::{
    common::catalog::Stage,
    common::names::Phase,
    scenario::{Provider, Scenario},
};

mod builder;
mod checks;
mod cleanup;
pub use cleanup::operator_made;
mod command;
mod condition;
mod deploy;
pub mod fixtures;
mod graph;
mod istio;
mod observability;
pub mod providers;
mod provision;
mod render;
mod upgrade;

pub use builder::bookinfo_url;
pub use command::CommandSpec;
pub use condition::Condition;
pub use render::render_text;

use self::{
    builder::Builder, cleanup::cleanup, deploy::deploy, graph::Graph, istio::istio, observability::observability,
    provision::provision, upgrade::upgrade,
};

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
    /// For kind/k3d: the port on 127.0.0.1 mapped to the gateway's NodePort, or `None` when the
    /// scenario fixes none and no run has chosen one yet (a plan preview shows the default then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
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
        /// `{{KEY}}` placeholders the run fills with fresh random values when it applies the
        /// file (credentials of a throw-away login): the plan names them, never holds them, so
        /// no credential reaches the plan, the run folder or the repository.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        secrets: Vec<String>,
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
            Source::Fixture { path, secrets, .. } if !secrets.is_empty() => {
                format!("fixtures/{path} (with fresh random {})", secrets.join(", "))
            }
            Source::Fixture { path, .. } => format!("fixtures/{path}"),
            Source::Url { url } => url.clone(),
        }
    }
}

/// A helm release: its name and namespace.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReleaseRef {
    /// Release name.
    pub name: String,
    /// Namespace it is installed into.
    pub namespace: String,
}

/// One object by API version, kind, namespace and name.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ObjectRef {
    /// `group/version`.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
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
        /// The helm release this `helm upgrade --install` creates: on an existing cluster, cleanup
        /// uninstalls each release whose install the run started ([`Step::Uninstall`]).
        #[serde(skip_serializing_if = "Option::is_none")]
        installs: Option<ReleaseRef>,
    },
    /// `helm uninstall` of a release the run installed on an existing cluster, if its install
    /// started: a namespace's deletion leaves a chart's cluster-scoped objects, and istiod's
    /// validating webhooks (`failurePolicy: Fail`) would refuse every later Istio write.
    Uninstall {
        /// The release.
        release: ReleaseRef,
        /// Custom resources to delete and see gone first: their operator (this release) takes
        /// down what it made from them only while it runs.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        delete_first: Vec<ObjectRef>,
        /// Deadline of each deletion in `delete_first`, in seconds.
        timeout_secs: u64,
        /// `helm uninstall …`.
        command: CommandSpec,
        /// What the release's operator created outside its manifest, which helm leaves: deleted
        /// after the uninstall when it was not on the cluster before the install ([`cleanup::operator_made`]).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        delete_after: Vec<ObjectRef>,
    },
    /// Delete what the run created on an existing cluster outside its namespaces, by uid: objects
    /// its install steps applied, and CRDs of the groups it installs that were not there before its
    /// first install (helm keeps those).
    DeleteOwnedObjects {
        /// The API groups whose new CRDs are the run's (`*.istio.io` counts as `istio.io`).
        crd_groups: Vec<String>,
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
        /// Value of the [`RUN_LABEL`](crate::common::names::RUN_LABEL) a created namespace gets: the run
        /// id, lowercased.
        run: String,
    },
    /// Delete the namespaces this run created, by name and uid (the cleanup of an existing
    /// cluster); they carry the run's ownership labels, which the plan shows.
    DeleteOwnedNamespaces {
        /// Value of the [`RUN_LABEL`](crate::common::names::RUN_LABEL) the run's namespaces carry.
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

/// The longest cluster name k3d accepts (k3d-io/k3d v5.9.0 pkg/types/defaults.go
/// `DefaultClusterNameMaxLength = 32`, checked in pkg/client/clusterName.go).
pub const K3D_CLUSTER_NAME_MAX: usize = 32;

/// The kind/k3d cluster of a run: `meshcheck-` (what `meshcheck gc` looks for) and the run id without
/// its century. A run id (`YYYYMMDD-HHMMSS-xxxxxx`, 22 characters) after `meshcheck-` made 32, k3d's
/// very limit: one more character anywhere broke every k3d run. This leaves two to spare.
pub fn cluster_name(run_id: &str) -> String {
    let id = run_id.to_lowercase();
    let dated = id.len() > 8 && id.as_bytes()[..8].iter().all(u8::is_ascii_digit);
    format!("meshcheck-{}", if dated { &id[2..] } else { &id })
}

/// Builds the plan for a scenario.
pub fn build(s: &Scenario, ctx: &RunContext) -> Plan {
    let cluster = (s.provider != Provider::Existing).then(|| cluster_name(&ctx.run_id));
    let (kubeconfig, context) = kubeconfig(s, ctx);
    let b = Builder { s, ctx, kubeconfig: kubeconfig.clone(), context: context.clone(), cluster: cluster.clone() };
    let mut g = Graph::new();
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
        deploy::mesh_clients(&b, &mut g, None);
        g.checks(s, Stage::Deploy);
    }
    g.phase(if s.versions.upgrade_to.is_some() { Phase::Baseline } else { Phase::Checks });
    g.checks(s, Stage::Checks);
    if let Some(target) = &s.versions.upgrade_to {
        g.phase(Phase::Upgrade);
        upgrade(&b, &mut g, target);
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
        host_port: s.ingress.host_port.filter(|_| s.provider != Provider::Existing),
        phases: g.into_phases(),
    }
}

/// The kubeconfig and context the run connects with: on an existing cluster the scenario's
/// kubeconfig (else `$KUBECONFIG`, else `~/.kube/config`) and context (else the current one); for a
/// cluster the run creates, a kubeconfig in the private folder.
fn kubeconfig(s: &Scenario, ctx: &RunContext) -> (String, Option<String>) {
    match &s.existing {
        Some(e) => {
            (e.kubeconfig.clone().map(|k| expand_home(&k)).unwrap_or_else(default_kubeconfig), e.context.clone())
        }
        // Never under reports/: CI uploads that folder as an artifact.
        None => (format!("{}/kubeconfig", ctx.private_dir), None),
    }
}

/// `~/…` with the home folder spelled out, as a shell would (helm and kubectl get the path as is).
fn expand_home(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => p.to_string(),
    }
}

/// The kubeconfig kubectl would use: `$KUBECONFIG` if set, else `~/.kube/config`.
fn default_kubeconfig() -> String {
    std::env::var("KUBECONFIG").ok().filter(|k| !k.is_empty()).unwrap_or_else(|| expand_home("~/.kube/config"))
}
