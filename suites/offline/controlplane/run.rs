//! `meshcheck run` itself on the real control plane (issue 21, item 3): the unchanged binary runs
//! the shipped `existing-cluster` scenario against kube-apiserver v1.35.4 and kwok's nodes, on a
//! cluster whose Cilium the real helm rendered from the pinned chart with meshcheck's values.
//!
//! What runs here is what needs only the API server: the preflight (access reviews, server version),
//! the run's own namespaces and curl clients (created, scheduled by the real scheduler, made Running
//! by kwok, deleted through the real namespace controller's Terminating), the collectors of
//! `node-architecture` and `cilium-prerequisites`, the judges, the run folder and its JUnit, and
//! `gateway-binding` on a gateway whose pods istiod's webhook refuses, and `health`, whose logs
//! come through the API server's `pods/log` from kwok's kubelet API. The checks that reach the
//! data plane are in `super::dataplane`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Output,
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, api::DynamicObject};
use meshcheck::{cluster::namespaces, evidence::Outcome, report::RunRecord};

use super::ControlPlane;
use crate::common::root;

/// The checks of `existing-cluster` that read only what the API server holds.
const API_ONLY_CHECKS: &[&str] = &["node-architecture", "cilium-prerequisites"];

/// A run folder's verdicts by check name.
pub(super) fn verdicts(reports: &Path) -> BTreeMap<String, (Outcome, String)> {
    let record = RunRecord::load(&std::fs::canonicalize(reports.join("latest")).expect("a run folder")).unwrap();
    record
        .results
        .iter()
        .map(|t| {
            (t.name.clone(), (t.verdict.outcome, format!("{}\n{}", t.verdict.reason, t.verdict.details.join("\n"))))
        })
        .collect()
}

/// Asserts that the run `out`, whose folders are under `reports`, exited 0 with a Pass of each of
/// `checks`, showing what it said when not.
pub(super) fn all_passed(out: &Output, reports: &Path, checks: &[&str]) {
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let got = verdicts(reports);
    for check in checks {
        let (outcome, why) = got.get(*check).unwrap_or_else(|| panic!("no verdict of {check}: {got:?}\n{said}"));
        assert_eq!(*outcome, Outcome::Pass, "{check}: {why}\n{said}");
    }
    assert!(out.status.success(), "{said}");
}

/// A copy of fixtures/ whose file `rel` has `from` replaced by `to` (it must be there): what a
/// run reads through `MESHCHECK_FIXTURES`.
pub(super) fn edited_fixtures(rel: &str, from: &str, to: &str) -> tempfile::TempDir {
    let fixtures = tempfile::tempdir().unwrap();
    crate::sim::helm::copy_dir(&root().join("fixtures"), fixtures.path()).unwrap();
    let file = fixtures.path().join(rel);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(from), "{rel} has no `{from}`");
    std::fs::write(&file, text.replace(from, to)).unwrap();
    fixtures
}

/// `meshcheck run` of the shipped `existing-cluster` scenario pointed at `kubeconfig`, with only
/// `checks` and `edit` on top, in `work`: what a user runs, with no stand-in tool on PATH.
pub(super) fn meshcheck_run(
    work: &Path,
    kubeconfig: &str,
    checks: &[&str],
    edit: impl FnOnce(String) -> String,
) -> Output {
    meshcheck_run_with(work, kubeconfig, checks, edit, &[])
}

/// [`meshcheck_run`] with `env` on top (`MESHCHECK_FIXTURES`: an edited copy of fixtures/).
pub(super) fn meshcheck_run_with(
    work: &Path,
    kubeconfig: &str,
    checks: &[&str],
    edit: impl FnOnce(String) -> String,
    env: &[(&str, &str)],
) -> Output {
    let text = std::fs::read_to_string(root().join("scenarios/existing-cluster.yaml")).unwrap();
    let text = text.replace("kubeconfig: ~/.kube/config", &format!("kubeconfig: {kubeconfig}"));
    let scenario = work.join("existing-cluster.yaml");
    std::fs::write(&scenario, edit(crate::rehearsal::only_checks(text, checks))).unwrap();
    meshcheck_run_scenario(work, &scenario, "/usr/bin:/bin", env)
}

