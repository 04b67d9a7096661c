//! The observability part of the install phase: kube-prometheus-stack, Tempo and Kiali as far as
//! the scenario's checks read them, Cilium's policy for ambient's host probes, and `istioctl
//! analyze` once the mesh is up.

use super::{
    CommandSpec, Condition, Step, StepId,
    builder::{Builder, HelmRelease, INTO_NAMESPACE, READS_VALUES, ROLLOUT},
    graph::Graph,
    istio::Istio,
};
use crate::{
    common::catalog::{self, Component},
    scenario::KialiAuth,
};

/// kube-prometheus-stack, Tempo and Kiali, beside the Istio chain: they need only its namespaces,
/// base's CRDs and a serving istiod for the Istio config they come with; then `istioctl analyze`
/// of the whole mesh.
pub(super) fn observability(b: &Builder, g: &mut Graph, istio: &Istio, cilium_operator: Option<StepId>) {
    // A `checks:` subset installs only what its checks read (catalog::CheckInfo::reads).
    let wanted = |c: Component| catalog::any_reads(&b.s.checks, c);
    if wanted(Component::Prometheus) {
        prometheus(b, g, istio);
    }
    let telemetry = if wanted(Component::Tempo) { Some(tempo(b, g, istio)) } else { None };
    if wanted(Component::Kiali) {
        kiali(b, g, istio);
    }
    hostprobe_policy(b, g, cilium_operator);
    istioctl_analyze(b, g, istio, telemetry);
}

/// A chart of the observability stack: its values fixture and its release.
struct StackChart<'a> {
    /// Values fixture.
    fixture: &'a str,
    /// Values fixtures merged over it, in order.
    overlays: &'a [&'a str],
    release: HelmRelease<'a>,
}

