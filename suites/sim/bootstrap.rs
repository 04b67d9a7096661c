//! What the clusters consist of before and around the charts: the nodes and system workloads kind
//! and k3s start with, the workloads operators make from their custom resources, and the cluster
//! someone else set up (`provider: existing`). What a chart installs is what the real helm renders
//! of the pinned chart ([`super::helm`]), never written here.

use serde_json::{Value, json};

use super::{Shared, State, store::now};

/// A Deployment, DaemonSet or StatefulSet with one container.
#[allow(clippy::too_many_arguments)]
pub fn workload(
    kind: &str,
    ns: &str,
    name: &str,
    replicas: i64,
    labels: &Value,
    image: &str,
    ports: &[u16],
    pod_spec: Option<Value>,
) -> Value {
    let mut spec = pod_spec.unwrap_or(json!({}));
    spec["containers"] = json!([{
        "name": container_name(name),
        "image": image,
        "ports": ports.iter().map(|p| json!({"containerPort": p, "protocol": "TCP"})).collect::<Vec<_>>(),
    }]);
    let mut w = json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": spec}},
    });
    if kind != "DaemonSet" {
        w["spec"]["replicas"] = json!(replicas);
    }
    w
}

fn container_name(workload: &str) -> String {
    match workload {
        "istiod" => "discovery".into(),
        "ztunnel" | "istio-ingress" => "istio-proxy".into(),
        "istio-cni-node" => "install-cni".into(),
        "cilium" => "cilium-agent".into(),
        w => w.to_string(),
    }
}

/// A ClusterIP (or other) Service selecting `selector`.
pub fn service(ns: &str, name: &str, selector: &Value, ports: &[(&str, u16)]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": selector},
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": ports.iter().map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP", "targetPort": p})).collect::<Vec<_>>()},
    })
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
           "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}

/// Puts objects in the store in order, typed by their apiVersion and kind.
pub fn put_all(st: &mut State, objects: Vec<Value>, default_ns: &str) -> Result<(), String> {
    for mut o in objects {
        let (api, kind) =
            (o["apiVersion"].as_str().unwrap_or("").to_string(), o["kind"].as_str().unwrap_or("").to_string());
        let t = st
            .store
            .type_for(&api, &kind)
            .ok_or_else(|| format!("no matches for kind \"{kind}\" in version \"{api}\""))?;
        if t.namespaced && o.pointer("/metadata/namespace").is_none() {
            o["metadata"]["namespace"] = json!(default_ns);
        }
        if !t.namespaced
            && let Some(m) = o["metadata"].as_object_mut()
        {
            m.remove("namespace");
        }
        let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let ns = o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        super::store::validate(&t.group, &t.plural, &o, st.store.get(&t.group, &t.plural, ns, name))?;
        st.store.put(&t.group, &t.plural, o);
    }
    Ok(())
}

/// Of a release's rendered objects, those `helm uninstall` deletes: all but the CRDs (a chart's
/// `crds/` folder is never deleted, helm.sh docs "Custom Resource Definitions"; the pinned charts'
/// templated CRDs, Istio base's `files/crd-all.gen.yaml`, carry the keep annotation) and those
/// annotated `helm.sh/resource-policy: keep` (helm v3.22.0 pkg/action/resource_policy.go
/// `filterManifestsToKeep`).
pub fn uninstalled_by_helm(st: &State, objects: &[Value], default_ns: &str) -> Vec<super::Key> {
    objects
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .filter(|o| o.pointer("/metadata/annotations/helm.sh~1resource-policy").and_then(Value::as_str) != Some("keep"))
        .filter_map(|o| {
            let t = st.store.type_for(o["apiVersion"].as_str()?, o["kind"].as_str()?)?;
            let ns = if t.namespaced {
                o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or(default_ns).to_string()
            } else {
                String::new()
            };
            Some((t.group, t.plural, ns, o.pointer("/metadata/name")?.as_str()?.to_string()))
        })
        .collect()
}