/// `meshcheck run --scenario SCENARIO` in `work` as a user runs it, with `path` as PATH and `env`
/// on top: its run folders under `work/reports`, its temporary files under `work/tmp`.
pub(super) fn meshcheck_run_scenario(work: &Path, scenario: &Path, path: &str, env: &[(&str, &str)]) -> Output {
    let tmp = work.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_meshcheck"));
    crate::rehearsal::as_a_user_runs_it(&mut cmd, path, &tmp);
    cmd.current_dir(work).envs(env.iter().copied());
    cmd.args(["run", "--scenario"]).arg(scenario).arg("--reports").arg(work.join("reports")).output().unwrap()
}

/// The named releases of the `ambient-kind` plan, rendered by the real helm, applied in order: each
/// release's CRDs first (helm's `crds/` and install order), then the rest, dry run first.
pub(super) async fn install(live: &meshcheck::cluster::live::Live, names: &[&str]) {
    let Some((_, releases)) = crate::charts::rendered("ambient-kind") else { panic!("checked by the caller") };
    for name in names {
        let release = releases.values().find(|r| r.name == *name).unwrap_or_else(|| panic!("no release {name}"));
        namespaces::ensure(&live.client, &release.namespace, &[], "someone-else").await.unwrap();
        let objects: Vec<DynamicObject> =
            release.objects.iter().map(|o| serde_json::from_value::<DynamicObject>(o.clone()).unwrap()).collect();
        let (crds, rest): (Vec<_>, Vec<_>) =
            objects.into_iter().partition(|o| o.types.as_ref().is_some_and(|t| t.kind == "CustomResourceDefinition"));
        live.apply_objects(&crds, Some(&release.namespace), false).await.unwrap();
        for crd in &crds {
            let name = crd.metadata.name.as_deref().unwrap();
            super::crd_established(&live.client, name, std::time::Duration::from_secs(30)).await;
        }
        live.apply_objects(&rest, Some(&release.namespace), true).await.unwrap();
    }
}

async fn namespace_names(live: &meshcheck::cluster::live::Live) -> Vec<String> {
    let all: Api<Namespace> = Api::all(live.client.clone());
    all.list(&Default::default()).await.unwrap().items.into_iter().filter_map(|n| n.metadata.name).collect()
}

/// The shipped `existing-cluster` scenario, run by the unchanged `meshcheck run` against the real
/// control plane: both API-only checks pass on what the real server answers (kwok's nodes, the
/// real chart's `cilium-config`), the run folder is complete, and the run's own namespaces are gone
/// when it exits (the real namespace controller finished their Terminating), the others untouched.
/// Could-fail, on the same cluster: a scenario that expects arm64 fails `node-architecture`,
/// naming the nodes' amd64; an ingress gateway whose pods the injector webhook never lets be
/// created fails `gateway-binding` ([`gateway_without_pods`]); a `cilium-config` edited as a
/// cluster without kube-proxy replacement has it fails `cilium-prerequisites`.
#[tokio::test]
async fn an_existing_cluster_run_judges_the_real_servers_nodes_and_cilium_config() {
    if crate::charts::rendered("ambient-kind").is_none() {
        return;
    }
    let Some(cp) = ControlPlane::start(&[]) else { return };
    let (live, _dir) = cp.live().await;
    // Cilium as the real helm renders it (cilium 1.19.6, the plan's values): the cluster a user of
    // `existing-cluster` brings. Its Roles in the `cilium-secrets` Namespace it creates hold the
    // dry run's rule for a batch's own namespace (`awaits_the_batch`, harness/cluster/changes.rs)
    // against the real server.
    install(&live, &["cilium"]).await;
    let before = namespace_names(&live).await;
    let kubeconfig = cp.var("KUBECONFIG").to_string();

    let work = tempfile::tempdir().unwrap();
    let (w, k) = (work.path().to_path_buf(), kubeconfig.clone());
    let out = tokio::task::spawn_blocking(move || meshcheck_run(&w, &k, API_ONLY_CHECKS, |t| t)).await.unwrap();
    all_passed(&out, &work.path().join("reports"), API_ONLY_CHECKS);
    assert_eq!(namespace_names(&live).await, before, "the run must delete exactly the namespaces it created");
    run_folder_is_complete(&work.path().join("reports"));

    let arm = tempfile::tempdir().unwrap();
    let (w, k) = (arm.path().to_path_buf(), kubeconfig.clone());
    let out = tokio::task::spawn_blocking(move || {
        meshcheck_run(&w, &k, &["node-architecture"], |t| t.replace("architecture: auto", "architecture: arm64"))
    })
    .await
    .unwrap();
    assert!(!out.status.success(), "a run expecting arm64 on amd64 nodes must fail");
    let (outcome, why) = verdicts(&arm.path().join("reports")).remove("node-architecture").unwrap();
    assert_eq!(outcome, Outcome::Fail, "{why}");
    assert!(why.contains("amd64"), "the verdict must name what the nodes report: {why}");

    gateway_without_pods(&live, &kubeconfig).await;

    without_kube_proxy_replacement(&live).await;
    let kpr = tempfile::tempdir().unwrap();
    let (w, k) = (kpr.path().to_path_buf(), kubeconfig);
    let out =
        tokio::task::spawn_blocking(move || meshcheck_run(&w, &k, &["cilium-prerequisites"], |t| t)).await.unwrap();
    assert!(!out.status.success(), "a run on Cilium without kube-proxy replacement must fail");
    let (outcome, why) = verdicts(&kpr.path().join("reports")).remove("cilium-prerequisites").unwrap();
    assert_eq!(outcome, Outcome::Fail, "{why}");
    assert!(why.contains("kube-proxy-replacement"), "the verdict must name the key: {why}");
}