/// A chart's values files (later ones merged over earlier ones), then its helm command after them,
/// after its namespace and after `needs`. Returns the helm command.
fn install_chart(
    b: &Builder,
    g: &mut Graph,
    istio: &Istio,
    chart: StackChart,
    needs: &[(StepId, &'static str)],
) -> StepId {
    let mut all: Vec<(StepId, &'static str)> = istio.namespace(chart.release.namespace).into_iter().collect();
    let mut files = Vec::new();
    for fixture in std::iter::once(chart.fixture).chain(chart.overlays.iter().copied()) {
        let (w, v) = b.values(fixture);
        all.push((g.add(w, &[]), READS_VALUES));
        files.push(v);
    }
    all.extend_from_slice(needs);
    g.add(b.helm_release(true, &chart.release, &files, false), &all)
}

/// kube-prometheus-stack, its operator's Prometheus, and the monitors that scrape the mesh.
fn prometheus(b: &Builder, g: &mut Graph, istio: &Istio) {
    let t = b.s.timeouts.install.0;
    let chart = StackChart {
        fixture: "values/kube-prometheus-stack.yaml",
        overlays: &[],
        release: HelmRelease {
            name: KPS,
            // prometheus-community/helm-charts README: `helm repo add prometheus-community
            // https://prometheus-community.github.io/helm-charts`.
            repo: "https://prometheus-community.github.io/helm-charts",
            chart: "kube-prometheus-stack",
            version: &b.s.versions.kube_prometheus_stack,
            namespace: "monitoring",
        },
    };
    let kps = install_chart(b, g, istio, chart, &[]);
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

/// Tempo, and the Istio Telemetry that sends the mesh's traces to it. Returns the Telemetry's apply.
fn tempo(b: &Builder, g: &mut Graph, istio: &Istio) -> StepId {
    let chart = StackChart {
        fixture: "values/tempo.yaml",
        overlays: &[],
        release: HelmRelease {
            name: "tempo",
            // grafana-community/helm-charts README (where the tempo chart moved from
            // grafana/helm-charts): `helm repo add grafana-community
            // https://grafana-community.github.io/helm-charts`.
            repo: "https://grafana-community.github.io/helm-charts",
            chart: "tempo",
            version: &b.s.versions.tempo,
            namespace: "tempo",
        },
    };
    let tempo = install_chart(b, g, istio, chart, &[]);
    g.add(
        b.wait("StatefulSet", Some("tempo"), "tempo", Condition::StatefulSetReady, b.s.timeouts.install.0),
        &[(tempo, ROLLOUT)],
    );
    g.add(
        b.fixture_apply("telemetry.yaml", None, &[]),
        &[(
            istio.istiod,
            "Telemetry is Istio config: its CRD comes with base, and istiod's validating webhook must answer (llm-d/llm-d-benchmark#1920)",
        )],
    )
}

/// kube-prometheus-stack's release.
pub(super) const KPS: &str = "kps";

/// The Kiali operator's release.
pub(super) const KIALI_OPERATOR: &str = "kiali-operator";

/// The Kiali operator, and the Kiali it creates in istio-system.
fn kiali(b: &Builder, g: &mut Graph, istio: &Istio) {
    let openid = b.s.kiali.auth == KialiAuth::Openid;
    let chart = StackChart {
        fixture: "values/kiali-operator.yaml",
        overlays: if openid { &["values/kiali-openid.yaml"] } else { &[] },
        release: HelmRelease {
            name: KIALI_OPERATOR,
            // kiali.io docs installation-guide (Helm): `helm repo add kiali
            // https://kiali.org/helm-charts`.
            repo: "https://kiali.org/helm-charts",
            chart: "kiali-operator",
            version: &b.s.versions.kiali,
            namespace: "kiali-operator",
        },
    };
    let into_istio_system = istio
        .namespace("istio-system")
        .map(|(id, _)| (id, "its Kiali CR goes into istio-system (values/kiali-operator.yaml)"));
    // Kiali looks once and remembers: whether the Istio API exists, for the life of its client
    // (kiali v2.29.0 kubernetes/kubernetes.go `IsIstioAPI`), and whether ztunnel's DaemonSet does,
    // for 10 minutes (cache/cache.go `IsAmbientEnabled`, config.go `AmbientCheck: 10 * time.Minute`).
    // Started beside the Istio chain, it could see neither and show bookinfo as outside the mesh.
    let after_ztunnel =
        (istio.ztunnel, "Kiali caches whether Istio and ambient (ztunnel) are there from its first look");
    let mut needs: Vec<(StepId, &'static str)> = into_istio_system.into_iter().chain([after_ztunnel]).collect();
    if openid {
        needs.push((keycloak(b, g, istio), KIALI_SECRET_FIRST));
    }
    let kiali = install_chart(b, g, istio, chart, &needs);
    g.add(
        b.wait("Deployment", Some("istio-system"), "kiali", Condition::DeploymentAvailable, b.s.timeouts.install.0),
        &[(kiali, "the operator creates Kiali from the CR this chart installs")],
    );
}

/// Why the Kiali chart waits for the Keycloak manifest: Kiali reads its client secret only if the
/// Secret's file is there when it starts (kiali v2.29.0 config/config.go, `fileExists` at load).
const KIALI_SECRET_FIRST: &str =
    "Kiali reads the Secret kiali (oidc-secret) only if it exists when Kiali starts (config.go fileExists at load)";

/// Keycloak for Kiali's OpenID login (`kiali.auth: openid`): its namespace, the realm, login and
/// Kiali client Secrets with fresh credentials, Keycloak itself, and a wait until it serves.
/// Returns the apply, which the Kiali chart must follow.
fn keycloak(b: &Builder, g: &mut Graph, istio: &Istio) -> StepId {
    let ns = g.add(b.namespace("keycloak", &[]), &[]);
    let needs: Vec<(StepId, &'static str)> = [(ns, INTO_NAMESPACE)]
        .into_iter()
        .chain(istio.namespace("istio-system").map(|(id, _)| (id, "the Secret kiali goes into istio-system")))
        .collect();
    let apply =
        g.add(b.fixture_apply_with_secrets("keycloak.yaml", None, &[], &["CLIENT_SECRET", "USER_PASSWORD"]), &needs);
    g.add(
        b.wait("Deployment", Some("keycloak"), "keycloak", Condition::DeploymentAvailable, b.s.timeouts.install.0),
        &[(apply, "Keycloak imports the realm at start and is Ready once /health/ready answers")],
    );
    apply
}

/// Cilium's policy that lets the kubelet's probes, which istio-cni SNATs to 169.254.7.127, reach
/// ambient pods under default-deny; when the run installed Cilium, after the CRD is Established:
/// the Cilium chart ships no CRDs, its operator registers them once it runs (cilium v1.19
/// pkg/k8s/apis/cilium.io/client/register.go `RegisterCRDs`, skipped only with
/// `--skip-crd-creation`), and an available operator Deployment does not say it has finished.
fn hostprobe_policy(b: &Builder, g: &mut Graph, cilium_operator: Option<StepId>) {
    let ccnp: Vec<(StepId, &'static str)> = cilium_operator
        .map(|op| {
            let crd = g.add(
                b.wait(
                    "CustomResourceDefinition",
                    None,
                    "ciliumclusterwidenetworkpolicies.cilium.io",
                    Condition::CrdEstablished,
                    b.s.timeouts.install.0,
                ),
                &[(op, "Cilium's operator registers its CRDs when it runs")],
            );
            (crd, "CiliumClusterwideNetworkPolicy is served once its CRD is Established")
        })
        .into_iter()
        .collect();
    g.add(b.fixture_apply("cilium-allow-ambient-hostprobes.yaml", None, &[]), &ccnp);
}

/// `istioctl analyze` of the whole mesh, advisory: its findings go to the evidence.
fn istioctl_analyze(b: &Builder, g: &mut Graph, istio: &Istio, telemetry: Option<StepId>) {
    let mut analyze =
        vec!["analyze".to_string(), "--all-namespaces".into(), "--kubeconfig".into(), b.kubeconfig.clone()];
    if let Some(c) = &b.context {
        analyze.extend(["--context".into(), c.clone()]);
    }
    g.add(
        Step::Command {
            name: "istioctl analyze".into(),
            command: CommandSpec::new("istioctl", analyze, b.s.timeouts.install.0),
            advisory: Some("istioctl-analyze.txt".into()),
            creates_cluster: false,
            installs: None,
        },
        &[(istio.gateway, "analyzes the mesh once every Istio chart is up")]
            .into_iter()
            .chain(telemetry.map(|t| (t, "and the Istio config the install applies")))
            .collect::<Vec<_>>(),
    );
}
