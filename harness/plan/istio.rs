//! The Istio part of the install phase, and the same chain as the upgrade phase's in-place upgrade.
//!
//! The install order is the one of istio.io's "Install with Helm" for ambient mode at Istio 1.30
//! (docs/ambient/install/helm: base → Gateway API CRDs → istiod → cni → ztunnel → gateway), and the
//! upgrade order that of "Upgrade with Helm" (docs/ambient/upgrade/helm: base → istiod → cni →
//! ztunnel → gateway); each is a chain in the graph.

use super::{
    Condition, Source, Step, StepId,
    builder::{APPLIED, Builder, FROM_REPOSITORY, INTO_NAMESPACE, READS_VALUES, ROLLOUT},
    deploy::bookinfo_url,
    graph::Graph,
};

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
        self.namespaces.iter().find(|(n, _)| *n == name).map(|&(_, id)| (id, INTO_NAMESPACE))
    }
}

/// The Istio part of the install, or (with `upgrade`) the documented in-place upgrade order:
/// base (CRDs) → istiod → cni → ztunnel → gateway, each with its full values file and a rollout
/// wait (field guide §4.4), each after the one before it is up. `after` is what the chain's first
/// link waits for besides.
pub(super) fn istio(b: &Builder, g: &mut Graph, istio: &str, upgrade: bool, after: &[(StepId, &'static str)]) -> Istio {
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
    let base = istio_release(b, g, base, istio, install, &needs);
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
    let istiod = istio_release(b, g, istiod, istio, install, &[before_istiod, repo]);
    let cni = istio_release(
        b,
        g,
        cni,
        istio,
        install,
        &[
            (
                istiod,
                "the control plane before istio-cni: CNI 1.x works with control plane 1.x and 1.x+1 (istio.io ambient/upgrade/helm)",
            ),
            repo,
        ],
    );
    let ztunnel = istio_release(
        b,
        g,
        ztunnel,
        istio,
        install,
        &[(cni, "the documented order: istio-cni up, then ztunnel"), repo],
    );
    let mut needs = vec![(ztunnel, "the documented order: ztunnel up, then the gateway")];
    needs.extend(ns_need("istio-ingress"));
    needs.push(repo);
    let gateway = istio_release(b, g, gateway, istio, install, &needs);
    Istio { namespaces, istiod, ztunnel, gateway }
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
    let helm = g.add(b.helm_release(install, c.release, c.chart, version, c.namespace, &files, c.helm_wait), &needs);
    match c.rollout {
        Some((kind, name, condition)) => {
            g.add(b.wait(kind, Some(c.namespace), name, condition, b.s.timeouts.install.0), &[(helm, ROLLOUT)])
        }
        None => helm,
    }
}