/// Istio's base, istiod and ingress gateway releases and bookinfo's Gateway: the gateway
/// Deployment's pods are never created, because each create calls istiod's sidecar-injector webhook
/// (failurePolicy Fail) and no istiod answers here (kwok runs no container). `gateway-binding`
/// fails naming the Deployment and the real controller's `ReplicaFailure`, not the label trap its
/// hint would otherwise suggest.
async fn gateway_without_pods(live: &meshcheck::cluster::live::Live, kubeconfig: &str) {
    use k8s_openapi::api::apps::v1::Deployment;
    install(live, &["istio-base", "istiod", "istio-ingress"]).await;
    let labels = [("istio.io/dataplane-mode".to_string(), "ambient".to_string())];
    namespaces::ensure(&live.client, "book-info", &labels, "someone-else").await.unwrap();
    let text = crate::common::upstream_file("bookinfo/istio-1.30.3-networking-bookinfo-gateway.yaml").unwrap();
    let objects =
        meshcheck::plan::fixtures::parse_manifests(&String::from_utf8(text).unwrap(), "bookinfo gateway").unwrap();
    live.apply_objects(&objects, Some("book-info"), true).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(live.client.clone(), "istio-ingress");
    let refused = |d: &Deployment| {
        let conditions = d.status.as_ref().and_then(|s| s.conditions.as_ref());
        conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "ReplicaFailure" && c.status == "True"))
    };
    let since = std::time::Instant::now();
    while !deployments.get_opt("istio-ingress").await.unwrap().is_some_and(|d| refused(&d)) {
        assert!(since.elapsed() < std::time::Duration::from_secs(60), "no ReplicaFailure on the gateway Deployment");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let gw = tempfile::tempdir().unwrap();
    let (w, k) = (gw.path().to_path_buf(), kubeconfig.to_string());
    let out = tokio::task::spawn_blocking(move || meshcheck_run(&w, &k, &["gateway-binding"], |t| t)).await.unwrap();
    assert!(!out.status.success(), "a run whose gateway has no pods must fail");
    let (outcome, why) = verdicts(&gw.path().join("reports")).remove("gateway-binding").unwrap();
    assert_eq!(outcome, Outcome::Fail, "{why}");
    for words in ["Deployment istio-ingress/istio-ingress makes such pods but has none", "failed calling webhook"] {
        assert!(why.contains(words), "the verdict must say `{words}`: {why}");
    }
}

/// `cilium-config` as the chart renders it with `kubeProxyReplacement: false`.
async fn without_kube_proxy_replacement(live: &meshcheck::cluster::live::Live) {
    use kube::api::{Patch, PatchParams};
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(live.client.clone(), "kube-system");
    let off = serde_json::json!({"data": {"kube-proxy-replacement": "false"}});
    config_maps.patch("cilium-config", &PatchParams::default(), &Patch::Merge(off)).await.unwrap();
}

/// The run folder of a passing run: its record, JUnit and the evidence of each check.
fn run_folder_is_complete(reports: &Path) {
    let dir: PathBuf = std::fs::canonicalize(reports.join("latest")).unwrap();
    for file in ["run.json", "junit.xml"] {
        assert!(dir.join(file).is_file(), "{file} missing from {}", dir.display());
    }
    for evidence in ["cluster/nodes.json", "nodes/expect.json"] {
        assert!(dir.join("evidence").join(evidence).is_file(), "{evidence} missing from {}", dir.display());
    }
}

