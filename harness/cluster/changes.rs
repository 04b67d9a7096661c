//! The changes a check makes to the cluster and their undo: every apply or delete registers how to
//! take it back before it acts ([`Live::apply`], [`Live::delete`]), and the session takes back what
//! is left after every collector ([`Live::revert_all`]). Also the plain applies and deletes of the
//! plan's install steps, which the cluster's or the namespaces' deletion takes back.

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};

use crate::common::names::FIELD_MANAGER;

use super::live::{Change, Live, LiveError, MUTATION_DEADLINE, Reverted, Undo, kube_err, resolve, within};

impl Live {
    /// Server-side applies objects for a check and registers their deletion, which
    /// [`Live::revert`] or the session carries out. Each object is recorded under `manifests/`.
    pub async fn apply(
        &self,
        objects: &[DynamicObject],
        default_ns: Option<&str>,
        dry_run_first: bool,
    ) -> Result<Change, LiveError> {
        let change =
            self.changes.register(Undo::Delete { objects: objects.to_vec(), namespace: default_ns.map(String::from) });
        self.apply_objects(objects, default_ns, dry_run_first).await?;
        Ok(change)
    }

    /// Deletes objects for a check and registers their re-apply, which [`Live::revert`] or the
    /// session carries out. What is put back is each object as the cluster had it (read first,
    /// without the fields the server owns), not as meshcheck would have written it: on an existing
    /// cluster the object may be the user's, with their own labels and rules. An object that is
    /// not there is neither deleted nor put back.
    pub async fn delete(&self, objects: &[DynamicObject], default_ns: Option<&str>) -> Result<Change, LiveError> {
        let found = self.as_found(objects, default_ns).await?;
        let change =
            self.changes.register(Undo::Restore { objects: found.clone(), namespace: default_ns.map(String::from) });
        self.delete_objects(&found, default_ns).await?;
        Ok(change)
    }

    /// `objects` as the cluster has them, each stripped of what the API server sets (uid,
    /// resourceVersion, creationTimestamp, generation, managedFields, deletion fields, status:
    /// ObjectMeta's read-only fields, k8s.io/apimachinery pkg/apis/meta/v1 types.go), so the copy
    /// can be applied again; those it does not have are left out.
    async fn as_found(
        &self,
        objects: &[DynamicObject],
        default_ns: Option<&str>,
    ) -> Result<Vec<DynamicObject>, LiveError> {
        let read = self.read_each(objects, default_ns, "read before delete").await?;
        Ok(read
            .into_iter()
            .filter_map(|(obj, found)| {
                let mut found = found?;
                let meta = &mut found.metadata;
                meta.uid = None;
                meta.resource_version = None;
                meta.creation_timestamp = None;
                meta.generation = None;
                meta.managed_fields = None;
                meta.deletion_timestamp = None;
                meta.deletion_grace_period_seconds = None;
                meta.self_link = None;
                if let Some(data) = found.data.as_object_mut() {
                    data.remove("status");
                }
                if found.types.is_none() {
                    found.types = obj.types.clone();
                }
                Some(found)
            })
            .collect())
    }

