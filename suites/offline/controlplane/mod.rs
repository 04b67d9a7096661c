//! The real control-plane tier (issue 21): faults only a real API server gives, rehearsed against
//! etcd, kube-apiserver v1.35.4, kube-controller-manager, kube-scheduler and kwok, built from their
//! Go modules at the pinned versions (`.ci/build-go-tools`) and started by
//! `suites/controlplane/start.sh` in a network namespace of their own (root or password-less sudo).
//! Each test starts its own control plane (about 9 s) and stops it when dropped; the harness's own
//! code (waits, namespaces, applies) talks to it through start.sh's door on this side's loopback.
//!
//! `cargo test --test offline controlplane::` runs this tier alone; `run` holds the tier's
//! `meshcheck run` rehearsals.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
};
use meshcheck::cluster::namespaces::{self, Ensured};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::common::{Captured, root};

mod cilium;
mod dataplane;
mod kind;
mod programs;
mod run;

/// `suites/controlplane/start.sh ACTION DIR` with `env`, through `sudo -n` unless this is root.
fn start_sh(action: &str, dir: &Path, env: &[(&str, &str)]) -> std::io::Result<std::process::Output> {
    let script = root().join("suites/controlplane/start.sh");
    let mut cmd = if rustix::process::geteuid().is_root() {
        let mut cmd = Command::new(script);
        cmd.envs(env.iter().copied());
        cmd
    } else {
        let mut cmd = Command::new("sudo");
        cmd.args(["-n", "env"]).args(env.iter().map(|(k, v)| format!("{k}={v}"))).arg(script);
        cmd
    };
    cmd.arg(action).arg(dir).output()
}

/// A running control plane: `start.sh up` into a temporary folder, `start.sh down` when dropped.
struct ControlPlane {
    dir: tempfile::TempDir,
    /// `DIR/env` as start.sh wrote it: KUBECONFIG, NETNS, APISERVER, ETCD, readiness times.
    env: BTreeMap<String, String>,
}

