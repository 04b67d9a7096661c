//! Waits are watches with deadlines (kube-runtime), never sleeps. Each says what it waited for and,
//! on timeout, what it last saw.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::{
    api::{
        apps::v1::{ControllerRevision, DaemonSet, Deployment, StatefulSet},
        core::v1::{Node, Pod},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource,
    api::ListParams,
    runtime::{WatchStreamExt, wait::Condition as _, watcher},
};

use crate::{cluster::live::LiveError, plan::Condition};

/// How a wait went besides its result: the watch errors it rode out. kube-runtime's watcher yields
/// every watch error (a 410 Gone once etcd has compacted the resource version, a dropped
/// connection) and recovers on its next poll, after its backoff (kube-runtime 3.0
/// `watcher::watcher` docs: "errors are yielded ... the watcher will recover"); one such error in a
/// 15-minute Cilium wait is weather, not a failed phase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitReport {
    /// Watch and read errors seen (and ridden out) before the condition held.
    pub watch_errors: u32,
    /// The last of them, for the step's record.
    pub last_error: Option<String>,
}

impl WaitReport {
    /// One line for the console and the step record, or `None` when nothing went wrong.
    pub fn note(&self) -> Option<String> {
        let last = self.last_error.as_deref()?;
        Some(format!("{} watch error(s) ridden out; last: {last}", self.watch_errors))
    }
}

/// What a wait saw while it waited, shared with the timeout branch (which outlives the watch).
#[derive(Debug)]
struct Watching {
    last_seen: String,
    report: WaitReport,
}

/// Shared view of a running wait.
#[derive(Clone)]
struct Observer(Arc<Mutex<Watching>>);

impl Observer {
    fn seen(&self, s: String) {
        self.0.lock().expect("wait lock").last_seen = s;
    }

    fn error(&self, e: String) {
        tracing::warn!(error = %e, "a watch error during a wait; waiting on");
        let mut w = self.0.lock().expect("wait lock");
        w.report.watch_errors += 1;
        w.report.last_error = Some(e);
    }

    fn snapshot(&self) -> Watching {
        let w = self.0.lock().expect("wait lock");
        Watching { last_seen: w.last_seen.clone(), report: w.report.clone() }
    }
}

/// Why a read or a watch of a wait failed, and whether waiting on makes sense.
#[derive(Debug)]
enum Trouble {
    /// Weather: a 410 after compaction, a dropped or refused connection, a 5xx, throttling. The
    /// watcher recovers on its next poll; a read is tried again.
    Passing(String),
    /// The API said no for good (403, 404 of a list, 422): waiting on cannot change it.
    Final(String),
}

/// Whether an API error is one a later attempt may not meet: 408 (timeout), 410 (Gone: the
/// resource version was compacted), 429 (throttled) and 5xx are, other statuses are answers
/// (apimachinery pkg/api/errors: `IsResourceExpired`, `IsTooManyRequests`, `IsServerTimeout`...);
/// anything that is not an API status (a connection refused or dropped, a broken stream) is.
fn passing(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 408 | 410 | 429 | 500..=599),
        _ => true,
    }
}

impl From<kube::Error> for Trouble {
    fn from(e: kube::Error) -> Trouble {
        if passing(&e) { Trouble::Passing(e.to_string()) } else { Trouble::Final(e.to_string()) }
    }
}

impl From<watcher::Error> for Trouble {
    fn from(e: watcher::Error) -> Trouble {
        let passes = match &e {
            watcher::Error::InitialListFailed(k)
            | watcher::Error::WatchStartFailed(k)
            | watcher::Error::WatchFailed(k) => passing(k),
            watcher::Error::WatchError(s) => matches!(s.code, 408 | 410 | 429 | 500..=599),
            watcher::Error::NoResourceVersion => true,
        };
        if passes { Trouble::Passing(e.to_string()) } else { Trouble::Final(e.to_string()) }
    }
}

/// How long a wait whose last read failed sleeps before it reads again when no watch event comes.
const REREAD_AFTER_ERROR: Duration = Duration::from_secs(5);

/// Something that changed: an event of one of the watches a wait follows, or the error it yielded.
type Events<'a> = BoxStream<'a, Result<(), Trouble>>;

