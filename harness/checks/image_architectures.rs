//! Before anything is pulled: every image the run will start publishes a manifest for the node
//! architecture. Read from the registries' image indexes over HTTPS, no `docker pull`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{BoxFuture, CheckDef, Collector};
use crate::{
    cluster::live::LiveError,
    common::catalog,
    evidence::{Evidence, Verdict},
    formats::oci::{self, ImageRef, ManifestKind},
    plan::fixtures::istio_hub,
    scenario::{KialiAuth, Provider, Scenario},
};

/// Registration.
pub const CHECK: CheckDef =
    CheckDef { info: &catalog::IMAGE_ARCHITECTURES, collect: Collector::Scenario(collect), judge };

/// The images a run starts, and the pinned components whose image list is unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Images {
    /// Image references, as the charts and manifests render them.
    pub refs: Vec<String>,
    /// `component version` pairs that `fixtures/images.yaml` does not list.
    pub unlisted: Vec<String>,
}

/// Every image the run starts: the node image and [`cluster_images`].
pub fn images(s: &Scenario) -> Images {
    let mut out = Images::default();
    if s.provider != Provider::Existing
        && let Some(img) = &s.cluster.node_image
    {
        out.refs.push(img.clone());
    }
    let cluster = cluster_images(s);
    out.refs.extend(cluster.refs);
    out.unlisted = cluster.unlisted;
    out
}

/// The images that run inside the cluster (everything but the node image): what
/// `meshcheck images --in-cluster` lists for the image cache, and what the architecture check reads.
/// Chart-chosen images come from `fixtures/images.yaml`; Istio's follow from its version. A
/// `checks:` subset installs only the observability its checks read (the plan's rule,
/// [`catalog::any_reads`]), so only those charts' images are listed: the nightly image cache never
/// pulls what the run never starts.
pub fn cluster_images(s: &Scenario) -> Images {
    let mut out = Images::default();
    let v = &s.versions;
    let wanted = |c: catalog::Component| catalog::any_reads(&s.checks, c);
    let keycloak = crate::plan::fixtures::keycloak_version();
    let charts = [
        ("cilium", v.cilium.as_str(), true),
        ("kube_prometheus_stack", v.kube_prometheus_stack.as_str(), wanted(catalog::Component::Prometheus)),
        ("tempo", v.tempo.as_str(), wanted(catalog::Component::Tempo)),
        ("kiali", v.kiali.as_str(), wanted(catalog::Component::Kiali)),
        ("keycloak", &keycloak, wanted(catalog::Component::Kiali) && s.kiali.auth == KialiAuth::Openid),
    ];
    for (component, version) in charts.into_iter().filter(|(_, _, installed)| *installed).map(|(c, v, _)| (c, v)) {
        match crate::plan::fixtures::chart_images(component, version) {
            Some(refs) => out.refs.extend(refs),
            None => out.unlisted.push(format!("{component} {version}")),
        }
    }
    let mut istio_versions = vec![v.istio.clone()];
    istio_versions.extend(v.upgrade_to.clone());
    for version in &istio_versions {
        out.refs.extend(istio_images(version));
    }
    let bookinfo_hub = istio_hub(v.bookinfo());
    for app in ["details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1"] {
        out.refs.push(format!("{bookinfo_hub}/examples-bookinfo-{app}:1.20.3"));
    }
    out.refs.push("docker.io/curlimages/curl:8.17.0".to_string());
    if s.runs_check(catalog::LATENCY.name) {
        out.refs.push(crate::plan::fixtures::fortio_image());
    }
    out
}

/// The repositories of the images that run on every node, the control plane's included: the
/// DaemonSets and Cilium's operator, whose pods tolerate kubeadm's `node-role.kubernetes.io/
/// control-plane:NoSchedule` taint (cilium 1.19.6 values.yaml `tolerations: [{operator: Exists}]`
/// for the agent and envoy, `operator.tolerations` with the control-plane key; istio 1.30.3
/// cni and ztunnel values `tolerations: [{effect: NoSchedule, operator: Exists}, …]`;
/// prometheus-node-exporter 4.47.3 `tolerations: [{effect: NoSchedule, operator: Exists}]`).
/// Every other pod (istiod, the gateway, the observability stack, bookinfo, the clients) runs
/// only where no such taint is: kind keeps it on its control-plane nodes unless the cluster is a
/// single node (kind v0.31.0 pkg/cluster/internal/create/actions/kubeadminit/init.go).
/// suites/offline/charts.rs holds this list against the tolerations the charts render.
pub const EVERY_NODE_REPOSITORIES: &[&str] = &[
    "quay.io/cilium/cilium",
    "quay.io/cilium/cilium-envoy",
    "quay.io/cilium/operator-generic",
    "install-cni",
    "ztunnel",
    "quay.io/prometheus/node-exporter",
];

