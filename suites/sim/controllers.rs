//! The simulated controllers and kubelets: nodes become Ready once Cilium runs on them;
//! Deployments, DaemonSets and StatefulSets become pods (labelled `pod-template-hash` /
//! `controller-revision-hash`) that start their workload's [`super::Timings::pod`] of cluster time
//! after they are scheduled on a Ready node (any node, for host-network pods) and report status
//! as the real controllers do, including rolling updates where old pods serve until new ones are
//! Ready; kubelets run readiness and liveness probes (which default-deny breaks unless the Cilium
//! probe policy lets the SNAT-ed probes in) and record events; terminating namespaces lose their
//! contents; the Prometheus and Kiali operators create their workloads from their CRs.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{
    Shared, State,
    mesh::{Program, deleting, pod_ready, program, serving},
    store::now,
};

/// Per-pod bookkeeping that is not part of the Pod object.
#[derive(Debug, Clone, Default)]
pub struct PodSim {
    /// (kind, name) of the workload that owns it.
    pub owner: Option<(String, String)>,
    /// Since when it could start: scheduled on a Ready node, or on any node for host networking.
    /// The kubelet pulls images only then.
    pub startable: Option<Instant>,
    pub started: Option<Instant>,
    pub probe_failing_since: Option<Instant>,
    pub last_unhealthy: Option<Instant>,
    /// Created while its workload's rollout was switched to never complete: never Ready.
    pub stuck: bool,
    /// When its deletion began: it runs on until its program exits ([`exits_after`]).
    pub deleted: Option<Instant>,
}

/// How long the controllers wait for a write before they look again anyway: what changes with
/// time alone (a pod starting, a probe failing, a drain ending) is seen within this step. Every
/// write to the store wakes them at once, as an informer's event wakes a real controller, so a
/// chain of writes (Deployment, ReplicaSet, pod, status) takes no step at all.
const TIME_STEP: Duration = Duration::from_millis(40);

/// Runs the controllers until the simulation ends.
pub async fn run(shared: Arc<Shared>) {
    let mut writes = shared.lock().store.subscribe();
    let mut tick = tokio::time::interval(TIME_STEP);
    let mut settled_at = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // The store lives as long as the simulation; a closed channel cannot happen while it runs.
            _ = writes.changed() => {}
        }
        let mut st = shared.lock();
        if st.cluster.is_none() && shared.provider != "existing" {
            continue;
        }
        // A settled cluster (nothing changed, no pod starting or failing probes) needs no work.
        if st.store.rv() == settled_at && !st.pods.values().any(PodSim::busy) {
            // istiod's push waits on time alone.
            super::xds::push(&shared, &mut st);
            continue;
        }
        // What this pass changes is seen by the next one (statuses follow the pods they count).
        settled_at = st.store.rv();
        reconcile(&shared, &mut st);
    }
}

impl PodSim {
    /// Whether time alone will change this pod: it is starting, stuck, failing probes or
    /// terminating.
    fn busy(&self) -> bool {
        self.started.is_none() || self.stuck || self.probe_failing_since.is_some() || self.deleted.is_some()
    }
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn name(v: &Value) -> String {
    s(v, "/metadata/name").to_string()
}

fn ns(v: &Value) -> String {
    s(v, "/metadata/namespace").to_string()
}

/// Kubernetes' short hash of a pod template (FNV-1a, in the "safe" alphabet).
pub fn template_hash(template: &Value) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in serde_json::to_vec(template).expect("json") {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10).map(|i| SAFE[((h >> (i * 6)) % SAFE.len() as u64) as usize] as char).collect()
}

fn suffix(seed: &str) -> String {
    template_hash(&json!(seed))[..5].to_string()
}

fn node_ready(n: &Value) -> bool {
    pod_ready(n)
}

/// The workload mid-rollout, if any, by the rules `kubectl rollout status` applies (and, for
/// DaemonSets, an old pod still serving beside a new one: with surge, `numberAvailable` counts the
/// old pod while the new one is not Ready yet), with the counts that say so. An old pod already
/// being deleted (ztunnel drains for its grace period after its successor is Ready) is the end of
/// a rollout, not part of it: kubectl calls the rollout done then, and the upgrade goes on.
pub fn rollout_in_progress(st: &State) -> Option<String> {
    let i = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let store = &st.store;
    let deployment = store.iter("apps", "deployments", None).find(|d| {
        let want = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
        i(d, "/status/updatedReplicas") < want
            || i(d, "/status/replicas") > i(d, "/status/updatedReplicas")
            || i(d, "/status/availableReplicas") < i(d, "/status/updatedReplicas")
    });
    if let Some(d) = deployment {
        return Some(format!(
            "Deployment {}/{} (replicas {}, updated {}, available {})",
            ns(d),
            name(d),
            i(d, "/status/replicas"),
            i(d, "/status/updatedReplicas"),
            i(d, "/status/availableReplicas")
        ));
    }
    let daemonset = store.iter("apps", "daemonsets", None).find(|d| {
        let want = i(d, "/status/desiredNumberScheduled");
        i(d, "/status/updatedNumberScheduled") < want
            || i(d, "/status/numberAvailable") < want
            || live_pods(st, d) > want
    });
    if let Some(d) = daemonset {
        return Some(format!(
            "DaemonSet {}/{} (desired {}, updated {}, available {}, pods not being deleted {})",
            ns(d),
            name(d),
            i(d, "/status/desiredNumberScheduled"),
            i(d, "/status/updatedNumberScheduled"),
            i(d, "/status/numberAvailable"),
            live_pods(st, d)
        ));
    }
    store
        .iter("apps", "statefulsets", None)
        .find(|d| {
            s(d, "/status/updateRevision") != s(d, "/status/currentRevision")
                || i(d, "/status/readyReplicas") < d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
        })
        .map(|d| format!("StatefulSet {}/{} (ready {})", ns(d), name(d), i(d, "/status/readyReplicas")))
}

