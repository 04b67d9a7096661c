//! Waits are watches with deadlines (kube-runtime), never sleeps. Each says what it waited for and,
//! on timeout, what it last saw.

use std::time::Duration;

use futures::StreamExt;
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
    runtime::{WatchStreamExt, wait::await_condition, watcher},
};

use crate::{cluster::live::LiveError, plan::Condition};

/// Waits for a condition on an object (or on all nodes).
pub async fn wait_for(
    client: &Client,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    cond: &Condition,
    timeout: Duration,
) -> Result<(), LiveError> {
    let what = format!("{kind} {}{name} to be {cond:?}", ns.map(|n| format!("{n}/")).unwrap_or_default());
    let last_seen = std::sync::Arc::new(std::sync::Mutex::new("nothing yet (object not found)".to_string()));
    let seen = last_seen.clone();
    let note = move |s: String| *seen.lock().expect("lock") = s;
    let fut = async {
        match cond {
            Condition::DaemonSetReady => {
                let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns.unwrap_or("default"));
                let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
                let mut stream = watcher(api.clone(), config).default_backoff().applied_objects().boxed();
                // A new pod turning Ready need not change the DaemonSet's counts (the old pod on
                // that node was ready too), so pod events re-check as well.
                let pods: Api<Pod> = Api::namespaced(client.clone(), ns.unwrap_or("default"));
                let mut pod_events =
                    watcher(pods, watcher::Config::default()).default_backoff().applied_objects().boxed();
                loop {
                    if let Some(ds) = api.get_opt(name).await.map_err(|e| e.to_string())? {
                        let progress = daemonset_progress(&ds);
                        note(progress.seen.clone());
                        if progress.done {
                            let pods = current_revision_pods(client, &ds).await?;
                            note(pods.seen.clone());
                            if pods.done {
                                return Ok(());
                            }
                        }
                    }
                    let event = tokio::select! {
                        e = stream.next() => e.map(|r| r.map(|_| ())),
                        e = pod_events.next() => e.map(|r| r.map(|_| ())),
                    };
                    match event {
                        Some(Ok(())) => {}
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Err("DaemonSet watch ended".into()),
                    }
                }
            }
            Condition::DeploymentAvailable => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), ns.unwrap_or("default"));
                await_condition(api, name, move |d: Option<&Deployment>| {
                    let Some(d) = d else { return false };
                    let progress = deployment_progress(d);
                    note(progress.seen);
                    progress.done
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
            Condition::StatefulSetReady => {
                let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns.unwrap_or("default"));
                await_condition(api, name, move |s: Option<&StatefulSet>| {
                    let Some(s) = s else { return false };
                    let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let ready = s.status.as_ref().and_then(|st| st.ready_replicas).unwrap_or(0);
                    note(format!("replicas {want}, ready {ready}"));
                    ready >= want
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
            Condition::PodReady => {
                let api: Api<Pod> = Api::namespaced(client.clone(), ns.unwrap_or("default"));
                await_condition(api, name, move |p: Option<&Pod>| {
                    let Some(st) = p.and_then(|p| p.status.as_ref()) else { return false };
                    let ready = p.is_some_and(pod_ready);
                    note(format!("phase {}, ready {ready}", st.phase.as_deref().unwrap_or("?")));
                    ready
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
            Condition::CrdEstablished => {
                let api: Api<CustomResourceDefinition> = Api::all(client.clone());
                await_condition(api, name, kube::runtime::conditions::is_crd_established())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Condition::NodesReady => {
                let api: Api<Node> = Api::all(client.clone());
                let mut stream =
                    watcher(api.clone(), watcher::Config::default()).default_backoff().applied_objects().boxed();
                loop {
                    let nodes = api.list(&Default::default()).await.map_err(|e| e.to_string())?;
                    let not_ready: Vec<String> = nodes
                        .items
                        .iter()
                        .filter(|n| {
                            !n.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                        })
                        .filter_map(|n| n.metadata.name.clone())
                        .collect();
                    note(format!("{} nodes, not Ready: [{}]", nodes.items.len(), not_ready.join(", ")));
                    if !nodes.items.is_empty() && not_ready.is_empty() {
                        return Ok(());
                    }
                    match stream.next().await {
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Err("node watch ended".into()),
                    }
                }
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(LiveError::Http { what: format!("waiting for {what}"), message }),
        Err(_) => Err(LiveError::Timeout { what, after: timeout, last_seen: last_seen.lock().expect("lock").clone() }),
    }
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
/// checked separately ([`current_revision_pods`]).
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
async fn current_revision_pods(client: &Client, ds: &DaemonSet) -> Result<Progress, String> {
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
    let list = revisions.list(&ListParams::default().labels(&selector)).await.map_err(|e| e.to_string())?;
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
    let current = pods
        .list(&ListParams::default().labels(&format!("{selector},controller-revision-hash={hash}")))
        .await
        .map_err(|e| e.to_string())?;
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
fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