/// The events of a watch on `api` (every object, or one by name), with kube-runtime's default
/// backoff between a watch error and the next attempt.
fn events<'a, K>(api: Api<K>, name: Option<&str>) -> Events<'a>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let config = match name {
        Some(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
        None => watcher::Config::default(),
    };
    watcher(api, config).default_backoff().map(|e| e.map(|_| ()).map_err(Trouble::from)).boxed()
}

/// Reads the state with `check` until it says done: again after every watch event, and after
/// [`REREAD_AFTER_ERROR`] when a read failed. Passing trouble is counted in the observer and waited
/// out; only final trouble ends the wait early, and the deadline ends it otherwise.
async fn until<F, Fut>(mut events: Events<'_>, observer: &Observer, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Progress, Trouble>>,
{
    loop {
        let read_failed = match check().await {
            Ok(progress) if progress.done => return Ok(()),
            Ok(progress) => {
                observer.seen(progress.seen);
                false
            }
            Err(Trouble::Final(e)) => return Err(e),
            Err(Trouble::Passing(e)) => {
                observer.error(e);
                true
            }
        };
        let event = if read_failed {
            tokio::select! {
                e = events.next() => e,
                () = tokio::time::sleep(REREAD_AFTER_ERROR) => Some(Ok(())),
            }
        } else {
            events.next().await
        };
        match event {
            Some(Ok(())) => {}
            Some(Err(Trouble::Final(e))) => return Err(e),
            Some(Err(Trouble::Passing(e))) => observer.error(e),
            // A watcher's stream does not end; if it did, read again after a pause rather than spin.
            None => {
                observer.error("the watch ended".into());
                tokio::time::sleep(REREAD_AFTER_ERROR).await;
            }
        }
    }
}

/// Waits for a condition on an object (or on all nodes) until `timeout`, riding out watch errors.
pub async fn wait_for(
    client: &Client,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    cond: &Condition,
    timeout: Duration,
) -> Result<WaitReport, LiveError> {
    let what = format!("{kind} {}{name} to be {cond:?}", ns.map(|n| format!("{n}/")).unwrap_or_default());
    let observer = Observer(Arc::new(Mutex::new(Watching {
        last_seen: "nothing yet (object not found)".into(),
        report: WaitReport::default(),
    })));
    let ns = ns.unwrap_or("default");
    let waiting = async {
        match cond {
            Condition::DaemonSetReady => {
                let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
                // A new pod turning Ready need not change the DaemonSet's counts (the old pod on
                // that node was ready too), so pod events re-check as well.
                let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
                let both = futures::stream::select(events(api.clone(), Some(name)), events(pods, None)).boxed();
                until(both, &observer, || daemonset_ready(client, &api, name, &observer)).await
            }
            Condition::DeploymentAvailable => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                until(events(api.clone(), Some(name)), &observer, || read(&api, name, deployment_progress)).await
            }
            Condition::StatefulSetReady => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
                until(events(api.clone(), Some(name)), &observer, || read(&api, name, statefulset_progress)).await
            }
            Condition::PodReady => {
                let api: Api<Pod> = Api::namespaced(client.clone(), ns);
                until(events(api.clone(), Some(name)), &observer, || read(&api, name, pod_progress)).await
            }
            Condition::CrdEstablished => {
                let api: Api<CustomResourceDefinition> = Api::all(client.clone());
                until(events(api.clone(), Some(name)), &observer, || read(&api, name, crd_progress)).await
            }
            Condition::NodesReady { count } => {
                let api: Api<Node> = Api::all(client.clone());
                until(events(api.clone(), None), &observer, || nodes_ready(&api, *count)).await
            }
        }
    };
    let outcome = tokio::time::timeout(timeout, waiting).await;
    let Watching { last_seen, report } = observer.snapshot();
    match outcome {
        Ok(Ok(())) => Ok(report),
        Ok(Err(message)) => Err(LiveError::Http { what: format!("waiting for {what}"), message }),
        Err(_) => {
            let last_seen = match report.note() {
                Some(note) => format!("{last_seen} ({note})"),
                None => last_seen,
            };
            Err(LiveError::Timeout { what, after: timeout, last_seen })
        }
    }
}

