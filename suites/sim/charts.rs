//! What the clusters and charts consist of: the nodes and system workloads kind and k3s start
//! with, and the objects each Helm chart renders at its pinned version, named as the real
//! templates name them (the upstream template path is on each). Values come from the `--values`
//! files helm is given, so a values change shows the way it would on a real cluster. CRDs come
//! from `../shared/upstream` where upstream publishes them.

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
        st.store.put(&t.group, &t.plural, o);
    }
    Ok(())
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
                "nodeInfo": {"architecture": arch, "operatingSystem": "linux", "kubeletVersion": kubelet,
                             "containerRuntimeVersion": runtime, "kernelVersion": "6.8.0-sim", "osImage": "Debian GNU/Linux 12 (bookworm)"},
                "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                                "message": "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
                                "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
            },
        }));
    }
    let dns = json!({"k8s-app": "kube-dns"});
    let replicas = if provider == "k3d" { 1 } else { 2 };
    st.store.put(
        "apps",
        "deployments",
        workload(
            "Deployment",
            "kube-system",
            "coredns",
            replicas,
            &dns,
            "registry.k8s.io/coredns/coredns:v1.12.1",
            &[53, 9153],
            None,
        ),
    );
    st.store.put("", "services", service("kube-system", "kube-dns", &dns, &[("dns-tcp", 53), ("metrics", 9153)]));
    if provider == "k3d" {
        // k3s' bundled manifests (traefik and servicelb disabled by meshcheck).
        for (name, label) in
            [("local-path-provisioner", "local-path-provisioner"), ("metrics-server", "metrics-server")]
        {
            st.store.put(
                "apps",
                "deployments",
                workload(
                    "Deployment",
                    "kube-system",
                    name,
                    1,
                    &json!({"k8s-app": label}),
                    &format!("rancher/{name}:latest"),
                    &[],
                    None,
                ),
            );
        }
    } else {
        st.store.put("", "namespaces", namespace("local-path-storage"));
        st.store.put(
            "apps",
            "deployments",
            workload(
                "Deployment",
                "local-path-storage",
                "local-path-provisioner",
                1,
                &json!({"app": "local-path-provisioner"}),
                "docker.io/kindest/local-path-provisioner:v20251212",
                &[],
                None,
            ),
        );
    }
}

/// A CRD with one served and stored version.
fn crd(group: &str, kind: &str, plural: &str, scope: &str, version: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": scope,
                 "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                 "versions": [{"name": version, "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
    })
}

/// The Gateway API standard-install.yaml of a release: its CRDs (the upstream bundle is not in
/// ../shared/upstream; names, groups and scopes are those of the standard channel).
pub fn gateway_api_bundle(version: &str) -> String {
    let crds = [
        ("GatewayClass", "gatewayclasses", "Cluster"),
        ("Gateway", "gateways", "Namespaced"),
        ("HTTPRoute", "httproutes", "Namespaced"),
        ("GRPCRoute", "grpcroutes", "Namespaced"),
        ("ReferenceGrant", "referencegrants", "Namespaced"),
    ];
    let mut out = format!("# Gateway API standard channel {version} (simulated bundle: CRDs only)\n");
    for (kind, plural, scope) in crds {
        let mut c = crd("gateway.networking.k8s.io", kind, plural, scope, "v1");
        c["metadata"]["annotations"] = json!({"gateway.networking.k8s.io/bundle-version": version, "gateway.networking.k8s.io/channel": "standard"});
        out.push_str("---\n");
        out.push_str(&serde_json::to_string(&c).expect("json"));
        out.push('\n');
    }
    out
}

fn get<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    values.pointer(&format!("/{}", path.replace('.', "/")))
}

fn flag(values: &Value, path: &str, default: bool) -> String {
    get(values, path).and_then(Value::as_bool).unwrap_or(default).to_string()
}