/// Records a release as helm does: its revision, and the release Secret
/// `sh.helm.release.v1.<name>.v<revision>` in its namespace, labelled `owner=helm`, `name`,
/// `status`, `version` (helm v3.22.0 pkg/storage/driver/secrets.go `newSecretsObject`,
/// pkg/storage/storage.go `makeKey`); the revision before it becomes `superseded`.
pub fn record_release(st: &mut State, ns: &str, name: &str, version: &str, objects: Vec<super::Key>) {
    let revision = st.releases.get(&(ns.to_string(), name.to_string())).map_or(1, |r| r.revision + 1);
    if let Some(mut previous) = st.store.get("", "secrets", ns, &release_secret(name, revision - 1)).cloned() {
        previous["metadata"]["labels"]["status"] = json!("superseded");
        st.store.put("", "secrets", previous);
    }
    st.store.put(
        "",
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
               "metadata": {"name": release_secret(name, revision), "namespace": ns,
                            "labels": {"name": name, "owner": "helm", "status": "deployed", "version": revision.to_string()}},
               "stringData": {"release": format!("simulated release {name} {version}")}}),
    );
    st.releases.insert((ns.into(), name.into()), super::Release { version: version.into(), revision, objects });
}

/// The name of a release's Secret at a revision.
pub fn release_secret(name: &str, revision: u32) -> String {
    format!("sh.helm.release.v1.{name}.v{revision}")
}

/// Parses a multi-document YAML stream, skipping empty documents.
pub fn yaml_docs(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(text).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

fn upstream(shared: &Shared, rel: &str) -> Result<String, String> {
    std::fs::read_to_string(shared.upstream.join(rel)).map_err(|e| format!("../shared/upstream/{rel}: {e}"))
}

/// Nodes and system workloads of a new cluster. Nodes are NotReady until a CNI runs.
pub fn create_cluster(st: &mut State, provider: &str, nodes: &[String]) {
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let (kubelet, runtime) = match provider {
        "k3d" => ("v1.35.5+k3s1", "containerd://2.1.5-k3s1"),
        _ => ("v1.35.0", "containerd://2.2.0"),
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        st.store.put("", "namespaces", namespace(ns));
    }
    for (i, n) in nodes.iter().enumerate() {
        let control_plane = i == 0;
        let mut labels = json!({"kubernetes.io/arch": arch, "kubernetes.io/os": "linux", "kubernetes.io/hostname": n});
        let mut taints = vec![json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})];
        if control_plane {
            labels["node-role.kubernetes.io/control-plane"] = json!("");
            if provider == "kind" && nodes.len() > 1 {
                taints.push(json!({"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}));
            }
        }
        st.store.put("", "nodes", json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n, "labels": labels},
            "spec": {"podCIDR": format!("10.244.{i}.0/24"), "taints": taints},
            "status": {
                "addresses": [{"type": "InternalIP", "address": format!("172.18.0.{}", i + 2)}, {"type": "Hostname", "address": n}],
                // The kubelet's port (core/v1 NodeDaemonEndpoints, `Port` capitalised in the API).
                "daemonEndpoints": {"kubeletEndpoint": {"Port": super::kubelet::HTTPS_PORT}},
                "nodeInfo": {"architecture": arch, "operatingSystem": "linux", "kubeletVersion": kubelet,
                             "containerRuntimeVersion": runtime, "kernelVersion": "6.8.0-sim", "osImage": "Debian GNU/Linux 12 (bookworm)"},
                "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                                "message": "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
                                "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
            },
        }));
    }
    if provider == "kind" {
        // kubeadm's static pods on the control-plane node (kubernetes v1.35
        // cmd/kubeadm/app/phases/controlplane/manifests.go: labels `component`, `tier:
        // control-plane`, host network). kubeadm binds the controller manager's, the scheduler's
        // and etcd's metrics to 127.0.0.1 (`--bind-address=127.0.0.1`,
        // `--listen-metrics-urls=http://127.0.0.1:2381`), so from the pod network nothing answers
        // on 10257, 10259 or 2381 (prometheus-community/helm-charts#1966).
        for (component, image) in [
            ("kube-apiserver", "registry.k8s.io/kube-apiserver:v1.35.0"),
            ("kube-controller-manager", "registry.k8s.io/kube-controller-manager:v1.35.0"),
            ("kube-scheduler", "registry.k8s.io/kube-scheduler:v1.35.0"),
            ("etcd", "registry.k8s.io/etcd:3.6.6-0"),
        ] {
            let node = &nodes[0];
            st.store.put(
                "",
                "pods",
                json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("{component}-{node}"), "namespace": "kube-system",
                                 "labels": {"component": component, "tier": "control-plane"}},
                    "spec": {"nodeName": node, "hostNetwork": true, "priorityClassName": "system-node-critical",
                             "containers": [{"name": component, "image": image}]},
                    "status": {"phase": "Pending"},
                }),
            );
        }
    }
    put_all(st, addons(provider), "kube-system").expect("the cluster's add-ons are built-in types");
}

