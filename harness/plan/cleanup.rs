//! The cleanup phase: delete the cluster the run created, or on an existing cluster what the run
//! installed and the namespaces it created.

use super::{
    CommandSpec, ObjectRef, Step,
    builder::{Builder, command},
    graph::Graph,
};
use crate::scenario::Provider;

/// The API groups whose CRDs the run's charts and manifests bring: Istio's (`*.istio.io`), the
/// Gateway API, Prometheus Operator's (kube-prometheus-stack) and Kiali's (kiali-operator). A CRD
/// of another group is never deleted, whoever made it.
const CRD_GROUPS: &[&str] = &["istio.io", "gateway.networking.k8s.io", "monitoring.coreos.com", "kiali.io"];

/// How long each uninstall (and each custom resource's deletion before it) may take.
const UNINSTALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// `kind`/`k3d` delete the whole cluster. On an existing cluster: the releases the run installed,
/// newest first (istio.io docs/ambient/install/helm "Uninstall": gateway, ztunnel, istio-cni,
/// istiod, base), then what its install steps applied outside its namespaces and the CRDs helm
/// keeps, then the namespaces it created.
pub(super) fn cleanup(b: &Builder, g: &mut Graph) {
    let t = UNINSTALL_TIMEOUT;
    let step = match (&b.cluster, b.s.provider) {
        (Some(c), Provider::Kind) => {
            command("delete kind cluster", CommandSpec::new("kind", ["delete", "cluster", "--name", c], t))
        }
        (Some(c), Provider::K3d) => command("delete k3d cluster", CommandSpec::new("k3d", ["cluster", "delete", c], t)),
        _ => {
            let installed: Vec<_> = g
                .steps()
                .filter_map(|s| match s {
                    Step::Command { installs: Some(r), .. } => Some(r.clone()),
                    _ => None,
                })
                .collect();
            for release in installed.iter().rev() {
                let step = Step::Uninstall {
                    delete_first: operated(&release.name),
                    delete_after: operator_made(&release.name),
                    timeout_secs: t.as_secs(),
                    command: b.helm_uninstall(release, t),
                    release: release.clone(),
                };
                g.add(step, &[]);
            }
            if !installed.is_empty() {
                g.add(Step::DeleteOwnedObjects { crd_groups: CRD_GROUPS.iter().map(|g| g.to_string()).collect() }, &[]);
            }
            Step::DeleteOwnedNamespaces { run: b.run_label() }
        }
    };
    g.add(step, &[]);
}

/// What a release's operator creates outside the release's manifest, so that `helm uninstall`
/// leaves it: prometheus-operator's kubelet Service and its Endpoints in kube-system (the chart
/// passes `--kubelet-service=kube-system/<fullname>-kubelet`, kube-prometheus-stack 77.0.0
/// templates/prometheus-operator/deployment.yaml, values `prometheusOperator.kubeletService`;
/// prometheus-operator v0.85.0 pkg/kubelet/controller.go `syncService`, `syncEndpoints`; the chart's
/// README: "you have to manually remove the remaining … kubelet service"). The name follows
/// `fullnameOverride: prom` of values/kube-prometheus-stack.yaml. Cleanup deletes each only when it
/// was not on the cluster before the release's install ([`crate::cluster::owned`]).
pub fn operator_made(release: &str) -> Vec<ObjectRef> {
    let kube_system = |kind: &str, name: &str| ObjectRef {
        api_version: "v1".into(),
        kind: kind.into(),
        namespace: "kube-system".into(),
        name: name.into(),
    };
    match release {
        super::observability::KPS => {
            vec![kube_system("Service", "prom-kubelet"), kube_system("Endpoints", "prom-kubelet")]
        }
        _ => Vec::new(),
    }
}

/// The custom resources a release's operator made objects from, which go before the operator:
/// "remember to delete the Kiali CR first before uninstalling the operator to give the operator a
/// chance to uninstall and remove all the Kiali Server resources"; otherwise the CR's finalizer
/// holds its namespace in Terminating forever (kiali-operator 2.29.0 templates/NOTES.txt). The CR
/// is the one `values/kiali-operator.yaml` has the chart create (`cr.name` kiali, `cr.namespace`
/// istio-system; kiali-operator 2.29.0 templates/kiali-cr.yaml, apiVersion kiali.io/v1alpha1).
fn operated(release: &str) -> Vec<ObjectRef> {
    match release {
        super::observability::KIALI_OPERATOR => vec![ObjectRef {
            api_version: "kiali.io/v1alpha1".into(),
            kind: "Kiali".into(),
            namespace: "istio-system".into(),
            name: "kiali".into(),
        }],
        _ => Vec::new(),
    }
}