impl ControlPlane {
    /// Starts one with start.sh's knobs in `env` (`MESHCHECK_CP_APISERVER_FLAGS`,
    /// `MESHCHECK_KWOK_POD_DELETE`, `MESHCHECK_KWOK_CONFIG`), or `None` (SKIP; a failure under `CI=true`) when the
    /// programs, root or `ip` are missing.
    fn start(env: &[(&str, &str)]) -> Option<ControlPlane> {
        let tools = crate::common::control_plane_tools()?;
        let dir = tempfile::tempdir().unwrap();
        let tools = tools.to_string_lossy();
        let env: Vec<(&str, &str)> =
            [("MESHCHECK_GO_TOOLS", tools.as_ref())].into_iter().chain(env.iter().copied()).collect();
        let out = start_sh("up", dir.path(), &env).unwrap();
        let logs = || {
            std::fs::read_dir(dir.path().join("logs"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|f| format!("{}:\n{}", f.path().display(), std::fs::read_to_string(f.path()).unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(out.status.success(), "start.sh up: {}\n{}", String::from_utf8_lossy(&out.stderr), logs());
        let env = std::fs::read_to_string(dir.path().join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(ControlPlane { dir, env })
    }

    fn var(&self, key: &str) -> &str {
        self.env.get(key).unwrap_or_else(|| panic!("{key} missing from start.sh's env: {:?}", self.env))
    }

    /// A client of the API server, or (with `via`) of a proxy in front of it; the serving
    /// certificate names 127.0.0.1, so either verifies.
    async fn client(&self, via: Option<SocketAddr>) -> Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.var("KUBECONFIG")).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        if let Some(addr) = via {
            config.cluster_url = format!("https://{addr}").parse().unwrap();
        }
        Client::try_from(config).unwrap()
    }

    fn apiserver(&self) -> SocketAddr {
        self.var("APISERVER").trim_start_matches("https://").parse().unwrap()
    }

    /// `etcdctl compact REVISION`: etcd forgets every revision before it, as the API server's own
    /// compactor does every `--etcd-compaction-interval`.
    fn compact(&self, revision: &str) {
        let etcdctl = crate::common::control_plane_tools().unwrap().join("etcdctl");
        let out = Command::new(etcdctl).args(["--endpoints", self.var("ETCD"), "compact", revision]).output().unwrap();
        assert!(out.status.success(), "etcdctl compact: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A Live on this control plane (the embedded default scenario; evidence in a temporary folder).
    async fn live(&self) -> (meshcheck::cluster::live::Live, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let evidence = meshcheck::evidence::Evidence::new(dir.path().join("evidence"));
        let scenario = meshcheck::scenario::Scenario::embedded_default();
        let live = meshcheck::cluster::live::Live::new(self.client(None).await, scenario, dir.path().into(), evidence)
            .unwrap();
        (live, dir)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(out) = start_sh("down", self.dir.path(), &[]).ok().filter(|o| !o.status.success()) {
            eprintln!("start.sh down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// A TCP proxy in front of the API server that can drop every connection it carries and refuse new
/// ones: what a client sees when the API server restarts or a load balancer in front of it goes.
struct Proxy {
    addr: SocketAddr,
    refusing: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refusing = Arc::new(AtomicBool::new(false));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (flag, cuts) = (refusing.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    continue;
                }
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { addr, refusing, cut }
    }

    /// Drops every connection and refuses new ones until [`Proxy::resume`].
    fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn resume(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}

/// Waits (at most `limit`) until the captured logs contain `needle`.
async fn logged(logs: &Captured, needle: &str, limit: Duration) {
    let t0 = Instant::now();
    while !logs.text().contains(needle) {
        assert!(t0.elapsed() < limit, "no {needle:?} in the harness's logs within {limit:?}:\n{}", logs.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// ConfigMap watches open on the API server, the controller manager's among them: its STABLE
/// gauge `apiserver_longrunning_requests` (k8s.io/apiserver v0.35.4
/// pkg/endpoints/metrics/metrics.go), verb `WATCH`, every scope.
async fn configmap_watches(client: &Client) -> u64 {
    let text = client.request_text(http::Request::get("/metrics").body(Vec::new()).unwrap()).await.unwrap();
    let open = text
        .lines()
        .filter(|l| l.starts_with("apiserver_longrunning_requests{"))
        .filter(|l| l.contains(r#"resource="configmaps""#) && l.contains(r#"verb="WATCH""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    open as u64
}

fn config_map(name: &str, finalizer: Option<&str>) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "finalizers": finalizer.map(|f| vec![f])},
        "data": {"k": "v"},
    }))
    .unwrap()
}

/// A watch closed under a running wait, then a 410 Gone when the watch resumes from a revision etcd
/// has compacted: the wait counts both, rides them out and ends when its condition holds. The watch
/// cache is off for ConfigMaps (`--watch-cache-sizes=configmaps#0`), so a resumed watch is served
/// by etcd, which answers a compacted revision with 410 (k8s.io/apiserver v0.35.4
/// pkg/storage/etcd3/watcher.go: "The resourceVersion for the provided watch is too old"); with the
/// cache on, the same 410 comes once the cache's window has moved past the revision.
/// Before the harness rode out watch errors (waits.rs `Trouble::Passing`), the first of these ended
/// the phase, as it ends kube-runtime's `await_condition` here (the negative control).
#[tokio::test]
async fn a_wait_rides_out_a_closed_watch_and_a_410_after_compaction() {
    let Some(cp) = ControlPlane::start(&[("MESHCHECK_CP_APISERVER_FLAGS", "--watch-cache-sizes=configmaps#0")]) else {
        return;
    };
    // What the harness logs (its `tracing` events), captured on this thread, which runs every task.
    let logs = Captured::default();
    let capture = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || capture.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let proxy = Proxy::start(cp.apiserver()).await;
    let direct: Api<ConfigMap> = Api::namespaced(cp.client(None).await, "default");
    let proxied: Api<ConfigMap> = Api::namespaced(cp.client(Some(proxy.addr)).await, "default");
    let uid = direct.create(&PostParams::default(), &config_map("doomed", None)).await.unwrap().metadata.uid.unwrap();
    let admin = cp.client(None).await;
    let watching_before = configmap_watches(&admin).await;

    // The negative control: kube-runtime's own `await_condition` ends at the first watch error.
    let naive = {
        let api = proxied.clone();
        tokio::spawn(async move {
            kube::runtime::wait::await_condition(api, "doomed", kube::runtime::wait::conditions::is_deleted(&uid)).await
        })
    };
    let waiting = tokio::spawn(async move {
        meshcheck::cluster::waits::wait_gone(&proxied, "configmap doomed", "doomed", None, Duration::from_secs(120))
            .await
    });
    // Both watch (the API server counts two more open); then their connections go and stay
    // refused while etcd moves on and is compacted past the revision the watches would resume from.
    let t0 = Instant::now();
    while configmap_watches(&admin).await < watching_before + 2 {
        assert!(t0.elapsed() < Duration::from_secs(30), "the two waits never watched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.cut();
    let mut last = String::new();
    for i in 0..5 {
        let cm = direct.create(&PostParams::default(), &config_map(&format!("churn-{i}"), None)).await.unwrap();
        last = cm.metadata.resource_version.unwrap();
    }
    cp.compact(&last);
    logged(&logs, "a watch error during a wait", Duration::from_secs(30)).await;
    proxy.resume();
    // kube-runtime words the 410 by its Status: message, then reason.
    logged(&logs, "is too old.: Expired", Duration::from_secs(60)).await;
    assert!(!waiting.is_finished(), "the wait ended before its object was gone");
    let naive = naive.await.unwrap();
    assert!(naive.is_err(), "await_condition rode it out too? {naive:?}");

    direct.delete("doomed", &DeleteParams::default()).await.unwrap();
    let report = waiting.await.unwrap().unwrap();
    assert!(report.watch_errors >= 2, "a dropped watch and a 410, counted: {report:?}\n{}", logs.text());
}

/// A namespace an earlier run deleted and that is still Terminating (here: a ConfigMap's finalizer
/// holds it, as a Kiali CR's or a waypoint's does on a real cluster). The real server refuses
/// creates into it with 403 (NamespaceLifecycle admission, k8s.io/apiserver v0.35.4
/// plugin/namespace/lifecycle/admission.go), the trap; `namespaces::ensure` waits until the
/// namespace controller has finished it and then creates it as the run's own. Its cleanup then
/// waits for that namespace, by uid: one made under its name once it is gone is another's.
#[tokio::test]
async fn a_namespace_still_terminating_is_awaited_then_created_as_the_runs_own() {
    let Some(cp) = ControlPlane::start(&[]) else { return };
    let client = cp.client(None).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "left-over"}})).unwrap();
    let before = namespaces.create(&PostParams::default(), &ns).await.unwrap().metadata.uid.unwrap();
    let in_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "left-over");
    in_ns.create(&PostParams::default(), &config_map("held", Some("meshcheck.test/hold"))).await.unwrap();
    namespaces.delete("left-over", &DeleteParams::default()).await.unwrap();

    let refused = in_ns.create(&PostParams::default(), &config_map("new", None)).await.unwrap_err();
    let kube::Error::Api(status) = &refused else { panic!("{refused}") };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(status.message.contains("because it is being terminated"), "{status:?}");

    let labels = [("purpose".to_string(), "test".to_string())];
    let ensuring = {
        let client = client.clone();
        tokio::spawn(async move { namespaces::ensure(&client, "left-over", &labels, "run-2").await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!ensuring.is_finished(), "ensure must wait while the namespace is Terminating");
    let released = Instant::now();
    in_ns
        .patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .unwrap();
    let ensured = ensuring.await.unwrap().unwrap();
    let Ensured::Created(created) = ensured else { panic!("not created as the run's own: {ensured:?}") };
    assert_ne!(created.metadata.uid.as_deref(), Some(before.as_str()), "a new namespace, not the old one");
    let run_2 = namespaces::CreatedNamespace::of(&created).unwrap();
    let labels = created.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get(meshcheck::common::names::RUN_LABEL).map(String::as_str), Some("run-2"), "{labels:?}");
    eprintln!("namespace gone {:.1}s after its last finalizer went", released.elapsed().as_secs_f64());

    // Run 2's cleanup deletes its namespace; once it is gone someone makes one of the same name
    // before the cleanup looked again. That one is not the run's: its wait is over at once.
    let deleted = namespaces::delete_created(&client, &[run_2]).await.unwrap();
    while namespaces.get_opt("left-over").await.unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(30), namespaces::wait_deleted(&client, &deleted)).await;
    assert!(waited.is_ok_and(|w| w.is_ok()), "the run's namespace is gone; another's of its name is not waited for");
}

/// A fixture with a field its CRD does not declare (a ServiceMonitor endpoint's `scrapeInterval`,
/// a field of the Prometheus CR) is refused by the real API server on the server-side dry run
/// (structured-merge-diff's typed conversion, k8s.io/apiserver v0.35.4 fieldmanager), naming the
/// field, and nothing is created; `interval` is accepted. The CRD is prometheus-operator v0.85.0's,
/// as kube-prometheus-stack 77.0.0 ships it.
#[tokio::test]
async fn a_fixture_with_an_undeclared_field_fails_its_dry_run() {
    let Some(crd) = service_monitor_crd() else { return };
    let Some(cp) = ControlPlane::start(&[]) else { return };
    let (live, _dir) = cp.live().await;
    let monitors = install_service_monitors(&live, &crd).await;
    let refused = live.apply_objects(&[typo_monitor("scrapeInterval")], None, true).await.unwrap_err().to_string();
    assert!(refused.contains("server-side dry run of ServiceMonitor typo"), "{refused}");
    assert!(refused.contains("scrapeInterval"), "the field is named: {refused}");
    assert!(monitors.get_opt("typo").await.unwrap().is_none(), "the dry run stopped it");
    live.apply_objects(&[typo_monitor("interval")], None, true).await.unwrap();
    assert!(monitors.get_opt("typo").await.unwrap().is_some());
}

/// prometheus-operator v0.85.0's ServiceMonitor CRD, as kube-prometheus-stack 77.0.0 ships it.
fn service_monitor_crd() -> Option<Vec<DynamicObject>> {
    let helm = crate::common::helm()?;
    let path = helm.charts.join("kube-prometheus-stack-77.0.0/charts/crds/crds/crd-servicemonitors.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    Some(meshcheck::plan::fixtures::parse_manifests(&text, "crd-servicemonitors.yaml").unwrap())
}

/// Waits up to `limit` until the CRD `name` is Established, by meshcheck's own wait.
async fn crd_established(client: &Client, name: &str, limit: Duration) {
    let established = meshcheck::plan::Condition::CrdEstablished;
    meshcheck::cluster::waits::wait_for(client, "CustomResourceDefinition", None, name, &established, limit)
        .await
        .unwrap();
}

/// Applies the ServiceMonitor CRD, waits until it is Established, and returns the ServiceMonitors
/// of `default`.
async fn install_service_monitors(live: &meshcheck::cluster::live::Live, crd: &[DynamicObject]) -> Api<DynamicObject> {
    live.apply_objects(crd, None, false).await.unwrap();
    let name = crd[0].metadata.name.clone().unwrap();
    crd_established(&live.client, &name, Duration::from_secs(30)).await;
    Api::<DynamicObject>::namespaced_with(
        live.client.clone(),
        "default",
        &kube::discovery::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
            "servicemonitors",
        ),
    )
}

/// A ServiceMonitor `typo` whose endpoint sets `field` (`interval` is declared; `scrapeInterval`,
/// a field of the Prometheus CR, is not).
fn typo_monitor(field: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "typo", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "endpoints": [{"port": "http", field: "15s"}]},
    }))
    .unwrap()
}

/// Gateway API v1.5.1's `safe-upgrades` ValidatingAdmissionPolicy, served by the real API server
/// (the Rust simulation cannot evaluate CEL): once the v1.5.1 bundle is in, applying an older
/// bundle over it is refused with the policy's message (the trap an existing cluster with its own
/// newer Gateway API sets), and `Live::without_downgrades` leaves the older bundle out, so the
/// apply of what is left succeeds.
#[tokio::test]
async fn a_gateway_api_downgrade_is_refused_by_its_policy_and_left_out() {
    let Some(helm) = crate::common::helm() else { return };
    let Some(cp) = ControlPlane::start(&[]) else { return };
    let text = std::fs::read_to_string(helm.charts.join("gateway-api-v1.5.1/standard-install.yaml")).unwrap();
    let present =
        text.lines().find_map(|l| l.trim().strip_prefix("gateway.networking.k8s.io/bundle-version: ")).unwrap();
    assert_eq!(present, "v1.5.1");
    let bundle = meshcheck::plan::fixtures::parse_manifests(&text, "standard-install.yaml").unwrap();
    let older = meshcheck::plan::fixtures::parse_manifests(&text.replace(present, "v1.4.0"), "older").unwrap();
    let older_crds: Vec<DynamicObject> = older
        .iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "CustomResourceDefinition"))
        .cloned()
        .collect();
    let (live, _dir) = cp.live().await;
    live.apply_objects(&bundle, None, false).await.unwrap();
    // The admission plugin loads a new policy and binding from its informers: a moment.
    let t0 = Instant::now();
    let refused = loop {
        match live.apply_objects(&older_crds[..1], None, true).await {
            Err(e) => break e.to_string(),
            Ok(_) if t0.elapsed() < Duration::from_secs(30) => tokio::time::sleep(Duration::from_millis(250)).await,
            Ok(_) => panic!("the safe-upgrades policy never refused a v1.4.0 CRD"),
        }
    };
    assert!(refused.contains("Installing CRDs with version before v1.5.0 is prohibited"), "{refused}");
    let (kept, skipped) = live.without_downgrades(&older, None).await.unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].starts_with("Gateway API v1.4.0 not applied: the cluster has v1.5.1, newer"), "{skipped:?}");
    live.apply_objects(&kept, None, true).await.unwrap();
}

