//! The kubelet's cAdvisor endpoint and the Service prometheus-operator keeps in front of the
//! kubelets, so that the simulated Prometheus finds CPU and memory of each container the way
//! kube-prometheus-stack 77.0.0 has the real one find them.
//!
//! - prometheus-operator v0.85.0 pkg/kubelet/controller.go: with `--kubelet-service=<ns>/<name>`
//!   (the chart sets it from `prometheusOperator.kubeletService`), a headless Service without a
//!   selector, labelled `k8s-app: kubelet`, `app.kubernetes.io/name: kubelet`,
//!   `app.kubernetes.io/managed-by: prometheus-operator`, ports `https-metrics` 10250,
//!   `http-metrics` 10255, `cadvisor` 4194; and an Endpoints object of the same name with each
//!   node's InternalIP, its `targetRef` the Node.
//! - The kubelet serves `/metrics/cadvisor` on 10250 over HTTPS: one `container_*` series per
//!   container of each pod on the node, labelled `container`, `namespace`, `pod`, plus a
//!   pod-level series with `container=""` (cAdvisor's cgroup of the pod).
//!
//! What each container uses is a model, not a measurement: a program's idle CPU and working set,
//! a cost per connection it carries (the book-info connections the simulation counts), and a
//! small growth per Istio minor release, so that the numbers move with load and with version.

use serde_json::{Value, json};

use super::{
    State,
    mesh::{Program, program, workload_pod},
    shapes::s,
};

/// The kubelet's HTTPS port (prometheus-operator pkg/kubelet/controller.go `httpsPort`).
pub(super) const HTTPS_PORT: u16 = 10250;

/// The `--kubelet-service=<ns>/<name>` of a running prometheus-operator, if it has one.
fn kubelet_service(st: &State) -> Option<(String, String)> {
    let value = super::shapes::deployment_flag(st, "--kubelet-service")?;
    value.split_once('/').map(|(ns, n)| (ns.to_string(), n.to_string()))
}

/// The operator's kubelet Service and Endpoints, kept to the nodes there are.
pub(super) fn sync_kubelet_service(st: &mut State) {
    let Some((ns, name)) = kubelet_service(st) else { return };
    let labels = json!({"k8s-app": "kubelet", "app.kubernetes.io/name": "kubelet",
                        "app.kubernetes.io/managed-by": "prometheus-operator"});
    let ports = json!([{"name": "https-metrics", "port": HTTPS_PORT}, {"name": "http-metrics", "port": 10255},
                       {"name": "cadvisor", "port": 4194}]);
    if st.store.get("", "services", &ns, &name).is_none() {
        st.store.put(
            "",
            "services",
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"type": "ClusterIP", "clusterIP": "None", "ports": ports},
            }),
        );
    }
    let addresses: Vec<Value> = st
        .store
        .list("", "nodes", None)
        .iter()
        .filter_map(|n| {
            let ip = n.pointer("/status/addresses")?.as_array()?.iter().find(|a| a["type"] == "InternalIP")?;
            Some(json!({"ip": ip["address"], "nodeName": s(n, "/metadata/name"),
                        "targetRef": {"kind": "Node", "name": s(n, "/metadata/name"), "apiVersion": "v1"}}))
        })
        .collect();
    let subsets = json!([{"addresses": addresses, "ports": ports}]);
    let current = st.store.get("", "endpoints", &ns, &name).and_then(|e| e.get("subsets").cloned());
    if current.as_ref() != Some(&subsets) {
        st.store.put(
            "",
            "endpoints",
            json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "subsets": subsets,
            }),
        );
    }
}