/// A DaemonSet's pods that are not being deleted.
fn live_pods(st: &State, d: &Value) -> i64 {
    owned_pods(st, "DaemonSet", &ns(d), &name(d)).iter().filter(|p| !deleting(p)).count() as i64
}

fn reconcile(shared: &Shared, st: &mut State) {
    st.store.establish_pending();
    terminate_namespaces(st);
    operators(st);
    nodes(shared, st);
    for d in st.store.list("apps", "deployments", None) {
        deployment(st, &d);
    }
    for d in st.store.list("apps", "daemonsets", None) {
        daemonset(st, &d);
    }
    for d in st.store.list("apps", "statefulsets", None) {
        statefulset(st, &d);
    }
    garbage_collect(st);
    kubelet(shared, st);
    super::xds::push(shared, st);
}

/// The namespace controller: deletes what a Terminating namespace holds, pods gracefully, and
/// removes the namespace once no pod is left in it (kubernetes v1.35.4
/// pkg/controller/namespace/deletion/namespaced_resources_deleter.go: the namespace's finalizer
/// is removed only when every resource is gone). Until then nothing new can be created in it.
fn terminate_namespaces(st: &mut State) {
    for n in st.store.list("", "namespaces", None) {
        if s(&n, "/status/phase") != "Terminating" {
            continue;
        }
        let gone = name(&n);
        let mut pods_left = false;
        for (g, p, ns, name) in st.store.keys() {
            if ns != gone {
                continue;
            }
            if g.is_empty() && p == "pods" {
                delete_pod(st, &ns, &name);
                pods_left |= st.store.get("", "pods", &ns, &name).is_some();
            } else if let Some(mut held) =
                st.store.get(&g, &p, &ns, &name).filter(|o| super::store::has_finalizers(o)).cloned()
            {
                // Its finalizer's controller removes it, or nothing does and the namespace
                // stays Terminating ("Some content in the namespace has finalizers remaining").
                if held.pointer("/metadata/deletionTimestamp").is_none() {
                    held["metadata"]["deletionTimestamp"] = json!(now());
                    st.store.put(&g, &p, held);
                }
                pods_left = true;
            } else {
                st.store.delete(&g, &p, &ns, &name);
            }
        }
        if !pods_left {
            st.store.delete("", "namespaces", "", &gone);
        }
    }
}

/// The Kiali operator's finalizer on a Kiali CR (kiali-operator watches.yaml).
const KIALI_FINALIZER: &str = "kiali.io/finalizer";

/// Whether an operator (a Deployment running `wanted`) has an available replica.
fn operator_running(st: &State, wanted: Program) -> bool {
    st.store.iter("apps", "deployments", None).any(|d| {
        program(&d["spec"]["template"]) == wanted
            && d.pointer("/status/availableReplicas").and_then(Value::as_i64).unwrap_or(0) > 0
    })
}

/// What the Prometheus and Kiali operators make of their custom resources, wherever they are
/// and whatever they are named.
fn operators(st: &mut State) {
    if operator_running(st, Program::CiliumOperator) {
        super::bootstrap::register_cilium_crds(st);
    }
    if operator_running(st, Program::PrometheusOperator) {
        super::kubelet::sync_kubelet_service(st);
        for cr in st.store.list("monitoring.coreos.com", "prometheuses", None) {
            let (namespace, cr_name) = (ns(&cr), name(&cr));
            let sts = format!("prometheus-{cr_name}");
            if st.store.get("apps", "statefulsets", &namespace, &sts).is_some() {
                continue;
            }
            let workload = prometheus_statefulset(&cr, &config_reloader_image(st));
            st.store.put("apps", "statefulsets", workload);
        }
    }
    if operator_running(st, Program::Istiod) {
        super::istiod::waypoints(st);
    }
    if operator_running(st, Program::KialiOperator) {
        for mut cr in st.store.list("kiali.io", "kialis", None) {
            let namespace = ns(&cr);
            let instance =
                cr.pointer("/spec/deployment/instance_name").and_then(Value::as_str).unwrap_or("kiali").to_string();
            // kiali-operator watches.yaml: the Kiali CR carries `kiali.io/finalizer`, whose
            // playbook (kiali-remove.yml) takes down the server's objects before the CR may go.
            if cr.pointer("/metadata/deletionTimestamp").is_some() {
                st.store.delete("apps", "deployments", &namespace, &instance);
                st.store.delete("", "services", &namespace, &instance);
                st.store.delete("kiali.io", "kialis", &namespace, &name(&cr));
                continue;
            }
            if st.store.get("apps", "deployments", &namespace, &instance).is_some() {
                continue;
            }
            cr["metadata"]["finalizers"] = json!([KIALI_FINALIZER]);
            let server = kiali_server(&cr);
            st.store.put("apps", "deployments", server.deployment);
            st.store.put("", "services", server.service);
            cr["status"] = server.status;
            st.store.put("kiali.io", "kialis", cr);
        }
    }
}