    /// Each of `objects` with what the cluster has under its name (`None`: absent), one discovery
    /// for the batch, within [`MUTATION_DEADLINE`].
    pub(super) async fn read_each<'a>(
        &self,
        objects: &'a [DynamicObject],
        default_ns: Option<&str>,
        what: &str,
    ) -> Result<Vec<(&'a DynamicObject, Option<DynamicObject>)>, LiveError> {
        within(MUTATION_DEADLINE, what, async {
            // What an install reads before its apply may be of a kind whose CRD the step before
            // installed: discovery may not list it yet.
            let discovery = self.discover_serving(objects).await?;
            let mut out = Vec::new();
            for obj in objects {
                let (ar, caps) = resolve(&discovery, obj)?;
                let name = obj.metadata.name.clone().unwrap_or_default();
                let found = self
                    .api_for(obj, &ar, &caps, default_ns)
                    .get_opt(&name)
                    .await
                    .map_err(kube_err(format!("read {} {name}", ar.kind)))?;
                out.push((obj, found));
            }
            Ok(out)
        })
        .await
    }

    /// `objects` less a Gateway API bundle older than the one the cluster already has, and a line
    /// saying so when it was left out. Every CRD of the bundle and its `safe-upgrades` policy carry
    /// `gateway.networking.k8s.io/bundle-version` (gateway-api v1.5.1 standard-install.yaml);
    /// applying an older bundle over a newer one is a downgrade that the newer bundle's policy
    /// refuses, or that drops fields its users rely on, so the newer one stays whole (an existing
    /// cluster with its own Gateway API).
    pub async fn without_downgrades(
        &self,
        objects: &[DynamicObject],
        default_ns: Option<&str>,
    ) -> Result<(Vec<DynamicObject>, Vec<String>), LiveError> {
        const BUNDLE_VERSION: &str = "gateway.networking.k8s.io/bundle-version";
        let version = |o: &DynamicObject| {
            let text = o.metadata.annotations.as_ref()?.get(BUNDLE_VERSION)?;
            Some((text.clone(), semver::Version::parse(text.trim_start_matches('v')).ok()?))
        };
        let (bundled, rest): (Vec<DynamicObject>, Vec<DynamicObject>) =
            objects.iter().cloned().partition(|o| version(o).is_some());
        let Some((ours_text, ours)) = bundled.iter().find_map(version) else {
            return Ok((objects.to_vec(), Vec::new()));
        };
        let present = self.read_each(&bundled, default_ns, "read the Gateway API objects present").await?;
        let newest =
            present.iter().filter_map(|(_, theirs)| theirs.as_ref().and_then(version)).max_by(|a, b| a.1.cmp(&b.1));
        match newest {
            Some((theirs_text, theirs)) if theirs > ours => Ok((
                rest,
                vec![format!(
                    "Gateway API {ours_text} not applied: the cluster has {theirs_text}, newer ({} objects left as they are)",
                    bundled.len()
                )],
            )),
            _ => Ok((objects.to_vec(), Vec::new())),
        }
    }

    /// Takes one change back now (the check is done with it).
    pub async fn revert(&self, change: Change) -> Result<(), LiveError> {
        match self.changes.take(&change) {
            Some(undo) => self.undo(&undo).await,
            None => Ok(()),
        }
    }

    /// Takes back every change still registered, newest first, each within `deadline`, and says
    /// how each went. The session calls this after every collector, whatever became of it.
    pub async fn revert_all(&self, deadline: Duration) -> Vec<Reverted> {
        let mut out = Vec::new();
        for undo in self.changes.take_all() {
            let action = undo.describe();
            let error = match tokio::time::timeout(deadline, self.undo(&undo)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {}s", deadline.as_secs())),
            };
            out.push(Reverted { action, error });
        }
        out
    }

    async fn undo(&self, undo: &Undo) -> Result<(), LiveError> {
        match undo {
            Undo::Delete { objects, namespace } => self.delete_objects(objects, namespace.as_deref()).await,
            Undo::Restore { objects, namespace } => {
                let missing = self.missing(objects, namespace.as_deref()).await?;
                self.apply_objects(&missing, namespace.as_deref(), false).await.map(|_| ())
            }
        }
    }

    /// Those of `objects` the cluster does not have: a delete that failed or was cut off may have
    /// left the object in place, and putting back what is still there would only take it over.
    async fn missing(
        &self,
        objects: &[DynamicObject],
        default_ns: Option<&str>,
    ) -> Result<Vec<DynamicObject>, LiveError> {
        let read = self.read_each(objects, default_ns, "read before re-apply").await?;
        Ok(read.into_iter().filter(|(_, found)| found.is_none()).map(|(obj, _)| obj.clone()).collect())
    }

    /// Server-side applies objects in order (a dry run of all first, so a typo fails before anything
    /// changes unless `dry_run_first` is off because the objects need CRDs created by earlier ones).
    /// Each applied object is recorded under `manifests/`. Nothing is registered for undo: this is
    /// for the plan's install steps, which the cluster's or the namespaces' deletion takes back.
    /// One discovery serves the whole batch, and the batch has [`MUTATION_DEADLINE`]. Returns each
    /// object as the API server stored it (uid included), in the order given.
    pub async fn apply_objects(
        &self,
        objects: &[DynamicObject],
        default_ns: Option<&str>,
        dry_run_first: bool,
    ) -> Result<Vec<DynamicObject>, LiveError> {
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        within(MUTATION_DEADLINE, "server-side apply", async {
            let discovery = self.discover_serving(objects).await?;
            let resolved =
                objects.iter().map(|o| Ok((o, resolve(&discovery, o)?))).collect::<Result<Vec<_>, LiveError>>()?;
            let pp = PatchParams::apply(FIELD_MANAGER).force();
            if dry_run_first {
                for (at, (obj, (ar, caps))) in resolved.iter().enumerate() {
                    let name = obj.metadata.name.clone().unwrap_or_default();
                    match self
                        .api_for(obj, ar, caps, default_ns)
                        .patch(&name, &pp.clone().dry_run(), &Patch::Apply(obj))
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(refusal))
                            if awaits_the_batch(
                                &refusal,
                                namespace_of(obj, default_ns),
                                &objects[..at],
                                default_ns,
                            ) =>
                        {
                            tracing::debug!(kind = %ar.kind, %name, reason = %refusal.message,
                                "dry run refused only for an object earlier in the batch; its apply checks it");
                        }
                        Err(e) => return Err(kube_err(format!("server-side dry run of {} {name}", ar.kind))(e)),
                    }
                }
            }
            let mut stored = Vec::with_capacity(resolved.len());
            for (obj, (ar, caps)) in &resolved {
                let name = obj.metadata.name.clone().unwrap_or_default();
                stored.push(
                    self.api_for(obj, ar, caps, default_ns)
                        .patch(&name, &pp, &Patch::Apply(obj))
                        .await
                        .map_err(kube_err(format!("server-side apply of {} {name}", ar.kind)))?,
                );
                crate::evidence::record_manifest(&self.run_dir, obj, default_ns)
                    .map_err(|source| LiveError::Write { path: "manifests/".into(), source })?;
            }
            Ok(stored)
        })
        .await
    }

    /// Deletes objects (missing ones are fine), within [`MUTATION_DEADLINE`].
    pub async fn delete_objects(&self, objects: &[DynamicObject], default_ns: Option<&str>) -> Result<(), LiveError> {
        if objects.is_empty() {
            return Ok(());
        }
        within(MUTATION_DEADLINE, "delete", async {
            let discovery = self.discover().await?;
            for obj in objects {
                let (ar, caps) = resolve(&discovery, obj)?;
                let name = obj.metadata.name.clone().unwrap_or_default();
                match self.api_for(obj, &ar, &caps, default_ns).delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(kube_err(format!("delete {} {name}", ar.kind))(e)),
                }
            }
            Ok(())
        })
        .await
    }
}

