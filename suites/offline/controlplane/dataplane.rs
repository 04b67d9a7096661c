//! The checks that reach the data plane, on the real control plane (issue 21, item 3): the
//! unchanged `meshcheck run` of `existing-cluster`, its pods' programs the simulation's on a copy
//! of the API server's objects ([`super::programs`]), reached through the API server's
//! `pods/exec`, `pods/portforward` and `pods/log` as the kubelet's streaming API
//! (kubelet-streams) passes them on, and bookinfo's traffic through the simulation's ingress:
//! `l4-authorization`, `mtls` with `gateway-binding`, and `traces` (Tempo through the API
//! server's service proxy, to the pod addresses kubelet-streams stands for), `metrics` on what
//! the real prometheus-operator configured, `kiali` on the server its CR asks for, and `probes`
//! with the kubelet's probes judged against Cilium's policies by the tier's probe loop (kwok's
//! stages make a pod Ready once and never probe it).

use kube::{Api, api::DynamicObject};
use meshcheck::{cluster::namespaces, evidence::Outcome};

use super::{
    ControlPlane,
    run::{edited_fixtures, install, meshcheck_run, meshcheck_run_with, verdicts},
};

/// `l4-authorization` on the real control plane, whose pods' curl, ztunnel and istiod are the
/// simulation's ([`super::programs`]) reached through the API server's `pods/exec` and the
/// kubelet's streaming API (kubelet-streams): Cilium, Istio base, istiod, istio-cni and ztunnel
/// as the real helm renders them, bookinfo (istio 1.30.3 platform/kube/bookinfo.yaml) in an
/// ambient namespace, meshcheck's clients made by the run. Before bookinfo is there, the baseline
/// fails (curl exit 6) and the check stops at it, its policy never applied. Then it passes: the baseline gets through,
/// the AuthorizationPolicy takes effect on curl-other (a reset, curl exit 56), curl-inside stays
/// allowed, and the removal is seen.
/// Could-fail: a principal written with its `spiffe://` scheme (an edited fixture) refuses
/// curl-inside too, and the verdict names curl's exit 56: the exit code travelled as a kubelet
/// sends it, the `ExitCode` cause of the exec status, which kwok's own server loses.
#[tokio::test]
async fn an_l4_authorization_run_execs_curl_through_the_real_api_server() {
    if crate::charts::rendered("ambient-kind").is_none() {
        return;
    }
    let Some(mut programs) = super::programs::Programs::listen() else { return };
    let socket = programs.socket().display().to_string();
    let Some(cp) = ControlPlane::start(&[("MESHCHECK_KUBELET_SOCKET", &socket)]) else { return };
    programs.mirror(cp.client(None).await);
    let (live, _dir) = cp.live().await;
    install(&live, &["cilium", "istio-base", "istiod", "istio-cni", "ztunnel"]).await;
    let kubeconfig = cp.var("KUBECONFIG").to_string();

    // No bookinfo yet: the baseline fails (no Service details, curl exit 6) and the check stops
    // there, its policy never applied.
    let early = tempfile::tempdir().unwrap();
    let (w, k) = (early.path().to_path_buf(), kubeconfig.clone());
    let out = tokio::task::spawn_blocking(move || meshcheck_run(&w, &k, &["l4-authorization"], |t| t)).await.unwrap();
    assert!(!out.status.success(), "a run without bookinfo must not pass");
    let (outcome, why) = verdicts(&early.path().join("reports")).remove("l4-authorization").unwrap();
    assert_eq!(outcome, Outcome::Error, "{why}");
    assert!(why.contains("curl exit 6: could not resolve host") && why.contains("the baseline failed"), "{why}");
    let folder = std::fs::canonicalize(early.path().join("reports/latest")).unwrap();
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("evidence/l4-authorization/results.json")).unwrap()).unwrap();
    let phases: Vec<&str> =
        results["attempts"].as_array().unwrap().iter().map(|a| a["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["before", "before"], "nothing past a failed baseline: {results}");

    bookinfo(&live).await;
    let work = tempfile::tempdir().unwrap();
    let (w, k) = (work.path().to_path_buf(), kubeconfig.clone());
    let out = tokio::task::spawn_blocking(move || meshcheck_run(&w, &k, &["l4-authorization"], |t| t)).await.unwrap();
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let (outcome, why) =
        verdicts(&work.path().join("reports")).remove("l4-authorization").unwrap_or_else(|| panic!("{said}"));
    let results = std::fs::read_to_string(
        std::fs::canonicalize(work.path().join("reports/latest"))
            .unwrap()
            .join("evidence/l4-authorization/results.json"),
    )
    .unwrap_or_default();
    assert_eq!(outcome, Outcome::Pass, "{why}\n{results}");
    assert!(out.status.success(), "{said}");

    let principal = "        - cluster.local/ns/meshcheck-inside/sa/curl-inside";
    let scheme = "        - spiffe://cluster.local/ns/meshcheck-inside/sa/curl-inside";
    let fixtures = edited_fixtures("manifests/l4-allow.yaml", principal, scheme);
    let wrong = tempfile::tempdir().unwrap();
    let (w, k, f) = (wrong.path().to_path_buf(), kubeconfig, fixtures.path().display().to_string());
    let out = tokio::task::spawn_blocking(move || {
        meshcheck_run_with(&w, &k, &["l4-authorization"], |t| t, &[("MESHCHECK_FIXTURES", &f)])
    })
    .await
    .unwrap();
    assert!(!out.status.success(), "a policy that allows no one must fail the run");
    let (outcome, why) = verdicts(&wrong.path().join("reports")).remove("l4-authorization").unwrap();
    assert_eq!(outcome, Outcome::Fail, "{why}");
    let named = "under the policy curl-inside got HTTP 000, curl exit 56";
    assert!(why.contains(named), "the verdict must say `{named}`: {why}");
}

/// bookinfo as its manifest has it (istio 1.30.3 samples/bookinfo/platform/kube/bookinfo.yaml) in
/// `book-info`, labelled for ambient, its pods Ready (kwok's pod-ready stage).
async fn bookinfo(live: &meshcheck::cluster::live::Live) {
    let labels = [("istio.io/dataplane-mode".to_string(), "ambient".to_string())];
    namespaces::ensure(&live.client, "book-info", &labels, "someone-else").await.unwrap();
    let text = crate::common::upstream_file("bookinfo/istio-1.30.3-bookinfo.yaml").unwrap();
    let objects = meshcheck::plan::fixtures::parse_manifests(&String::from_utf8(text).unwrap(), "bookinfo").unwrap();
    live.apply_objects(&objects, Some("book-info"), true).await.unwrap();
    all_ready(live, "book-info", 6).await;
}

/// Waits until `ns` has at least `count` pods, every one Ready.
async fn all_ready(live: &meshcheck::cluster::live::Live, ns: &str, count: usize) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(live.client.clone(), ns);
    let since = std::time::Instant::now();
    loop {
        let all = pods.list(&Default::default()).await.unwrap().items;
        if all.len() >= count && all.iter().all(ready) {
            return;
        }
        assert!(since.elapsed() < std::time::Duration::from_secs(180), "{ns}: not {count} Ready pods within 180 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `mtls` on the real control plane, through all three of the kubelet's calls and the ingress:
/// bookinfo's traffic enters at the simulation's ingress gateway (a Ready pod of the real gateway
/// release a bookinfo Gateway selects), ztunnel's config dump and stats come through
/// `pods/portforward` and its access log through `pods/log`, and the STRICT probe's curls through
/// `pods/exec`. The gateway's pods get their proxy image from the API server's call to istiod's
/// injection webhook (the simulation's istiod, [`super::programs`]). It passes, and so does
/// `gateway-binding` on those pods (`gateway_without_pods` shows them refused where no istiod
/// answers the call). Could-fail, on the same
/// cluster: ratings' pods opted out of ambient fail mtls, naming
/// the plaintext hop reviews -> ratings and its access-log lines without identities.
#[tokio::test]
async fn an_mtls_run_reads_ztunnel_through_port_forward_and_logs_of_the_real_api_server() {
    let Some(mesh) = Mesh::behind_the_ingress(&[]).await else { return };
    let run = |checks: &'static [&'static str]| mesh.run(checks, |t| t);
    let (out, work) = run(&["gateway-binding", "mtls"]).await;
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let got = verdicts(&work.path().join("reports"));
    for check in ["gateway-binding", "mtls"] {
        let (outcome, why) = got.get(check).unwrap_or_else(|| panic!("no verdict of {check}: {said}"));
        assert_eq!(*outcome, Outcome::Pass, "{check}: {why}\n{said}");
    }
    assert!(out.status.success(), "{said}");

    opt_out_of_ambient(&mesh.live, "ratings-v1").await;
    let (out, work) = run(&["mtls"]).await;
    assert!(!out.status.success(), "a run with a plaintext hop must fail");
    let (outcome, why) = verdicts(&work.path().join("reports")).remove("mtls").unwrap();
    assert_eq!(outcome, Outcome::Fail, "{why}");
    for words in ["reviews -> ratings: ", "src.identity=(absent), dst.identity=(absent)"] {
        assert!(why.contains(words), "the verdict must say `{words}`: {why}");
    }
}

/// The Deployment's pods opted out of ambient (`istio.io/dataplane-mode: none`, istio 1.30.3
/// cni/pkg/util/podutil.go `PodRedirectionEnabled`), the rollout done: its new pod Ready, the old
/// one gone.
async fn opt_out_of_ambient(live: &meshcheck::cluster::live::Live, deployment: &str) {
    use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
    use kube::api::{Patch, PatchParams};
    let deployments: Api<Deployment> = Api::namespaced(live.client.clone(), "book-info");
    let out = serde_json::json!({"spec": {"template": {"metadata": {"labels": {"istio.io/dataplane-mode": "none"}}}}});
    deployments.patch(deployment, &PatchParams::default(), &Patch::Merge(out)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(live.client.clone(), "book-info");
    let app = deployment.split('-').next().unwrap();
    let since = std::time::Instant::now();
    loop {
        let listed = kube::api::ListParams::default().labels(&format!("app={app}"));
        let all = pods.list(&listed).await.unwrap().items;
        let opted_out = |p: &Pod| {
            p.metadata.labels.as_ref().and_then(|l| l.get("istio.io/dataplane-mode")).map(String::as_str)
                == Some("none")
        };
        if !all.is_empty() && all.iter().all(|p| opted_out(p) && ready(p)) {
            return;
        }
        assert!(since.elapsed() < std::time::Duration::from_secs(180), "{deployment} not rolled out within 180 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `traces` on the real control plane: Tempo's release (grafana tempo 1.26.1 as the real helm
/// renders it, its StatefulSet's pod made by the real controller) and meshcheck's `Telemetry`,
/// bookinfo's traffic through the ingress with a `traceparent` each, and every trace read back
/// from Tempo through the API server's service proxy, which dials the Tempo pod's address: that
/// address is the control plane's network namespace's own, where kubelet-streams listens for the
/// pods and passes the connection to the simulation's Tempo.
/// Could-fail: with the Telemetry deleted no span is exported and traces fails naming the
/// requests whose traces Tempo never had.
#[tokio::test]
async fn a_traces_run_reads_tempo_through_the_real_api_servers_service_proxy() {
    let Some(mesh) = Mesh::behind_the_ingress(&["tempo"]).await else { return };
    let telemetry = meshcheck::plan::fixtures::manifest("telemetry.yaml").unwrap();
    mesh.live.apply_objects(&telemetry, Some("istio-system"), true).await.unwrap();

    let (out, work) = mesh.run(&["traces"], |t| t).await;
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let (outcome, why) = verdicts(&work.path().join("reports")).remove("traces").unwrap_or_else(|| panic!("{said}"));
    assert_eq!(outcome, Outcome::Pass, "{why}\n{said}");

    let telemetries = custom(&mesh.live.client, Some("istio-system"), ("telemetry.istio.io", "v1", "Telemetry"));
    for t in &telemetry {
        telemetries.delete(t.metadata.name.as_deref().unwrap(), &Default::default()).await.unwrap();
    }
    // Tempo's polling for traces that never come cut to a tenth (3 minutes by default).
    let (out, silent) = mesh.run(&["traces"], |t| t + "timeouts:\n  settle_scale: 0.1\n").await;
    assert!(!out.status.success(), "a run whose mesh exports no span must fail");
    let (outcome, why) = verdicts(&silent.path().join("reports")).remove("traces").unwrap();
    assert_eq!(outcome, Outcome::Fail, "{why}");
    assert!(why.contains("(gateway answered 200) never arrived in Tempo"), "{why}");
}

/// `metrics` on the real control plane, with the real prometheus-operator (v0.85.0, the
/// kube-prometheus-stack 77.0.0 chart's, built by `.ci/build-go-tools`) doing what it does in its
/// pod: kube-prometheus-stack as the real helm renders it with meshcheck's values, the operator
/// run with its Deployment's own arguments, meshcheck's ServiceMonitor and PodMonitor
/// (fixtures/manifests/istio-monitors.yaml). The operator writes the Prometheus StatefulSet (its
/// pod made by the real controller) and the scrape configuration Secret; the simulation's
/// Prometheus in that pod scrapes what that configuration says, as the pod's config-reloader
/// hands it over (gunzipped, `$(SHARD)` expanded). `metrics` reads the targets and the query
/// through the API server's service proxy, and passes.
/// Could-fail: the PodMonitor's port named `ztunnel-metrics` (no container declares it): the
/// operator's configuration keeps no ztunnel target, and the verdict says so.
#[tokio::test]
async fn a_metrics_run_reads_what_the_real_prometheus_operator_configured() {
    let Some(mesh) = Mesh::behind_the_ingress(&["kps"]).await else { return };
    let (_operator, config) = mesh.prometheus_operated().await;

    // The Rust-only tier's operator makes the same StatefulSet: name, selector, pod labels, the
    // containers and init containers with their images and ports.
    let (real, rust) = prometheus_statefulsets(&mesh.live).await;
    assert_eq!(shape(&rust), shape(&real), "the Rust simulation's StatefulSet against the real operator's");

    let (out, work) = mesh.run(&["metrics"], scaled).await;
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let (outcome, why) = verdicts(&work.path().join("reports")).remove("metrics").unwrap_or_else(|| panic!("{said}"));
    assert_eq!(outcome, Outcome::Pass, "{why}\n{said}");
    // Every pool Prometheus reports is a job of the operator's configuration; the operator's own
    // ServiceMonitor is not one: the operator skipped it (its tlsConfig names the Secret that
    // the chart's admission hook Job would make, and no Job runs here).
    let folder = std::fs::canonicalize(work.path().join("reports/latest")).unwrap();
    let targets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("evidence/metrics/targets.json")).unwrap()).unwrap();
    let pools: std::collections::BTreeSet<&str> = targets["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["scrapePool"].as_str().unwrap())
        .collect();
    assert!(pools.iter().all(|p| config.contains(&format!("- job_name: {p}\n"))), "{pools:?}\n{config}");
    assert!(!pools.iter().any(|p| p.contains("prom-operator")), "{pools:?}");
    // The Rust-only tier computes these targets from the monitors by prometheus-operator's rules
    // (no operator writes a configuration there): target for target, pool, address and labels,
    // the same as the real operator's configuration gives.
    let (real, rust) =
        mesh.programs.mirrored().prometheus_both_ways("monitoring", "prometheus-prom-prometheus-0").unwrap();
    assert_eq!(rust, real, "the Rust simulation's operator rules against the real operator's configuration");

    let podmonitors = custom(&mesh.live.client, Some("monitoring"), ("monitoring.coreos.com", "v1", "PodMonitor"));
    let renamed = serde_json::json!({"spec": {"podMetricsEndpoints": [
        {"port": "ztunnel-metrics", "path": "/stats/prometheus", "interval": "15s"}
    ]}});
    podmonitors.patch("ztunnel", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(renamed)).await.unwrap();
    configured(&mesh.live, |c| c.contains("regex: ztunnel-metrics")).await;
    let (out, work) = mesh.run(&["metrics"], scaled).await;
    assert!(!out.status.success(), "a run whose PodMonitor selects no port must fail");
    let (outcome, why) = verdicts(&work.path().join("reports")).remove("metrics").unwrap();
    assert_eq!(outcome, Outcome::Fail, "{why}");
    assert!(why.contains("ztunnel"), "the verdict must name ztunnel's missing targets: {why}");
}

/// The StatefulSet the real prometheus-operator made for `monitoring/prom-prometheus`, and the one
/// the Rust-only tier's operator rule makes of the same custom resource.
async fn prometheus_statefulsets(live: &meshcheck::cluster::live::Live) -> (serde_json::Value, serde_json::Value) {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let real = Api::<StatefulSet>::namespaced(live.client.clone(), "monitoring");
    let real = serde_json::to_value(real.get("prometheus-prom-prometheus").await.unwrap()).unwrap();
    let crs = custom(&live.client, Some("monitoring"), ("monitoring.coreos.com", "v1", "Prometheus"));
    let cr = serde_json::to_value(crs.get("prom-prometheus").await.unwrap()).unwrap();
    let reloader = "quay.io/prometheus-operator/prometheus-config-reloader:v0.85.0";
    (real, crate::sim::controllers::prometheus_statefulset(&cr, reloader))
}

/// What of a StatefulSet the checks and the simulation's programs read: its name, selector, pod
/// labels, and each container's and init container's name, image and named ports.
fn shape(sts: &serde_json::Value) -> serde_json::Value {
    let containers = |field: &str| -> Vec<serde_json::Value> {
        let pod = &sts["spec"]["template"]["spec"];
        pod[field]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let ports: Vec<serde_json::Value> = c["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| serde_json::json!([p["name"], p["containerPort"]]))
                    .collect();
                serde_json::json!({"name": c["name"], "image": c["image"], "ports": ports})
            })
            .collect()
    };
    serde_json::json!({
        "name": sts["metadata"]["name"],
        "selector": sts["spec"]["selector"]["matchLabels"],
        "labels": sts["spec"]["template"]["metadata"]["labels"],
        "containers": containers("containers"),
        "initContainers": containers("initContainers"),
    })
}

/// `kiali` on the real control plane: the kiali-operator release as the real helm renders it with
/// meshcheck's values (its Kiali CR in istio-system: anonymous auth, Prometheus at
/// prom-prometheus.monitoring:9090), the Kiali server the CR asks for made as the operator's
/// playbook makes it ([`KialiOperator`]), the real prometheus-operator's Prometheus behind it.
/// `kiali` reads Kiali's status and its graph of book-info through the API server's service
/// proxy, the graph computed from the metrics of that Prometheus, and passes.
/// Could-fail: the CR's `auth.strategy` set to `token`: Kiali answers 401 to the service proxy
/// and the verdict says to set `anonymous`.
#[tokio::test]
async fn a_kiali_run_reads_the_server_its_cr_asks_for_through_the_service_proxy() {
    let Some(mesh) = Mesh::behind_the_ingress(&["kps", "kiali-operator"]).await else { return };
    let (_prometheus, _) = mesh.prometheus_operated().await;
    let _kiali = KialiOperator::start(&mesh.live);
    serving(&mesh.live, "istio-system", "app=kiali").await;

    let (out, work) = mesh.run(&["kiali"], scaled).await;
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let (outcome, why) = verdicts(&work.path().join("reports")).remove("kiali").unwrap_or_else(|| panic!("{said}"));
    assert_eq!(outcome, Outcome::Pass, "{why}\n{said}");

    let token = serde_json::json!({"spec": {"auth": {"strategy": "token"}}});
    custom(&mesh.live.client, Some("istio-system"), KIALI)
        .patch("kiali", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(token))
        .await
        .unwrap();
    let (out, work) = mesh.run(&["kiali"], scaled).await;
    assert!(!out.status.success(), "a run whose Kiali asks for a login must fail");
    let (outcome, why) = verdicts(&work.path().join("reports")).remove("kiali").unwrap();
    assert_ne!(outcome, Outcome::Pass, "{why}");
    assert!(why.contains("set `auth.strategy: anonymous`"), "{why}");
}

/// `probes` on the real control plane, the kubelet's probes judged by the tier's probe loop
/// ([`super::programs::Programs::probe`]) against Cilium's policies as the copy has them: the
/// mesh behind the ingress with kube-prometheus-stack and the real prometheus-operator, Cilium's
/// real CRDs registered by its operator ([`super::cilium::CiliumOperator`]), meshcheck's
/// `allow-ambient-hostprobes` policy and probe-target (fixtures/manifests/probe-target.yaml,
/// readiness every 5 s, 2 failures) in book-info. With the scenario's negative control on, the run
/// applies default-deny, sees every probed pod stay Ready with no restart and no new `Unhealthy`
/// event, then deletes the Cilium policy and sees the probes fail, and passes.
/// Could-fail: the policy edited to admit 169.254.7.128 instead of istio-cni's SNAT address: under default-deny the probes fail, and the verdict names the `Unhealthy` events.
#[tokio::test]
async fn a_probes_run_sees_the_kubelets_probes_under_default_deny_through_ciliums_policy() {
    let Some(tools) = crate::common::control_plane_tools() else { return };
    let Some(mut mesh) = Mesh::behind_the_ingress(&["kps"]).await else { return };
    let client = mesh.cp.client(None).await;
    let _cilium = super::cilium::CiliumOperator::start(client.clone(), &tools);
    let (_operator, _) = mesh.prometheus_operated().await;
    let ccnp = "ciliumclusterwidenetworkpolicies.cilium.io";
    super::crd_established(&client, ccnp, std::time::Duration::from_secs(60)).await;
    let policy = meshcheck::plan::fixtures::manifest("cilium-allow-ambient-hostprobes.yaml").unwrap();
    mesh.live.apply_objects(&policy, None, true).await.unwrap();
    let hub = [("BOOKINFO_HUB", "registry.istio.io/release")];
    let target = meshcheck::plan::fixtures::manifest_rendered("probe-target.yaml", &hub).unwrap();
    mesh.live.apply_objects(&target, Some("book-info"), true).await.unwrap();
    all_ready(&mesh.live, "book-info", 8).await;
    mesh.programs.probe(client);
    let negative_control = |t: String| t + "probes:\n  negative_control: true\n";

    let (out, work) = mesh.run(&["probes"], negative_control).await;
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let (outcome, why) = verdicts(&work.path().join("reports")).remove("probes").unwrap_or_else(|| panic!("{said}"));
    assert_eq!(outcome, Outcome::Pass, "{why}\n{said}");
    assert!(out.status.success(), "{said}");
    // The negative control ran and saw what the check exists to see.
    let folder = std::fs::canonicalize(work.path().join("reports/latest")).unwrap();
    let events = std::fs::read_to_string(folder.join("evidence/probes/negative/events-after.json")).unwrap();
    assert!(events.contains("\"Unhealthy\""), "without the Cilium policy the probes must fail: {events}");

    // The cluster's owner wrote another address into the policy: the same object, edited.
    let text = meshcheck::plan::fixtures::text("manifests/cilium-allow-ambient-hostprobes.yaml")
        .replace("169.254.7.127/32", "169.254.7.128/32");
    let elsewhere = meshcheck::plan::fixtures::parse_manifests(&text, "edited policy").unwrap();
    mesh.live.apply_objects(&elsewhere, None, true).await.unwrap();
    let (out, work) = mesh.run(&["probes"], |t| t).await;
    assert!(!out.status.success(), "a policy that admits no probe must fail the run");
    let (outcome, why) = verdicts(&work.path().join("reports")).remove("probes").unwrap();
    assert_eq!(outcome, Outcome::Fail, "{why}");
    assert!(why.contains("Unhealthy"), "the verdict must name the probes' Unhealthy events: {why}");
}

/// The Kiali custom resource's group, version and kind (the kiali-operator chart's CRD).
const KIALI: (&str, &str, &str) = ("kiali.io", "v1alpha1", "Kiali");

/// The objects of a custom resource kind (group, version, kind), in `ns` or in every namespace.
fn custom(client: &kube::Client, ns: Option<&str>, (group, version, kind): (&str, &str, &str)) -> Api<DynamicObject> {
    let resource = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(group, version, kind));
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// A scenario edit: the checks' fixed settle waits cut to a fifth.
fn scaled(scenario: String) -> String {
    scenario + "timeouts:\n  settle_scale: 0.2\n"
}

/// Waits until a pod with `labels` in `ns` is Ready.
async fn serving(live: &meshcheck::cluster::live::Live, ns: &str, labels: &str) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(live.client.clone(), ns);
    let since = std::time::Instant::now();
    let listed = kube::api::ListParams::default().labels(labels);
    while !pods.list(&listed).await.unwrap().items.iter().any(ready) {
        assert!(since.elapsed() < std::time::Duration::from_secs(180), "{ns}: no Ready pod {labels} within 180 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// What kiali-operator does for each Kiali CR, done here on the real API server: its playbook is
/// Ansible, which cannot run here, so the server's Deployment and Service and the CR's status
/// are what the simulation's rule makes of the CR ([`crate::sim::controllers::kiali_server`], the
/// one the Rust-only tier's controllers apply); the real controllers and kwok make the pod.
/// Stopped when dropped.
pub(super) struct KialiOperator(tokio::task::JoinHandle<()>);

impl KialiOperator {
    pub(super) fn start(live: &meshcheck::cluster::live::Live) -> KialiOperator {
        use k8s_openapi::api::{apps::v1::Deployment, core::v1::Service};
        let client = live.client.clone();
        let all = custom(&client, None, KIALI);
        KialiOperator(tokio::spawn(async move {
            loop {
                for cr in all.list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
                    let cr = serde_json::to_value(&cr).unwrap();
                    let server = crate::sim::controllers::kiali_server(&cr);
                    let ns = cr["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
                    let deployment: Deployment = serde_json::from_value(server.deployment).unwrap();
                    let service: Service = serde_json::from_value(server.service).unwrap();
                    let create = kube::api::PostParams::default();
                    let _ = Api::<Deployment>::namespaced(client.clone(), &ns).create(&create, &deployment).await;
                    let _ = Api::<Service>::namespaced(client.clone(), &ns).create(&create, &service).await;
                    let name = cr["metadata"]["name"].as_str().unwrap_or_default();
                    let status = serde_json::json!({"status": server.status});
                    let kialis = custom(&client, Some(&ns), KIALI);
                    let _ = kialis.patch_status(name, &Default::default(), &kube::api::Patch::Merge(status)).await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }))
    }
}

impl Drop for KialiOperator {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The real prometheus-operator, run here with the arguments of its Deployment as the real helm
/// rendered it (kube-prometheus-stack 77.0.0 templates/prometheus-operator/deployment.yaml),
/// through the door to the API server with the control plane's admin certificate instead of its
/// pod's service account. Its web flags are left out: they serve its own metrics and admission
/// webhooks over TLS files only its pod has, and nothing here calls them. Killed when dropped.
pub(super) struct Operator(std::process::Child);

impl Operator {
    pub(super) async fn start(cp: &ControlPlane, live: &meshcheck::cluster::live::Live) -> Operator {
        use k8s_openapi::api::apps::v1::Deployment;
        let deployments: Api<Deployment> = Api::namespaced(live.client.clone(), "monitoring");
        let deployment = deployments.get("prom-operator").await.unwrap();
        let spec = deployment.spec.and_then(|s| s.template.spec).unwrap();
        let args: Vec<String> = spec.containers[0]
            .args
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| !a.starts_with("--web."))
            .collect();
        let pki = cp.dir.path().join("pki");
        let binary = crate::common::control_plane_tools().unwrap().join("prometheus-operator");
        let log = std::fs::File::create(cp.dir.path().join("logs/prometheus-operator.log")).unwrap();
        let child = std::process::Command::new(binary)
            .args(&args)
            .arg("--web.listen-address=127.0.0.1:0")
            .arg(format!("--apiserver={}", cp.var("APISERVER")))
            .arg(format!("--ca-file={}", pki.join("ca.crt").display()))
            .arg(format!("--cert-file={}", pki.join("admin.crt").display()))
            .arg(format!("--key-file={}", pki.join("admin.key").display()))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Operator(child)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the scrape configuration prometheus-operator wrote for `prom-prometheus` (Secret
/// `prometheus-prom-prometheus`, key `prometheus.yaml.gz`, pkg/prometheus/server/operator.go
/// `createOrUpdateConfigurationSecret`) says what `holds` wants; returns it.
async fn configured(live: &meshcheck::cluster::live::Live, holds: impl Fn(&str) -> bool) -> String {
    use k8s_openapi::api::core::v1::Secret;
    let secrets: Api<Secret> = Api::namespaced(live.client.clone(), "monitoring");
    let since = std::time::Instant::now();
    let mut text = String::new();
    while since.elapsed() < std::time::Duration::from_secs(120) {
        let secret = secrets.get_opt("prometheus-prom-prometheus").await.unwrap();
        let gz = secret.and_then(|s| s.data).and_then(|d| d.get("prometheus.yaml.gz").cloned());
        if let Some(gz) = gz {
            text.clear();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz.0.as_slice()), &mut text).unwrap();
            if holds(&text) {
                return text;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("prometheus-operator's configuration never held what was awaited:\n{text}");
}

/// Whether the pod's `Ready` condition is True.
fn ready(p: &k8s_openapi::api::core::v1::Pod) -> bool {
    let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The mesh behind the simulation's ingress on the real control plane: the programs on the copy
/// (istiod's webhook patcher among them), Cilium, Istio base, istiod, istio-cni, ztunnel, the
/// ingress gateway and the releases `more`, each Ready, bookinfo and its Gateway.
struct Mesh {
    programs: super::programs::Programs,
    cp: ControlPlane,
    live: meshcheck::cluster::live::Live,
    _evidence: tempfile::TempDir,
}

impl Mesh {
    async fn behind_the_ingress(more: &[&str]) -> Option<Mesh> {
        crate::charts::rendered("ambient-kind")?;
        let mut programs = super::programs::Programs::listen()?;
        let socket = programs.socket().display().to_string();
        let cp = ControlPlane::start(&[("MESHCHECK_KUBELET_SOCKET", socket.as_str())])?;
        programs.mirror(cp.client(None).await);
        programs.patch_webhooks(cp.client(None).await);
        let (live, evidence) = cp.live().await;
        install(&live, &["cilium", "istio-base", "istiod", "istio-cni", "ztunnel", "istio-ingress"]).await;
        install(&live, more).await;
        let (_, releases) = crate::charts::rendered("ambient-kind")?;
        for name in ["istio-ingress"].iter().chain(more) {
            let release = releases.values().find(|r| r.name == *name).unwrap();
            all_ready(&live, &release.namespace, 1).await;
        }
        bookinfo(&live).await;
        let text = crate::common::upstream_file("bookinfo/istio-1.30.3-networking-bookinfo-gateway.yaml").unwrap();
        let gateway = meshcheck::plan::fixtures::parse_manifests(&String::from_utf8(text).unwrap(), "gateway").unwrap();
        live.apply_objects(&gateway, Some("book-info"), true).await.unwrap();
        Some(Mesh { programs, cp, live, _evidence: evidence })
    }

    /// The real prometheus-operator at work on kube-prometheus-stack's Prometheus ([`Operator`]),
    /// meshcheck's ServiceMonitor and PodMonitor applied and in its configuration, its pod
    /// Ready; the operator (running while kept) and that configuration.
    async fn prometheus_operated(&self) -> (Operator, String) {
        let operator = Operator::start(&self.cp, &self.live).await;
        let monitors = meshcheck::plan::fixtures::manifest("istio-monitors.yaml").unwrap();
        self.live.apply_objects(&monitors, Some("monitoring"), true).await.unwrap();
        let config = configured(&self.live, |c| c.contains("job_name: podMonitor/monitoring/ztunnel/0")).await;
        serving(&self.live, "monitoring", "operator.prometheus.io/name=prom-prometheus").await;
        (operator, config)
    }

    /// [`meshcheck_run`] of `checks` with the scenario's ingress at the simulation's, `edit` on
    /// top, and the folder it ran in.
    async fn run(
        &self,
        checks: &'static [&'static str],
        edit: impl FnOnce(String) -> String + Send + 'static,
    ) -> (std::process::Output, tempfile::TempDir) {
        let work = tempfile::tempdir().unwrap();
        let (w, k, ingress) =
            (work.path().to_path_buf(), self.cp.var("KUBECONFIG").to_string(), self.programs.ingress_url());
        let edit = move |t: String| edit(t.replace("url: http://127.0.0.1:8080", &format!("url: {ingress}")));
        let out = tokio::task::spawn_blocking(move || meshcheck_run(&w, &k, checks, edit)).await.unwrap();
        (out, work)
    }
}