/// ztunnel's container in the pinned chart (istio 1.30.3 manifests/charts/ztunnel/templates/
/// daemonset.yaml, `containers: - name: istio-proxy`): the container whose log kwok serves here.
const ZTUNNEL_CONTAINER: &str = "istio-proxy";

/// What kwok answers for `pods/log` here (kwok v0.8.0 pkg/kwok/server/debugging_logs.go: the
/// first `ClusterLogs` whose selector matches the pod, then the entry naming the container, else
/// the one naming none; the file is read in the CRI log format, as the kubelet reads the
/// runtime's). ztunnel's is a real ztunnel's access log, every other container's is empty.
fn container_logs(dir: &Path) -> (PathBuf, usize) {
    let recorded = crate::common::upstream_file("observed/ztunnel-access-log.istio-docs-troubleshoot-ztunnel.txt")
        .expect("checked by the caller");
    let recorded = String::from_utf8(recorded).unwrap();
    // CRI log format (k8s v1.35 pkg/kubelet/kuberuntime/logs/logs.go `parseCRILog`):
    // `<RFC3339Nano time> <stream> <F|P> <content>`; each recorded line starts with its own time.
    let lines: Vec<String> = recorded
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{} stdout F {l}\n", l.split_whitespace().next().unwrap()))
        .collect();
    std::fs::write(dir.join("ztunnel.log"), lines.concat()).unwrap();
    std::fs::write(dir.join("quiet.log"), "").unwrap();
    let config = format!(
        "apiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterLogs\nmetadata:\n  name: meshcheck-container-logs\n\
         spec:\n  selector:\n    matchNamespaces: [istio-system, kube-system]\n  logs:\n\
         \x20 - containers: [{ZTUNNEL_CONTAINER}]\n    logsFile: {}\n  - logsFile: {}\n",
        dir.join("ztunnel.log").display(),
        dir.join("quiet.log").display()
    );
    std::fs::write(dir.join("logs.yaml"), config).unwrap();
    (dir.join("logs.yaml"), lines.len())
}

/// A kubelet's view of a container the kernel OOM-kills on every start: the pod stays Running
/// (restartPolicy Always), not Ready, the container waiting in `CrashLoopBackOff`
/// (k8s v1.35 pkg/kubelet/container/sync_result.go `ErrCrashLoopBackOff`) with its last run
/// `terminated` as `OOMKilled`, exit code 137, the runtime's reason (containerd v2
/// internal/cri/server/container_status.go). A kwok Stage for pods labelled
/// `meshcheck.test/fault=oom-killed` once kwok's pod-ready stage made them Ready.
const OOM_KILLED_STAGE: &str = r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: meshcheck-oom-killed
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.labels["meshcheck.test/fault"]'
      operator: In
      values: [oom-killed]
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: [Running]
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: In
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: ContainersReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 3
        lastState:
          terminated:
            exitCode: 137
            reason: OOMKilled
            startedAt: {{ $now | Quote }}
            finishedAt: {{ $now | Quote }}
        state:
          waiting:
            reason: CrashLoopBackOff
            message: back-off 40s restarting failed container={{ .name }}
      {{ end }}
"#;