/// The StatefulSet prometheus-operator v0.85.0 makes of a Prometheus custom resource
/// (pkg/prometheus/server/statefulset.go): `prometheus-<name>`, its pods labelled with the CR's
/// name (what the chart's Service selects) and, in the template only, the Prometheus version
/// (`app.kubernetes.io/version`, pkg/operator/kubernetes.go); container `prometheus` on 9090 named
/// by `portName` (default `web`), then the `config-reloader` sidecar on 8080 and the
/// `init-config-reloader` init container on 8081, both ports `reloader-web`, in the image the
/// operator's `--prometheus-config-reloader` names (pkg/prometheus/common.go#L363-L365,
/// pkg/operator/config_reloader.go#L29-L30, #L228-L241). The real control-plane tier holds it to
/// the real operator's.
pub fn prometheus_statefulset(cr: &Value, reloader_image: &str) -> Value {
    let (namespace, cr_name) = (ns(cr), name(cr));
    let selector = json!({"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/managed-by": "prometheus-operator",
                          "app.kubernetes.io/instance": cr_name, "operator.prometheus.io/name": cr_name,
                          "operator.prometheus.io/shard": "0", "prometheus": cr_name});
    let mut workload = super::bootstrap::workload(
        "StatefulSet",
        &namespace,
        &format!("prometheus-{cr_name}"),
        cr.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1),
        &selector,
        "quay.io/prometheus/prometheus:v3.5.0",
        &[],
        None,
    );
    workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] = json!("3.5.0");
    let port_name = cr.pointer("/spec/portName").and_then(Value::as_str).unwrap_or("web");
    let reloader = |name: &str, port: u16| {
        json!({"name": name, "image": reloader_image,
               "ports": [{"name": "reloader-web", "containerPort": port, "protocol": "TCP"}]})
    };
    let pod = &mut workload["spec"]["template"]["spec"];
    pod["containers"][0]["name"] = json!("prometheus");
    pod["containers"][0]["ports"] =
        json!([{"name": port_name, "containerPort": super::prometheus::PORT, "protocol": "TCP"}]);
    pod["containers"].as_array_mut().expect("one container").push(reloader("config-reloader", 8080));
    pod["initContainers"] = json!([reloader("init-config-reloader", 8081)]);
    workload
}

/// The config-reloader image prometheus-operator's `--prometheus-config-reloader` flag names
/// (kube-prometheus-stack passes its own release's), else the operator's default, its own release
/// (pkg/operator/defaults.go#L52).
fn config_reloader_image(st: &State) -> String {
    super::shapes::deployment_flag(st, "--prometheus-config-reloader")
        .unwrap_or_else(|| "quay.io/prometheus-operator/prometheus-config-reloader:v0.85.0".into())
}

/// What kiali-operator makes of a Kiali custom resource: the server's Deployment and Service,
/// and the CR's status once reconciled.
pub struct KialiServer {
    pub deployment: Value,
    pub service: Value,
    pub status: Value,
}

/// The Kiali server of a Kiali CR, as kiali-operator v2.29.0's playbook deploys it
/// (roles/default/kiali-deploy/templates/kubernetes/deployment.yaml and service.yaml): both named
/// `deployment.instance_name` (default `kiali`), in the CR's namespace, the server on
/// `server.port` (20001) named `http`, its metrics on 9090; the status a successful reconcile
/// writes. The Rust-only tier's controllers and the real control-plane tier (acting for the
/// Ansible operator, which cannot run there) both use it.
pub fn kiali_server(cr: &Value) -> KialiServer {
    let namespace = ns(cr);
    let instance = cr.pointer("/spec/deployment/instance_name").and_then(Value::as_str).unwrap_or("kiali").to_string();
    let port = cr.pointer("/spec/server/port").and_then(Value::as_u64).unwrap_or(20001) as u16;
    let labels = json!({"app": "kiali", "app.kubernetes.io/name": "kiali", "app.kubernetes.io/instance": instance});
    KialiServer {
        deployment: super::bootstrap::workload(
            "Deployment",
            &namespace,
            &instance,
            1,
            &labels,
            "quay.io/kiali/kiali:v2.29.0",
            &[port, 9090],
            None,
        ),
        service: super::bootstrap::service(&namespace, &instance, &labels, &[("http", port), ("http-metrics", 9090)]),
        status: json!({"deployment": {"instanceName": instance, "namespace": namespace}, "conditions": [{"type": "Successful", "status": "True", "reason": "Successful", "message": "Reconcile successful"}]}),
    }
}

/// Nodes are Ready once the Cilium agent on them is (on an existing cluster, always).
fn nodes(shared: &Shared, st: &mut State) {
    let cilium_ready: std::collections::BTreeSet<&str> = st
        .store
        .iter("", "pods", Some("kube-system"))
        .filter(|p| s(p, "/metadata/labels/k8s-app") == "cilium" && pod_ready(p))
        .map(|p| s(p, "/spec/nodeName"))
        .collect();
    let changed: Vec<(Value, bool)> = st
        .store
        .iter("", "nodes", None)
        .map(|n| (n, shared.provider == "existing" || cilium_ready.contains(s(n, "/metadata/name"))))
        .filter(|(n, ready)| node_ready(n) != *ready)
        .map(|(n, ready)| (n.clone(), ready))
        .collect();
    for (mut n, ready) in changed {
        let (status, reason, message) = if ready {
            ("True", "KubeletReady", "kubelet is posting ready status")
        } else {
            (
                "False",
                "KubeletNotReady",
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
            )
        };
        n["status"]["conditions"] = json!([{"type": "Ready", "status": status, "reason": reason, "message": message,
                                            "lastHeartbeatTime": now(), "lastTransitionTime": now()}]);
        if ready {
            n["spec"]["taints"] = json!(
                n.pointer("/spec/taints")
                    .and_then(Value::as_array)
                    .map(|ts| ts
                        .iter()
                        .filter(|t| t["key"] != "node.kubernetes.io/not-ready")
                        .cloned()
                        .collect::<Vec<_>>())
                    .unwrap_or_default()
            );
        }
        st.store.put("", "nodes", n);
    }
}