/// What the provider installs in a new cluster besides the nodes: CoreDNS (kubeadm's, 2 replicas,
/// the `kube-dns` Service) and kind's local-path provisioner, or k3s' bundled manifests (traefik
/// and servicelb disabled by meshcheck).
pub fn addons(provider: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let dns = json!({"k8s-app": "kube-dns"});
    let replicas = if provider == "k3d" { 1 } else { 2 };
    out.push(workload(
        "Deployment",
        "kube-system",
        "coredns",
        replicas,
        &dns,
        "registry.k8s.io/coredns/coredns:v1.12.1",
        &[53, 9153],
        None,
    ));
    out.push(service("kube-system", "kube-dns", &dns, &[("dns-tcp", 53), ("metrics", 9153)]));
    if provider == "k3d" {
        // k3s' bundled manifests (traefik and servicelb disabled by meshcheck).
        for (name, label) in
            [("local-path-provisioner", "local-path-provisioner"), ("metrics-server", "metrics-server")]
        {
            out.push(workload(
                "Deployment",
                "kube-system",
                name,
                1,
                &json!({"k8s-app": label}),
                &format!("rancher/{name}:latest"),
                &[],
                None,
            ));
        }
    } else {
        out.push(namespace("local-path-storage"));
        out.push(workload(
            "Deployment",
            "local-path-storage",
            "local-path-provisioner",
            1,
            &json!({"app": "local-path-provisioner"}),
            "docker.io/kindest/local-path-provisioner:v20251212",
            &[],
            None,
        ));
    }
    out
}

/// A CRD with one served and stored version, for the CRDs a program registers at run time
/// (Cilium's operator) rather than a chart.
pub fn crd(group: &str, kind: &str, plural: &str, scope: &str, version: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": scope,
                 "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                 "versions": [{"name": version, "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
    })
}

/// A fixture as a run reads it (`MESHCHECK_FIXTURES` overrides the embedded copy).
/// What Cilium's operator does when it starts: registers Cilium's CRDs (cilium v1.19
/// pkg/k8s/apis/cilium.io/client/register.go `RegisterCRDs`; the chart ships none). The two
/// policy kinds are the ones runs apply.
pub fn register_cilium_crds(st: &mut State) {
    for (kind, plural, scope) in [
        ("CiliumClusterwideNetworkPolicy", "ciliumclusterwidenetworkpolicies", "Cluster"),
        ("CiliumNetworkPolicy", "ciliumnetworkpolicies", "Namespaced"),
    ] {
        if st
            .store
            .get("apiextensions.k8s.io", "customresourcedefinitions", "", &format!("{plural}.cilium.io"))
            .is_none()
        {
            st.store.put(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                crd("cilium.io", kind, plural, scope, "v2"),
            );
        }
    }
}