/// Waits until the object `name` is gone (deleted and its finalizers done), riding out watch errors
/// like [`wait_for`]. For a namespace an earlier run deleted and that is still Terminating. With
/// `uid`, the object is that one: another made since under the same name (possible only once the
/// first is gone) counts as its being gone.
pub async fn wait_gone<K>(
    api: &Api<K>,
    what: &str,
    name: &str,
    uid: Option<&str>,
    timeout: Duration,
) -> Result<WaitReport, LiveError>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let observer =
        Observer(Arc::new(Mutex::new(Watching { last_seen: "still there".into(), report: WaitReport::default() })));
    let gone = until(events(api.clone(), Some(name)), &observer, || async {
        let left = api.get_opt(name).await?;
        let same = left.is_some_and(|o| uid.is_none_or(|uid| o.meta().uid.as_deref() == Some(uid)));
        Ok(Progress { done: !same, seen: "still there".into() })
    });
    let outcome = tokio::time::timeout(timeout, gone).await;
    let Watching { last_seen, report } = observer.snapshot();
    match outcome {
        Ok(Ok(())) => Ok(report),
        Ok(Err(message)) => Err(LiveError::Http { what: format!("waiting for {what} to be gone"), message }),
        Err(_) => Err(LiveError::Timeout { what: format!("{what} to be gone"), after: timeout, last_seen }),
    }
}

/// Reads one object and measures it; a missing object is progress not yet made.
async fn read<K>(api: &Api<K>, name: &str, measure: fn(&K) -> Progress) -> Result<Progress, Trouble>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await? {
        Some(obj) => Ok(measure(&obj)),
        None => Ok(Progress { done: false, seen: "nothing yet (object not found)".into() }),
    }
}

/// The DaemonSet's own counts, then the pods of its current revision.
async fn daemonset_ready(
    client: &Client,
    api: &Api<DaemonSet>,
    name: &str,
    observer: &Observer,
) -> Result<Progress, Trouble> {
    let Some(ds) = api.get_opt(name).await? else {
        return Ok(Progress { done: false, seen: "nothing yet (object not found)".into() });
    };
    let progress = daemonset_progress(&ds);
    if !progress.done {
        return Ok(progress);
    }
    observer.seen(progress.seen);
    current_revision_pods(client, &ds).await.map_err(Trouble::from)
}

/// Every node Ready, at least one node, and `count` nodes when the run knows how many it made.
async fn nodes_ready(api: &Api<Node>, count: Option<u32>) -> Result<Progress, Trouble> {
    let nodes = api.list(&Default::default()).await?;
    Ok(nodes_progress(&nodes.items, count))
}

/// The nodes' progress: all Ready, and as many as expected.
pub fn nodes_progress(nodes: &[Node], count: Option<u32>) -> Progress {
    let not_ready: Vec<String> =
        nodes.iter().filter(|n| !node_ready(n)).filter_map(|n| n.metadata.name.clone()).collect();
    let enough = count.is_none_or(|c| usize::try_from(c).is_ok_and(|c| nodes.len() == c));
    let of = count.map(|c| format!(" of {c}")).unwrap_or_default();
    Progress {
        done: !nodes.is_empty() && not_ready.is_empty() && enough,
        seen: format!("{}{of} nodes, not Ready: [{}]", nodes.len(), not_ready.join(", ")),
    }
}

/// Whether a node's Ready condition is True.
fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A StatefulSet with every replica ready.
fn statefulset_progress(s: &StatefulSet) -> Progress {
    let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = s.status.as_ref().and_then(|st| st.ready_replicas).unwrap_or(0);
    Progress { done: ready >= want, seen: format!("replicas {want}, ready {ready}") }
}

/// A pod whose Ready condition is True.
fn pod_progress(p: &Pod) -> Progress {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("?");
    let ready = pod_ready(p);
    Progress { done: ready, seen: format!("phase {phase}, ready {ready}") }
}

/// A CRD with condition Established (kube-runtime's `is_crd_established`).
fn crd_progress(crd: &CustomResourceDefinition) -> Progress {
    let established = kube::runtime::conditions::is_crd_established().matches_object(Some(crd));
    Progress { done: established, seen: format!("established {established}") }
}

