//! The Istio part of the install phase, and the same chain as the upgrade phase's in-place upgrade.
//!
//! The install order is the one of istio.io's "Install with Helm" for ambient mode at Istio 1.30
//! (docs/ambient/install/helm: base → Gateway API CRDs → istiod → cni → ztunnel → gateway), and the
//! upgrade order that of "Upgrade with Helm" (docs/ambient/upgrade/helm: base → istiod → cni →
//! ztunnel → gateway); each is a chain in the graph.

use super::{
    Condition, Source, Step, StepId,
    builder::{APPLIED, Builder, HelmRelease, INTO_NAMESPACE, READS_VALUES, ROLLOUT, bookinfo_url},
    graph::Graph,
};
use crate::scenario::Scenario;

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

impl<'a> IstioChart<'a> {
    /// A chart that installs into istio-system, up once `rollout` is.
    fn in_istio_system(
        release: &'a str,
        chart: &'a str,
        fixture: &'a str,
        rollout: Option<(&'a str, &'a str, Condition)>,
    ) -> IstioChart<'a> {
        IstioChart { release, chart, namespace: "istio-system", fixture, ports_from: None, helm_wait: false, rollout }
    }
}

/// The charts of the install guide, each with its full values file (field guide §4.4).
struct IstioCharts<'a> {
    base: IstioChart<'a>,
    istiod: IstioChart<'a>,
    cni: IstioChart<'a>,
    ztunnel: IstioChart<'a>,
    gateway: IstioChart<'a>,
}

/// The charts of Istio 1.30's ambient install with Helm: base, istiod, cni and ztunnel into
/// istio-system, the ingress gateway into istio-ingress (istio.io docs/ambient/install/helm).
fn charts(s: &Scenario) -> IstioCharts<'static> {
    let chart = IstioChart::in_istio_system;
    IstioCharts {
        base: IstioChart { helm_wait: true, ..chart("istio-base", "base", "values/istio-base.yaml", None) },
        istiod: chart(
            "istiod",
            "istiod",
            "values/istiod.yaml",
            Some(("Deployment", "istiod", Condition::DeploymentAvailable)),
        ),
        cni: chart(
            "istio-cni",
            "cni",
            "values/istio-cni.yaml",
            Some(("DaemonSet", "istio-cni-node", Condition::DaemonSetReady)),
        ),
        ztunnel: chart(
            "ztunnel",
            "ztunnel",
            "values/ztunnel.yaml",
            Some(("DaemonSet", "ztunnel", Condition::DaemonSetReady)),
        ),
        gateway: IstioChart {
            namespace: "istio-ingress",
            ports_from: Some(Source::Url { url: bookinfo_url(s, "networking/bookinfo-gateway.yaml") }),
            ..chart(
                "istio-ingress",
                "gateway",
                "values/istio-gateway.yaml",
                Some(("Deployment", "istio-ingress", Condition::DeploymentAvailable)),
            )
        },
    }
}

/// Istio's chart repository (istio.io docs/ambient/install/helm, Istio 1.30: `helm repo add istio
/// https://istio-release.storage.googleapis.com/charts`).
const ISTIO_REPO: &str = "https://istio-release.storage.googleapis.com/charts";