/// `health` on the real control plane: the Cilium, Istio base, istiod, istio-cni and ztunnel
/// releases as the real helm renders them, their DaemonSets and Deployment turned into pods by the
/// real controllers and scheduler and made Running by kwok; meshcheck lists them through the real
/// API server and reads each ztunnel, istio-cni and istiod log through its `pods/log`, which the
/// API server takes to kwok's kubelet API with the run's `tailLines` and `limitBytes`.
/// It passes, and the ztunnel's log it read has every line of the recorded log kwok serves.
/// Could-fail: the ztunnel DaemonSet's pods OOM-killed on every start (a kwok stage writing a
/// kubelet's status) fail it, naming a ztunnel pod and the kill.
#[tokio::test]
async fn a_health_run_reads_the_real_servers_pods_and_their_logs_through_kwok() {
    if crate::charts::rendered("ambient-kind").is_none() {
        return;
    }
    let kwok_config = tempfile::tempdir().unwrap();
    let (logs, recorded_lines) = container_logs(kwok_config.path());
    std::fs::write(kwok_config.path().join("oom.yaml"), OOM_KILLED_STAGE).unwrap();
    let config = format!("{}:{}", logs.display(), kwok_config.path().join("oom.yaml").display());
    let Some(cp) = ControlPlane::start(&[("MESHCHECK_KWOK_CONFIG", &config)]) else { return };
    let (live, _dir) = cp.live().await;
    install(&live, &["cilium", "istio-base", "istiod", "istio-cni", "ztunnel"]).await;
    let kubeconfig = cp.var("KUBECONFIG").to_string();
    let ztunnels = ztunnel_pods_where(&live, "Running", |_| true).await;

    let work = tempfile::tempdir().unwrap();
    let (w, k) = (work.path().to_path_buf(), kubeconfig.clone());
    let out = tokio::task::spawn_blocking(move || meshcheck_run(&w, &k, &["health"], |t| t)).await.unwrap();
    let said = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let (outcome, why) = verdicts(&work.path().join("reports")).remove("health").unwrap_or_else(|| panic!("{said}"));
    assert_eq!(outcome, Outcome::Pass, "{why}\n{said}");
    let folder = std::fs::canonicalize(work.path().join("reports/latest")).unwrap();
    let read: Vec<meshcheck::checks::health::LogErrors> =
        serde_json::from_slice(&std::fs::read(folder.join("evidence/health/log-errors.json")).unwrap()).unwrap();
    for pod in &ztunnels {
        let log = read.iter().find(|l| l.pod == format!("istio-system/{pod}"));
        assert_eq!(log.map(|l| l.lines), Some(recorded_lines), "the log of {pod} as kwok serves it: {read:?}");
    }
    for app in ["istiod-", "istio-cni-node-"] {
        assert!(read.iter().any(|l| l.pod.starts_with(&format!("istio-system/{app}"))), "no log of {app}: {read:?}");
    }

    oom_kill_ztunnel(&live).await;
    let killed = ztunnel_pods_where(&live, "Running", |c| {
        c.last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"))
    })
    .await;
    let sick = tempfile::tempdir().unwrap();
    let (w, k) = (sick.path().to_path_buf(), kubeconfig);
    let out = tokio::task::spawn_blocking(move || meshcheck_run(&w, &k, &["health"], |t| t)).await.unwrap();
    assert!(!out.status.success(), "a run whose ztunnel is OOM-killed must fail");
    let (outcome, why) = verdicts(&sick.path().join("reports")).remove("health").unwrap();
    assert_eq!(outcome, Outcome::Fail, "{why}");
    let named = format!("istio-system/{} container {ZTUNNEL_CONTAINER} was OOM-killed (restarts 3)", killed[0]);
    assert!(why.contains(&named), "the verdict must say `{named}`: {why}");
}

/// The ztunnel pods in `phase` whose ztunnel container satisfies `container`, once there is one.
async fn ztunnel_pods_where(
    live: &meshcheck::cluster::live::Live,
    phase: &str,
    container: impl Fn(&k8s_openapi::api::core::v1::ContainerStatus) -> bool,
) -> Vec<String> {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(live.client.clone(), "istio-system");
    let listed = kube::api::ListParams::default().labels("app=ztunnel");
    let since = std::time::Instant::now();
    loop {
        let found: Vec<String> = pods
            .list(&listed)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase))
            .filter(|p| {
                let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
                statuses.is_some_and(|c| c.iter().any(|c| c.name == ZTUNNEL_CONTAINER && container(c)))
            })
            .filter_map(|p| p.metadata.name)
            .collect();
        if !found.is_empty() {
            return found;
        }
        assert!(since.elapsed() < std::time::Duration::from_secs(180), "no ztunnel pod {phase} as asked within 180 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The ztunnel DaemonSet's pod template labelled for [`OOM_KILLED_STAGE`]: the DaemonSet
/// controller replaces its pods, and kwok gives each new one the kubelet's status of a container
/// the kernel kills on every start.
async fn oom_kill_ztunnel(live: &meshcheck::cluster::live::Live) {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use kube::api::{Patch, PatchParams};
    let daemonsets: Api<DaemonSet> = Api::namespaced(live.client.clone(), "istio-system");
    let labelled =
        serde_json::json!({"spec": {"template": {"metadata": {"labels": {"meshcheck.test/fault": "oom-killed"}}}}});
    daemonsets.patch("ztunnel", &PatchParams::default(), &Patch::Merge(labelled)).await.unwrap();
}
