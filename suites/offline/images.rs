//! The one image list (`fixtures/images.yaml` plus Istio's and bookinfo's images) against the charts
//! and samples at the pinned versions: each reference as the chart renders it, digests included.

use serde_json::Value;

use meshcheck::{checks::image_architectures as images, scenario::Scenario};

use crate::common::{root, upstream};

fn yaml(rel: &str) -> Option<Value> {
    let up = upstream()?;
    let text = std::fs::read_to_string(up.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    Some(serde_saphyr::from_str_multiple::<Value, Vec<Value>>(&text).unwrap().remove(0))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// The cilium chart's image helpers (install/kubernetes/cilium/templates/_helpers.tpl `cilium.image`,
/// cilium-operator/_helpers.tpl): `repository:tag@digest` when `useDigest`; the operator's
/// repository gets `-generic` (no cloud IPAM) plus `suffix`, and its digest is `genericDigest`.
#[test]
fn cilium_images_are_what_the_chart_renders_digests_included() {
    let Some(values) = yaml("schemas/cilium-1.19.6-chart-values.yaml") else { return };
    let with_digest = |img: &Value, digest_key: &str| {
        let digest = if img["useDigest"] == true { format!("@{}", s(&img[digest_key])) } else { String::new() };
        (s(&img["repository"]).to_string(), s(&img["tag"]).to_string(), digest)
    };
    let (repo, tag, digest) = with_digest(&values["image"], "digest");
    let agent = format!("{repo}:{tag}{digest}");
    let op = &values["operator"]["image"];
    let (repo, tag, digest) = with_digest(op, "genericDigest");
    let operator = format!("{repo}-generic{}:{tag}{digest}", op["suffix"].as_str().unwrap_or(""));
    let (repo, tag, digest) = with_digest(&values["envoy"]["image"], "digest");
    let envoy = format!("{repo}:{tag}{digest}");
    assert!(values["l7Proxy"] == true, "the standalone cilium-envoy DaemonSet is on by default with l7Proxy");
    assert_eq!(meshcheck::plan::fixtures::chart_images("cilium", "1.19.6").unwrap(), [agent, operator, envoy]);
}

#[test]
fn observability_images_follow_the_chart_values() {
    let Some(kps) = yaml("schemas/kube-prometheus-stack-77.0.0-chart-values.yaml") else { return };
    let listed = meshcheck::plan::fixtures::chart_images("kube_prometheus_stack", "77.0.0").unwrap();
    let reference = |img: &Value| format!("{}/{}:{}", s(&img["registry"]), s(&img["repository"]), s(&img["tag"]));
    for img in [
        &kps["prometheus"]["prometheusSpec"]["image"],
        &kps["prometheusOperator"]["admissionWebhooks"]["patch"]["image"],
    ] {
        assert!(listed.contains(&reference(img)), "{} not in {listed:?}", reference(img));
    }
    // The operator and its config reloader default to the chart's appVersion (v0.85.0 for 77.0.0).
    for img in [&kps["prometheusOperator"]["image"], &kps["prometheusOperator"]["prometheusConfigReloader"]["image"]] {
        assert_eq!(img["tag"], "", "tag defaults to appVersion");
        let repo = format!("{}/{}:", s(&img["registry"]), s(&img["repository"]));
        assert!(listed.iter().any(|l| l.starts_with(&repo)), "{repo} not in {listed:?}");
    }
    assert_eq!(kps["alertmanager"]["enabled"], true, "on in the chart; off in our values, so not listed");
    assert!(!listed.iter().any(|l| l.contains("alertmanager")));
    let Some(tempo) = yaml("schemas/tempo-1.26.1-chart-values.yaml") else { return };
    assert_eq!((s(&tempo["tempo"]["repository"]), &tempo["tempo"]["tag"]), ("grafana/tempo", &Value::from("")));
    let listed = meshcheck::plan::fixtures::chart_images("tempo", "1.26.1").unwrap();
    assert!(listed.len() == 1 && listed[0].starts_with("docker.io/grafana/tempo:"), "{listed:?}");
}

/// ztunnel installed without a profile has no variant (the ambient profile's `global.variant:
/// distroless` reaches only the charts given `profile: ambient`: istiod and cni).
#[test]
fn istio_images_match_the_variants_the_charts_render() {
    let imgs = images::istio_images("1.30.3");
    assert!(imgs.contains(&"registry.istio.io/release/ztunnel:1.30.3".to_string()), "{imgs:?}");
    assert!(imgs.contains(&"registry.istio.io/release/pilot:1.30.3-distroless".to_string()), "{imgs:?}");
    assert_eq!(meshcheck::plan::fixtures::istio_hub("1.29.2"), "docker.io/istio");
    assert_eq!(meshcheck::plan::fixtures::istio_hub("1.31.0"), "docker.io/istio", "1.31 is back on Docker Hub");
    let Some(zt) = yaml("schemas/istio-1.30.3-chart-ztunnel-values.yaml") else { return };
    let zt = &zt["_internal_defaults_do_not_set"];
    assert_eq!((s(&zt["image"]), s(&zt["variant"])), ("ztunnel", ""));
    let ours: Value = serde_saphyr::from_str(&meshcheck::plan::fixtures::text("values/ztunnel.yaml")).unwrap();
    assert!(ours.get("profile").is_none(), "ztunnel is installed without a profile, as the docs do");
    let Some(profile) = yaml("schemas/istio-1.30.3-chart-files-profile-ambient.yaml") else { return };
    assert_eq!(profile["global"]["variant"], "distroless");
    for chart in ["istiod", "istio-cni"] {
        let text = std::fs::read_to_string(root().join(format!("fixtures/values/{chart}.yaml"))).unwrap();
        assert!(text.contains("profile: ambient"), "{chart} gets the ambient profile, hence -distroless");
    }
}

/// Bookinfo's images are read from the real sample at both pinned releases.
#[test]
fn bookinfo_images_are_the_samples_images() {
    for (release, file) in
        [("1.30.3", "bookinfo/istio-1.30.3-bookinfo.yaml"), ("1.29.2", "bookinfo/istio-1.29.2-bookinfo.yaml")]
    {
        let Some(up) = upstream() else { return };
        let text = std::fs::read_to_string(up.join(file)).unwrap();
        let mut sample: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
            .map(|i| i.trim_matches('"').to_string())
            .collect();
        sample.sort();
        sample.dedup();
        let mut scenario = Scenario::embedded_default();
        scenario.versions.istio = release.into();
        let ours: Vec<String> =
            images::cluster_images(&scenario).refs.into_iter().filter(|i| i.contains("examples-bookinfo")).collect();
        let mut ours = ours;
        ours.sort();
        assert_eq!(ours, sample, "bookinfo {release}");
    }
}

/// `meshcheck images` prints the one list, and says (with a non-zero exit) what it cannot list.
#[test]
fn meshcheck_images_lists_every_pinned_image_and_refuses_an_unknown_version() {
    let run = |scenario: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_meshcheck"))
            .args(["images", "--in-cluster", "--scenario"])
            .arg(scenario)
            .output()
            .unwrap()
    };
    let out = run(&root().join("scenarios/ambient-kind.yaml"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "cilium-envoy:",
        "@sha256:",
        "prometheus:v3.5.0",
        "grafana/tempo:2.10.0",
        "kiali/kiali:v2.29.0",
        "ztunnel:1.30.3\n",
    ] {
        assert!(listed.contains(needle), "{needle} missing from:\n{listed}");
    }
    assert!(!listed.contains("ztunnel:1.30.3-distroless"), "{listed}");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("scenarios/ambient-kind.yaml")).unwrap();
    let path = dir.path().join("s.yaml");
    std::fs::write(&path, text.replace("cilium: 1.19.6", "cilium: 1.19.7")).unwrap();
    let out = run(&path);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no pinned image list for cilium 1.19.7"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 27, item 7: a `checks:` subset lists only the images of what it installs (the plan's
/// rule): mtls alone starts no Prometheus, Tempo or Kiali, so the nightly cache does not pull them.
/// The whole suite is the baseline that lists them.
#[test]
fn a_checks_subset_lists_only_the_images_of_what_it_installs() {
    let text = std::fs::read_to_string(root().join("scenarios/ambient-kind.yaml")).unwrap();
    let all = meshcheck::scenario::Scenario::from_yaml(&text, "ambient-kind").unwrap();
    let mut mtls_only = all.clone();
    mtls_only.checks = vec!["mtls".into()];
    let mut traces_only = all.clone();
    traces_only.checks = vec!["traces".into()];
    let listed = |s: &meshcheck::scenario::Scenario| images::cluster_images(s).refs.join("\n");
    let observability = ["prometheus:v3.5.0", "grafana/tempo:2.10.0", "kiali/kiali:v2.29.0"];
    assert!(observability.iter().all(|i| listed(&all).contains(i)), "{}", listed(&all));
    assert!(observability.iter().all(|i| !listed(&mtls_only).contains(i)), "{}", listed(&mtls_only));
    assert!(listed(&mtls_only).contains("ztunnel:1.30.3") && listed(&mtls_only).contains("cilium:v1.19.6"));
    let traces = listed(&traces_only);
    assert!(traces.contains("grafana/tempo:2.10.0") && !traces.contains("kiali/kiali"), "{traces}");
}

/// Keycloak's image is listed (from images.yaml, at the tag the manifest pins) exactly when the run
/// starts Keycloak: `kiali.auth: openid` with the kiali check; the anonymous scenario is the baseline.
#[test]
fn keycloak_is_listed_only_when_kiali_logs_in_through_it() {
    let load = |name: &str| {
        let text = std::fs::read_to_string(root().join(format!("scenarios/{name}.yaml"))).unwrap();
        meshcheck::scenario::Scenario::from_yaml(&text, name).unwrap()
    };
    let listed = |s: &meshcheck::scenario::Scenario| images::cluster_images(s).refs.join("\n");
    let oidc = load("ambient-kiali-oidc");
    assert_eq!(meshcheck::plan::fixtures::keycloak_version(), "26.6.4");
    assert!(listed(&oidc).contains("quay.io/keycloak/keycloak:26.6.4"), "{}", listed(&oidc));
    assert!(images::cluster_images(&oidc).unlisted.is_empty());
    assert!(!listed(&load("ambient-kind")).contains("keycloak"));
    let mut without_kiali = oidc.clone();
    without_kiali.checks = vec!["mtls".into()];
    assert!(!listed(&without_kiali).contains("keycloak"));
}
