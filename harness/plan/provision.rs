//! The provision phase: the kind or k3d cluster (created without a CNI and without kube-proxy,
//! which Cilium replaces), Cilium on it, and the nodes Ready. On an existing cluster, only the
//! wait for its nodes.

use super::{
    CommandSpec, Condition, Step, StepId,
    builder::{Builder, FROM_REPOSITORY, READS_VALUES, ROLLOUT},
    graph::Graph,
    providers,
};
use crate::{common::catalog::Stage, scenario::Provider};

/// The cluster and Cilium. Returns the wait for Cilium's operator, which registers Cilium's CRDs,
/// when the run installs Cilium.
pub(super) fn provision(b: &Builder, g: &mut Graph) -> Option<StepId> {
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
            let (w, path) = b.generated("kind-config.yaml", providers::kind_config(s, cluster));
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
            let deadline = providers::k3d_create_deadline(s);
            let create =
                CommandSpec::new("k3d", providers::k3d_create_args(s, cluster), deadline).env("K3D_FIX_MOUNTS", "1");
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
            for node in providers::k3d_nodes(s, cluster) {
                let args = ["exec", &node, "sh", "-c", providers::K3D_MOUNT_SCRIPT];
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
