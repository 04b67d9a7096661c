//! What runs in the pods of the real control plane: the simulation's programs
//! ([`crate::sim::Mirrored`]) on a copy of what kube-apiserver holds, answering the kubelet's
//! streaming calls that `kubelet-streams` passes on from the API server (start.sh's
//! `MESHCHECK_KUBELET_SOCKET`). The copy follows the API server type by type, by watches, as an
//! informer's cache does.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, TypeMeta},
    discovery::{Discovery, verbs},
};

use crate::sim::{Faults, mirrored::Mirrored};

/// How often discovery is asked for types CRDs added since.
const REFRESH: Duration = Duration::from_millis(500);

/// The API groups whose objects the programs read: pods, Services, ConfigMaps and namespaces;
/// workloads; Istio's, Cilium's, Gateway API's and the Prometheus Operator's resources.
const GROUPS: &[&str] = &[
    "",
    "apps",
    "security.istio.io",
    "networking.istio.io",
    "telemetry.istio.io",
    "gateway.networking.k8s.io",
    "cilium.io",
    "monitoring.coreos.com",
    "kiali.io",
];

/// Types no program reads that change all the time.
const SKIPPED: &[&str] = &["events", "leases", "componentstatuses"];

/// The programs, listening on their socket until dropped.
pub(super) struct Programs {
    dir: tempfile::TempDir,
    mirrored: Arc<Mirrored>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    ingress: std::net::SocketAddr,
}

impl Programs {
    /// Listens on a fresh socket (before the control plane starts: its kubelet-streams dials it
    /// on every call), or `None` without the upstream data the programs answer from.
    pub(super) fn listen() -> Option<Programs> {
        let options = crate::common::sim_options("existing", 1.0, Faults::default())?;
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::UnixListener::bind(dir.path().join("programs.sock")).unwrap();
        let mirrored = Arc::new(Mirrored::new(options));
        let gateway = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ingress = gateway.local_addr().unwrap();
        gateway.set_nonblocking(true).unwrap();
        let gateway = tokio::net::TcpListener::from_std(gateway).unwrap();
        let tasks =
            vec![tokio::spawn(mirrored.clone().serve(listener)), tokio::spawn(mirrored.clone().serve_gateway(gateway))];
        Some(Programs { dir, mirrored, tasks, ingress })
    }

    /// Where the ingress gateway answers on this side, as a LoadBalancer's address would.
    pub(super) fn ingress_url(&self) -> String {
        format!("http://{}", self.ingress)
    }

    /// The programs themselves.
    pub(super) fn mirrored(&self) -> &Mirrored {
        &self.mirrored
    }

    pub(super) fn socket(&self) -> PathBuf {
        self.dir.path().join("programs.sock")
    }

    /// Keeps the copy following the API server `client` talks to.
    pub(super) fn mirror(&mut self, client: Client) {
        self.tasks.push(tokio::spawn(follow(client, self.mirrored.clone())));
    }
}

impl Drop for Programs {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Watches every listable, watchable type of [`GROUPS`] that discovery shows, and the types
/// CRDs add later (discovery again every [`REFRESH`]): each type's copy follows its watch, as an
/// informer's cache does, so the programs see a change within milliseconds of the API server.
async fn follow(client: Client, mirrored: Arc<Mirrored>) {
    let mut watched = std::collections::BTreeSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if let Ok(discovery) = Discovery::new(client.clone()).filter(GROUPS).run_aggregated().await {
            for group in discovery.groups() {
                for (resource, capabilities) in group.recommended_resources() {
                    let listed =
                        capabilities.supports_operation(verbs::LIST) && capabilities.supports_operation(verbs::WATCH);
                    if !listed
                        || SKIPPED.contains(&resource.plural.as_str())
                        || !watched.insert(resource.plural.clone() + "." + &resource.group)
                    {
                        continue;
                    }
                    tasks.spawn(follow_type(client.clone(), mirrored.clone(), resource));
                }
            }
        }
        tokio::time::sleep(REFRESH).await;
    }
}