fn node_list(st: &State) -> Vec<(usize, String, bool, bool)> {
    st.store
        .iter("", "nodes", None)
        .enumerate()
        .map(|(i, n)| {
            let tainted = n.pointer("/spec/taints").and_then(Value::as_array).is_some_and(|ts| {
                ts.iter().any(|t| t["key"] == "node-role.kubernetes.io/control-plane" && t["effect"] == "NoSchedule")
            });
            (i, name(n), node_ready(n), tainted)
        })
        .collect()
}

/// A new pod of a workload, Pending, on `node` if given.
#[allow(clippy::too_many_arguments)]
fn create_pod(
    st: &mut State,
    owner: (&str, &str),
    namespace: &str,
    pod_name: &str,
    template: &Value,
    extra_labels: &[(&str, String)],
    node: Option<String>,
) {
    let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
    for (k, v) in extra_labels {
        labels[*k] = json!(v);
    }
    if st.faults.opted_out.as_deref() == Some(owner.1) {
        labels["istio.io/dataplane-mode"] = json!("none");
    }
    let owner_ref_kind = if owner.0 == "Deployment" { "ReplicaSet" } else { owner.0 };
    let owner_ref_name = match (owner.0, extra_labels.first()) {
        ("Deployment", Some((_, hash))) => format!("{}-{hash}", owner.1),
        _ => owner.1.to_string(),
    };
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    super::istiod::inject_proxy_image(st, &mut spec);
    spec["nodeName"] = json!(node);
    if spec.get("serviceAccountName").is_none() {
        spec["serviceAccountName"] = json!("default");
    }
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": namespace, "labels": labels,
                     "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_ref_kind, "name": owner_ref_name,
                                          "uid": format!("owner-{}", suffix(&owner_ref_name)), "controller": true, "blockOwnerDeletion": true}]},
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": "BestEffort",
                   "conditions": [{"type": "PodScheduled", "status": if node.is_some() { "True" } else { "False" }, "lastTransitionTime": now()}]},
    });
    st.store.put("", "pods", pod);
    st.pods.insert(
        format!("{namespace}/{pod_name}"),
        PodSim {
            owner: Some((owner.0.to_string(), owner.1.to_string())),
            stuck: st.faults.rollout_stuck.as_deref() == Some(owner.1),
            ..PodSim::default()
        },
    );
    if let Some(node) = node {
        event(
            st,
            namespace,
            pod_name,
            "Normal",
            "Scheduled",
            &format!("Successfully assigned {namespace}/{pod_name} to {node}"),
            "default-scheduler",
        );
    }
}

fn owned_pods(st: &State, kind: &str, namespace: &str, owner: &str) -> Vec<Value> {
    st.store
        .iter("", "pods", Some(namespace))
        .filter(|p| {
            st.pods.get(&format!("{namespace}/{}", name(p))).and_then(|ps| ps.owner.as_ref())
                == Some(&(kind.to_string(), owner.to_string()))
        })
        .cloned()
        .collect()
}

/// Deletes a pod as the API server and its kubelet do. One that never started goes at once; a
/// started one is marked (`deletionTimestamp`, `deletionGracePeriodSeconds` from its
/// `terminationGracePeriodSeconds`) and keeps running, no longer [`super::mesh::serving`], until its
/// program exits ([`exits_after`]) and the kubelet removes it. Deleting a pod already terminating
/// changes nothing.
pub fn delete_pod(st: &mut State, namespace: &str, pod: &str) {
    let key = format!("{namespace}/{pod}");
    let Some(mut p) = st.store.get("", "pods", namespace, pod).cloned() else { return };
    let sim = st.pods.get(&key).cloned().unwrap_or_default();
    if sim.deleted.is_some() {
        return;
    }
    if sim.started.is_none() {
        st.store.delete("", "pods", namespace, pod);
        st.pods.remove(&key);
        return;
    }
    p["metadata"]["deletionTimestamp"] = json!(now());
    p["metadata"]["deletionGracePeriodSeconds"] = json!(grace_period(&p).as_secs());
    st.store.put("", "pods", p);
    st.pods.insert(key, PodSim { deleted: Some(Instant::now()), ..sim });
    event(st, namespace, pod, "Normal", "Killing", "Stopping container", "kubelet");
}

/// A pod's `terminationGracePeriodSeconds`, by default 30 (k8s.io/api v0.35.4 core/v1
/// `DefaultTerminationGracePeriodSeconds`): when the kubelet kills what still runs.
fn grace_period(p: &Value) -> Duration {
    Duration::from_secs(p.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_u64).unwrap_or(30))
}

