//! The observability part of the install phase: kube-prometheus-stack, Tempo and Kiali as far as
//! the scenario's checks read them, Cilium's policy for ambient's host probes, and `istioctl
//! analyze` once the mesh is up.

use super::{
    CommandSpec, Condition, Step, StepId,
    builder::{Builder, FROM_REPOSITORY, READS_VALUES, ROLLOUT},
    graph::Graph,
    istio::Istio,
};
use crate::common::catalog::{self, Component};

/// kube-prometheus-stack, Tempo and Kiali, beside the Istio chain: they need only its namespaces,
/// base's CRDs and a serving istiod for the Istio config they come with; then `istioctl analyze`
/// of the whole mesh.
pub(super) fn observability(b: &Builder, g: &mut Graph, istio: &Istio, cilium_operator: Option<StepId>) {
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