/// One type's copy, kept by its watch (kube-runtime's watcher: list, then watch, relisting after
/// a 410 as an informer does).
async fn follow_type(client: Client, mirrored: Arc<Mirrored>, resource: ApiResource) {
    use futures::StreamExt;
    use kube::runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    };
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    // A watch's objects carry no apiVersion and kind when they come in a list; a get's do, and
    // the programs read them.
    let types = TypeMeta { api_version: resource.api_version.clone(), kind: resource.kind.clone() };
    let key = |o: &DynamicObject| {
        (o.metadata.namespace.clone().unwrap_or_default(), o.metadata.name.clone().unwrap_or_default())
    };
    let mut current = BTreeMap::new();
    let mut listing = BTreeMap::new();
    let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(mut o)) => {
                o.types = Some(types.clone());
                current.insert(key(&o), o);
            }
            Ok(Event::Delete(o)) => {
                current.remove(&key(&o));
            }
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(mut o)) => {
                o.types = Some(types.clone());
                listing.insert(key(&o), o);
                continue;
            }
            Ok(Event::InitDone) => current = std::mem::take(&mut listing),
            Err(_) => continue,
        }
        let items = current.values().map(|o| serde_json::to_value(o).unwrap()).collect();
        mirrored.replace(&resource.group, &resource.plural, items);
    }
}

/// Why the tier has kubelet-streams: the same failing command through the API server's
/// `pods/exec`, once answered by kwok's own kubelet API (a `ClusterExec` running it locally) and
/// once by kubelet-streams (the simulation's curl). kwok's status has no exit code (only the
/// words of Go's `exit status 7`), where the kubelet's has the `ExitCode` cause meshcheck reads.
#[tokio::test]
async fn kwoks_own_exec_loses_the_exit_code_a_kubelet_sends() {
    let fails = ["sh", "-c", "exit 7"];
    let config = tempfile::tempdir().unwrap();
    let cluster_exec = "apiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterExec\nmetadata:\n  name: local\n\
                        spec:\n  selector:\n    matchNamespaces: [default]\n  execs:\n  - local: {}\n";
    std::fs::write(config.path().join("exec.yaml"), cluster_exec).unwrap();
    let kwok_config = config.path().join("exec.yaml").display().to_string();
    let Some(cp) = super::ControlPlane::start(&[("MESHCHECK_KWOK_CONFIG", &kwok_config)]) else { return };
    let (live, _dir) = cp.live().await;
    pod(&live, "default").await;
    let kwok = live.exec("default", "probe", &fails).await.unwrap();
    assert_eq!(kwok.exit_code, None, "kwok v0.8.0 sends no ExitCode cause: {kwok:?}");
    assert!(kwok.status.contains("Internal error") && kwok.status.contains("exit status 7"), "{kwok:?}");
    drop(cp);

    let Some(mut programs) = Programs::listen() else { return };
    let socket = programs.socket().display().to_string();
    let Some(cp) = super::ControlPlane::start(&[("MESHCHECK_KUBELET_SOCKET", &socket)]) else { return };
    programs.mirror(cp.client(None).await);
    let (live, _dir) = cp.live().await;
    pod(&live, "default").await;
    // The simulation's client image has curl only: a connection to a closed port is refused, 7.
    let curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "http://127.0.0.1:9/"];
    let kubelet = live.exec("default", "probe", &curl).await.unwrap();
    assert_eq!(kubelet.exit_code, Some(7), "kubelet-streams sends the ExitCode cause: {kubelet:?}");
    assert!(kubelet.status.contains("command terminated with non-zero exit code"), "{kubelet:?}");
}

/// A curl client pod `probe` in `ns`, once Running.
async fn pod(live: &meshcheck::cluster::live::Live, ns: &str) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(live.client.clone(), ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "curl", "image": "curlimages/curl:8.17.0"}]}
    }))
    .unwrap();
    pods.create(&Default::default(), &pod).await.unwrap();
    let since = std::time::Instant::now();
    while pods.get("probe").await.unwrap().status.and_then(|s| s.phase).as_deref() != Some("Running") {
        assert!(since.elapsed() < Duration::from_secs(30), "the pod never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