fn namespace_of<'a>(obj: &'a DynamicObject, default_ns: Option<&'a str>) -> Option<&'a str> {
    obj.metadata.namespace.as_deref().or(default_ns)
}

fn is_named(obj: &DynamicObject, kind: &str, name: &str) -> bool {
    obj.types.as_ref().is_some_and(|t| t.kind == kind) && obj.metadata.name.as_deref() == Some(name)
}

/// Whether a dry run's refusal says only that an object `earlier` in the same batch is not there
/// yet, as no dry run stores anything: an object into a Namespace the batch creates (404
/// `namespaces "N" not found`, the namespace lifecycle admission plugin; cilium 1.19.6 renders its
/// `cilium-secrets` Namespace beside the Roles in it), or a Pod whose ServiceAccount the batch
/// creates (403 `error looking up service account NS/NAME: ...`, kubernetes v1.35.4
/// plugin/pkg/admission/serviceaccount/admission.go `Admit` L160-L162; meshcheck's own
/// `mesh-clients.yaml`). Both plugins are on by default, so every real server refused such a batch
/// and no real run got past applying mesh-clients.yaml; the real control-plane tier met it
/// (suites/offline/controlplane/run.rs). Such an object is checked by its own apply, in order;
/// undeclared fields still fail its dry run, as the apply is decoded before admission.
fn awaits_the_batch(
    refusal: &kube::core::Status,
    ns: Option<&str>,
    earlier: &[DynamicObject],
    default_ns: Option<&str>,
) -> bool {
    let created = |kind: &str, name: &str, in_ns: Option<&str>| {
        earlier.iter().any(|o| is_named(o, kind, name) && (in_ns.is_none() || namespace_of(o, default_ns) == in_ns))
    };
    match (refusal.code, refusal.reason.as_str()) {
        (404, "NotFound") => ns.is_some_and(|ns| {
            refusal.message == format!("namespaces \"{ns}\" not found") && created("Namespace", ns, None)
        }),
        (403, "Forbidden") => {
            let Some((_, after)) = refusal.message.split_once(": error looking up service account ") else {
                return false;
            };
            let account = after.split_once(':').map_or(after, |(account, _)| account);
            match (ns, account.split_once('/')) {
                (Some(ns), Some((account_ns, name))) => account_ns == ns && created("ServiceAccount", name, Some(ns)),
                _ => false,
            }
        }
        _ => false,
    }
}

/// How long a kind missing from discovery is looked for again. The API server serves a CRD's kind
/// once the CRD is Established, but adds it to its aggregated discovery a moment later, from a
/// controller of its own (apiextensions-apiserver v0.35.4
/// pkg/apiserver/customresource_discovery_controller.go); the real control-plane tier, loaded, saw
/// a ServiceMonitor refused as not served right after its CRD's Established wait.
const DISCOVERY_CATCH_UP: Duration = Duration::from_secs(10);

