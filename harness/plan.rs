//! The plan: every step a run takes, in order, computed from the scenario without touching anything.
//!
//! `meshcheck plan` prints it and the executor runs exactly it, so what a user reviews is what runs.
//! The Istio install order is the one of istio.io's "Install with Helm" for ambient mode at Istio
//! 1.30 (docs/ambient/install/helm: base → Gateway API CRDs → istiod → cni → ztunnel → gateway), and
//! the upgrade order that of "Upgrade with Helm" (docs/ambient/upgrade/helm: base → istiod → cni →
//! ztunnel → gateway); then the observability stack and bookinfo.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    catalog::{self, Stage},
    names::{AMBIENT, BOOKINFO_NS, INSIDE_NS, OUTSIDE_NS, Phase, RUN_LABEL},
    runner::CommandSpec,
    scenario::{Provider, Scenario},
    waits::Condition,
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
    /// Phases in order.
    pub phases: Vec<PhasePlan>,
}

/// One phase and its steps.
#[derive(Debug, Clone, Serialize)]
pub struct PhasePlan {
    /// Which phase.
    pub name: Phase,
    /// Steps in order.
    pub steps: Vec<Step>,
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
            content: crate::fixtures::text(fixture).to_string(),
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

    /// The steps of one Istio chart: its values file(s), the helm command, the rollout wait.
    fn istio_release(&self, c: IstioChart, version: &str, install: bool) -> Vec<Step> {
        let mut steps = Vec::new();
        let generated = c.ports_from.map(|gateway| {
            let path = format!("{}/values/istio-gateway-ports.yaml", self.ctx.run_dir);
            steps.push(Step::GatewayPorts { gateway, node_port: self.s.ingress.node_port, path: path.clone() });
            path
        });
        let (w, values) = self.values(c.fixture);
        steps.push(w);
        let files: Vec<String> = std::iter::once(values).chain(generated).collect();
        steps.push(self.helm_release(install, c.release, c.chart, version, c.namespace, &files, c.helm_wait));
        if let Some((kind, name, condition)) = c.rollout {
            steps.push(self.wait(kind, Some(c.namespace), name, condition, self.s.timeouts.install.0));
        }
        steps
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

    /// The test clients of the mTLS check, each in a namespace of the run's own.
    fn mesh_clients(&self, steps: &mut Vec<Step>) {
        steps.push(self.namespace(OUTSIDE_NS, &[]));
        steps.push(self.namespace(INSIDE_NS, &[AMBIENT]));
        steps.push(self.fixture_apply("mesh-clients.yaml", None, &[]));
        let t = self.s.timeouts.deploy.0;
        steps.push(self.wait("Pod", Some(OUTSIDE_NS), "curl-outside", Condition::PodReady, t));
        steps.push(self.wait("Pod", Some(INSIDE_NS), "curl-inside", Condition::PodReady, t));
    }

    fn fixture_apply(&self, name: &str, ns: Option<&str>, vars: &[(&str, &str)]) -> Step {
        let objects = crate::fixtures::manifest_rendered(name, vars)
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

    fn checks(&self, stage: Stage) -> Vec<Step> {
        catalog::CATALOG
            .iter()
            .filter(|c| c.stage == stage && self.s.runs_check(c.name))
            .map(|c| Step::Check { name: c.name.into(), asserts: c.asserts.into() })
            .collect()
    }
}

/// Splits a phase's executable steps (checks excluded) into batches, in order: a run of
/// consecutive waits is one batch, awaited concurrently (waits only observe, so they cannot depend
/// on each other); every other step is a batch of its own.
pub fn batches(steps: &[Step]) -> Vec<Vec<&Step>> {
    let mut out: Vec<Vec<&Step>> = Vec::new();
    for step in steps.iter().filter(|s| !matches!(s, Step::Check { .. })) {
        match out.last_mut() {
            Some(last) if matches!(step, Step::Wait { .. }) && matches!(last[0], Step::Wait { .. }) => last.push(step),
            _ => out.push(vec![step]),
        }
    }
    out
}

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
    let mut phases = vec![PhasePlan { name: Phase::Preflight, steps: b.checks(Stage::Preflight) }];
    phases.push(PhasePlan { name: Phase::Provision, steps: provision(&b) });
    if s.installs() {
        phases.push(PhasePlan { name: Phase::Install, steps: install(&b, &s.versions.istio, false) });
        phases.push(PhasePlan { name: Phase::Deploy, steps: deploy(&b) });
    } else {
        // Observe only: the mesh and bookinfo are the user's; the run adds just its test clients.
        let mut steps = Vec::new();
        b.mesh_clients(&mut steps);
        steps.extend(b.checks(Stage::Deploy));
        phases.push(PhasePlan { name: Phase::Deploy, steps });
    }
    let gate = s.versions.upgrade_to.is_some();
    phases.push(PhasePlan { name: if gate { Phase::Baseline } else { Phase::Checks }, steps: b.checks(Stage::Checks) });
    if let Some(target) = &s.versions.upgrade_to {
        let mut steps =
            vec![Step::Traffic { action: TrafficAction::Start }, Step::Traffic { action: TrafficAction::During }];
        steps.extend(install(&b, target, true));
        steps.push(Step::Traffic { action: TrafficAction::After });
        steps.push(Step::Traffic { action: TrafficAction::Stop });
        steps.extend(b.checks(Stage::Upgrade));
        phases.push(PhasePlan { name: Phase::Upgrade, steps });
        phases.push(PhasePlan { name: Phase::Candidate, steps: b.checks(Stage::Checks) });
    }
    phases.push(PhasePlan { name: Phase::Cleanup, steps: cleanup(&b) });
    Plan {
        scenario: s.name.clone(),
        provider: s.provider,
        run_id: ctx.run_id.clone(),
        run_dir: ctx.run_dir.clone(),
        cluster_name: cluster,
        kubeconfig,
        context,
        phases,
    }
}

fn provision(b: &Builder) -> Vec<Step> {
    let s = b.s;
    let t = s.timeouts.provision.0;
    let mut steps = Vec::new();
    let Some(cluster) = &b.cluster else {
        steps.push(b.wait("Node", None, "", Condition::NodesReady, t));
        steps.extend(b.checks(Stage::Provision));
        return steps;
    };
    let host = match s.provider {
        Provider::Kind => {
            let (w, path) = b.generated("kind-config.yaml", crate::providers::kind_config(s, cluster));
            steps.push(w);
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
            steps.push(Step::Command {
                name: "create kind cluster".into(),
                command: CommandSpec::new("kind", args, t),
                advisory: None,
                creates_cluster: true,
            });
            format!("{cluster}-control-plane")
        }
        Provider::K3d => {
            let deadline = crate::providers::k3d_create_deadline(s);
            let create = CommandSpec::new("k3d", crate::providers::k3d_create_args(s, cluster), deadline)
                .env("K3D_FIX_MOUNTS", "1");
            steps.push(Step::Command {
                name: "create k3d cluster".into(),
                command: create,
                advisory: None,
                creates_cluster: true,
            });
            let kc = ["kubeconfig", "write", cluster, "--output", &b.kubeconfig];
            steps.push(Step::Command {
                name: "export kubeconfig".into(),
                command: CommandSpec::new("k3d", kc, t),
                advisory: None,
                creates_cluster: false,
            });
            for node in crate::providers::k3d_nodes(s, cluster) {
                let args = ["exec", &node, "sh", "-c", crate::providers::K3D_MOUNT_SCRIPT];
                steps.push(Step::Command {
                    name: format!("shared mounts on {node}"),
                    command: CommandSpec::new("docker", args, t),
                    advisory: None,
                    creates_cluster: false,
                });
            }
            format!("k3d-{cluster}-server-0")
        }
        Provider::Existing => unreachable!("handled above"),
    };
    if let Some(archive) = &s.cluster.image_archive {
        let command = match s.provider {
            Provider::Kind => CommandSpec::new("kind", ["load", "image-archive", archive, "--name", cluster], t),
            _ => CommandSpec::new("k3d", ["image", "import", archive, "--cluster", cluster], t),
        };
        steps.push(Step::Command {
            name: "load cached images into the nodes".into(),
            command,
            advisory: None,
            creates_cluster: false,
        });
    }
    let (w1, base) = b.values("values/cilium.yaml");
    let (w2, cluster_values) =
        b.generated("values/cilium-cluster.yaml", format!("k8sServiceHost: {host}\nk8sServicePort: 6443\n"));
    steps.extend([w1, w2, b.repo_add("cilium", "https://helm.cilium.io/")]);
    steps.push(b.helm_release(
        true,
        "cilium",
        "cilium/cilium",
        &s.versions.cilium,
        "kube-system",
        &[base, cluster_values],
        false,
    ));
    steps.push(b.wait("DaemonSet", Some("kube-system"), "cilium", Condition::DaemonSetReady, t));
    steps.push(b.wait("DaemonSet", Some("kube-system"), "cilium-envoy", Condition::DaemonSetReady, t));
    steps.push(b.wait("Deployment", Some("kube-system"), "cilium-operator", Condition::DeploymentAvailable, t));
    steps.push(b.wait("Node", None, "", Condition::NodesReady, t));
    steps.push(b.wait("Deployment", Some("kube-system"), "coredns", Condition::DeploymentAvailable, t));
    steps.extend(b.checks(Stage::Provision));
    steps
}

/// The Istio part of the install, or (with `upgrade`) the documented in-place upgrade order:
/// base (CRDs) → istiod → cni → ztunnel → gateway, each with its full values file and a rollout
/// wait (field guide §4.4).
fn install(b: &Builder, istio: &str, upgrade: bool) -> Vec<Step> {
    let s = b.s;
    let t = s.timeouts.install.0;
    let mut steps = Vec::new();
    let install = !upgrade;
    if install {
        for ns in ["istio-system", "istio-ingress", "monitoring", "tempo", "kiali-operator"] {
            steps.push(b.namespace(ns, &[]));
        }
    }
    steps.push(b.repo_add("istio", ISTIO_REPO));
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
    steps.extend(b.istio_release(base, istio, install));
    if !upgrade {
        let url = format!(
            "https://github.com/kubernetes-sigs/gateway-api/releases/download/{}/standard-install.yaml",
            s.versions.gateway_api
        );
        steps.push(Step::Apply {
            source: Source::Url { url: s.mirrored(&url) },
            namespace: None,
            objects: Vec::new(),
            dry_run_first: false,
        });
        steps.push(b.wait(
            "CustomResourceDefinition",
            None,
            "gateways.gateway.networking.k8s.io",
            Condition::CrdEstablished,
            t,
        ));
    }
    // Install (istio.io ambient/install/helm, Istio 1.30): base → Gateway API CRDs → istiod → cni →
    // ztunnel → gateway. Upgrade (istio.io ambient/upgrade/helm): base → istiod → cni → ztunnel →
    // gateway, "the control plane must be upgraded before Istio CNI". One order serves both.
    for c in [istiod, cni, ztunnel, gateway] {
        steps.extend(b.istio_release(c, istio, install));
    }
    if upgrade {
        return steps;
    }
    let mut analyze =
        vec!["analyze".to_string(), "--all-namespaces".into(), "--kubeconfig".into(), b.kubeconfig.clone()];
    if let Some(c) = &b.context {
        analyze.extend(["--context".into(), c.clone()]);
    }
    steps.push(Step::Command {
        name: "istioctl analyze".into(),
        command: CommandSpec::new("istioctl", analyze, t),
        advisory: Some("istioctl-analyze.txt".into()),
        creates_cluster: false,
    });
    observability(b, &mut steps);
    steps
}

fn observability(b: &Builder, steps: &mut Vec<Step>) {
    let s = b.s;
    let t = s.timeouts.install.0;
    steps.push(b.repo_add("prometheus-community", "https://prometheus-community.github.io/helm-charts"));
    let (w, v) = b.values("values/kube-prometheus-stack.yaml");
    steps.push(w);
    steps.push(b.helm_release(
        true,
        "kps",
        "prometheus-community/kube-prometheus-stack",
        &s.versions.kube_prometheus_stack,
        "monitoring",
        &[v],
        false,
    ));
    steps.push(b.wait("Deployment", Some("monitoring"), "prom-operator", Condition::DeploymentAvailable, t));
    steps.push(b.wait("StatefulSet", Some("monitoring"), "prometheus-prom-prometheus", Condition::StatefulSetReady, t));
    steps.push(b.fixture_apply("istio-monitors.yaml", None, &[]));
    steps.push(b.repo_add("grafana-community", "https://grafana-community.github.io/helm-charts"));
    let (w, v) = b.values("values/tempo.yaml");
    steps.push(w);
    steps.push(b.helm_release(true, "tempo", "grafana-community/tempo", &s.versions.tempo, "tempo", &[v], false));
    steps.push(b.wait("StatefulSet", Some("tempo"), "tempo", Condition::StatefulSetReady, t));
    steps.push(b.fixture_apply("telemetry.yaml", None, &[]));
    steps.push(b.repo_add("kiali", "https://kiali.org/helm-charts"));
    let (w, v) = b.values("values/kiali-operator.yaml");
    steps.push(w);
    steps.push(b.helm_release(
        true,
        "kiali-operator",
        "kiali/kiali-operator",
        &s.versions.kiali,
        "kiali-operator",
        &[v],
        false,
    ));
    steps.push(b.wait("Deployment", Some("istio-system"), "kiali", Condition::DeploymentAvailable, t));
    steps.push(b.fixture_apply("cilium-allow-ambient-hostprobes.yaml", None, &[]));
}

fn deploy(b: &Builder) -> Vec<Step> {
    let s = b.s;
    let t = s.timeouts.deploy.0;
    let ns = Some(BOOKINFO_NS);
    let release = s.versions.bookinfo();
    let mut steps = vec![b.namespace(BOOKINFO_NS, &[AMBIENT])];
    for file in
        ["platform/kube/bookinfo.yaml", "platform/kube/bookinfo-versions.yaml", "networking/bookinfo-gateway.yaml"]
    {
        steps.push(Step::Apply {
            source: Source::Url { url: bookinfo_url(s, file) },
            namespace: ns.map(String::from),
            objects: Vec::new(),
            dry_run_first: true,
        });
    }
    let hub = crate::fixtures::istio_hub(release);
    steps.push(b.fixture_apply("probe-target.yaml", ns, &[("BOOKINFO_HUB", hub)]));
    b.mesh_clients(&mut steps);
    for d in ["details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1", "probe-target"] {
        steps.push(b.wait("Deployment", ns, d, Condition::DeploymentAvailable, t));
    }
    steps.extend(b.checks(Stage::Deploy));
    steps
}

/// A file of the bookinfo sample at the scenario's bookinfo release (istio/istio samples/bookinfo).
fn bookinfo_url(s: &Scenario, file: &str) -> String {
    s.mirrored(&format!(
        "https://raw.githubusercontent.com/istio/istio/{}/samples/bookinfo/{file}",
        s.versions.bookinfo()
    ))
}

fn cleanup(b: &Builder) -> Vec<Step> {
    let t = std::time::Duration::from_secs(300);
    match (&b.cluster, b.s.provider) {
        (Some(c), Provider::Kind) => vec![Step::Command {
            name: "delete kind cluster".into(),
            command: CommandSpec::new("kind", ["delete", "cluster", "--name", c], t),
            advisory: None,
            creates_cluster: false,
        }],
        (Some(c), Provider::K3d) => vec![Step::Command {
            name: "delete k3d cluster".into(),
            command: CommandSpec::new("k3d", ["cluster", "delete", c], t),
            advisory: None,
            creates_cluster: false,
        }],
        _ => vec![Step::DeleteOwnedNamespaces { run: b.run_label() }],
    }
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

/// Renders the plan for people: one numbered line per step, grouped by phase.
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
    let mut n = 0;
    for phase in &plan.phases {
        let _ = writeln!(out, "\n== {} ==", phase.name);
        if phase.steps.is_empty() {
            let _ = writeln!(out, "  (nothing)");
        }
        for step in &phase.steps {
            n += 1;
            let line = match step {
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
            let _ = writeln!(out, "{n:3}. {line}");
        }
    }
    out
}
