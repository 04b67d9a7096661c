//! Namespaces a run owns. On an existing cluster meshcheck may only ever delete namespaces it
//! created itself, so ownership is decided at creation: a namespace that does not exist is created
//! with the run's label; one that exists is used as it is and never labelled. Cleanup deletes by that
//! label and checks the label again on every object it is about to delete.
//!
//! A namespace still Terminating (an earlier run's, on an existing cluster) is neither: nothing can
//! be created in it (the NamespaceLifecycle admission plugin answers 403 "because it is being
//! terminated", k8s.io/apiserver plugin/namespace/lifecycle/admission.go), so [`ensure`] waits for it
//! to be gone, bounded by [`TERMINATING_DEADLINE`], and then creates it as the run's own.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};

use crate::{
    cluster::{
        live::{LiveError, MUTATION_DEADLINE, within},
        waits::wait_gone,
    },
    common::names::{FIELD_MANAGER, MANAGED_BY, RUN_LABEL},
};

/// How long [`ensure`] waits for a Terminating namespace to be gone. Deleting a namespace deletes
/// everything in it first, finalizers included (a waypoint's, a Kiali CR's): minutes, not seconds.
pub const TERMINATING_DEADLINE: Duration = Duration::from_secs(300);

/// What [`ensure`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Ensured {
    /// Created now, labelled as the run's own.
    Created(Box<Namespace>),
    /// Already there; left untouched.
    Existed,
}

/// Creates `name` with the ownership labels (`run` as the [`RUN_LABEL`] value) plus `labels`,
/// unless it exists, within [`MUTATION_DEADLINE`].
pub async fn ensure(client: &Client, name: &str, labels: &[(String, String)], run: &str) -> Result<Ensured, LiveError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let err = |what: &str| {
        let what = format!("{what} namespace {name}");
        move |source| LiveError::Kube { what, source }
    };
    let found = within(MUTATION_DEADLINE, &format!("read namespace {name}"), async {
        api.get_opt(name).await.map_err(err("read"))
    })
    .await?;
    match found {
        Some(ns) if ns.metadata.deletion_timestamp.is_some() => {
            tracing::info!("namespace {name} is still Terminating (an earlier run's?); waiting for it to go");
            wait_gone(&api, &format!("namespace {name}, still Terminating,"), name, TERMINATING_DEADLINE).await?;
        }
        Some(_) => {
            tracing::info!("namespace {name} exists; using it as it is (it will not be deleted)");
            return Ok(Ensured::Existed);
        }
        None => {}
    }
    within(MUTATION_DEADLINE, &format!("create namespace {name}"), async {
        let mut all: BTreeMap<String, String> = labels.iter().cloned().collect();
        all.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
        all.insert(RUN_LABEL.into(), run.to_string());
        let ns = Namespace {
            metadata: ObjectMeta { name: Some(name.into()), labels: Some(all), ..Default::default() },
            ..Default::default()
        };
        match api.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &ns).await {
            Ok(created) => Ok(Ensured::Created(Box::new(created))),
            // Created by someone else between our read and our create: theirs, not ours.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Ensured::Existed),
            Err(e) => Err(err("create")(e)),
        }
    })
    .await
}

/// Deletes every namespace whose [`RUN_LABEL`] is `run` (and that meshcheck manages) and returns
/// their names, within [`MUTATION_DEADLINE`].
pub async fn delete_owned(client: &Client, run: &str) -> Result<Vec<String>, LiveError> {
    within(MUTATION_DEADLINE, "delete the run's namespaces", async {
        let api: Api<Namespace> = Api::all(client.clone());
        let selector = format!("{RUN_LABEL}={run}");
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| LiveError::Kube { what: format!("list namespaces {selector}"), source })?;
        let mut deleted = Vec::new();
        for ns in list.items {
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            let ours = labels.get(RUN_LABEL).map(String::as_str) == Some(run)
                && labels.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1);
            let Some(name) = ns.metadata.name.clone().filter(|_| ours) else {
                tracing::warn!("not deleting namespace {:?}: it lacks this run's labels", ns.metadata.name);
                continue;
            };
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => deleted.push(name),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(LiveError::Kube { what: format!("delete namespace {name}"), source }),
            }
        }
        Ok(deleted)
    })
    .await
}