/// How an API error reads: code, reason and message, as a client sees them.
fn answer(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {:?}: {}", s.code, s.reason, s.message),
        other => format!("not an API status: {other}"),
    }
}

/// The refusals a run meets when something is wrong, asked of an API server: a fixture field its
/// CRD lacks (server-side dry run), a create into a Terminating namespace, a read of what is not
/// there, a create of what is, a create into a namespace that does not exist, a pod whose
/// ServiceAccount is not there (dry run and create; `default` admitted).
async fn refusals(live: &meshcheck::cluster::live::Live, crd: &[DynamicObject]) -> Vec<String> {
    let monitors = install_service_monitors(live, crd).await;
    let typo = PatchParams::apply("meshcheck").force().dry_run();
    let refused = monitors.patch("typo", &typo, &Patch::Apply(&typo_monitor("scrapeInterval"))).await;
    let mut out = vec![answer(&refused.unwrap_err())];

    let namespaces: Api<Namespace> = Api::all(live.client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "held"}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
    let held: Api<ConfigMap> = Api::namespaced(live.client.clone(), "held");
    held.create(&PostParams::default(), &config_map("held", Some("meshcheck.test/hold"))).await.unwrap();
    namespaces.delete("held", &DeleteParams::default()).await.unwrap();
    out.push(answer(&held.create(&PostParams::default(), &config_map("new", None)).await.unwrap_err()));

    let default: Api<ConfigMap> = Api::namespaced(live.client.clone(), "default");
    out.push(answer(&default.get("absent").await.unwrap_err()));
    default.create(&PostParams::default(), &config_map("twice", None)).await.unwrap();
    out.push(answer(&default.create(&PostParams::default(), &config_map("twice", None)).await.unwrap_err()));
    let nowhere: Api<ConfigMap> = Api::namespaced(live.client.clone(), "nowhere");
    out.push(answer(&nowhere.create(&PostParams::default(), &config_map("lost", None)).await.unwrap_err()));

    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(live.client.clone(), "default");
    let pod = |account: &str| {
        serde_json::from_value(json!({"metadata": {"name": "curl"}, "spec": {"serviceAccountName": account,
            "containers": [{"name": "curl", "image": "curlimages/curl:8.17.0"}]}}))
        .unwrap()
    };
    let dry = PatchParams::apply("meshcheck").force().dry_run();
    out.push(answer(&pods.patch("curl", &dry, &Patch::Apply(&pod("curl"))).await.unwrap_err()));
    out.push(answer(&pods.create(&PostParams::default(), &pod("curl")).await.unwrap_err()));
    pods.patch("curl", &dry, &Patch::Apply(&pod("default"))).await.unwrap();
    out
}