/// An image reference's repository: without its digest and tag (a registry's `:port` stays).
pub fn repository(image: &str) -> &str {
    let named = image.split('@').next().unwrap_or(image);
    match named.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => named,
    }
}

/// Whether an image's pods run on every node ([`EVERY_NODE_REPOSITORIES`]; Istio's by the last
/// path segment, whatever the hub).
pub fn runs_on_every_node(image: &str) -> bool {
    let repo = repository(image);
    EVERY_NODE_REPOSITORIES.iter().any(|r| repo == *r || (!r.contains('/') && repo.ends_with(&format!("/{r}"))))
}

/// The images of Istio's charts at `version` as meshcheck installs them (istio/istio 1.30.3):
/// istiod (`pilot`) and cni (`install-cni`) with `profile: ambient`, whose `global.variant:
/// distroless` makes them `-distroless`; the gateway's `proxyv2`, injected with istiod's variant;
/// ztunnel without a profile, as the install guide has it, so with no variant
/// (manifests/charts/ztunnel/templates/daemonset.yaml: `{{ .Values.image }}:{{ .Values.tag }}{{with .Values.variant}}-{{.}}{{end}}`).
pub fn istio_images(version: &str) -> Vec<String> {
    let hub = istio_hub(version);
    let mut out: Vec<String> =
        ["pilot", "install-cni", "proxyv2"].iter().map(|c| format!("{hub}/{c}:{version}-distroless")).collect();
    out.push(format!("{hub}/ztunnel:{version}"));
    out
}

const EXPECT: &str = "images/expect.json";

/// `images/expect.json`: the architecture to hold the images to and where each image's manifest
/// went. The collector writes it, the judge reads it; a missing or malformed one is an error verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expect {
    /// OCI spelling (`amd64`, `arm64`).
    pub architecture: String,
    /// Every image, in the order of [`images`].
    pub images: Vec<ImageEntry>,
    /// Chart versions without a pinned image list (absent in run folders from before the list).
    #[serde(default)]
    pub unlisted: Vec<String>,
}

/// One image and what became of its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageEntry {
    /// The image reference.
    pub image: String,
    /// Where its manifest is, or why there is none.
    #[serde(flatten)]
    pub manifest: ManifestFetch,
}

/// What fetching a manifest gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ManifestFetch {
    /// Saved to this evidence file.
    Saved {
        /// Relative path under the evidence folder.
        file: String,
    },
    /// The registry could not be read.
    Unreadable {
        /// Why.
        error: String,
    },
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, \
                      application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

fn collect<'a>(scenario: &'a Scenario, evidence: &'a Evidence) -> BoxFuture<'a, Result<(), LiveError>> {
    Box::pin(collect_for(scenario, evidence))
}

/// Fetches every image's manifest into `images/`. Also used by preflight, before any cluster exists.
pub async fn collect_for(scenario: &Scenario, evidence: &Evidence) -> Result<(), LiveError> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .map_err(|e| LiveError::Http { what: "HTTP client".into(), message: e.to_string() })?;
    let arch = scenario.cluster.architecture.resolve().map(|a| a.as_str()).unwrap_or("unknown");
    let list = images(scenario);
    let mut entries = Vec::new();
    for (i, image) in list.refs.iter().enumerate() {
        let file = format!("images/manifest-{i:02}.json");
        let manifest = match fetch_manifest(&http, scenario, image).await {
            Ok(body) => {
                let write = evidence.write(&file, &body);
                write.map_err(|source| LiveError::Write { path: file.clone(), source })?;
                ManifestFetch::Saved { file }
            }
            Err(error) => ManifestFetch::Unreadable { error },
        };
        entries.push(ImageEntry { image: image.clone(), manifest });
    }
    let expect = Expect { architecture: arch.to_string(), images: entries, unlisted: list.unlisted };
    evidence.write_json(EXPECT, &expect).map(|_| ()).map_err(|source| LiveError::Write { path: EXPECT.into(), source })
}