fn fixture(rel: &str) -> String {
    meshcheck::plan::fixtures::text(rel)
}

/// A cluster someone set up by meshcheck's own install guide: what `provider: existing` rehearses
/// against. The same charts (rendered by the real helm) and manifests, installed before the run;
/// `dir` holds the values file of the gateway's ports.
pub fn existing_cluster(shared: &Shared, dir: &std::path::Path) -> Result<(), String> {
    let mut st = shared.lock();
    let nodes: Vec<String> =
        ["existing-control-plane", "existing-worker", "existing-worker2"].map(String::from).to_vec();
    create_cluster(&mut st, "kind", &nodes);
    if st.faults.mesh_absent {
        drop(st);
        return cilium_and_user_objects(shared, dir);
    }
    for ns in ["istio-system", "istio-ingress", "monitoring", "tempo", "kiali-operator"] {
        st.store.put("", "namespaces", namespace(ns));
    }
    let mut ambient = namespace("book-info");
    ambient["metadata"]["labels"]["istio.io/dataplane-mode"] = json!("ambient");
    st.store.put("", "namespaces", ambient);
    // Installed as it should be: http2 reaches bookinfo's Gateway on 8080 (istio/istio#45943).
    let ports = dir.join("istio-gateway-ports.yaml");
    std::fs::write(
        &ports,
        "service:\n  ports:\n  - name: status-port\n    port: 15021\n  - name: http2\n    port: 80\n    targetPort: 8080\n    nodePort: 30080\n",
    )
    .map_err(|e| e.to_string())?;
    let istio = "https://istio-release.storage.googleapis.com/charts";
    let releases = [
        ("https://helm.cilium.io", "cilium", "1.19.6", "cilium", "kube-system", "cilium.yaml"),
        (istio, "base", "1.30.3", "istio-base", "istio-system", "istio-base.yaml"),
        (istio, "cni", "1.30.3", "istio-cni", "istio-system", "istio-cni.yaml"),
        (istio, "istiod", "1.30.3", "istiod", "istio-system", "istiod.yaml"),
        (istio, "ztunnel", "1.30.3", "ztunnel", "istio-system", "ztunnel.yaml"),
        (istio, "gateway", "1.30.3", "istio-ingress", "istio-ingress", "istio-gateway.yaml"),
        (
            "https://prometheus-community.github.io/helm-charts",
            "kube-prometheus-stack",
            "77.0.0",
            "kps",
            "monitoring",
            "kube-prometheus-stack.yaml",
        ),
        ("https://grafana-community.github.io/helm-charts", "tempo", "1.26.1", "tempo", "tempo", "tempo.yaml"),
        (
            "https://kiali.org/helm-charts",
            "kiali-operator",
            "2.29.0",
            "kiali-operator",
            "kiali-operator",
            "kiali-operator.yaml",
        ),
    ];
    // Cilium's operator ran on this cluster long ago.
    register_cilium_crds(&mut st);
    st.store.establish_long_ago();
    let (kps_default_names, addon_prometheus) = (st.faults.kps_default_names, st.faults.istio_addon_prometheus);
    for (repo, chart, version, release, ns, values) in releases {
        if addon_prometheus && chart == "kube-prometheus-stack" {
            continue;
        }
        let file = dir.join(format!("values-{values}"));
        let mut text = fixture(&format!("values/{values}"));
        // The chart's own guide: `helm install kube-prometheus-stack …` with its default names.
        let release = match (chart, kps_default_names) {
            ("kube-prometheus-stack", true) => {
                text = text.lines().filter(|l| !l.starts_with("fullnameOverride:")).collect::<Vec<_>>().join("\n");
                "kube-prometheus-stack"
            }
            _ => release,
        };
        std::fs::write(&file, text).map_err(|e| e.to_string())?;
        let mut files = vec![file];
        if chart == "gateway" {
            files.push(ports.clone());
        }
        let chart = shared.helm.chart(repo, chart, version)?;
        let objects = shared.helm.template(&chart, release, ns, &files, &[])?;
        let (crds, rest): (Vec<_>, Vec<_>) = objects.into_iter().partition(|o| o["kind"] == "CustomResourceDefinition");
        put_all(&mut st, crds, ns)?;
        st.store.establish_long_ago();
        let objects = uninstalled_by_helm(&st, &rest, ns);
        put_all(&mut st, rest, ns)?;
        record_release(&mut st, ns, release, version, objects);
    }
    let bundle = std::fs::read_to_string(shared.helm.charts.join("gateway-api-v1.5.1/standard-install.yaml"))
        .map_err(|e| format!("Gateway API bundle: {e}"))?;
    put_all(&mut st, yaml_docs(&bundle)?, "default")?;
    st.store.establish_long_ago();
    for file in ["bookinfo", "bookinfo-versions", "networking-bookinfo-gateway"] {
        let text = upstream(shared, &format!("bookinfo/istio-1.30.3-{file}.yaml"))?;
        put_all(&mut st, yaml_docs(&text)?, "book-info")?;
    }
    let probe_target = fixture("manifests/probe-target.yaml").replace("{{BOOKINFO_HUB}}", "registry.istio.io/release");
    for f in
        ["manifests/istio-monitors.yaml", "manifests/telemetry.yaml", "manifests/cilium-allow-ambient-hostprobes.yaml"]
    {
        if addon_prometheus && f.ends_with("istio-monitors.yaml") {
            continue;
        }
        put_all(&mut st, yaml_docs(&fixture(f))?, "default")?;
    }
    if addon_prometheus {
        let addon = upstream(shared, "manifests/istio-1.30.3-addon-prometheus.yaml")?;
        put_all(&mut st, yaml_docs(&addon)?, "istio-system")?;
    }
    put_all(&mut st, yaml_docs(&probe_target)?, "book-info")
}