/// The Rust simulation's API server refuses what the real kube-apiserver v1.35.4 refuses, with the
/// same code, reason and message: the harness's messages and its retry decisions (waits.rs treats
/// 5xx as passing) rest on them, and the rehearsals that cannot run on the real tier trust them.
#[tokio::test]
async fn the_simulated_api_server_refuses_as_the_real_one_does() {
    use crate::sim::{Faults, Sim};
    let Some(crd) = service_monitor_crd() else { return };
    let Some(options) = crate::common::sim_options("existing", 0.01, Faults::default()) else { return };
    let Some(cp) = ControlPlane::start(&[]) else { return };
    let real = refusals(&cp.live().await.0, &crd).await;
    let sim = Sim::start(options);
    let (_, live, _dir) = crate::common::live_on(&sim).await;
    let simulated = refusals(&live, &crd).await;
    assert_eq!(simulated, real);
}

/// kwok deletes a pod once its grace period has run out (`deletionTimestamp`, which the API server
/// sets to the delete's time plus the grace period), as a kubelet does whose container takes all of
/// it: ztunnel drains for `terminationGracePeriodSeconds` (istio 1.30.3 ztunnel chart: 30; its
/// `TERMINATION_GRACE_PERIOD_SECONDS` env). kwok v0.8.0 Stage API: a `durationFrom` that is a time
/// waits until it.
const GRACEFUL_POD_DELETE: &str = r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  delay:
    durationMilliseconds: 0
    durationFrom:
      expressionFrom: '.metadata.deletionTimestamp'
  next:
    delete: true