/// GETs a manifest, doing the anonymous bearer-token dance registries ask for.
async fn fetch_manifest(http: &reqwest::Client, scenario: &Scenario, image: &str) -> Result<Vec<u8>, String> {
    let r = ImageRef::parse(image).ok_or_else(|| format!("cannot parse image reference `{image}`"))?;
    let url = scenario.mirrored(&r.manifest_url());
    let first =
        http.get(&url).header("Accept", ACCEPT).send().await.map_err(|e| crate::cluster::live::with_causes(&e))?;
    let resp = if first.status() == reqwest::StatusCode::UNAUTHORIZED {
        let challenge = first
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .ok_or("401 without a WWW-Authenticate challenge")?
            .to_string();
        let token = anonymous_token(http, &challenge, &r.repository).await?;
        http.get(&url)
            .header("Accept", ACCEPT)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| crate::cluster::live::with_causes(&e))?
    } else {
        first
    };
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| crate::cluster::live::with_causes(&e))?;
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    Ok(body.to_vec())
}

async fn anonymous_token(http: &reqwest::Client, challenge: &str, repository: &str) -> Result<String, String> {
    let param = |key: &str| {
        challenge
            .split([',', ' '])
            .find_map(|p| p.strip_prefix(&format!("{key}=")).map(|v| v.trim_matches('"').to_string()))
    };
    let realm = param("realm").ok_or("challenge without realm")?;
    let service = param("service").unwrap_or_default();
    let scope = param("scope").unwrap_or_else(|| format!("repository:{repository}:pull"));
    let resp = http
        .get(format!("{realm}?service={service}&scope={scope}"))
        .send()
        .await
        .map_err(|e| crate::cluster::live::with_causes(&e))?;
    let v: Value = resp.json().await.map_err(|e| crate::cluster::live::with_causes(&e))?;
    v.get("token")
        .or_else(|| v.get("access_token"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or("no token in reply".into())
}

/// Judges `images/expect.json` and the manifest documents it names.
pub fn judge(ev: &Evidence) -> Verdict {
    let Expect { architecture: arch, images: entries, unlisted } = match ev.read_json(EXPECT) {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    if entries.is_empty() {
        return Verdict::error(format!("{EXPECT} lists no images")).with_evidence([EXPECT.to_string()]);
    }
    if arch.is_empty() {
        return Verdict::error(format!("{EXPECT} names no architecture")).with_evidence([EXPECT.to_string()]);
    }
    let mut files = vec![EXPECT.to_string()];
    let (mut missing, mut unknown) = (Vec::new(), Vec::new());
    for ImageEntry { image, manifest } in &entries {
        let file = match manifest {
            ManifestFetch::Saved { file } => file,
            ManifestFetch::Unreadable { error } => {
                unknown.push(format!("{image}: registry not readable ({error})"));
                continue;
            }
        };
        files.push(file.clone());
        let doc: Value = match ev.read_json(file) {
            Ok(v) => v,
            Err(err) => return err.into(),
        };
        match oci::parse_manifest(&doc) {
            Some(ManifestKind::Index(platforms)) if oci::supports(&platforms, &arch) => {}
            Some(ManifestKind::Index(platforms)) => {
                let offered: Vec<String> = platforms.iter().map(|p| format!("{}/{}", p.os, p.architecture)).collect();
                missing.push(format!("{image} publishes no linux/{arch} manifest (offers {})", offered.join(", ")));
            }
            Some(ManifestKind::Single) => {
                missing.push(format!("{image} is a single-platform image, not an index; cannot confirm linux/{arch}"));
            }
            None => unknown.push(format!("{image}: {file} is neither an image index nor a manifest")),
        }
    }
    if !missing.is_empty() {
        return Verdict::fail(format!("{} of {} images lack a linux/{arch} manifest", missing.len(), entries.len()))
            .with_details(missing.into_iter().chain(unknown))
            .with_evidence(files);
    }
    let unlisted: Vec<String> = unlisted
        .iter()
        .map(|c| format!("{c}: no pinned image list in fixtures/images.yaml, so its images were not checked"))
        .collect();
    if !unlisted.is_empty() {
        return Verdict::error(format!("{} chart version(s) without an image list", unlisted.len()))
            .with_details(unlisted.into_iter().chain(unknown))
            .with_evidence(files);
    }
    if !unknown.is_empty() {
        return Verdict::error(format!("{} of {} image indexes could not be read", unknown.len(), entries.len()))
            .with_details(unknown)
            .with_evidence(files);
    }
    Verdict::pass(format!("all {} images publish linux/{arch}", entries.len())).with_evidence(files)
}