/// A program's idle CPU (cores), CPU per connection carried (CPU seconds), working set (MiB) and
/// working set per thousand connections carried (MiB). ztunnel's idle working set is Istio's
/// published 12 MB (istio.io docs/ops/deployment/performance-and-scalability); the others are of
/// the order a kind node shows.
fn model(p: Program) -> (f64, f64, f64, f64) {
    match p {
        Program::Ztunnel => (0.002, 0.000_5, 12.0, 0.5),
        Program::IstioCni => (0.001, 0.0, 30.0, 0.0),
        Program::Istiod => (0.004, 0.0, 60.0, 0.0),
        Program::Proxy => (0.003, 0.001, 40.0, 1.0),
        _ => (0.001, 0.0, 20.0, 0.0),
    }
}

/// The Istio minor of a pod's image tag (`…/ztunnel:1.30.3` → 30), 0 when it has none.
fn istio_minor(pod: &Value) -> u32 {
    let image = s(pod, "/spec/containers/0/image");
    let tag = image.rsplit_once(':').map_or("", |(_, t)| t);
    tag.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0)
}

/// Book-info connections a pod carries so far: for ztunnel those of pods on its node, for the
/// gateway those it sent.
fn carried(st: &State, pod: &Value) -> u64 {
    let node = s(pod, "/spec/nodeName");
    let on_node = |wl: &str| workload_pod(st, wl).is_some_and(|p| s(&p, "/spec/nodeName") == node);
    st.connections
        .iter()
        .filter(|((src, dst), _)| match program(pod) {
            Program::Ztunnel => on_node(src) || on_node(dst),
            Program::Proxy => src.starts_with(&format!("{}/", s(pod, "/metadata/namespace"))),
            _ => false,
        })
        .map(|(_, n)| n)
        .sum()
}

/// The kubelet's `/metrics/cadvisor` for a node: CPU counter and working set of each running
/// container there (and its pod's cgroup), in the exposition format.
pub(super) fn cadvisor(st: &State, node: &str) -> String {
    let mut cpu = String::from(
        "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed by the container in core-seconds\n# TYPE container_cpu_usage_seconds_total counter\n",
    );
    let mut memory = String::from(
        "# HELP container_memory_working_set_bytes Current working set of the container in bytes\n# TYPE container_memory_working_set_bytes gauge\n",
    );
    for pod in st.store.list("", "pods", None) {
        if s(&pod, "/spec/nodeName") != node || s(&pod, "/status/phase") != "Running" {
            continue;
        }
        let (ns, name, prog) = (s(&pod, "/metadata/namespace"), s(&pod, "/metadata/name"), program(&pod));
        let Some(started) = st.pods.get(&format!("{ns}/{name}")).and_then(|p| p.started) else { continue };
        let (idle, per_connection, mib, mib_per_k) = model(prog);
        let growth = 1.0 + 0.02 * f64::from(istio_minor(&pod).saturating_sub(29));
        let doubled = prog == Program::Ztunnel
            && st
                .faults
                .ztunnel_memory_doubles
                .as_deref()
                .is_some_and(|v| s(&pod, "/spec/containers/0/image").ends_with(&format!(":{v}")));
        let connections = carried(st, &pod) as f64;
        let seconds = idle * growth * started.elapsed().as_secs_f64() + per_connection * connections;
        let bytes = (mib * growth + (mib_per_k * connections / 1000.0).min(8.0))
            * if doubled { 2.0 } else { 1.0 }
            * 1024.0
            * 1024.0;
        let container = s(&pod, "/spec/containers/0/name");
        let id = format!("/kubepods/pod{}", s(&pod, "/metadata/uid"));
        // The container's cgroup, and its pod's (the same figures: one container per pod here).
        for (c, cid) in [(container, format!("{id}/{container}")), ("", id.clone())] {
            let labels = format!("container=\"{c}\",id=\"{cid}\",namespace=\"{ns}\",pod=\"{name}\"");
            cpu.push_str(&format!("container_cpu_usage_seconds_total{{{labels}}} {seconds}\n"));
            memory.push_str(&format!("container_memory_working_set_bytes{{{labels}}} {bytes}\n"));
        }
    }
    cpu + &memory
}