/// Whether a rollout is complete, and what was seen (for the timeout message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Complete.
    pub done: bool,
    /// The state observed.
    pub seen: String,
}

/// `kubectl rollout status` for a Deployment (kubectl/pkg/polymorphichelpers/rollout_status.go):
/// the controller has observed the latest spec, every replica is updated, no old replica is left
/// (`status.replicas == updatedReplicas`), and the updated ones are available. During an upgrade the
/// new pod counts as updated while the old one is still available, so "updated and available"
/// alone passes before the rollout ends.
pub fn deployment_progress(d: &Deployment) -> Progress {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = d.status.as_ref() else { return Progress { done: false, seen: "no status yet".into() } };
    let (replicas, updated, available) =
        (st.replicas.unwrap_or(0), st.updated_replicas.unwrap_or(0), st.available_replicas.unwrap_or(0));
    let observed = d.meta().generation.unwrap_or(0) <= st.observed_generation.unwrap_or(0);
    let seen = format!(
        "replicas {want}, current {replicas}, updated {updated}, available {available}{}",
        if observed { "" } else { ", new spec not yet observed" }
    );
    let done = observed && updated == want && replicas == updated && available >= updated;
    Progress { done, seen }
}

/// `kubectl rollout status` for a DaemonSet: the latest spec observed, every scheduled pod updated
/// and available. `numberReady` also counts old pods, so the pods of the current revision are
/// checked separately (`current_revision_pods`).
pub fn daemonset_progress(ds: &DaemonSet) -> Progress {
    let Some(st) = ds.status.as_ref() else { return Progress { done: false, seen: "no status yet".into() } };
    let observed = ds.meta().generation.unwrap_or(0) <= st.observed_generation.unwrap_or(0);
    let (desired, updated, available) =
        (st.desired_number_scheduled, st.updated_number_scheduled.unwrap_or(0), st.number_available.unwrap_or(0));
    let seen = format!(
        "desired {desired}, ready {}, updated {updated}, available {available}{}",
        st.number_ready,
        if observed { "" } else { ", new spec not yet observed" }
    );
    let done = observed && desired > 0 && updated == desired && available == desired;
    Progress { done, seen }
}

/// Whether every pod of the DaemonSet's current revision is Ready: the pods labelled with the
/// `controller-revision-hash` of its newest ControllerRevision, one per scheduled node.
async fn current_revision_pods(client: &Client, ds: &DaemonSet) -> Result<Progress, kube::Error> {
    let ns = ds.metadata.namespace.as_deref().unwrap_or("default");
    let selector: Vec<String> = ds
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let selector = selector.join(",");
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), ns);
    let list = revisions.list(&ListParams::default().labels(&selector)).await?;
    let uid = ds.metadata.uid.as_deref();
    let newest = list
        .items
        .iter()
        .filter(|r| r.metadata.owner_references.iter().flatten().any(|o| Some(o.uid.as_str()) == uid))
        .max_by_key(|r| r.revision);
    let Some(hash) = newest.and_then(|r| r.metadata.labels.as_ref()?.get("controller-revision-hash").cloned()) else {
        return Ok(Progress { done: false, seen: "no ControllerRevision of the DaemonSet yet".into() });
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let current =
        pods.list(&ListParams::default().labels(&format!("{selector},controller-revision-hash={hash}"))).await?;
    let desired = ds.status.as_ref().map(|s| s.desired_number_scheduled).unwrap_or(0);
    Ok(revision_pods_progress(&hash, desired, &current.items))
}

/// Whether `desired` pods of revision `hash` are all Ready.
pub fn revision_pods_progress(hash: &str, desired: i32, pods: &[Pod]) -> Progress {
    let ready = pods.iter().filter(|p| pod_ready(p)).count();
    let ready = i32::try_from(ready).unwrap_or(i32::MAX);
    let total = i32::try_from(pods.len()).unwrap_or(i32::MAX);
    Progress {
        done: desired > 0 && total >= desired && ready == total,
        seen: format!("revision {hash}: {ready} of {desired} pod(s) Ready"),
    }
}

/// Whether a pod's Ready condition is True.
pub(crate) fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