/// How long a terminating pod's program runs after SIGTERM, never past its grace period.
/// - ztunnel drains until its self-termination deadline, derived from its
///   `TERMINATION_GRACE_PERIOD_SECONDS` (grace − 5 s above 10 s, else grace − 1 s, at least 1 s:
///   ztunnel 1.30.3 src/config.rs#L748-L762; 25 s with the chart's 30). Connections stay open
///   through a rollout's traffic, so it uses all of it.
/// - Istio's proxy (the gateway) drains for `terminationDrainDuration`, 5 s by default (istio/api
///   1.30 mesh/v1alpha1/proxy.proto `termination_drain_duration`).
/// - Anything else exits after [`super::Timings::pod_exit`].
fn exits_after(shared: &Shared, p: &Value) -> Duration {
    let grace = grace_period(p);
    let runs = match program(p) {
        Program::Ztunnel => {
            let configured = p
                .pointer("/spec/containers/0/env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|e| e["name"] == "TERMINATION_GRACE_PERIOD_SECONDS")
                .and_then(|e| e["value"].as_str()?.parse::<u64>().ok());
            configured.map_or(grace, |secs| {
                Duration::from_secs(if secs > 10 { secs - 5 } else { secs.saturating_sub(1) }.max(1))
            })
        }
        Program::Proxy => Duration::from_secs(5),
        _ => shared.timings.pod_exit,
    };
    runs.min(grace)
}

fn pick_node(st: &State, template: &Value, n: usize) -> Option<String> {
    let host_network = template.pointer("/spec/hostNetwork") == Some(&json!(true));
    let nodes: Vec<_> =
        node_list(st).into_iter().filter(|(_, _, ready, tainted)| (*ready || host_network) && !tainted).collect();
    let nodes = if nodes.is_empty() && host_network { node_list(st) } else { nodes };
    (!nodes.is_empty()).then(|| nodes[n % nodes.len()].1.clone())
}

fn write_status(st: &mut State, plural: &str, mut obj: Value, status: Value) {
    if obj.get("status") == Some(&status) {
        return;
    }
    obj["status"] = status;
    st.store.put("apps", plural, obj);
}

fn deployment(st: &mut State, d: &Value) {
    let (namespace, dname) = (ns(d), name(d));
    let want = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1) as usize;
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = template_hash(&template);
    // The ReplicaSet controller counts active pods only: a terminating one is already gone for it
    // (kubernetes v1.35.4 pkg/controller/controller_utils.go `IsPodActive`).
    let active = |pods: Vec<Value>| -> Vec<Value> { pods.into_iter().filter(|p| !deleting(p)).collect() };
    let pods = active(owned_pods(st, "Deployment", &namespace, &dname));
    let (new, old): (Vec<&Value>, Vec<&Value>) =
        pods.iter().partition(|p| s(p, "/metadata/labels/pod-template-hash") == hash);
    let (new_ready, old_ready) =
        (new.iter().filter(|p| pod_ready(p)).count(), old.iter().filter(|p| pod_ready(p)).count());
    let surge = want.div_ceil(4).max(1);
    let max_unavailable = want / 4;
    let mut created = 0;
    while new.len() + created < want && pods.len() + created < want + surge {
        let pod =
            format!("{dname}-{hash}-{}", suffix(&format!("{dname}{hash}{}{}", new.len() + created, st.store.rv())));
        let node = pick_node(st, &template, new.len() + created);
        create_pod(
            st,
            ("Deployment", &dname),
            &namespace,
            &pod,
            &template,
            &[("pod-template-hash", hash.clone())],
            node,
        );
        created += 1;
    }
    if !old.is_empty() && new_ready > 0 && new_ready + old_ready > want.saturating_sub(max_unavailable) {
        let victim = old.iter().find(|p| !pod_ready(p)).or(old.first()).map(|p| name(p));
        if let Some(v) = victim {
            delete_pod(st, &namespace, &v);
        }
    }
    for extra in new.iter().skip(want) {
        delete_pod(st, &namespace, &name(extra));
    }
    let pods = active(owned_pods(st, "Deployment", &namespace, &dname));
    let updated = pods.iter().filter(|p| s(p, "/metadata/labels/pod-template-hash") == hash).count();
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let complete = updated == want && pods.len() == want && ready == want;
    let available = ready >= want.saturating_sub(max_unavailable);
    let status = json!({
        "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": pods.len(), "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": ready,
        "unavailableReplicas": want.saturating_sub(ready),
        "conditions": [
            {"type": "Available", "status": if available { "True" } else { "False" },
             "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
             "message": if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." }},
            {"type": "Progressing", "status": "True",
             "reason": if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
             "message": if complete { format!("ReplicaSet \"{dname}-{hash}\" has successfully progressed.") } else { format!("ReplicaSet \"{dname}-{hash}\" is progressing.") }},
        ],
    });
    write_status(st, "deployments", d.clone(), status);
}

fn daemonset(st: &mut State, d: &Value) {
    let (namespace, dname) = (ns(d), name(d));
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = template_hash(&template);
    // The DaemonSet controller records each template as a ControllerRevision labelled with its hash
    // (what `kubectl rollout status` and meshcheck's wait read to find the current pods).
    let revision_name = format!("{dname}-{hash}");
    if st.store.get("apps", "controllerrevisions", &namespace, &revision_name).is_none() {
        let mut labels = d.pointer("/spec/selector/matchLabels").cloned().unwrap_or(json!({}));
        labels["controller-revision-hash"] = json!(hash.clone());
        let revision = st
            .store
            .list("apps", "controllerrevisions", Some(&namespace))
            .iter()
            .filter(|r| s(r, "/metadata/ownerReferences/0/name") == dname)
            .count()
            + 1;
        st.store.put(
            "apps",
            "controllerrevisions",
            json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "revision": revision,
                   "metadata": {"name": revision_name, "namespace": namespace, "labels": labels,
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": dname,
                                                     "uid": s(d, "/metadata/uid"), "controller": true}]},
                   "data": template}),
        );
    }
    let nodes = node_list(st);
    let pods = owned_pods(st, "DaemonSet", &namespace, &dname);
    let on = |node: &str| -> Vec<&Value> { pods.iter().filter(|p| s(p, "/spec/nodeName") == node).collect() };
    let is_current = |p: &Value| s(p, "/metadata/labels/controller-revision-hash") == hash;
    let (max_surge, max_unavailable) = rolling_update(d, nodes.len());
    // With surge, one node at a time: a new pod next to the old one, the old one deleted once the
    // new is Ready. Without, up to `maxUnavailable` old pods deleted, and a node gets its new pod
    // only when the old one is gone: a terminating pod still counts as the node's pod
    // (kubernetes v1.35.4 pkg/controller/daemon/update.go `rollingUpdate`, daemon_controller.go
    // `podsShouldBeOnNode`: `shouldRun && !exists`).
    let mut busy = nodes.iter().any(|(_, node, _, _)| {
        let here = on(node);
        here.iter().any(|p| is_current(p) && !pod_ready(p)) && here.iter().any(|p| !is_current(p))
    });
    let mut unavailable = nodes.iter().filter(|(_, node, _, _)| !on(node).iter().any(|p| serving(p))).count();
    for (i, node, _, _) in &nodes {
        let here = on(node);
        let current: Vec<&&Value> = here.iter().filter(|p| is_current(p)).collect();
        let old: Vec<&&Value> = here.iter().filter(|p| !is_current(p)).collect();
        let create = here.is_empty() || (max_surge > 0 && current.is_empty() && !busy);
        if create {
            let pod = format!("{dname}-{}", suffix(&format!("{dname}{node}{hash}{i}")));
            create_pod(
                st,
                ("DaemonSet", &dname),
                &namespace,
                &pod,
                &template,
                &[("controller-revision-hash", hash.clone())],
                Some(node.clone()),
            );
            busy |= !old.is_empty();
        } else if max_surge > 0 && current.iter().any(|p| pod_ready(p)) {
            for p in old {
                delete_pod(st, &namespace, &name(p));
            }
        } else if max_surge == 0
            && current.is_empty()
            && unavailable < max_unavailable
            && let Some(p) = old.iter().find(|p| serving(p))
        {
            delete_pod(st, &namespace, &name(p));
            unavailable += 1;
        }
    }
    // The status counts each node by its oldest pod (creation time to the second, then name):
    // while an old pod drains after a surge, its node is neither updated nor counted by the new
    // pod's readiness (kubernetes v1.35.4 pkg/controller/daemon/daemon_controller.go
    // `updateDaemonSetStatus`: `sort.Sort(podByCreationTimestampAndPhase(daemonPods))`,
    // `pod := daemonPods[0]`).
    let pods = owned_pods(st, "DaemonSet", &namespace, &dname);
    let oldest = |node: &str| {
        pods.iter().filter(|p| s(p, "/spec/nodeName") == node).min_by(|a, b| {
            (s(a, "/metadata/creationTimestamp"), name(a)).cmp(&(s(b, "/metadata/creationTimestamp"), name(b)))
        })
    };
    let firsts: Vec<&Value> = nodes.iter().filter_map(|(_, n, _, _)| oldest(n)).collect();
    let current = firsts.len();
    let updated = firsts.iter().filter(|p| s(p, "/metadata/labels/controller-revision-hash") == hash).count();
    let ready = firsts.iter().filter(|p| pod_ready(p)).count();
    let status = json!({
        "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "desiredNumberScheduled": nodes.len(), "currentNumberScheduled": current, "numberMisscheduled": 0,
        "numberReady": ready, "numberAvailable": ready, "numberUnavailable": nodes.len().saturating_sub(ready),
        "updatedNumberScheduled": updated,
    });
    write_status(st, "daemonsets", d.clone(), status);
}