/// A cluster with Cilium (by meshcheck's values) and a user's own objects, without the mesh:
/// what `existing.install: true` installs onto. The user's objects are of the kinds a run's
/// install and cleanup touch: a namespace with a workload, a cluster-wide Cilium policy, a
/// ClusterRole and a CRD of another group; no Istio, Gateway API, Prometheus Operator or Kiali.
fn cilium_and_user_objects(shared: &Shared, dir: &std::path::Path) -> Result<(), String> {
    let mut st = shared.lock();
    register_cilium_crds(&mut st);
    st.store.establish_long_ago();
    let file = dir.join("values-cilium.yaml");
    std::fs::write(&file, fixture("values/cilium.yaml")).map_err(|e| e.to_string())?;
    let chart = shared.helm.chart("https://helm.cilium.io", "cilium", "1.19.6")?;
    let objects = shared.helm.template(&chart, "cilium", "kube-system", &[file], &[])?;
    let (crds, rest): (Vec<_>, Vec<_>) = objects.into_iter().partition(|o| o["kind"] == "CustomResourceDefinition");
    put_all(&mut st, crds, "kube-system")?;
    st.store.establish_long_ago();
    let objects = uninstalled_by_helm(&st, &rest, "kube-system");
    put_all(&mut st, rest, "kube-system")?;
    record_release(&mut st, "kube-system", "cilium", "1.19.6", objects);
    st.store.put("", "namespaces", namespace("shop"));
    let labels = json!({"app": "web"});
    let user = [
        workload("Deployment", "shop", "web", 1, &labels, "registry.example/web:1.0", &[8080], None),
        json!({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
               "metadata": {"name": "user-allow-dns"},
               "spec": {"endpointSelector": {}, "egress": [{"toEndpoints": [{"matchLabels": {"k8s-app": "kube-dns"}}]}]}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "user-reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        crd("example.com", "Widget", "widgets", "Namespaced", "v1"),
    ];
    put_all(&mut st, user.to_vec(), "default")
}
