//! Scenario parsing and validation errors.

use meshcheck::scenario::{DEFAULT_SCENARIO, Scenario, ScenarioError};

use crate::common::root;

const SHIPPED: &[&str] = &["ambient-kind", "ambient-k3d", "existing-cluster", "upgrade-gate"];

#[test]
fn every_shipped_scenario_is_valid() {
    for name in SHIPPED {
        let s = Scenario::from_path(&root().join(format!("scenarios/{name}.yaml")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!s.checks.is_empty(), "{name} runs no check");
    }
}

#[test]
fn embedded_default_is_the_ambient_kind_file() {
    let file = std::fs::read_to_string(root().join("scenarios/ambient-kind.yaml")).unwrap();
    assert_eq!(file, DEFAULT_SCENARIO);
    assert_eq!(Scenario::embedded_default().name, "ambient-kind");
}

fn with(replace: &str, by: &str) -> String {
    let base = DEFAULT_SCENARIO.to_string();
    assert!(base.contains(replace), "test setup: `{replace}` not in the default scenario");
    base.replacen(replace, by, 1)
}

/// The error the default scenario, edited as in [`with`], is rejected with.
fn rejection(replace: &str, by: &str) -> String {
    Scenario::from_yaml(&with(replace, by), "x.yaml").unwrap_err().to_string()
}

#[test]
fn unknown_key_names_line_column_and_allowed_keys() {
    let text = with("  workers: 2\n", "  workers: 2\n  wrokers: 3\n");
    let err = Scenario::from_yaml(&text, "x.yaml").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ScenarioError::Parse { line: 9, .. }), "{msg}");
    assert!(msg.starts_with("x.yaml:9:"), "{msg}");
    assert!(msg.contains("wrokers") && msg.contains("workers") && msg.contains("node_image"), "{msg}");
}

#[test]
fn bad_versions_are_rejected_with_the_field() {
    for (from, to, field) in [
        ("istio: 1.30.3", "istio: 1.30", "versions.istio"),
        ("istio: 1.30.3", "istio: v1.30.3", "versions.istio"),
        ("cilium: 1.19.6", "cilium: latest", "versions.cilium"),
        ("gateway_api: v1.5.1", "gateway_api: 1.5.1", "versions.gateway_api"),
        ("istio: 1.30.3", "istio: 1.22.0", "versions.istio"),
    ] {
        let err = rejection(from, to);
        assert!(err.contains(field), "{to}: {err}");
    }
}

#[test]
fn upgrade_must_go_forward_one_minor_at_a_time() {
    assert!(rejection("istio: 1.30.3", "istio: 1.30.3\n  upgrade_to: 1.29.0").contains("must be newer"));
    assert!(rejection("istio: 1.30.3", "istio: 1.28.0\n  upgrade_to: 1.30.3").contains("skips a minor"));
}

#[test]
fn node_image_must_be_pinned_and_supported() {
    let digest = "@sha256:452d707d4862f52530247495d180205e029056831160e22870e37e3f6c1ac31f";
    assert!(rejection(digest, "").contains("digest"));
    assert!(rejection("kindest/node:v1.35.0", "kindest/node:v1.29.0").contains("outside what Istio 1.30 supports"));
}

#[test]
fn unknown_checks_and_bad_durations_are_rejected() {
    let err = rejection("  - mtls\n", "  - mtlz\n");
    assert!(err.contains("unknown check `mtlz`") && err.contains("mtls"), "{err}");
    let err = rejection("provision: 15m", "provision: 15");
    assert!(err.contains("has no unit"), "{err}");
}

#[test]
fn missing_file_says_which_path_was_tried() {
    let err = Scenario::from_path(std::path::Path::new("no/such/scenario.yaml")).unwrap_err().to_string();
    assert!(err.contains("not found") && err.contains("no/such/scenario.yaml"), "{err}");
}

#[test]
fn cli_exits_2_on_bad_input_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: x\nprovider: kind\nbogus: 1\n").unwrap();
    for args in [vec!["plan", "--scenario", bad.to_str().unwrap()], vec!["plan", "--scenario", "/nonexistent.yaml"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshcheck")).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: ") && !stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn json_schema_lists_every_field_and_check() {
    let schema = meshcheck::scenario::json_schema();
    let text = schema.to_string();
    for needle in ["upgrade_to", "node_image", "negative_control", "traffic-continuity", "mtls"] {
        assert!(text.contains(needle), "schema lacks {needle}");
    }
}

#[test]
fn durations_are_bounded_and_milliseconds_get_the_right_advice() {
    for huge in ["18446744073709551615s", "5124095576030431h", "169h"] {
        let err = rejection("provision: 15m", &format!("provision: {huge}"));
        assert!(err.contains("longer than the maximum of 168h"), "{huge}: {err}");
    }
    let err = rejection("check: 5m", "check: 500ms");
    assert!(err.contains("milliseconds") && !err.contains("a number must come before"), "{err}");
    // The largest allowed duration plans without overflow.
    let s = Scenario::from_yaml(&with("provision: 15m", "provision: 168h"), "x.yaml").unwrap();
    let _ = meshcheck::plan::build(&s, &meshcheck::plan::RunContext::for_plan());
}

#[test]
fn run_ids_started_in_the_same_second_differ() {
    let ids: std::collections::BTreeSet<String> = (0..50).map(|_| meshcheck::session::new_run_id()).collect();
    assert_eq!(ids.len(), 50, "{ids:?}");
    let id = ids.iter().next().unwrap();
    assert!(id.len() == "20261126-000000-abcdef".len() && id.as_bytes()[15] == b'-', "{id}");
}

#[test]
fn settle_scale_scales_the_fixed_waits_and_must_be_positive() {
    let s =
        Scenario::from_yaml(&with("  preflight: 20s\n", "  preflight: 20s\n  settle_scale: 0.5\n"), "x.yaml").unwrap();
    assert_eq!(s.settle(std::time::Duration::from_secs(30)), std::time::Duration::from_secs(15));
    assert_eq!(Scenario::embedded_default().settle(std::time::Duration::from_secs(30)).as_secs(), 30);
    let err = rejection("  preflight: 20s\n", "  preflight: 20s\n  settle_scale: 0\n");
    assert!(err.contains("timeouts.settle_scale"), "{err}");
}

#[test]
fn mirrors_replace_the_longest_matching_prefix_and_must_be_urls() {
    let s = Scenario::from_yaml(
        &format!(
            "{DEFAULT_SCENARIO}mirrors:\n  https://quay.io/: http://m.example/q/\n  https://quay.io/v2/cilium/: http://m.example/c/\n"
        ),
        "x.yaml",
    )
    .unwrap();
    assert_eq!(s.mirrored("https://quay.io/v2/cilium/cilium/manifests/v1"), "http://m.example/c/cilium/manifests/v1");
    assert_eq!(s.mirrored("https://quay.io/v2/x/manifests/1"), "http://m.example/q/v2/x/manifests/1");
    assert_eq!(s.mirrored("https://registry.istio.io/v2/x"), "https://registry.istio.io/v2/x");
    let err = Scenario::from_yaml(&format!("{DEFAULT_SCENARIO}mirrors:\n  quay.io: http://m.example/\n"), "x.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("mirrors"), "{err}");
}