"#;

/// What a ztunnel rollout shows when the first old pod drains beside its node's new one: its
/// name, the pods, and the DaemonSet's status then (desired, current and updated nodes).
struct Drain {
    old: String,
    pods: Vec<k8s_openapi::api::core::v1::Pod>,
    status: [i32; 3],
    restarted: Instant,
}

/// The harness's wait for the ztunnel DaemonSet's rollout, which must end within `limit`.
async fn ztunnel_rolled_out(live: &meshcheck::cluster::live::Live, ns: &str, limit: Duration) {
    let ready = meshcheck::plan::Condition::DaemonSetReady;
    meshcheck::cluster::waits::wait_for(&live.client, "DaemonSet", Some(ns), "ztunnel", &ready, limit).await.unwrap();
}

/// Applies the rendered ztunnel release, waits for its DaemonSet, restarts it as `kubectl rollout
/// restart` does (a new template annotation) and returns once the first old pod drains, every
/// old pod still there.
async fn roll_ztunnel(live: &meshcheck::cluster::live::Live, ns: &str, objects: &[serde_json::Value]) -> Drain {
    use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::Pod};
    namespaces::ensure(&live.client, ns, &[], "run-1").await.unwrap();
    let objects: Vec<DynamicObject> = objects.iter().map(|o| serde_json::from_value(o.clone()).unwrap()).collect();
    live.apply_objects(&objects, Some(ns), true).await.unwrap();
    ztunnel_rolled_out(live, ns, Duration::from_secs(60)).await;
    let pods: Api<Pod> = Api::namespaced(live.client.clone(), ns);
    let list = kube::api::ListParams::default().labels("app=ztunnel");
    let before = pods.list(&list).await.unwrap().items;
    // Creation times have whole seconds, and the controller breaks a tie by name: the new pods
    // must be created in a later second than the old ones to be told apart as the real ones are.
    let newest = before.iter().filter_map(|p| p.metadata.creation_timestamp.as_ref()).map(|t| t.0.as_second()).max();
    let next_second_ms = (newest.unwrap() + 1) * 1000;
    let now_ms = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(u64::try_from(next_second_ms - now_ms).unwrap_or(0))).await;
    let originals: Vec<String> = before.into_iter().filter_map(|p| p.metadata.name).collect();
    let daemonsets: Api<DaemonSet> = Api::namespaced(live.client.clone(), ns);
    let restart = json!({"spec": {"template": {"metadata": {"annotations": {"meshcheck.test/restartedAt": "now"}}}}});
    daemonsets.patch("ztunnel", &PatchParams::default(), &Patch::Merge(restart)).await.unwrap();
    let restarted = Instant::now();
    loop {
        let all = pods.list(&list).await.unwrap().items;
        let draining = all.iter().find(|p| {
            p.metadata.deletion_timestamp.is_some() && p.metadata.name.as_ref().is_some_and(|n| originals.contains(n))
        });
        let ds = daemonsets.get("ztunnel").await.unwrap();
        let s = ds.status.unwrap_or_default();
        // The status of the restarted template, with the surge and the deletion seen.
        let originals_left = all.iter().filter(|p| p.metadata.name.as_ref().is_some_and(|n| originals.contains(n)));
        if let Some(old) = draining.and_then(|p| p.metadata.name.clone())
            && originals_left.count() == originals.len()
            && s.observed_generation == ds.metadata.generation
        {
            let status =
                [s.desired_number_scheduled, s.current_number_scheduled, s.updated_number_scheduled.unwrap_or(0)];
            return Drain { old, pods: all, status, restarted };
        }
        assert!(restarted.elapsed() < Duration::from_secs(30), "no surge and drain within 30 s: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A ztunnel rollout on the real control plane: the DaemonSet the real helm renders of istio's
/// ztunnel 1.30.3 chart with meshcheck's values (`maxSurge: 1, maxUnavailable: 0`), rolled out by
/// the real DaemonSet controller, the old pod deleted only after the new one is available and then
/// draining, still `Running`, for its grace period (the chart's 30 s, made 12 s here: what is
/// asserted happens in the first seconds of the drain). Meanwhile the harness takes the new pod
/// for the node's ztunnel (`Live::running_pods`, the ztunnel checks' `serving`) and names the
/// draining one in a note; the negative control, every `Running` pod, would take both. The
/// DaemonSet wait then ends, with the drain at the latest.
#[tokio::test]
async fn a_draining_ztunnel_after_a_rollout_is_not_taken_for_the_serving_one() {
    use k8s_openapi::api::core::v1::Pod;
    let Some((_, releases)) = crate::charts::rendered("ambient-kind") else { return };
    let ztunnel = releases.into_values().find(|r| r.name == "ztunnel").expect("the plan installs ztunnel");
    let objects: Vec<serde_json::Value> = ztunnel.objects.iter().cloned().map(with_grace_of_12_seconds).collect();
    let stage = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(stage.path(), GRACEFUL_POD_DELETE).unwrap();
    let stage_path = stage.path().to_string_lossy().into_owned();
    let Some(cp) = ControlPlane::start(&[("MESHCHECK_KWOK_POD_DELETE", stage_path.as_str())]) else { return };
    let (live, _dir) = cp.live().await;
    let ns = ztunnel.namespace.as_str();
    let Drain { old, pods: draining, status, restarted } = roll_ztunnel(&live, ns, &objects).await;
    let running = |p: &&Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    assert_eq!(draining.iter().filter(running).count(), 2, "the draining pod still shows Running: {draining:?}");

    let serving: Vec<String> =
        live.running_pods(ns, "app=ztunnel").await.unwrap().into_iter().filter_map(|p| p.metadata.name).collect();
    assert_eq!(serving.len(), 1, "{serving:?}");
    assert_ne!(serving[0], old, "the draining pod was taken for the serving one");
    let podlist = live.get_raw(&format!("/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dztunnel")).await.unwrap();
    let podlist: serde_json::Value = serde_json::from_slice(&podlist).unwrap();
    let names: Vec<&str> =
        meshcheck::checks::ztunnel::serving(&podlist).into_iter().map(meshcheck::formats::kjson::name).collect();
    assert_eq!(names, [serving[0].as_str()]);
    let notes = meshcheck::checks::ztunnel::draining_notes(&podlist);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with(&format!("skipped ztunnel {old} on node kwok-node-0: being deleted since ")),
        "{notes:?}"
    );

    // The real controller counts a node's oldest pod in the DaemonSet's status (k8s.io/kubernetes
    // v1.35.4 pkg/controller/daemon/daemon_controller.go updateDaemonSetStatus: `daemonPods[0]`
    // after sorting by creation time, to the second): the node is not updated while the old pod
    // drains, and the wait may end only with the drain.
    assert_eq!(status, [1, 1, 0], "desired, current, updated");
    ztunnel_rolled_out(&live, ns, Duration::from_secs(90)).await;
    eprintln!("rollout: the DaemonSet wait ended {:.1}s after the restart", restarted.elapsed().as_secs_f64());
}

/// The ztunnel DaemonSet with a grace period of 12 s: the pod's, and the one ztunnel reads from
/// its env (`TERMINATION_GRACE_PERIOD_SECONDS`, the chart's templates/daemonset.yaml#L138-L139).
fn with_grace_of_12_seconds(mut object: serde_json::Value) -> serde_json::Value {
    if object["kind"] != "DaemonSet" {
        return object;
    }
    let pod = &mut object["spec"]["template"]["spec"];
    pod["terminationGracePeriodSeconds"] = json!(12);
    for container in pod["containers"].as_array_mut().into_iter().flatten() {
        for env in container["env"].as_array_mut().into_iter().flatten() {
            if env["name"] == "TERMINATION_GRACE_PERIOD_SECONDS" {
                env["value"] = json!("12");
            }
        }
    }
    object
}

/// The simulation's DaemonSet controller writes the status the real one does (above) while the
/// first old ztunnel drains: each node counted by its oldest pod, so none is updated yet. Before,
/// any updated pod counted, so the simulated wait could end before the drains and no rehearsal
/// could see a chart upgraded during one. Readiness is not compared: kwok keeps a terminating
/// pod Ready, where a real kubelet's probe of a draining ztunnel would fail.
#[tokio::test]
async fn the_simulated_daemonset_status_counts_a_draining_node_as_the_real_one_does() {
    let Some((_, releases)) = crate::charts::rendered("ambient-kind") else { return };
    let ztunnel = releases.into_values().find(|r| r.name == "ztunnel").expect("the plan installs ztunnel");
    use crate::sim::{Faults, Sim};
    // The existing cluster without the mesh: the ztunnel DaemonSet is the test's alone.
    let faults = Faults { mesh_absent: true, ..Faults::default() };
    let Some(options) = crate::common::sim_options("existing", 0.1, faults) else { return };
    let sim = Sim::start(options);
    let (_, live, _dir) = crate::common::live_on(&sim).await;
    let drain = roll_ztunnel(&live, &ztunnel.namespace, &ztunnel.objects).await;
    let nodes = drain.status[0];
    assert!(nodes > 1, "{:?}", drain.status);
    assert_eq!(drain.status, [nodes, nodes, 0], "desired, current, updated");
}
