//! What a run installs on an existing cluster besides its namespaces, and taking it back
//! (`existing.install: true`). Deleting the run's namespaces takes back what is inside them; what is
//! not (cluster-scoped objects, objects in namespaces that were there before) is decided here:
//!
//! - An object an install step applies is applied only when the cluster does not have it, or when
//!   this run created it; one that was there before the run is the user's and is left as it is.
//!   Each object the run created is recorded with its uid and deleted at cleanup by that uid.
//! - helm's objects are taken back by `helm uninstall`, except what helm keeps: CRDs from a chart's
//!   `crds/` folder (helm never deletes them, helm.sh docs "Custom Resource Definitions") and
//!   objects annotated `helm.sh/resource-policy: keep` (helm v3.22.0 pkg/action/uninstall.go
//!   `filterManifestsToKeep`; Istio's base chart puts it on every Istio CRD). Those CRDs are found
//!   by a list of the CRDs taken before the run's first install: a CRD of a group the run installs
//!   that was not on that list is the run's.

use std::collections::BTreeSet;

use k8s_openapi::{
    api::core::v1::Secret, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{DeleteParams, DynamicObject, ListParams, Preconditions},
};

use super::live::{Live, LiveError, MUTATION_DEADLINE, kube_err, resolve, within};
use crate::plan::{ObjectRef, ReleaseRef};

/// An object the run created outside its namespaces.
#[derive(Debug, Clone)]
struct OwnedObject {
    object: DynamicObject,
    uid: String,
}

/// The ledger of an existing-cluster run that installs: what it created, and what was there first.
#[derive(Debug, Default)]
pub struct Owned {
    releases: std::sync::Mutex<BTreeSet<ReleaseRef>>,
    objects: std::sync::Mutex<Vec<OwnedObject>>,
    crds_before: tokio::sync::OnceCell<BTreeSet<String>>,
    /// Objects an operator of the run may create outside its release, by `kind ns/name`: their
    /// uid before the release's install, `None` when absent then.
    present_before: std::sync::Mutex<std::collections::BTreeMap<String, Option<String>>>,
}

fn key(object: &ObjectRef) -> String {
    format!("{} {}/{}", object.kind, object.namespace, object.name)
}

/// An [`ObjectRef`] as a typed-only [`DynamicObject`], to resolve and address it.
fn dynamic(object: &ObjectRef) -> DynamicObject {
    DynamicObject {
        types: Some(kube::api::TypeMeta { api_version: object.api_version.clone(), kind: object.kind.clone() }),
        metadata: kube::api::ObjectMeta {
            name: Some(object.name.clone()),
            namespace: Some(object.namespace.clone()),
            ..Default::default()
        },
        data: serde_json::Value::Null,
    }
}

/// The uid of `object` on the cluster now, `None` when it is not there.
async fn uid_now(live: &Live, object: &ObjectRef) -> Result<Option<String>, LiveError> {
    let obj = dynamic(object);
    let discovery = within(MUTATION_DEADLINE, "API discovery", live.discover()).await?;
    let (ar, caps) = resolve(&discovery, &obj)?;
    let api = live.api_for(&obj, &ar, &caps, None);
    let found = within(MUTATION_DEADLINE, &format!("read {}", key(object)), async {
        api.get_opt(&object.name).await.map_err(kube_err(format!("read {}", key(object))))
    })
    .await?;
    Ok(found.and_then(|o| o.metadata.uid))
}

/// Whether a CRD's group is one of `groups` or under one (`telemetry.istio.io` is of `istio.io`).
pub fn in_groups(group: &str, groups: &[String]) -> bool {
    groups.iter().any(|g| group == g || group.ends_with(&format!(".{g}")))
}

impl Owned {
    /// Whether helm has a record of `release` in its namespace: a Secret labelled `owner=helm`,
    /// `name=<release>` (helm v3.22.0 pkg/storage/driver/secrets.go `newSecretsObject`, the default
    /// storage driver). One that is there before the run's install is not the run's to change.
    pub async fn release_present(live: &Live, release: &ReleaseRef) -> Result<bool, LiveError> {
        let api: Api<Secret> = Api::namespaced(live.client.clone(), &release.namespace);
        let params = ListParams::default().labels(&format!("owner=helm,name={}", release.name)).limit(1);
        let found = within(MUTATION_DEADLINE, "look for a helm release", async {
            api.list(&params)
                .await
                .map_err(kube_err(format!("list helm's records of {} in {}", release.name, release.namespace)))
        })
        .await?;
        Ok(!found.items.is_empty())
    }

