//! Waits are watches with deadlines (kube-runtime), never sleeps. Each says what it waited for and,
//! on timeout, what it last saw.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, StatefulSet},
        core::v1::{Node, Pod},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource,
    runtime::{WatchStreamExt, wait::await_condition, watcher},
};

use crate::{live::LiveError, plan::Condition};

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
                await_condition(api, name, move |d: Option<&DaemonSet>| {
                    let Some(st) = d.and_then(|d| d.status.as_ref()) else { return false };
                    note(format!(
                        "desired {}, ready {}, updated {}",
                        st.desired_number_scheduled,
                        st.number_ready,
                        st.updated_number_scheduled.unwrap_or(0)
                    ));
                    let gen_ok =
                        d.and_then(|d| d.meta().generation).unwrap_or(0) <= st.observed_generation.unwrap_or(0);
                    gen_ok
                        && st.desired_number_scheduled > 0
                        && st.number_ready == st.desired_number_scheduled
                        && st.updated_number_scheduled.unwrap_or(0) == st.desired_number_scheduled
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
            Condition::DeploymentAvailable => {
                let api: Api<Deployment> = Api::namespaced(client.clone(), ns.unwrap_or("default"));
                await_condition(api, name, move |d: Option<&Deployment>| {
                    let Some(d) = d else { return false };
                    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    let Some(st) = d.status.as_ref() else { return false };
                    note(format!(
                        "replicas {want}, available {}, updated {}",
                        st.available_replicas.unwrap_or(0),
                        st.updated_replicas.unwrap_or(0)
                    ));
                    let available =
                        st.conditions.iter().flatten().any(|c| c.type_ == "Available" && c.status == "True");
                    available
                        && st.updated_replicas.unwrap_or(0) >= want
                        && st.available_replicas.unwrap_or(0) >= want
                        && d.meta().generation.unwrap_or(0) <= st.observed_generation.unwrap_or(0)
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
                    let ready = st.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
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