/// A DaemonSet's `maxSurge` and `maxUnavailable` over `nodes` nodes: numbers, or percentages
/// rounded up; each by default (k8s.io/api v0.35.4 apps/v1 defaults; kubernetes v1.35.4
/// pkg/controller/daemon/util `SurgeCount`, `UnavailableCount`). The ztunnel chart sets
/// `maxSurge: 1, maxUnavailable: 0` (istio 1.30.3 manifests/charts/ztunnel/values.yaml).
fn rolling_update(d: &Value, nodes: usize) -> (usize, usize) {
    let value = |key: &str, default: usize| -> usize {
        match d.pointer(&format!("/spec/updateStrategy/rollingUpdate/{key}")) {
            Some(Value::Number(n)) => n.as_u64().map_or(default, |n| n as usize),
            Some(Value::String(p)) => {
                p.trim_end_matches('%').parse::<usize>().map_or(default, |pct| (pct * nodes).div_ceil(100))
            }
            _ => default,
        }
    };
    let surge = value("maxSurge", 0);
    (surge, value("maxUnavailable", 1))
}

fn statefulset(st: &mut State, d: &Value) {
    let (namespace, dname) = (ns(d), name(d));
    let want = d.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1) as usize;
    let template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let revision = format!("{dname}-{}", template_hash(&template));
    let pods = owned_pods(st, "StatefulSet", &namespace, &dname);
    let all_ready = pods.len() == want && pods.iter().all(pod_ready);
    for i in 0..want {
        let pod = format!("{dname}-{i}");
        match pods.iter().find(|p| name(p) == pod) {
            None if pods.len() == i || pods.iter().filter(|p| pod_ready(p)).count() >= i => {
                let node = pick_node(st, &template, i);
                create_pod(
                    st,
                    ("StatefulSet", &dname),
                    &namespace,
                    &pod,
                    &template,
                    &[
                        ("controller-revision-hash", revision.clone()),
                        ("statefulset.kubernetes.io/pod-name", pod.clone()),
                    ],
                    node,
                );
                break;
            }
            Some(p) if s(p, "/metadata/labels/controller-revision-hash") != revision && all_ready => {
                delete_pod(st, &namespace, &pod);
                break;
            }
            _ => {}
        }
    }
    let pods = owned_pods(st, "StatefulSet", &namespace, &dname);
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let updated = pods.iter().filter(|p| s(p, "/metadata/labels/controller-revision-hash") == revision).count();
    let current = if updated == want && ready == want {
        revision.clone()
    } else {
        d.pointer("/status/currentRevision").and_then(Value::as_str).unwrap_or(&revision).to_string()
    };
    let status = json!({
        "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": pods.len(), "readyReplicas": ready, "availableReplicas": ready, "currentReplicas": want - (want - updated.min(want)),
        "updatedReplicas": updated, "currentRevision": current, "updateRevision": revision, "collisionCount": 0,
    });
    write_status(st, "statefulsets", d.clone(), status);
}