    /// Records that the run starts installing `release` (helm may have created objects even if the
    /// install then fails).
    pub fn install_started(&self, release: &ReleaseRef) {
        self.releases.lock().expect("owned lock").insert(release.clone());
    }

    /// Whether the run started installing `release`.
    pub fn installed(&self, release: &ReleaseRef) -> bool {
        self.releases.lock().expect("owned lock").contains(release)
    }

    /// Lists the cluster's CRDs once, before the run's first install; later calls do nothing.
    pub async fn note_crds(&self, live: &Live) -> Result<(), LiveError> {
        self.crds_before
            .get_or_try_init(|| async {
                let api: Api<CustomResourceDefinition> = Api::all(live.client.clone());
                let list = within(MUTATION_DEADLINE, "list the CRDs before the first install", async {
                    api.list(&ListParams::default()).await.map_err(kube_err("list CustomResourceDefinitions"))
                })
                .await?;
                Ok(list.items.into_iter().filter_map(|c| c.metadata.name).collect())
            })
            .await
            .map(|_| ())
    }

    /// Notes, once each, whether `objects` are on the cluster before a release's install (what its
    /// operator would create outside the release: [`crate::plan::operator_made`]).
    pub async fn note_present(&self, live: &Live, objects: &[ObjectRef]) -> Result<(), LiveError> {
        for object in objects {
            if self.present_before.lock().expect("owned lock").contains_key(&key(object)) {
                continue;
            }
            let uid = uid_now(live, object).await?;
            self.present_before.lock().expect("owned lock").insert(key(object), uid);
        }
        Ok(())
    }

