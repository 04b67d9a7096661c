//! What a run reaches over the network: the scenario's URLs, the image archive, the chart
//! repositories and the registries, each probed once.

use std::{collections::BTreeMap, path::Path, time::Duration};

use crate::{
    checks::image_architectures,
    common::catalog,
    formats::oci::ImageRef,
    plan::{Plan, Source, Step},
    scenario::{Provider, Scenario},
};

/// `cluster.image_archive` and `cluster.workload_image_archive` are loaded into the nodes right
/// after a kind or k3d cluster is created (plan::provision, from the working directory); an
/// existing cluster never loads them.
pub(super) fn image_archive_problems(s: &Scenario) -> Vec<String> {
    if s.provider == Provider::Existing {
        return Vec::new();
    }
    let archives = [
        ("cluster.image_archive", s.cluster.image_archive.as_deref(), ""),
        ("cluster.workload_image_archive", s.cluster.workload_image_archive.as_deref(), " --workloads"),
    ];
    archives
        .into_iter()
        .filter_map(|(key, archive, flag)| {
            let archive = archive?;
            let shown = std::path::absolute(archive).unwrap_or_else(|_| Path::new(archive).to_path_buf());
            let why = match std::fs::metadata(archive) {
                Ok(m) if m.is_file() => return None,
                Ok(_) => "is not a file".to_string(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_string(),
                Err(e) => format!("cannot be read: {e}"),
            };
            Some(format!(
                "{key}: {} {why}. Fix: write it with `docker save -o {archive} $(meshcheck images --in-cluster{flag} | sed 's/@.*//')` \
                 after pulling each image and tagging a digest-pinned one by its tag (`docker tag <repo>@<digest> <repo>:<tag>`), or remove the key",
                shown.display()
            ))
        })
        .collect()
}

/// One HTTP endpoint the run reaches, and what counts as an answer.
pub(super) struct Endpoint {
    /// What it is, for the problem line.
    pub(super) what: String,
    /// The URL probed (after `mirrors`).
    pub(super) url: String,
    /// How the run uses it, for the fix.
    pub(super) fix: String,
    /// Which statuses are an answer.
    pub(super) accept: fn(reqwest::StatusCode) -> bool,
}

/// The chart repositories of the plan's helm commands (`--repo`) and the registries of the images
/// the nodes pull, each probed once over HTTP(S) after the scenario's `mirrors`.
pub(super) async fn reachability_problems(s: &Scenario, plan: &Plan, t: Duration) -> Vec<String> {
    let mut endpoints = Vec::new();
    // In plan order, each repository once (Istio's serves five charts, and the upgrade again).
    let mut repos: Vec<(&str, &str)> = Vec::new();
    for step in plan.phases.iter().flat_map(|p| &p.steps).map(|s| &s.step) {
        let Step::Command { command, .. } = step else { continue };
        if command.program != "helm" {
            continue;
        }
        // `upgrade [--install] RELEASE CHART …`
        let chart = command.args.iter().skip(1).filter(|a| *a != "--install").nth(1);
        let (Some(url), Some(chart)) = (command.flag("--repo"), chart) else { continue };
        if !repos.iter().any(|(_, u)| *u == url) {
            repos.push((chart.as_str(), url));
        }
    }
    for (chart, url) in repos {
        // `helm upgrade --repo` downloads `<url>/index.yaml` (helm v3.22.0 pkg/repo/chartrepo.go
        // `DownloadIndexFile` with `ResolveReferenceURL`, which adds the missing `/`) and fails
        // with "is not a valid chart repository or cannot be reached" unless it gets one. The URL
        // is already mirrored in the plan.
        endpoints.push(Endpoint {
            what: format!("chart repository of `{chart}` ({url})"),
            url: format!("{}/index.yaml", url.trim_end_matches('/')),
            fix: "allow HTTPS from this machine to it, or map it with the scenario's `mirrors`: helm reads its index.yaml".into(),
            accept: |status| status.is_success(),
        });
    }
    // The manifests the run downloads itself (the Gateway API CRDs, bookinfo), each once.
    let mut manifests: Vec<&str> = Vec::new();
    for step in plan.phases.iter().flat_map(|p| &p.steps).map(|s| &s.step) {
        let (Step::Apply { source: Source::Url { url }, .. } | Step::GatewayPorts { gateway: Source::Url { url }, .. }) =
            step
        else {
            continue;
        };
        if !manifests.contains(&url.as_str()) {
            manifests.push(url);
        }
    }
    for url in manifests {
        endpoints.push(Endpoint {
            what: "manifest".into(),
            url: url.to_string(),
            fix:
                "allow HTTPS from this machine to its host, or map it with the scenario's `mirrors`: the run applies it"
                    .into(),
            accept: |status| status.is_success(),
        });
    }
    // The nodes of a kind/k3d cluster pull through this machine's container engine, and
    // image-architectures reads the indexes from here; an existing cluster's nodes pull from
    // wherever they are, which this machine cannot speak for.
    if s.provider != Provider::Existing || s.runs_check(catalog::IMAGE_ARCHITECTURES.name) {
        let mut registries: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut images = image_architectures::images(s).refs;
        if s.provider == Provider::K3d {
            // k3d's own load balancer and tools images, which `k3d cluster create` and `k3d image
            // import` start (k3d-io/k3d v5.9.0 pkg/types/images.go `DefaultLBImageRepo`,
            // `DefaultToolsImageRepo`); meshcheck pins none of them, so no list names them.
            images.extend(["ghcr.io/k3d-io/k3d-proxy".to_string(), "ghcr.io/k3d-io/k3d-tools".to_string()]);
        }
        for image in images {
            if let Some(r) = ImageRef::parse(&image) {
                registries.entry(r.registry).or_default().push(image);
            }
        }
        for (registry, images) in registries {
            // The API version check of the OCI distribution spec (v1.1.1 spec.md, end-1
            // `GET /v2/`): 200, or 401 from a registry that wants a token first (Docker Hub).
            endpoints.push(Endpoint {
                what: format!("registry {registry}"),
                url: s.mirrored(&format!("https://{registry}/v2/")),
                fix: format!(
                    "allow HTTPS from this machine to it, or map it with the scenario's `mirrors`: {} of the run's images come from it (e.g. {})",
                    images.len(),
                    images[0]
                ),
                accept: |status| status.is_success() || status == reqwest::StatusCode::UNAUTHORIZED,
            });
        }
    }
    if endpoints.is_empty() {
        return Vec::new();
    }
    let http = match reqwest::Client::builder().timeout(t).build() {
        Ok(c) => c,
        Err(e) => return vec![format!("preflight: cannot build an HTTP client: {e}")],
    };
    let probes = endpoints.iter().map(|e| probe(&http, e, t));
    futures::future::join_all(probes).await.into_iter().flatten().collect()
}

/// One problem line if `endpoint` does not answer as it should. Every URL here parses: the
/// scenario loader refuses a `mirrors` entry that does not ([`crate::scenario::http_url`]).
pub(super) async fn probe(http: &reqwest::Client, endpoint: &Endpoint, t: Duration) -> Option<String> {
    let url = crate::scenario::http_url(&endpoint.url).ok()?;
    let answer = http.get(url).send().await;
    tracing::debug!("preflight: GET {} → {:?}", endpoint.url, answer.as_ref().map(reqwest::Response::status));
    let why = match answer {
        Ok(r) if (endpoint.accept)(r.status()) => return None,
        Ok(r) => format!("HTTP {}", r.status()),
        Err(e) if e.is_timeout() => format!("no answer within {}s", t.as_secs()),
        Err(e) => innermost(&e),
    };
    Some(format!("{} does not answer: GET {}: {why}. Fix: {}", endpoint.what, endpoint.url, endpoint.fix))
}

/// The root cause of an error chain (`Connection refused`, `failed to lookup address`), which
/// the outer layers only wrap.
pub(super) fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
