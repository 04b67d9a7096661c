//! The manifests and values files the harness applies, embedded in the binary so a run does not
//! depend on the working directory. Each is also a file under `fixtures/`, validated against the
//! upstream schemas by the offline tests.
//!
//! `MESHCHECK_FIXTURES=<dir>` overrides them at run time, file by file (`<dir>/values/istiod.yaml`
//! replaces `values/istiod.yaml`; a file the folder lacks stays the embedded one): a platform team
//! adapts a value without rebuilding, and the mutation catalog (`suites/mutations`) edits a copy
//! without a rebuild per mutation.

use kube::api::DynamicObject;

use crate::scenario::Release;

/// A manifest that could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("manifest {origin}: {message}")]
pub struct ManifestError {
    /// Fixture path, URL or the kind it declares.
    pub origin: String,
    /// What is wrong.
    pub message: String,
}

/// Every fixture: (path under `fixtures/`, content).
pub const ALL: &[(&str, &str)] = &[
    ("values/cilium.yaml", include_str!("../../fixtures/values/cilium.yaml")),
    ("values/istio-base.yaml", include_str!("../../fixtures/values/istio-base.yaml")),
    ("values/istio-cni.yaml", include_str!("../../fixtures/values/istio-cni.yaml")),
    ("values/istiod.yaml", include_str!("../../fixtures/values/istiod.yaml")),
    ("values/ztunnel.yaml", include_str!("../../fixtures/values/ztunnel.yaml")),
    ("values/istio-gateway.yaml", include_str!("../../fixtures/values/istio-gateway.yaml")),
    ("values/kube-prometheus-stack.yaml", include_str!("../../fixtures/values/kube-prometheus-stack.yaml")),
    ("values/tempo.yaml", include_str!("../../fixtures/values/tempo.yaml")),
    ("values/kiali-operator.yaml", include_str!("../../fixtures/values/kiali-operator.yaml")),
    ("manifests/istio-monitors.yaml", include_str!("../../fixtures/manifests/istio-monitors.yaml")),
    ("manifests/telemetry.yaml", include_str!("../../fixtures/manifests/telemetry.yaml")),
    (
        "manifests/cilium-allow-ambient-hostprobes.yaml",
        include_str!("../../fixtures/manifests/cilium-allow-ambient-hostprobes.yaml"),
    ),
    ("manifests/mesh-clients.yaml", include_str!("../../fixtures/manifests/mesh-clients.yaml")),
    ("manifests/mtls-strict.yaml", include_str!("../../fixtures/manifests/mtls-strict.yaml")),
    ("manifests/l4-allow.yaml", include_str!("../../fixtures/manifests/l4-allow.yaml")),
    ("manifests/waypoint.yaml", include_str!("../../fixtures/manifests/waypoint.yaml")),
    ("manifests/l7-deny.yaml", include_str!("../../fixtures/manifests/l7-deny.yaml")),
    ("manifests/default-deny.yaml", include_str!("../../fixtures/manifests/default-deny.yaml")),
    ("manifests/probe-target.yaml", include_str!("../../fixtures/manifests/probe-target.yaml")),
    ("manifests/keycloak.yaml", include_str!("../../fixtures/manifests/keycloak.yaml")),
    ("manifests/latency.yaml", include_str!("../../fixtures/manifests/latency.yaml")),
    ("values/kiali-openid.yaml", include_str!("../../fixtures/values/kiali-openid.yaml")),
    ("images.yaml", include_str!("../../fixtures/images.yaml")),
    ("known-issues.yaml", include_str!("../../fixtures/known-issues.yaml")),
];

/// The folder that overrides the embedded fixtures, if any.
pub const OVERRIDE_ENV: &str = "MESHCHECK_FIXTURES";

/// A fixture's text by its path under `fixtures/`: the override folder's copy when there is one,
/// else the embedded text.
pub fn text(path: &str) -> String {
    let embedded = ALL.iter().find(|(p, _)| *p == path).map(|(_, t)| *t).unwrap_or_else(|| panic!("no fixture {path}"));
    std::env::var_os(OVERRIDE_ENV)
        .filter(|d| !d.is_empty())
        .and_then(|dir| std::fs::read_to_string(std::path::Path::new(&dir).join(path)).ok())
        .unwrap_or_else(|| embedded.to_string())
}

/// Parses a manifest fixture (`manifests/<name>`), filling placeholders.
pub fn manifest(name: &str) -> Result<Vec<DynamicObject>, ManifestError> {
    manifest_rendered(name, &[])
}

/// Parses a manifest fixture after replacing `{{KEY}}` placeholders.
pub fn manifest_rendered(name: &str, vars: &[(&str, &str)]) -> Result<Vec<DynamicObject>, ManifestError> {
    let path = format!("manifests/{name}");
    let mut yaml = text(&path);
    for (k, v) in vars {
        yaml = yaml.replace(&format!("{{{{{k}}}}}"), v);
    }
    parse_manifests(&yaml, &format!("fixtures/{path}"))
}

/// The images a pinned chart version starts (`fixtures/images.yaml`): `component` is one of
/// `cilium`, `kube_prometheus_stack`, `tempo`, `kiali`. `None` when that version is not listed.
pub fn chart_images(component: &str, version: &str) -> Option<Vec<String>> {
    type Table = std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>>;
    let table: Table = serde_saphyr::from_str(&text("images.yaml")).expect("fixtures/images.yaml parses (tested)");
    table.get(component)?.get(version).cloned()
}

/// The Keycloak release `manifests/keycloak.yaml` runs: the tag of its Deployment's image, which
/// is how `images.yaml` lists it.
pub fn keycloak_version() -> String {
    let objects = manifest("keycloak.yaml").expect("fixtures parse (tested)");
    let deployment = objects
        .iter()
        .find(|o| o.types.as_ref().is_some_and(|t| t.kind == "Deployment"))
        .expect("keycloak.yaml has a Deployment");
    let image = deployment.data.pointer("/spec/template/spec/containers/0/image").and_then(|v| v.as_str());
    image.and_then(|i| i.rsplit_once(':')).map(|(_, tag)| tag.to_string()).unwrap_or_default()
}

/// The fortio image of the latency check's fixture (`manifests/latency.yaml`).
pub fn fortio_image() -> String {
    let objects = manifest("latency.yaml").expect("fixtures parse (tested)");
    objects
        .iter()
        .find_map(|o| o.data.pointer("/spec/template/spec/containers/0/image").and_then(|v| v.as_str()))
        .expect("latency.yaml has a Deployment")
        .to_string()
}

/// A fresh random credential: 24 bytes from the operating system, as 48 hex digits (safe in
/// YAML, JSON and form bodies without quoting).
pub fn fresh_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Parses a multi-document YAML manifest into objects (empty and comment-only documents skipped).
pub fn parse_manifests(yaml: &str, origin: &str) -> Result<Vec<DynamicObject>, ManifestError> {
    serde_saphyr::from_str_multiple::<DynamicObject, Vec<DynamicObject>>(yaml)
        .map_err(|e| ManifestError { origin: origin.into(), message: e.to_string() })
}

/// The hub Istio's released charts embed: `registry.istio.io/release` for 1.30, Docker Hub before
/// and after (istio/release-builder release/build.sh, `DOCKER_HUB` at tags 1.29.2, 1.30.3 and master).
pub fn istio_hub(version: &str) -> &'static str {
    match Release::parse(version) {
        Some(r) if r.major == 1 && r.minor == 30 => "registry.istio.io/release",
        _ => "docker.io/istio",
    }
}