/// Pods whose workload is gone go too (the garbage collector).
fn garbage_collect(st: &mut State) {
    let orphans: Vec<(String, String)> = st
        .store
        .iter("", "pods", None)
        .filter(|p| {
            let Some((kind, owner)) = st.pods.get(&format!("{}/{}", ns(p), name(p))).and_then(|ps| ps.owner.as_ref())
            else {
                return false;
            };
            let plural = match kind.as_str() {
                "Deployment" => "deployments",
                "DaemonSet" => "daemonsets",
                _ => "statefulsets",
            };
            st.store.get("apps", plural, &ns(p), owner).is_none()
        })
        .map(|p| (ns(p), name(p)))
        .collect();
    for (namespace, pod) in orphans {
        delete_pod(st, &namespace, &pod);
    }
}

/// Whether the kubelet's probes reach a pod's probed port: from the node for pods outside the
/// mesh (always admitted), from istio-cni's SNAT address for captured ones, which Cilium's
/// policies must admit under default-deny ([`super::cilium`]).
pub(super) fn probes_reach(st: &State, pod: &Value) -> bool {
    if !super::mesh::captured(st, pod) {
        return true;
    }
    let probed = pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten().find_map(|c| {
        ["readinessProbe", "livenessProbe"].iter().find_map(|k| {
            let p = c.get(*k)?;
            p.pointer("/httpGet/port")
                .or_else(|| p.pointer("/tcpSocket/port"))
                .or_else(|| p.pointer("/grpc/port"))
                .cloned()
        })
    });
    let Some(port) = probed.and_then(|p| super::mesh::container_port(pod, &p)) else { return true };
    !st.faults.probes_dropped_under_deny
        && super::cilium::ingress_allowed(&st.store, pod, super::cilium::Source::World(super::cilium::PROBE_SNAT), port)
        || !super::cilium::ingress_default_deny(&st.store, pod)
}

/// A container's probe of `kind`: its period and failure threshold (the API's defaults 10 and 3).
pub(super) fn probe(c: &Value, kind: &str) -> Option<(u64, u64)> {
    let p = c.get(kind)?;
    Some((
        p.get("periodSeconds").and_then(Value::as_u64).unwrap_or(10),
        p.get("failureThreshold").and_then(Value::as_u64).unwrap_or(3),
    ))
}

