//! The provision phase: the kind or k3d cluster (created without a CNI and without kube-proxy,
//! which Cilium replaces), Cilium on it, and the nodes Ready. On an existing cluster, only the
//! wait for its nodes.

use super::{
    CommandSpec, Condition, Step, StepId,
    builder::{Builder, HelmRelease, READS_VALUES, ROLLOUT, command},
    graph::Graph,
    providers,
};
use crate::{common::catalog::Stage, scenario::Provider};

/// The cluster and Cilium. Returns the wait for Cilium's operator, which registers Cilium's CRDs,
/// when the run installs Cilium.
pub(super) fn provision(b: &Builder, g: &mut Graph) -> Option<StepId> {
    let s = b.s;
    let Some(cluster) = &b.cluster else {
        let nodes = Condition::NodesReady { count: None };
        g.add(b.wait("Node", None, "", nodes, s.timeouts.provision.0), &[]);
        g.checks(s, Stage::Provision);
        return None;
    };
    let mut created = match s.provider {
        Provider::Kind => create_kind(b, g, cluster),
        Provider::K3d => create_k3d(b, g, cluster),
        Provider::Existing => unreachable!("handled above"),
    };
    if let Some(archive) = &s.cluster.image_archive {
        let load = load_image_archive(b, g, cluster, archive, &[], created.create);
        created.cilium_needs.push((
            load,
            "Cilium starts the first pods: their images come from the archive, so it is loaded first (the rest overlaps it)",
        ));
    }
    if let Some(archive) = &s.cluster.workload_image_archive {
        load_image_archive(b, g, cluster, archive, &worker_nodes(b, cluster), created.create);
    }
    let operator = cilium(b, g, &created.api_host, &created.cilium_needs);
    g.checks(s, Stage::Provision);
    Some(operator)
}