fn istio_hub(version: &str) -> &'static str {
    let minor: u64 = version.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0);
    if minor >= 30 { "registry.istio.io/release" } else { "docker.io/istio" }
}

/// The objects a chart renders. `release` and `ns` as given to `helm upgrade --install`.
pub fn render(
    shared: &Shared,
    chart: &str,
    version: &str,
    release: &str,
    ns: &str,
    values: &Value,
) -> Result<Vec<Value>, String> {
    let host_net = json!({"hostNetwork": true, "tolerations": [{"operator": "Exists"}]});
    let tolerate = json!({"tolerations": [{"operator": "Exists"}]});
    let istio_labels = |extra: Value| {
        let mut l = extra;
        l["app.kubernetes.io/version"] = json!(version);
        l
    };
    Ok(match chart {
        "cilium/cilium" => {
            let image = |c: &str| format!("quay.io/cilium/{c}:v{version}");
            // install/kubernetes/cilium/templates/cilium-configmap.yaml
            let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cilium-config", "namespace": ns},
            "data": {
                "kube-proxy-replacement": flag(values, "kubeProxyReplacement", false),
                "bpf-lb-sock-hostns-only": flag(values, "socketLB.hostNamespaceOnly", false),
                "cni-exclusive": flag(values, "cni.exclusive", true),
                "enable-bpf-masquerade": flag(values, "bpf.masquerade", false),
                "enable-host-legacy-routing": flag(values, "bpf.hostLegacyRouting", false),
                "ipam": get(values, "ipam.mode").and_then(Value::as_str).unwrap_or("cluster-pool"),
                "cluster-name": "default",
            }});
            let operators = get(values, "operator.replicas").and_then(Value::as_i64).unwrap_or(2);
            vec![
                config,
                crd("cilium.io", "CiliumClusterwideNetworkPolicy", "ciliumclusterwidenetworkpolicies", "Cluster", "v2"),
                crd("cilium.io", "CiliumNetworkPolicy", "ciliumnetworkpolicies", "Namespaced", "v2"),
                // install/kubernetes/cilium/templates/cilium-agent/daemonset.yaml
                workload(
                    "DaemonSet",
                    ns,
                    "cilium",
                    0,
                    &json!({"k8s-app": "cilium", "app.kubernetes.io/name": "cilium-agent", "app.kubernetes.io/part-of": "cilium"}),
                    &image("cilium"),
                    &[9962],
                    Some(host_net.clone()),
                ),
                // install/kubernetes/cilium/templates/cilium-envoy/daemonset.yaml
                workload(
                    "DaemonSet",
                    ns,
                    "cilium-envoy",
                    0,
                    &json!({"k8s-app": "cilium-envoy", "app.kubernetes.io/name": "cilium-envoy", "app.kubernetes.io/part-of": "cilium"}),
                    &image("cilium-envoy"),
                    &[9964],
                    Some(host_net.clone()),
                ),
                // install/kubernetes/cilium/templates/cilium-operator/deployment.yaml
                workload(
                    "Deployment",
                    ns,
                    "cilium-operator",
                    operators,
                    &json!({"io.cilium/app": "operator", "name": "cilium-operator", "app.kubernetes.io/name": "cilium-operator"}),
                    &image("operator-generic"),
                    &[9963],
                    Some(host_net.clone()),
                ),
            ]
        }
        "istio/base" => {
            // manifests/charts/base/files/crd-all.gen.yaml, included by templates/crds.yaml
            yaml_docs(&upstream(shared, "schemas/istio-1.30.3-crd-all.gen.yaml")?)?
        }
        "istio/cni" => vec![
            // manifests/charts/istio-cni/templates/daemonset.yaml
            workload(
                "DaemonSet",
                ns,
                "istio-cni-node",
                0,
                &istio_labels(
                    json!({"k8s-app": "istio-cni-node", "app.kubernetes.io/name": "istio-cni", "sidecar.istio.io/inject": "false"}),
                ),
                &format!("{}/install-cni:{version}-distroless", istio_hub(version)),
                &[15014],
                Some(host_net.clone()),
            ),
        ],
        "istio/istiod" => {
            let labels = istio_labels(
                json!({"app": "istiod", "istio": "pilot", "istio.io/rev": "default", "sidecar.istio.io/inject": "false"}),
            );
            let mesh = get(values, "meshConfig").cloned().unwrap_or(json!({}));
            vec![
                // manifests/charts/istio-control/istio-discovery/templates/configmap.yaml
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio", "namespace": ns, "labels": {"istio.io/rev": "default"}},
                       "data": {"mesh": serde_json::to_string(&mesh).expect("json"), "meshNetworks": "networks: {}"}}),
                // manifests/charts/istio-control/istio-discovery/templates/deployment.yaml
                workload(
                    "Deployment",
                    ns,
                    "istiod",
                    1,
                    &labels,
                    &format!("{}/pilot:{version}-distroless", istio_hub(version)),
                    &[8080, 15010, 15012, 15014, 15017],
                    None,
                ),
                // manifests/charts/istio-control/istio-discovery/templates/service.yaml
                service(
                    ns,
                    "istiod",
                    &json!({"app": "istiod", "istio": "pilot"}),
                    &[("grpc-xds", 15010), ("https-dns", 15012), ("https-webhook", 443), ("http-monitoring", 15014)],
                ),
            ]
        }
        "istio/ztunnel" => vec![
            // manifests/charts/ztunnel/templates/daemonset.yaml
            workload(
                "DaemonSet",
                ns,
                "ztunnel",
                0,
                &istio_labels(
                    json!({"app": "ztunnel", "app.kubernetes.io/name": "ztunnel", "sidecar.istio.io/inject": "false", "istio.io/dataplane-mode": "none"}),
                ),
                &format!("{}/ztunnel:{version}-distroless", istio_hub(version)),
                &[15020, 15021, 15008],
                Some(tolerate.clone()),
            ),
        ],
        "istio/gateway" => {
            // manifests/charts/gateway/templates/deployment.yaml: `istio:` is the release name
            // minus `istio-` unless `labels.istio` is set.
            let mut labels = json!({"app": release, "istio": release.trim_start_matches("istio-")});
            for (k, v) in get(values, "labels").and_then(Value::as_object).into_iter().flatten() {
                labels[k] = v.clone();
            }
            let labels = istio_labels(labels);
            let mut svc = service(ns, release, &json!({"app": release, "istio": labels["istio"]}), &[]);
            // manifests/charts/gateway/templates/service.yaml renders service.ports verbatim.
            svc["spec"]["type"] = get(values, "service.type").cloned().unwrap_or(json!("LoadBalancer"));
            svc["spec"]["ports"] = get(values, "service.ports").cloned().unwrap_or(json!([]));
            vec![
                workload(
                    "Deployment",
                    ns,
                    release,
                    1,
                    &labels,
                    &format!("{}/proxyv2:{version}-distroless", istio_hub(version)),
                    &[15021, 80, 443, 15090],
                    None,
                ),
                svc,
            ]
        }
        "prometheus-community/kube-prometheus-stack" => {
            let full = get(values, "fullnameOverride")
                .and_then(Value::as_str)
                .unwrap_or("kps-kube-prometheus-stack")
                .to_string();
            let upstream_crds = [
                "schemas/prom-operator-v0.93.0-crd-podmonitors.yaml",
                "schemas/prom-operator-v0.93.0-crd-servicemonitors.yaml",
            ];
            let mut out = Vec::new();
            for rel in upstream_crds {
                out.extend(yaml_docs(&upstream(shared, rel)?)?);
            }
            // charts/crds/crds/crd-prometheuses.yaml (the upstream CRD is not in ../shared/upstream)
            out.push(crd("monitoring.coreos.com", "Prometheus", "prometheuses", "Namespaced", "v1"));
            let op = json!({"app": "kube-prometheus-stack-operator", "release": release, "app.kubernetes.io/name": "kube-prometheus-stack-prometheus-operator"});
            let prom = json!({"app.kubernetes.io/name": "prometheus", "operator.prometheus.io/name": format!("{full}-prometheus")});
            out.extend([
                // templates/prometheus-operator/deployment.yaml
                workload("Deployment", ns, &format!("{full}-operator"), 1, &op, "quay.io/prometheus-operator/prometheus-operator:v0.85.0", &[10250], None),
                // templates/prometheus/prometheus.yaml
                json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
                       "metadata": {"name": format!("{full}-prometheus"), "namespace": ns},
                       "spec": get(values, "prometheus.prometheusSpec").cloned().unwrap_or(json!({}))}),
                // templates/prometheus/service.yaml
                service(ns, &format!("{full}-prometheus"), &prom, &[("http-web", 9090), ("reloader-web", 8080)]),
                // charts/kube-state-metrics/templates/deployment.yaml
                workload("Deployment", ns, &format!("{release}-kube-state-metrics"), 1, &json!({"app.kubernetes.io/name": "kube-state-metrics", "app.kubernetes.io/instance": release}), "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.16.0", &[8080], None),
                // charts/prometheus-node-exporter/templates/daemonset.yaml
                workload("DaemonSet", ns, &format!("{release}-prometheus-node-exporter"), 0, &json!({"app.kubernetes.io/name": "prometheus-node-exporter", "app.kubernetes.io/instance": release}), "quay.io/prometheus/node-exporter:v1.9.1", &[9100], Some(host_net.clone())),
            ]);
            out
        }
        "grafana-community/tempo" => {
            let labels = json!({"app.kubernetes.io/name": "tempo", "app.kubernetes.io/instance": release});
            vec![
                // templates/statefulset.yaml
                workload("StatefulSet", ns, release, 1, &labels, "grafana/tempo:2.8.2", &[3200, 4317, 4318], None),
                // templates/service.yaml
                service(
                    ns,
                    release,
                    &labels,
                    &[("tempo-prom-metrics", 3200), ("grpc-tempo-otlp", 4317), ("http-tempo-otlp", 4318)],
                ),
            ]
        }
        "kiali/kiali-operator" => {
            let mut out = yaml_docs(&upstream(shared, "schemas/kiali-operator-v2.29.0-crd-kialis.yaml")?)?;
            let labels = json!({"app": "kiali-operator", "app.kubernetes.io/name": "kiali-operator", "app.kubernetes.io/instance": release});
            // kiali-operator/templates/deployment.yaml
            out.push(workload(
                "Deployment",
                ns,
                "kiali-operator",
                1,
                &labels,
                &format!("quay.io/kiali/kiali-operator:v{version}"),
                &[8080],
                None,
            ));
            if get(values, "cr.create").and_then(Value::as_bool).unwrap_or(false) {
                // kiali-operator/templates/kiali-cr.yaml
                let cr_ns = get(values, "cr.namespace").and_then(Value::as_str).unwrap_or(ns);
                out.push(json!({"apiVersion": "kiali.io/v1alpha1", "kind": "Kiali",
                                "metadata": {"name": get(values, "cr.name").and_then(Value::as_str).unwrap_or("kiali"), "namespace": cr_ns},
                                "spec": get(values, "cr.spec").cloned().unwrap_or(json!({}))}));
            }
            out
        }
        other => {
            return Err(format!(
                "Error: INSTALLATION FAILED: repo {other} not found (the simulation knows no such chart)"
            ));
        }
    })
}

