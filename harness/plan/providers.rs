//! Cluster configurations for kind and k3d, generated from the scenario (pure, golden-tested).

use std::fmt::Write as _;

use crate::scenario::Scenario;

/// kind cluster config: no default CNI, no kube-proxy (Cilium replaces both), the gateway's NodePort
/// mapped to 127.0.0.1 on the host, every node on the pinned image (field guide §1.1).
pub fn kind_config(s: &Scenario, cluster: &str) -> String {
    let image = s.cluster.node_image.as_deref().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: {cluster}");
    let _ = writeln!(out, "networking:\n  disableDefaultCNI: true\n  kubeProxyMode: \"none\"\nnodes:");
    let _ = writeln!(out, "- role: control-plane\n  image: {image}\n  extraPortMappings:");
    let _ = writeln!(
        out,
        "  - containerPort: {}\n    hostPort: {}\n    listenAddress: \"127.0.0.1\"\n    protocol: TCP",
        s.ingress.node_port,
        s.ingress.port()
    );
    for _ in 0..s.cluster.workers {
        let _ = writeln!(out, "- role: worker\n  image: {image}");
    }
    out
}

/// `k3d cluster create` arguments for a Cilium-ready k3s: flannel, network policy, kube-proxy,
/// traefik and servicelb off on the servers; the gateway's NodePort on the host (field guide §2.2).
/// The user's kubeconfig is left alone; the run exports its own.
pub fn k3d_create_args(s: &Scenario, cluster: &str) -> Vec<String> {
    let mut a: Vec<String> = vec!["cluster".into(), "create".into(), cluster.into()];
    a.extend(["--image".into(), s.cluster.node_image.clone().unwrap_or_default()]);
    a.extend(["--servers".into(), "1".into(), "--agents".into(), s.cluster.workers.to_string()]);
    for arg in [
        "--flannel-backend=none",
        "--disable-network-policy",
        "--disable-kube-proxy",
        "--disable=traefik",
        "--disable=servicelb",
    ] {
        a.extend(["--k3s-arg".into(), format!("{arg}@server:*")]);
    }
    a.extend(["-p".into(), format!("127.0.0.1:{}:{}@server:0", s.ingress.port(), s.ingress.node_port)]);
    a.extend(["--kubeconfig-update-default=false".into(), "--kubeconfig-switch-context=false".into()]);
    a.extend(["--wait".into(), "--timeout".into(), format!("{}s", s.timeouts.provision.0.as_secs())]);
    a
}

/// How long meshcheck lets `k3d cluster create` run: past k3d's own `--timeout` by a grace period,
/// because on a timeout k3d rolls back (deletes what it created, k3d v5.8.3 `cluster create`
/// without `--no-rollback`), and killing it half-way through that would leave node containers behind.
pub fn k3d_create_deadline(s: &Scenario) -> std::time::Duration {
    let k3d = s.timeouts.provision.0;
    k3d + (k3d / 4).clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(120))
}

/// Node container names of a k3d cluster.
pub fn k3d_nodes(s: &Scenario, cluster: &str) -> Vec<String> {
    let mut n = vec![format!("k3d-{cluster}-server-0")];
    n.extend((0..s.cluster.workers).map(|i| format!("k3d-{cluster}-agent-{i}")));
    n
}

/// Makes bpffs and the cgroup2 mount shared inside a k3d node before Cilium starts (field guide
/// §2.3), in addition to K3D_FIX_MOUNTS.
pub const K3D_MOUNT_SCRIPT: &str = "mountpoint -q /sys/fs/bpf || mount bpffs /sys/fs/bpf -t bpf; \
mount --make-shared /sys/fs/bpf; mkdir -p /run/cilium/cgroupv2; \
mountpoint -q /run/cilium/cgroupv2 || mount -t cgroup2 none /run/cilium/cgroupv2; \
mount --make-shared /run/cilium/cgroupv2";

/// Server ports of the Istio `Gateway` objects among `objects`, in order, without repeats.
pub fn gateway_server_ports(objects: &[kube::api::DynamicObject]) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::new();
    let gateways = objects.iter().filter(|o| {
        o.types.as_ref().is_some_and(|t| t.kind == "Gateway" && t.api_version.starts_with("networking.istio.io/"))
    });
    for gw in gateways {
        let servers = gw.data.pointer("/spec/servers").and_then(serde_json::Value::as_array);
        for server in servers.into_iter().flatten() {
            let port = server.pointer("/port/number").and_then(serde_json::Value::as_u64);
            if let Some(p) = port.and_then(|p| u16::try_from(p).ok())
                && !ports.contains(&p)
            {
                ports.push(p);
            }
        }
    }
    ports
}

/// Values for the gateway's Service ports, made to reach the Gateway's actual server ports.
///
/// The istio/gateway chart renders `service.ports` verbatim (istio/istio 1.30.3
/// manifests/charts/gateway/templates/service.yaml), so every port is listed: the chart's defaults
/// (values.yaml: status-port 15021, http2 80, https 443) with `http2` targeting the first server
/// port and carrying the NodePort kind/k3d map to the host. Istio binds a Gateway server port that
/// equals no Service port as it is (pilot/pkg/model/gateway.go, resolvePorts), so since bookinfo's
/// Gateway moved to 8080 (istio/istio#45943) the chart default `80 → 80` leads nowhere, and
/// `80 → 8080` is what reaches it. Further server ports get a Service port of their own.
pub fn gateway_ports(node_port: u16, server_ports: &[u16]) -> String {
    let first = server_ports.first().copied().unwrap_or(80);
    let mut out = format!(
        "service:\n  ports:\n  - name: status-port\n    port: 15021\n    protocol: TCP\n    targetPort: 15021\n  \
         - name: http2\n    port: 80\n    protocol: TCP\n    targetPort: {first}\n    nodePort: {node_port}\n  \
         - name: https\n    port: 443\n    protocol: TCP\n    targetPort: 443\n"
    );
    for p in server_ports.iter().skip(1).filter(|p| ![80, 443, 15021, first].contains(*p)) {
        let _ = write!(out, "  - name: gateway-{p}\n    port: {p}\n    protocol: TCP\n    targetPort: {p}\n");
    }
    out
}