/// A cluster the run creates, as Cilium's install sees it.
struct Created {
    /// The control-plane node, where Cilium's agent reaches the API server: without kube-proxy, the
    /// `kubernetes` Service does not route until Cilium itself does.
    api_host: String,
    /// The step that creates the cluster.
    create: StepId,
    /// The steps Cilium's install needs from the cluster's creation.
    cilium_needs: Vec<(StepId, &'static str)>,
}

/// The kind cluster: its config written, then `kind create cluster` with it.
fn create_kind(b: &Builder, g: &mut Graph, cluster: &str) -> Created {
    let t = b.s.timeouts.provision.0;
    let (w, path) = b.generated("kind-config.yaml", providers::kind_config(b.s, cluster));
    let config = g.add(w, &[]);
    let args =
        ["create", "cluster", "--name", cluster, "--config", &path, "--kubeconfig", &b.kubeconfig, "--wait", "0s"];
    let create = g.add(
        Step::Command {
            name: "create kind cluster".into(),
            command: CommandSpec::new("kind", args, t),
            advisory: None,
            creates_cluster: true,
            installs: None,
        },
        &[(config, "kind reads the cluster config written here")],
    );
    let needs = vec![(create, "helm installs into the cluster kind creates, with the kubeconfig it writes")];
    Created { api_host: format!("{cluster}-control-plane"), create, cilium_needs: needs }
}

/// The k3d cluster: `k3d cluster create`, its kubeconfig exported, and the mounts Cilium needs made
/// shared on every node.
fn create_k3d(b: &Builder, g: &mut Graph, cluster: &str) -> Created {
    let s = b.s;
    let t = s.timeouts.provision.0;
    let create = CommandSpec::new("k3d", providers::k3d_create_args(s, cluster), providers::k3d_create_deadline(s))
        .env("K3D_FIX_MOUNTS", "1");
    let create = g.add(
        Step::Command {
            name: "create k3d cluster".into(),
            command: create,
            advisory: None,
            creates_cluster: true,
            installs: None,
        },
        &[],
    );
    let kc = ["kubeconfig", "write", cluster, "--output", &b.kubeconfig];
    let kubeconfig = g.add(
        command("export kubeconfig", CommandSpec::new("k3d", kc, t)),
        &[(create, "k3d writes the kubeconfig of the cluster it created")],
    );
    let mut needs = vec![(kubeconfig, "helm connects with the kubeconfig k3d writes")];
    for node in providers::k3d_nodes(s, cluster) {
        let args = ["exec", &node, "sh", "-c", providers::K3D_MOUNT_SCRIPT];
        let mount = g.add(
            command(format!("shared mounts on {node}"), CommandSpec::new("docker", args, t)),
            &[(create, "runs in the node's container, which k3d creates")],
        );
        needs.push((mount, "Cilium's agent needs bpffs and cgroup v2 mounted shared on every node (field guide §2.3)"));
    }
    Created { api_host: format!("k3d-{cluster}-server-0"), create, cilium_needs: needs }
}

/// Loads an image archive into the new cluster's nodes: `nodes` (kind only), else all of them.
fn load_image_archive(
    b: &Builder,
    g: &mut Graph,
    cluster: &str,
    archive: &str,
    nodes: &[String],
    create: StepId,
) -> StepId {
    let t = b.s.timeouts.provision.0;
    let load = match b.s.provider {
        Provider::Kind => {
            let mut args: Vec<String> =
                ["load", "image-archive", archive, "--name", cluster].map(String::from).to_vec();
            if !nodes.is_empty() {
                // kind v0.31.0 pkg/cmd/kind/load/image-archive: `--nodes`, a comma-separated list.
                args.extend(["--nodes".into(), nodes.join(",")]);
            }
            CommandSpec::new("kind", args, t)
        }
        _ => CommandSpec::new("k3d", ["image", "import", archive, "--cluster", cluster], t),
    };
    let what = if nodes.is_empty() { "the nodes" } else { "the worker nodes" };
    g.add(
        command(format!("load cached images into {what}"), load),
        &[(create, "loads the archive into the nodes of the new cluster")],
    )
}

/// The kind worker nodes the workload images go to: kind names them `<cluster>-worker`,
/// `<cluster>-worker2`, … (kind v0.31.0 pkg/cluster/internal/providers/common/namer.go). None on
/// k3d (its server runs workloads too) or without workers (the control plane is untainted then).
fn worker_nodes(b: &Builder, cluster: &str) -> Vec<String> {
    if b.s.provider != Provider::Kind {
        return Vec::new();
    }
    (1..=b.s.cluster.workers)
        .map(|i| if i == 1 { format!("{cluster}-worker") } else { format!("{cluster}-worker{i}") })
        .collect()
}

/// Cilium's images named by tag (`<repository>:<tag>`), for a node whose images come from an archive.
const CILIUM_IMAGES_BY_TAG: &str =
    "image:\n  useDigest: false\noperator:\n  image:\n    useDigest: false\nenvoy:\n  image:\n    useDigest: false\n";

/// Cilium's chart with the fixture's values and the API server's address, then its rollouts and the
/// nodes Ready. Returns the wait for Cilium's operator.
fn cilium(b: &Builder, g: &mut Graph, api_host: &str, needs: &[(StepId, &'static str)]) -> StepId {
    let s = b.s;
    let t = s.timeouts.provision.0;
    let mut needs = needs.to_vec();
    let (w1, base) = b.values("values/cilium.yaml");
    let mut generated = format!("k8sServiceHost: {api_host}\nk8sServicePort: 6443\n");
    if s.cluster.image_archive.is_some() || s.cluster.workload_image_archive.is_some() {
        // The node's copy of each image comes from the archive, saved by `name:tag` (a save of a
        // digest reference keeps no name), so the pods name it by tag. The chart pins the index
        // digest otherwise (cilium 1.19.6 values.yaml `useDigest: true` for image,
        // operator.image, envoy.image), which a single-platform copy does not carry.
        generated.push_str(CILIUM_IMAGES_BY_TAG);
    }
    let (w2, cluster_values) = b.generated("values/cilium-cluster.yaml", generated);
    needs.push((g.add(w1, &[]), READS_VALUES));
    needs.push((g.add(w2, &[]), READS_VALUES));
    let cilium = g.add(
        b.helm_release(
            true,
            &HelmRelease {
                name: "cilium",
                // docs.cilium.io installation/k8s-install-helm: `helm repo add cilium
                // https://helm.cilium.io/`.
                repo: "https://helm.cilium.io/",
                chart: "cilium",
                version: &s.versions.cilium,
                namespace: "kube-system",
            },
            &[base, cluster_values],
            false,
        ),
        &needs,
    );
    let rollout = |name| b.wait("DaemonSet", Some("kube-system"), name, Condition::DaemonSetReady, t);
    g.add(rollout("cilium"), &[(cilium, ROLLOUT)]);
    g.add(rollout("cilium-envoy"), &[(cilium, ROLLOUT)]);
    let operator = g.add(
        b.wait("Deployment", Some("kube-system"), "cilium-operator", Condition::DeploymentAvailable, t),
        &[(cilium, ROLLOUT)],
    );
    let nodes = g.add(
        b.wait(
            "Node",
            None,
            "",
            Condition::NodesReady { count: Some(s.cluster.control_planes + s.cluster.workers) },
            t,
        ),
        &[(cilium, "the nodes have no CNI (kind and k3d are created without one) until Cilium's agent runs on them")],
    );
    g.add(
        b.wait("Deployment", Some("kube-system"), "coredns", Condition::DeploymentAvailable, t),
        &[(nodes, "CoreDNS is scheduled once a node is Ready")],
    );
    operator
}