/// Each kubelet: starts pods on its node, runs their probes, restarts on liveness failure.
fn kubelet(shared: &Shared, st: &mut State) {
    let nodes: BTreeMap<String, (usize, bool)> = node_list(st).into_iter().map(|(i, n, r, _)| (n, (i, r))).collect();
    for mut p in st.store.list("", "pods", None) {
        let (namespace, pod) = (ns(&p), name(&p));
        let key = format!("{namespace}/{pod}");
        // Pods applied directly (the curl clients) are as much the kubelet's as a workload's.
        let mut sim = st.pods.get(&key).cloned().unwrap_or_default();
        if let Some(since) = sim.deleted {
            // Terminating: the kubelet removes the pod once its program has exited.
            if since.elapsed() >= shared.sim(exits_after(shared, &p)) {
                st.store.delete("", "pods", &namespace, &pod);
                st.pods.remove(&key);
            }
            continue;
        }
        let host_network = p.pointer("/spec/hostNetwork") == Some(&json!(true));
        // Unscheduled pods wait for a Ready node.
        if p.pointer("/spec/nodeName").and_then(Value::as_str).is_none() {
            let template = json!({"spec": p["spec"].clone()});
            if let Some(node) = pick_node(st, &template, st.store.rv() as usize) {
                p["spec"]["nodeName"] = json!(node);
                p["status"]["conditions"] =
                    json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}]);
                st.store.put("", "pods", p);
                event(
                    st,
                    &namespace,
                    &pod,
                    "Normal",
                    "Scheduled",
                    &format!("Successfully assigned {key} to {node}"),
                    "default-scheduler",
                );
            }
            st.pods.insert(key, sim);
            continue;
        }
        let node = s(&p, "/spec/nodeName").to_string();
        let Some(&(node_index, node_ready)) = nodes.get(&node) else { continue };
        if sim.started.is_none() {
            let unpullable = p
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| c["image"] == "auto");
            if !(node_ready || host_network) || unpullable {
                sim.startable = None;
                st.pods.insert(key, sim);
                continue;
            }
            let since = *sim.startable.get_or_insert_with(Instant::now);
            let workload = sim.owner.as_ref().map_or(pod.as_str(), |(_, owner)| owner.as_str());
            if since.elapsed() < shared.sim(shared.timings.pod(workload)) {
                st.pods.insert(key, sim);
                continue;
            }
            sim.started = Some(Instant::now());
            st.ips += 1;
            let ip = if host_network {
                format!("172.18.0.{}", node_index + 2)
            } else {
                format!("10.244.{node_index}.{}", 2 + st.ips % 250)
            };
            p["status"]["phase"] = json!("Running");
            p["status"]["podIP"] = json!(ip);
            p["status"]["podIPs"] = json!([{"ip": ip}]);
            p["status"]["hostIP"] = json!(format!("172.18.0.{}", node_index + 2));
            p["status"]["startTime"] = json!(now());
            for reason in ["Pulled", "Created", "Started"] {
                let msg = match reason {
                    "Pulled" => "Container image already present on machine".to_string(),
                    r => format!("{r} container"),
                };
                event(st, &namespace, &pod, "Normal", reason, &msg, "kubelet");
            }
        }
        let containers = p.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut restarts = p.pointer("/status/containerStatuses/0/restartCount").and_then(Value::as_i64).unwrap_or(0);
        let reach = probes_reach(st, &p);
        let mut ready = true;
        if sim.stuck {
            ready = false;
            unhealthy(
                shared,
                st,
                &mut sim,
                &namespace,
                &pod,
                10,
                "Readiness probe failed: HTTP probe failed with statuscode: 503",
            );
        }
        let readiness = containers.iter().find_map(|c| probe(c, "readinessProbe"));
        let liveness = containers.iter().find_map(|c| probe(c, "livenessProbe"));
        if !reach && (readiness.is_some() || liveness.is_some()) {
            let since = *sim.probe_failing_since.get_or_insert_with(Instant::now);
            let failing = since.elapsed();
            let ip = s(&p, "/status/podIP").to_string();
            if let Some((period, threshold)) = readiness
                && failing >= shared.sim(Duration::from_secs(period * threshold))
            {
                ready = false;
                unhealthy(
                    shared,
                    st,
                    &mut sim,
                    &namespace,
                    &pod,
                    period,
                    &format!(
                        "Readiness probe failed: Get \"http://{ip}:9080/health\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                    ),
                );
            }
            if let Some((period, threshold)) = liveness
                && failing >= shared.sim(Duration::from_secs(period * threshold))
            {
                restarts += 1;
                sim.probe_failing_since = Some(Instant::now());
                event(
                    st,
                    &namespace,
                    &pod,
                    "Normal",
                    "Killing",
                    "Container details failed liveness probe, will be restarted",
                    "kubelet",
                );
            }
        } else {
            sim.probe_failing_since = None;
        }
        let cond =
            |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastProbeTime": null});
        let oom = st.faults.oom_killed.as_deref().is_some_and(|prefix| pod.starts_with(prefix));
        if oom {
            restarts = restarts.max(1);
        }
        let statuses: Vec<Value> = containers
            .iter()
            .map(|c| {
                let mut status = json!({"name": c["name"], "image": c["image"], "imageID": format!("{}@sha256:{}", s(c, "/image"), "0".repeat(64)),
                            "containerID": format!("containerd://{}", template_hash(&json!([&pod, c["name"]]))),
                            "ready": ready, "started": true, "restartCount": restarts,
                            "state": {"running": {"startedAt": p.pointer("/status/startTime").cloned().unwrap_or(json!(now()))}}});
                if oom {
                    status["lastState"] = json!({"terminated": {"exitCode": 137, "reason": "OOMKilled",
                        "startedAt": p.pointer("/status/startTime").cloned().unwrap_or(json!(now())), "finishedAt": now()}});
                }
                status
            })
            .collect();
        p["status"]["containerStatuses"] = json!(statuses);
        p["status"]["conditions"] = json!([
            cond("PodReadyToStartContainers", true),
            cond("Initialized", true),
            cond("Ready", ready),
            cond("ContainersReady", ready),
            cond("PodScheduled", true)
        ]);
        st.pods.insert(key, sim);
        st.store.put("", "pods", p);
    }
}

fn unhealthy(
    shared: &Shared,
    st: &mut State,
    sim: &mut PodSim,
    namespace: &str,
    pod: &str,
    period: u64,
    message: &str,
) {
    if sim.last_unhealthy.is_none_or(|t| t.elapsed() >= shared.sim(Duration::from_secs(period))) {
        sim.last_unhealthy = Some(Instant::now());
        event(st, namespace, pod, "Warning", "Unhealthy", message, "kubelet");
    }
}

/// A core/v1 Event about a pod, as kubelet and the scheduler record them.
pub fn event(st: &mut State, namespace: &str, pod: &str, kind: &str, reason: &str, message: &str, component: &str) {
    let node = st.store.get("", "pods", namespace, pod).map(|p| s(p, "/spec/nodeName").to_string()).unwrap_or_default();
    let uid = st.store.get("", "pods", namespace, pod).map(|p| s(p, "/metadata/uid").to_string()).unwrap_or_default();
    let n = st.store.rv();
    st.store.put(
        "",
        "events",
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{pod}.{n:016x}"), "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": namespace, "uid": uid},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": now(), "lastTimestamp": now(), "eventTime": null,
            "source": {"component": component, "host": node},
            "reportingComponent": component, "reportingInstance": node,
        }),
    );
}
