//! Namespaces a run owns. On an existing cluster meshcheck may only ever delete namespaces it
//! created itself, so ownership is decided at creation: a namespace that does not exist is created
//! with the run's label; one that exists is used as it is and never labelled. Cleanup deletes exactly
//! the namespaces the run created, by name and uid ([`delete_created`]).
//!
//! A namespace still Terminating (an earlier run's, on an existing cluster) is neither: nothing can
//! be created in it (the NamespaceLifecycle admission plugin answers 403 "because it is being
//! terminated", k8s.io/apiserver plugin/namespace/lifecycle/admission.go), so [`ensure`] waits for it
//! to be gone, bounded by [`TERMINATING_DEADLINE`], and then creates it as the run's own.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, PostParams, Preconditions},
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
            let (what, uid) = (format!("namespace {name}, still Terminating,"), ns.metadata.uid.as_deref());
            wait_gone(&api, &what, name, uid, TERMINATING_DEADLINE).await?;
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

/// A namespace the run created: its name and the uid the API server gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedNamespace {
    /// Name.
    pub name: String,
    /// `metadata.uid` at creation.
    pub uid: String,
}

impl CreatedNamespace {
    /// The name and uid of a namespace as [`ensure`] created it.
    pub fn of(ns: &Namespace) -> Option<CreatedNamespace> {
        Some(CreatedNamespace { name: ns.metadata.name.clone()?, uid: ns.metadata.uid.clone()? })
    }
}

/// Waits until each of `deleted` is gone, [`TERMINATING_DEADLINE`] in all. A deleted namespace
/// stays Terminating until the namespace controller has deleted everything in it (on the real
/// control-plane tier, seconds after the run's delete; suites/offline/controlplane/run.rs), and a
/// run that ends with its namespaces still there has not cleaned up yet: its report would say
/// deleted while the next run on the cluster still had to wait for them.
pub async fn wait_deleted(client: &Client, deleted: &[CreatedNamespace]) -> Result<(), LiveError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let until = tokio::time::Instant::now() + TERMINATING_DEADLINE;
    for CreatedNamespace { name, uid } in deleted {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        wait_gone(&api, &format!("the run's namespace {name}, deleted,"), name, Some(uid), left).await?;
    }
    let names: Vec<&str> = deleted.iter().map(|n| n.name.as_str()).collect();
    tracing::info!("deleted the run's namespaces: [{}]", names.join(", "));
    Ok(())
}

/// Deletes exactly the namespaces the run created, each by name with its uid as a precondition,
/// and returns those deleted, within [`MUTATION_DEADLINE`]. A namespace already gone is
/// skipped; one whose uid changed (deleted and made again by someone else since) fails the
/// precondition with 409 and is left alone (apimachinery `Preconditions`: "the UID in the
/// precondition does not match the UID in record"). Nothing is chosen by label: a namespace
/// someone else created with copied labels is never touched.
pub async fn delete_created(client: &Client, created: &[CreatedNamespace]) -> Result<Vec<CreatedNamespace>, LiveError> {
    within(MUTATION_DEADLINE, "delete the run's namespaces", async {
        let api: Api<Namespace> = Api::all(client.clone());
        let mut deleted = Vec::new();
        for ns in created {
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid: Some(ns.uid.clone()), resource_version: None }),
                ..DeleteParams::default()
            };
            match api.delete(&ns.name, &params).await {
                Ok(_) => deleted.push(ns.clone()),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::warn!(
                        "not deleting namespace {}: it is not the one this run created ({})",
                        ns.name,
                        s.message
                    );
                }
                Err(source) => return Err(LiveError::Kube { what: format!("delete namespace {}", ns.name), source }),
            }
        }
        Ok(deleted)
    })
    .await
}