    /// Deletes, by uid, each of `objects` that is on the cluster now and was not before the
    /// install ([`Owned::note_present`]): what the run's operator made and helm leaves. One that
    /// was there before, or whose state before is unknown, is left as it is.
    pub async fn delete_made_since(&self, live: &Live, objects: &[ObjectRef]) -> Result<(), LiveError> {
        let mut failed = Vec::new();
        for object in objects {
            let before = self.present_before.lock().expect("owned lock").get(&key(object)).cloned();
            let Some(None) = before else { continue };
            let result = async {
                let Some(uid) = uid_now(live, object).await? else { return Ok(()) };
                let obj = dynamic(object);
                let discovery = within(MUTATION_DEADLINE, "API discovery", live.discover()).await?;
                let (ar, caps) = resolve(&discovery, &obj)?;
                let api = live.api_for(&obj, &ar, &caps, None);
                within(MUTATION_DEADLINE, &format!("delete {}", key(object)), async {
                    by_uid(&api, &object.name, &uid).await.map_err(kube_err(format!("delete {}", key(object))))
                })
                .await?;
                tracing::info!("deleted {}, which the run's operator made", key(object));
                Ok::<(), LiveError>(())
            }
            .await;
            if let Err(e) = result {
                failed.push(e.to_string());
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(LiveError::Http { what: "delete what the run's operators made".into(), message: failed.join("; ") })
        }
    }

    /// Applies `objects` as [`Live::apply_objects`] does, leaving out each one the cluster had
    /// before the run, and records those it created. Returns a line for each object left out.
    pub async fn apply(
        &self,
        live: &Live,
        objects: &[DynamicObject],
        default_ns: Option<&str>,
        dry_run_first: bool,
    ) -> Result<Vec<String>, LiveError> {
        let found = live.read_each(objects, default_ns, "read before an install apply").await?;
        // Each object to apply, and whether the run creates it now.
        let mut to_apply: Vec<(DynamicObject, bool)> = Vec::new();
        let mut left = Vec::new();
        for (obj, there) in found {
            match there.and_then(|t| t.metadata.uid) {
                Some(uid) if self.created(&uid) => to_apply.push((obj.clone(), false)),
                Some(_) => left.push(format!(
                    "{} {} is on the cluster from before the run: left as it is",
                    obj.types.as_ref().map_or("object", |t| t.kind.as_str()),
                    obj.metadata.name.as_deref().unwrap_or_default()
                )),
                None => to_apply.push((obj.clone(), true)),
            }
        }
        let objects: Vec<DynamicObject> = to_apply.iter().map(|(o, _)| o.clone()).collect();
        let stored = live.apply_objects(&objects, default_ns, dry_run_first).await?;
        // The apply's answer is the stored object: its uid is what cleanup deletes by.
        for ((mut object, new), made) in to_apply.into_iter().zip(stored) {
            if let (true, Some(uid)) = (new, made.metadata.uid) {
                if object.metadata.namespace.is_none() {
                    object.metadata.namespace = default_ns.map(String::from);
                }
                self.objects.lock().expect("owned lock").push(OwnedObject { object, uid });
            }
        }
        Ok(left)
    }

    fn created(&self, uid: &str) -> bool {
        self.objects.lock().expect("owned lock").iter().any(|o| o.uid == uid)
    }

    /// Deletes what the run created outside its namespaces, newest first, each by uid (a 409 means
    /// someone made it again since: left alone), then the CRDs of `crd_groups` that were not there
    /// before the run's first install, saying in the log what was deleted.
    pub async fn delete(&self, live: &Live, crd_groups: &[String]) -> Result<(), LiveError> {
        let objects: Vec<OwnedObject> = self.objects.lock().expect("owned lock").iter().rev().cloned().collect();
        let (mut deleted, mut failed) = (Vec::new(), Vec::new());
        // One failure does not keep the rest: each object is tried, then the CRDs.
        let objects_done = within(MUTATION_DEADLINE, "delete what the run installed outside its namespaces", async {
            let discovery = live.discover().await?;
            for owned in &objects {
                let (ar, caps) = match resolve(&discovery, &owned.object) {
                    Ok(found) => found,
                    Err(e) => {
                        failed.push(e.to_string());
                        continue;
                    }
                };
                let name = owned.object.metadata.name.clone().unwrap_or_default();
                let api = live.api_for(&owned.object, &ar, &caps, owned.object.metadata.namespace.as_deref());
                match by_uid(&api, &name, &owned.uid).await {
                    Ok(true) => deleted.push(format!("{} {name}", ar.kind)),
                    Ok(false) => {}
                    Err(e) => failed.push(kube_err(format!("delete {} {name}", ar.kind))(e).to_string()),
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = objects_done {
            failed.push(e.to_string());
        }
        if let Some(before) = self.crds_before.get() {
            match delete_new_crds(live, before, crd_groups, &mut failed).await {
                Ok(crds) => deleted.extend(crds),
                Err(e) => failed.push(e.to_string()),
            }
        }
        tracing::info!("deleted what the run installed: [{}]", deleted.join(", "));
        if failed.is_empty() {
            Ok(())
        } else {
            Err(LiveError::Http { what: "delete what the run installed".into(), message: failed.join("; ") })
        }
    }
}

/// Deletes, each by uid, the CRDs of `crd_groups` not among `before`; returns what went, and adds
/// to `failed` each that could not be deleted.
async fn delete_new_crds(
    live: &Live,
    before: &BTreeSet<String>,
    crd_groups: &[String],
    failed: &mut Vec<String>,
) -> Result<Vec<String>, LiveError> {
    let mut deleted = Vec::new();
    let api: Api<CustomResourceDefinition> = Api::all(live.client.clone());
    within(MUTATION_DEADLINE, "delete the CRDs the run brought", async {
        let now = api.list(&ListParams::default()).await.map_err(kube_err("list CustomResourceDefinitions"))?;
        for crd in now.items {
            let (Some(name), Some(uid)) = (crd.metadata.name.clone(), crd.metadata.uid.clone()) else { continue };
            if before.contains(&name) || !in_groups(&crd.spec.group, crd_groups) {
                continue;
            }
            match by_uid(&api, &name, &uid).await {
                Ok(true) => deleted.push(format!("CustomResourceDefinition {name}")),
                Ok(false) => {}
                Err(e) => failed.push(kube_err(format!("delete CustomResourceDefinition {name}"))(e).to_string()),
            }
        }
        Ok(deleted)
    })
    .await
}

/// Deletes `name` if its uid is still `uid`: true when deleted, false when gone or made again.
async fn by_uid<K>(api: &Api<K>, name: &str, uid: &str) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes `object` and waits until it is gone, within `deadline`: a custom resource whose
/// operator must take down what it made before the operator itself goes. Already gone is done.
pub async fn delete_and_await(live: &Live, object: &ObjectRef, deadline: std::time::Duration) -> Result<(), LiveError> {
    let what = key(object);
    let obj = dynamic(object);
    let discovery = within(MUTATION_DEADLINE, "API discovery", live.discover()).await?;
    let (ar, caps) = match resolve(&discovery, &obj) {
        Ok(found) => found,
        // Its CRD is gone, so is it.
        Err(LiveError::Manifest(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let api = live.api_for(&obj, &ar, &caps, None);
    match within(MUTATION_DEADLINE, &format!("delete {what}"), async {
        api.delete(&object.name, &DeleteParams::default()).await.map_err(kube_err(format!("delete {what}")))
    })
    .await
    {
        Ok(_) => {}
        Err(LiveError::Kube { source: kube::Error::Api(s), .. }) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e),
    }
    super::waits::wait_gone(&api, &what, &object.name, None, deadline).await.map(|_| ())
}