/// Values files merged left to right, as helm does.
pub fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

fn fixture(rel: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel))
        .expect("fixture")
}

/// A cluster someone set up by meshcheck's own install guide: what `provider: existing` rehearses
/// against. The same charts and manifests, installed before the run.
pub fn existing_cluster(shared: &Shared) {
    let mut st = shared.lock();
    let nodes: Vec<String> =
        ["existing-control-plane", "existing-worker", "existing-worker2"].map(String::from).to_vec();
    create_cluster(&mut st, "kind", &nodes);
    for ns in ["istio-system", "istio-ingress", "monitoring", "tempo", "kiali-operator"] {
        st.store.put("", "namespaces", namespace(ns));
    }
    let mut ambient = namespace("book-info");
    ambient["metadata"]["labels"]["istio.io/dataplane-mode"] = json!("ambient");
    st.store.put("", "namespaces", ambient);
    // Installed as it should be: http2 reaches bookinfo's Gateway on 8080 (istio/istio#45943).
    let ports = "service:\n  ports:\n  - name: status-port\n    port: 15021\n  - name: http2\n    port: 80\n    targetPort: 8080\n    nodePort: 30080\n";
    let releases = [
        ("cilium/cilium", "1.19.6", "cilium", "kube-system", vec!["values/cilium.yaml"]),
        ("istio/base", "1.30.3", "istio-base", "istio-system", vec!["values/istio-base.yaml"]),
        ("istio/cni", "1.30.3", "istio-cni", "istio-system", vec!["values/istio-cni.yaml"]),
        ("istio/istiod", "1.30.3", "istiod", "istio-system", vec!["values/istiod.yaml"]),
        ("istio/ztunnel", "1.30.3", "ztunnel", "istio-system", vec!["values/ztunnel.yaml"]),
        ("istio/gateway", "1.30.3", "istio-ingress", "istio-ingress", vec!["values/istio-gateway.yaml"]),
        (
            "prometheus-community/kube-prometheus-stack",
            "77.0.0",
            "kps",
            "monitoring",
            vec!["values/kube-prometheus-stack.yaml"],
        ),
        ("grafana-community/tempo", "1.26.1", "tempo", "tempo", vec!["values/tempo.yaml"]),
        ("kiali/kiali-operator", "2.29.0", "kiali-operator", "kiali-operator", vec!["values/kiali-operator.yaml"]),
    ];
    for (chart, version, release, ns, files) in releases {
        let mut values = json!({});
        for f in files {
            merge(&mut values, &serde_saphyr::from_str::<Value>(&fixture(f)).expect("values parse"));
        }
        if chart == "istio/gateway" {
            merge(&mut values, &serde_saphyr::from_str::<Value>(ports).expect("ports"));
        }
        let objects = render(shared, chart, version, release, ns, &values).expect("charts render");
        let (crds, rest): (Vec<_>, Vec<_>) = objects.into_iter().partition(|o| o["kind"] == "CustomResourceDefinition");
        put_all(&mut st, crds, ns).expect("crds");
        put_all(&mut st, rest, ns).expect("objects");
        st.releases.insert((ns.into(), release.into()), super::Release { version: version.into() });
    }
    put_all(&mut st, yaml_docs(&gateway_api_bundle("v1.5.1")).expect("bundle"), "default").expect("gateway api");
    for file in ["bookinfo", "bookinfo-versions", "networking-bookinfo-gateway"] {
        let text = upstream(shared, &format!("bookinfo/istio-1.30.3-{file}.yaml")).expect("upstream bookinfo");
        put_all(&mut st, yaml_docs(&text).expect("bookinfo parses"), "book-info").expect("bookinfo");
    }
    let probe_target = fixture("manifests/probe-target.yaml").replace("{{BOOKINFO_HUB}}", "registry.istio.io/release");
    for f in
        ["manifests/istio-monitors.yaml", "manifests/telemetry.yaml", "manifests/cilium-allow-ambient-hostprobes.yaml"]
    {
        put_all(&mut st, yaml_docs(&fixture(f)).expect("fixture parses"), "default").expect("fixture");
    }
    put_all(&mut st, yaml_docs(&probe_target).expect("probe target"), "book-info").expect("probe target");
}