/// The steps of the Istio chain other steps need.
pub(super) struct Istio {
    /// The namespaces the first install creates, by name.
    namespaces: Vec<(&'static str, StepId)>,
    /// istiod available.
    pub(super) istiod: StepId,
    /// ztunnel ready on every node.
    pub(super) ztunnel: StepId,
    /// The ingress gateway available.
    pub(super) gateway: StepId,
}

impl Istio {
    /// The need on a namespace the first install created; none on an upgrade.
    pub(super) fn namespace(&self, name: &str) -> Option<(StepId, &'static str)> {
        namespace_need(&self.namespaces, name)
    }
}

/// The need on the namespace `name` among those created, if it is one of them.
fn namespace_need(namespaces: &[(&'static str, StepId)], name: &str) -> Option<(StepId, &'static str)> {
    namespaces.iter().find(|(n, _)| *n == name).map(|&(_, id)| (id, INTO_NAMESPACE))
}

/// The namespaces of the first install, the run's own: Istio's and its gateway's, and those of the
/// observability stack, which installs beside the chain.
fn namespaces(b: &Builder, g: &mut Graph) -> Vec<(&'static str, StepId)> {
    ["istio-system", "istio-ingress", "monitoring", "tempo", "kiali-operator"]
        .into_iter()
        .map(|ns| (ns, g.add(b.namespace(ns, &[]), &[])))
        .collect()
}

/// The Istio part of the install, or (with `upgrade`) the documented in-place upgrade order:
/// base (CRDs) → istiod → cni → ztunnel → gateway, each with its full values file and a rollout
/// wait (field guide §4.4), each after the one before it is up. `after` is what the chain's first
/// link waits for besides.
pub(super) fn istio(
    b: &Builder,
    g: &mut Graph,
    version: &str,
    upgrade: bool,
    after: &[(StepId, &'static str)],
) -> Istio {
    let install = !upgrade;
    let namespaces = if install { namespaces(b, g) } else { Vec::new() };
    let IstioCharts { base, istiod, cni, ztunnel, gateway } = charts(b.s);
    // Install (istio.io ambient/install/helm, Istio 1.30): base → Gateway API CRDs → istiod → cni →
    // ztunnel → gateway. Upgrade (istio.io ambient/upgrade/helm): base → istiod → cni → ztunnel →
    // gateway, "the control plane must be upgraded before Istio CNI". One chain serves both.
    let mut needs: Vec<(StepId, &'static str)> = after.to_vec();
    needs.extend(namespace_need(&namespaces, "istio-system"));
    let base = istio_release(b, g, base, version, install, &needs);
    let before_istiod = if upgrade {
        (base, "istio.io ambient/upgrade/helm: base (the CRDs) before istiod")
    } else {
        gateway_api_crds(b, g, base)
    };
    let istiod = istio_release(b, g, istiod, version, install, &[before_istiod]);
    let cni_after_istiod = "the control plane before istio-cni: CNI 1.x works with control plane 1.x and 1.x+1 (istio.io ambient/upgrade/helm)";
    let cni = istio_release(b, g, cni, version, install, &[(istiod, cni_after_istiod)]);
    let ztunnel_after_cni = (cni, "the documented order: istio-cni up, then ztunnel");
    let ztunnel = istio_release(b, g, ztunnel, version, install, &[ztunnel_after_cni]);
    let mut needs = vec![(ztunnel, "the documented order: ztunnel up, then the gateway")];
    needs.extend(namespace_need(&namespaces, "istio-ingress"));
    let gateway = istio_release(b, g, gateway, version, install, &needs);
    Istio { namespaces, istiod, ztunnel, gateway }
}

/// The Gateway API CRDs of the pinned release, applied after base and awaited Established. Returns
/// istiod's need on them (istio.io ambient/install/helm).
fn gateway_api_crds(b: &Builder, g: &mut Graph, base: StepId) -> (StepId, &'static str) {
    let s = b.s;
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
    let crd = "gateways.gateway.networking.k8s.io";
    let established = g.add(
        b.wait("CustomResourceDefinition", None, crd, Condition::CrdEstablished, s.timeouts.install.0),
        &[(apply, APPLIED)],
    );
    (established, "istio.io ambient/install/helm: istiod after the Gateway API CRDs")
}

/// The steps of one Istio chart: its values file(s), the helm command (after `needs`), the
/// rollout wait. Returns the step after which the chart is up: its rollout wait, or for a chart
/// without one (`base`, which `helm --wait` covers) the helm command.
fn istio_release(
    b: &Builder,
    g: &mut Graph,
    c: IstioChart,
    version: &str,
    install: bool,
    needs: &[(StepId, &'static str)],
) -> StepId {
    let mut needs = needs.to_vec();
    let generated = c.ports_from.map(|gateway| {
        let path = format!("{}/values/istio-gateway-ports.yaml", b.ctx.run_dir);
        let ports = g.add(Step::GatewayPorts { gateway, node_port: b.s.ingress.node_port, path: path.clone() }, &[]);
        needs.push((ports, "helm reads the Service ports written from bookinfo's Gateway"));
        path
    });
    let (w, values) = b.values(c.fixture);
    needs.push((g.add(w, &[]), READS_VALUES));
    let files: Vec<String> = std::iter::once(values).chain(generated).collect();
    let release = HelmRelease { name: c.release, repo: ISTIO_REPO, chart: c.chart, version, namespace: c.namespace };
    let helm = g.add(b.helm_release(install, &release, &files, c.helm_wait), &needs);
    match c.rollout {
        Some((kind, name, condition)) => {
            g.add(b.wait(kind, Some(c.namespace), name, condition, b.s.timeouts.install.0), &[(helm, ROLLOUT)])
        }
        None => helm,
    }
}