impl Live {
    /// Discovery that serves every kind of `objects`. A kind it does not serve yet but whose CRD
    /// the cluster has is asked for again, up to [`DISCOVERY_CATCH_UP`]; a kind with no CRD at
    /// all is not waited for (an apply ahead of its CRD's install is the plan's mistake, named at
    /// once). Then the last discovery, and the caller names what is missing.
    async fn discover_serving(&self, objects: &[DynamicObject]) -> Result<kube::Discovery, LiveError> {
        let since = std::time::Instant::now();
        loop {
            let discovery = self.discover().await?;
            let unserved: Vec<kube::api::GroupVersionKind> = objects
                .iter()
                .filter_map(|o| kube::api::GroupVersionKind::try_from(o.types.as_ref()?).ok())
                .filter(|gvk| discovery.resolve_gvk(gvk).is_none())
                .collect();
            if unserved.is_empty() || since.elapsed() >= DISCOVERY_CATCH_UP || !self.has_crds_of(&unserved).await? {
                return Ok(discovery);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Whether the cluster has a CRD for every one of `kinds` (by group and kind).
    async fn has_crds_of(&self, kinds: &[kube::api::GroupVersionKind]) -> Result<bool, LiveError> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let api: kube::Api<CustomResourceDefinition> = kube::Api::all(self.client.clone());
        let crds = api.list(&Default::default()).await.map_err(kube_err("list CustomResourceDefinitions"))?;
        Ok(kinds
            .iter()
            .all(|gvk| crds.items.iter().any(|crd| crd.spec.group == gvk.group && crd.spec.names.kind == gvk.kind)))
    }
}

#[cfg(test)]
mod tests {
    use kube::api::DynamicObject;
    use serde_json::json;

    use super::awaits_the_batch;

    fn object(kind: &str, name: &str, ns: Option<&str>) -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": ns}}))
            .unwrap()
    }

    fn refusal(code: u16, reason: &str, message: &str) -> kube::core::Status {
        serde_json::from_value(json!({"code": code, "reason": reason, "message": message})).unwrap()
    }

    /// The real API server's words (kube-apiserver v1.35.4 on the control-plane tier).
    const NO_ACCOUNT: &str = "pods \"curl-inside\" is forbidden: error looking up service account \
        meshcheck-inside/curl-inside: serviceaccount \"curl-inside\" not found";

    #[test]
    fn a_pod_waits_for_its_service_account_only_when_the_batch_creates_it_first_in_its_namespace() {
        let no_account = refusal(403, "Forbidden", NO_ACCOUNT);
        let account = object("ServiceAccount", "curl-inside", Some("meshcheck-inside"));
        assert!(awaits_the_batch(&no_account, Some("meshcheck-inside"), std::slice::from_ref(&account), None));
        assert!(awaits_the_batch(
            &no_account,
            Some("meshcheck-inside"),
            &[object("ServiceAccount", "curl-inside", None)],
            Some("meshcheck-inside")
        ));
        assert!(
            !awaits_the_batch(&no_account, Some("meshcheck-inside"), &[], None),
            "not in the batch: a real refusal"
        );
        let elsewhere = object("ServiceAccount", "curl-inside", Some("other"));
        assert!(!awaits_the_batch(&no_account, Some("meshcheck-inside"), &[elsewhere], None));
        let other_kind = object("ConfigMap", "curl-inside", Some("meshcheck-inside"));
        assert!(!awaits_the_batch(&no_account, Some("meshcheck-inside"), &[other_kind], None));
        let denied = refusal(403, "Forbidden", "pods \"curl-inside\" is forbidden: User \"x\" cannot create resource");
        assert!(!awaits_the_batch(&denied, Some("meshcheck-inside"), &[account], None), "RBAC is a real refusal");
    }

    #[test]
    fn an_object_waits_for_its_namespace_only_when_the_batch_creates_it_first() {
        let missing = refusal(404, "NotFound", "namespaces \"cilium-secrets\" not found");
        let namespace = object("Namespace", "cilium-secrets", None);
        assert!(awaits_the_batch(
            &missing,
            Some("cilium-secrets"),
            std::slice::from_ref(&namespace),
            Some("kube-system")
        ));
        assert!(!awaits_the_batch(&missing, Some("cilium-secrets"), &[], Some("kube-system")));
        assert!(!awaits_the_batch(&missing, Some("kube-system"), &[namespace], Some("kube-system")));
        let invalid = refusal(422, "Invalid", "namespaces \"cilium-secrets\" not found");
        assert!(!awaits_the_batch(
            &invalid,
            Some("cilium-secrets"),
            &[object("Namespace", "cilium-secrets", None)],
            None
        ));
    }
}
