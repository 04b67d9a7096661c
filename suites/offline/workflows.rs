//! The GitHub workflows: the nightly matrix covers both architectures and both providers with
//! scenario files that exist, third-party actions are pinned by commit, permissions are minimal.
//! (`.ci/run` validates the same files against the GitHub workflow JSON Schema.)

use serde_json::Value;

use crate::common::root;

fn workflow(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join(".github/workflows").join(name)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

#[test]
fn nightly_matrix_covers_both_architectures_and_providers_with_existing_scenarios() {
    let w = workflow("nightly.yml");
    let job = &w["jobs"]["conformance"];
    let matrix = &job["strategy"]["matrix"];
    let mut providers = strings(&matrix["provider"]);
    providers.sort_unstable();
    assert_eq!(providers, ["k3d", "kind"]);
    let runners = strings(&matrix["runner"]);
    assert!(runners.iter().any(|r| r.ends_with("-arm")), "an arm64 runner: {runners:?}");
    assert!(runners.iter().any(|r| !r.ends_with("-arm")), "an x86_64 runner: {runners:?}");
    assert_eq!(job["runs-on"], "${{ matrix.runner }}");
    assert_eq!(job["strategy"]["fail-fast"], false, "one failing cell must not cancel the others");
    let template = job["env"]["MESHCHECK_SCENARIO"].as_str().expect("the scenario comes from the matrix");
    for p in &providers {
        let path = template.replace("${{ matrix.provider }}", p);
        let scenario = meshcheck::scenario::Scenario::from_path(&root().join(&path))
            .unwrap_or_else(|e| panic!("{path} (matrix provider {p}): {e}"));
        assert_eq!(scenario.provider.as_str(), *p, "{path} provisions with its matrix provider");
    }
    let steps = job["steps"].as_array().unwrap();
    let runs_suite =
        steps.iter().any(|s| s["run"].as_str().is_some_and(|r| r.contains("cargo test --test conformance")));
    assert!(runs_suite);
    for needed in ["Publish summary", "Upload run folder"] {
        let step = steps.iter().find(|s| s["name"] == needed).unwrap_or_else(|| panic!("step {needed}"));
        assert_eq!(step["if"], "always()", "{needed} must run when the suite fails");
    }
}

#[test]
fn release_gate_runs_the_upgrade_scenario_and_compares() {
    let w = workflow("release-gate.yml");
    let inputs = &w["on"]["workflow_dispatch"]["inputs"];
    assert!(inputs["current"]["required"] == true && inputs["candidate"]["required"] == true);
    let text = std::fs::read_to_string(root().join(".github/workflows/release-gate.yml")).unwrap();
    assert!(text.contains("scenarios/upgrade-gate.yaml") && text.contains("meshcheck -- compare"));
    assert!(root().join("scenarios/upgrade-gate.yaml").is_file());
}

#[test]
fn actions_are_pinned_by_commit_and_permissions_are_read_only() {
    for name in ["ci.yml", "nightly.yml", "release-gate.yml"] {
        let w = workflow(name);
        assert_eq!(w["permissions"], serde_json::json!({"contents": "read"}), "{name}: minimal permissions");
        for (job_name, job) in w["jobs"].as_object().unwrap() {
            for step in job["steps"].as_array().into_iter().flatten() {
                let Some(uses) = step["uses"].as_str() else { continue };
                let (_, rev) = uses.split_once('@').unwrap_or_else(|| panic!("{name}/{job_name}: {uses} unpinned"));
                assert!(
                    rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()),
                    "{name}/{job_name}: {uses} is not pinned by commit SHA"
                );
            }
        }
    }
}
