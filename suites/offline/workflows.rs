//! The GitHub workflows: the nightly matrix covers both architectures and both providers with
//! scenario files that exist, third-party actions are pinned by commit, permissions are minimal.
//! (`.ci/run` validates the same files against the GitHub workflow JSON Schema and lints them with
//! zizmor and actionlint.) And what ci.yml relies on to run the whole offline suite on a clone with
//! no `../shared`: the upstream data fetched and verified from suites/upstream-manifest.tsv, and a
//! test without that data failing under CI. And the licence Cargo.toml names is the LICENSE file.

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

use crate::common::{UPSTREAM_MANIFEST, root, upstream};

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
    // The scenario file of a cell: `ambient` is the provider's own, any other value names a file.
    assert_eq!(
        job["env"]["MESHCHECK_SCENARIO"],
        "scenarios/${{ matrix.scenario == 'ambient' && format('ambient-{0}', matrix.provider) || matrix.scenario }}.yaml"
    );
    assert_eq!(strings(&matrix["scenario"]), ["ambient"]);
    let mut cells: Vec<(&str, &str, String)> =
        providers.iter().flat_map(|p| runners.iter().map(move |r| (*p, *r, format!("ambient-{p}")))).collect();
    for extra in matrix["include"].as_array().into_iter().flatten() {
        let (p, r, s) = (
            extra["provider"].as_str().unwrap(),
            extra["runner"].as_str().unwrap(),
            extra["scenario"].as_str().unwrap(),
        );
        assert_ne!(s, "ambient", "an include with the listed scenario value would only add keys to an existing cell");
        cells.push((p, r, s.to_string()));
    }
    for (p, _, name) in &cells {
        let path = format!("scenarios/{name}.yaml");
        let scenario = meshcheck::scenario::Scenario::from_path(&root().join(&path))
            .unwrap_or_else(|e| panic!("{path} (matrix provider {p}): {e}"));
        assert_eq!(scenario.provider.as_str(), *p, "{path} provisions with its matrix provider");
    }
    // Issue 23: the waypoint scenario runs nightly on both architectures.
    let waypoint: Vec<&str> = cells.iter().filter(|c| c.2 == "ambient-waypoint").map(|c| c.1).collect();
    assert!(
        waypoint.iter().any(|r| r.ends_with("-arm")) && waypoint.iter().any(|r| !r.ends_with("-arm")),
        "{waypoint:?}"
    );
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
    for name in WORKFLOWS {
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

const WORKFLOWS: [&str; 3] = ["ci.yml", "nightly.yml", "release-gate.yml"];

/// zizmor's findings, checked here without it: checkout keeps no credentials for later steps
/// (artipacked), no `${{ }}` is expanded into a script, where a value would run as code (template
/// injection: values go through `env:`), every workflow has a concurrency group and every job a name.
#[test]
fn workflows_keep_no_credentials_expand_nothing_into_scripts_and_name_their_jobs() {
    for name in WORKFLOWS {
        let w = workflow(name);
        assert!(w["concurrency"]["group"].is_string(), "{name}: a concurrency group");
        for (job_name, job) in w["jobs"].as_object().unwrap() {
            assert!(job["name"].is_string(), "{name}/{job_name}: a job name");
            for step in job["steps"].as_array().into_iter().flatten() {
                if step["uses"].as_str().is_some_and(|u| u.starts_with("actions/checkout@")) {
                    assert_eq!(
                        step["with"]["persist-credentials"], false,
                        "{name}/{job_name}: checkout keeps its token"
                    );
                }
                if let Some(run) = step["run"].as_str() {
                    assert!(!run.contains("${{"), "{name}/{job_name}: `${{{{` expanded into a script:\n{run}");
                }
            }
        }
    }
}

/// The toolchain of `job` in ci.yml (`RUSTUP_TOOLCHAIN`).
fn toolchain(job: &str) -> String {
    workflow("ci.yml")["jobs"][job]["env"]["RUSTUP_TOOLCHAIN"]
        .as_str()
        .unwrap_or_else(|| panic!("ci.yml/{job}: no RUSTUP_TOOLCHAIN"))
        .to_string()
}

/// ci.yml builds with one pinned toolchain (the same in every workflow) and checks the build on the
/// MSRV, Cargo.toml's `rust-version`; it fetches and verifies the upstream data, then runs `.ci/run`,
/// which runs the offline suite under cargo-nextest.
#[test]
fn ci_pins_the_toolchain_checks_the_msrv_and_runs_the_offline_suite_under_nextest() {
    let pinned = toolchain("offline");
    assert!(
        pinned.split('.').count() == 3 && pinned.split('.').all(|n| n.parse::<u32>().is_ok()),
        "{pinned}: not X.Y.Z"
    );
    for name in ["nightly.yml", "release-gate.yml"] {
        for (job_name, job) in workflow(name)["jobs"].as_object().unwrap() {
            assert_eq!(job["env"]["RUSTUP_TOOLCHAIN"].as_str(), Some(pinned.as_str()), "{name}/{job_name}");
        }
    }
    let cargo_toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let msrv = cargo_toml.lines().find_map(|l| l.strip_prefix("rust-version = ")).expect("Cargo.toml rust-version");
    let msrv = msrv.trim_matches('"');
    assert!(
        toolchain("msrv") == msrv || toolchain("msrv") == format!("{msrv}.0"),
        "ci.yml msrv job builds on {} ≠ rust-version {msrv}",
        toolchain("msrv")
    );
    let runs: Vec<String> = workflow("ci.yml")["jobs"]["offline"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str().map(String::from))
        .collect();
    let fetch = runs.iter().position(|r| r.starts_with("suites/fetch-upstream ../shared/upstream"));
    let ci_run = runs.iter().position(|r| r.trim() == ".ci/run");
    assert!(fetch.is_some() && fetch < ci_run, "ci.yml fetches the upstream data, then runs .ci/run: {runs:?}");
    let script = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(script.contains("\ncargo test\n") && script.contains("\ncargo nextest run --test offline"), "{script}");
}

/// `sha256sum` of `bytes`, as the manifest writes it.
fn sha256(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// `suites/fetch-upstream` with `args`.
fn fetch_upstream(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(root().join("suites/fetch-upstream")).args(args).output().unwrap()
}

/// A manifest of `rows` (path, bytes it must have, url, extract), in the format of the real one.
fn manifest(dir: &Path, name: &str, rows: &[(&str, &[u8], String, &str)]) -> std::path::PathBuf {
    let mut text = "# test manifest\npath\tsha256\tlicence\tkind\turl\textract\n".to_string();
    for (path, bytes, url, extract) in rows {
        text.push_str(&format!("{path}\t{}\tApache-2.0\tbyte-exact\t{url}\t{extract}\n", sha256(bytes)));
    }
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

/// The download path of suites/fetch-upstream, through file:// URLs: a whole file, line ranges of
/// a document and a member of a chart package land in the folder; a file whose bytes differ from
/// the manifest's sha256, or that cannot be downloaded, is named and never written, and the folder
/// is not marked complete; a second run keeps what is already verified.
#[test]
fn fetch_upstream_writes_only_files_whose_sha256_matches() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("chart")).unwrap();
    std::fs::write(src.join("whole.json"), b"{\"a\":1}").unwrap();
    std::fs::write(src.join("doc.md"), b"one\ntwo\nthree\nfour\nfive\n").unwrap();
    std::fs::write(src.join("chart/values.yaml"), b"image: x\n").unwrap();
    let tar = Command::new("tar").arg("-czf").arg(src.join("chart.tgz")).arg("-C").arg(&src).arg("chart").status();
    assert!(tar.unwrap().success());
    let url = |f: &str| format!("file://{}", src.join(f).display());
    let rows = [
        ("observed/whole.json", &b"{\"a\":1}"[..], url("whole.json"), "file"),
        ("observed/lines.txt", &b"two\nfour\nfive\n"[..], url("doc.md"), "lines:2-2,4-5"),
        ("schemas/values.yaml", &b"image: x\n"[..], url("chart.tgz"), "tgz:chart/values.yaml"),
    ];
    let good = manifest(dir.path(), "good.tsv", &rows);
    let dest = dir.path().join("upstream");
    let out = fetch_upstream(&["--manifest".as_ref(), good.as_ref(), dest.as_ref()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 files verified"));
    for (path, bytes, _, _) in &rows {
        assert_eq!(std::fs::read(dest.join(path)).unwrap(), *bytes, "{path}");
    }
    assert_eq!(std::fs::read(dest.join("upstream-manifest.tsv")).unwrap(), std::fs::read(&good).unwrap());

    // Negative controls: other bytes than the manifest says, and a source that is not there.
    let bad = manifest(
        dir.path(),
        "bad.tsv",
        &[
            rows[0].clone(),
            ("observed/lines.txt", b"two\n", url("doc.md"), "lines:2-2,4-5"),
            ("observed/gone.json", b"{}", url("gone.json"), "file"),
        ],
    );
    let dest_bad = dir.path().join("bad");
    let out = fetch_upstream(&["--manifest".as_ref(), bad.as_ref(), dest_bad.as_ref()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("observed/lines.txt: sha256 ") && stderr.contains("observed/gone.json: "), "{stderr}");
    assert!(stderr.contains("2 of 3 files failed"), "{stderr}");
    assert!(dest_bad.join("observed/whole.json").is_file(), "a verified file is kept");
    assert!(!dest_bad.join("observed/lines.txt").exists(), "a file with other bytes is never written");
    assert!(!dest_bad.join("upstream-manifest.tsv").exists(), "an incomplete folder is not taken as the cache");

    // The cache: with the sources gone, what is verified stays and nothing is downloaded.
    std::fs::remove_dir_all(&src).unwrap();
    let out = fetch_upstream(&["--manifest".as_ref(), good.as_ref(), dest.as_ref()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(0 written, 3 already there)"));
}

/// Every row of the manifest is complete (a source URL at a pinned commit, a sha256, an SPDX
/// licence, how it was obtained, how it is cut), and the upstream folder the tests use holds
/// exactly those bytes (what `.ci/run` and ci.yml fetch is what the tests were written against).
#[test]
fn the_upstream_manifest_is_complete_and_matches_the_upstream_data() {
    let text = std::fs::read_to_string(root().join(UPSTREAM_MANIFEST)).unwrap();
    let mut paths = std::collections::BTreeSet::new();
    let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
    for line in text.lines().filter(|l| !l.starts_with('#')).skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [path, sha, licence, kind, url, extract] = cols[..] else { panic!("not 6 columns: {line}") };
        assert!(paths.insert(path), "{path} is listed twice");
        assert!(!path.starts_with('/') && !path.contains(".."), "{path}");
        assert!(hex(sha, 64), "{path}: sha256 {sha}");
        assert!(["Apache-2.0", "MIT", "AGPL-3.0-only", "CC-BY-4.0"].contains(&licence), "{path}: licence {licence}");
        assert!(["byte-exact", "transcribed"].contains(&kind), "{path}: kind {kind}");
        let commit = url.strip_prefix("https://raw.githubusercontent.com/").and_then(|u| u.split('/').nth(2));
        assert!(commit.is_some_and(|c| hex(c, 40)), "{path}: {url} is not a raw GitHub URL at a commit");
        let lines = extract.strip_prefix("lines:").is_some_and(|r| {
            r.split(',').all(|range| {
                range.split_once('-').is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok())
            })
        });
        assert!(extract == "file" || lines || extract.starts_with("tgz:"), "{path}: extract {extract}");
    }
    assert!(paths.len() >= 70, "{} files: the manifest lost rows", paths.len());
    let Some(up) = upstream() else { return };
    let dest = tempfile::tempdir().unwrap();
    let out = fetch_upstream(&["--from".as_ref(), up.as_ref(), dest.path().as_ref()]);
    assert!(
        out.status.success(),
        "{} does not hold what {UPSTREAM_MANIFEST} lists:\n{}",
        up.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test that reads upstream data, run with none to be had: under CI it fails, naming the fix;
/// elsewhere it passes as a skip that says so on stderr (never silently) and counts.
#[test]
fn a_test_without_upstream_data_fails_under_ci_and_skips_loudly_elsewhere() {
    const SUBJECT: &str = "judges::traces_on_real_tempo_shapes";
    let run = |ci: bool| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", SUBJECT]).env("MESHCHECK_UPSTREAM", "/nonexistent/meshcheck-upstream");
        if ci {
            cmd.env("CI", "true");
        } else {
            cmd.env_remove("CI");
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (passed, stdout, _) = run(true);
    assert!(!passed && stdout.contains("1 failed"), "{stdout}");
    assert!(stdout.contains("needs the upstream data, and CI is set: MESHCHECK_UPSTREAM=/nonexistent/meshcheck-upstream is not a folder; run suites/fetch-upstream"), "{stdout}");
    let (passed, stdout, stderr) = run(false);
    assert!(passed && stdout.contains("1 passed"), "{stdout}");
    assert!(stderr.contains(&format!("SKIP {SUBJECT}: no upstream data: MESHCHECK_UPSTREAM=")), "{stderr}");
    assert!(stderr.contains("upstream data: 1 tests skipped so far"), "{stderr}");
}

/// Cargo.toml's `license` is the text in LICENSE: the Apache License 2.0 as apache.org publishes it.
#[test]
fn the_licence_cargo_toml_names_is_in_license() {
    let cargo_toml = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(cargo_toml.lines().any(|l| l == "license = \"Apache-2.0\""), "Cargo.toml names another licence");
    let text = std::fs::read_to_string(root().join("LICENSE")).expect("a LICENSE file");
    assert!(
        text.contains("Apache License\n                           Version 2.0, January 2004"),
        "LICENSE is not Apache-2.0"
    );
    assert!(text.contains("END OF TERMS AND CONDITIONS") && text.contains("APPENDIX: How to apply the Apache License"));
}

/// The run text of a nightly step, by name.
fn nightly_step(name: &str) -> String {
    let w = workflow("nightly.yml");
    let steps = w["jobs"]["conformance"]["steps"].as_array().unwrap().clone();
    let step = steps.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("nightly step {name}"));
    step["run"].as_str().unwrap().to_string()
}

/// Runs a nightly step's script with bash from the repository root, with a stand-in `docker` that
/// logs its arguments (one call a line) and writes what `save -o` names; the real meshcheck binary
/// stands for `target/debug/meshcheck`.
fn run_nightly_step(name: &str, work: &Path, scenario: &str) -> Output {
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let docker = bin.join("docker");
    std::fs::write(
        &docker,
        format!(
            "#!/usr/bin/env bash\necho \"$*\" >> {log}\ncase \"$1\" in\n  save) out=\"\"; while [ $# -gt 0 ]; do [ \"$1\" = -o ] && out=$2; shift; done; : > \"$out\";;\n  image) exit 1;;\nesac\n",
            log = work.join("docker.log").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = nightly_step(name)
        .replace("cargo build --quiet --bin meshcheck\n", "")
        .replace("target/debug/meshcheck", env!("CARGO_BIN_EXE_meshcheck"));
    std::fs::create_dir_all(work.join("home")).unwrap();
    std::fs::create_dir_all(work.join("tmp")).unwrap();
    Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(root())
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()))
        .env("HOME", work.join("home"))
        .env("RUNNER_TEMP", work.join("tmp"))
        .env("RUNNER_ARCH", "X64")
        .env("GITHUB_OUTPUT", work.join("github-output"))
        .env("MESHCHECK_SCENARIO", scenario)
        .output()
        .unwrap()
}

/// Issue 22, item 3: the nightly's image cache, run as the workflow runs it with a stand-in
/// docker. Every image is pulled for one platform; each digest-pinned one is tagged by its tag
/// (a save of a digest reference keeps no name, and the node would pull it anyway) and saved by
/// that name; what every node runs goes into one archive, what only workloads run into another;
/// and the scenario the suite then runs loads both, the workload archive into the workers alone.
#[test]
fn the_nightly_image_cache_saves_names_and_splits_every_node_from_workload_images() {
    let work = tempfile::tempdir().unwrap();
    let scenario = "scenarios/ambient-kind.yaml";
    for step in [
        "List the pinned images",
        "Pull and save the in-cluster images (cache miss)",
        "Pull and save the node image (cache miss)",
        "Use the cached images",
    ] {
        let out = run_nightly_step(step, work.path(), scenario);
        assert!(
            out.status.success(),
            "{step}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if step == "Use the cached images" {
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(
                said.contains("node image kindest/node:"),
                "the load says whether the node image was found: {said}"
            );
        }
    }
    let log = std::fs::read_to_string(work.path().join("docker.log")).unwrap();
    let calls: Vec<&str> = log.lines().collect();
    let all = std::fs::read_to_string(work.path().join("tmp/all-images.txt")).unwrap();
    let digest_pinned: Vec<&str> = all.lines().filter(|i| i.contains('@')).collect();
    assert!(digest_pinned.len() >= 4, "the node image and Cilium's three are digest-pinned: {digest_pinned:?}");
    for image in all.lines() {
        assert!(
            calls.iter().any(|c| c.starts_with("pull ") && c.contains("--platform linux/") && c.ends_with(image)),
            "{image} pulled: {calls:#?}"
        );
    }
    for image in &digest_pinned {
        let (named, digest) = image.split_once('@').unwrap();
        let repo = named.rsplit_once(':').unwrap().0;
        assert!(
            calls.contains(&format!("tag {repo}@{digest} {named}").as_str()),
            "{image} tagged by its tag: {calls:#?}"
        );
    }
    let saves: Vec<&str> = calls.iter().copied().filter(|c| c.starts_with("save ")).collect();
    assert!(
        saves.iter().all(|s| s.contains("--platform linux/") && !s.contains('@')),
        "saved by name, one platform: {saves:#?}"
    );
    let every = std::fs::read_to_string(work.path().join("tmp/every-node-images.txt")).unwrap();
    let workloads = std::fs::read_to_string(work.path().join("tmp/workload-images.txt")).unwrap();
    assert!(
        every.contains("quay.io/cilium/cilium:") && every.contains("/ztunnel:") && !every.contains("pilot"),
        "{every}"
    );
    assert!(
        workloads.contains("/pilot:") && workloads.contains("curlimages") && !workloads.contains("cilium"),
        "{workloads}"
    );
    let save_of = |archive: &str| {
        let out = format!("/{archive} ");
        saves.iter().find(|s| s.contains(&out)).unwrap_or_else(|| panic!("{archive}: {saves:#?}")).to_string()
    };
    for image in every.lines() {
        assert!(save_of("every-node.tar").contains(image.split('@').next().unwrap()), "{image} in every-node.tar");
    }
    for image in workloads.lines() {
        assert!(save_of("workloads.tar").contains(image.split('@').next().unwrap()), "{image} in workloads.tar");
    }
    assert!(save_of("node.tar").contains("kindest/node:") && !save_of("node.tar").contains("cilium"));
    // kind and k3d cells of one architecture share the in-cluster entry; the node image's is their own.
    let k3d = tempfile::tempdir().unwrap();
    assert!(run_nightly_step("List the pinned images", k3d.path(), "scenarios/ambient-k3d.yaml").status.success());
    let key = |dir: &Path, name: &str| {
        let out = std::fs::read_to_string(dir.join("github-output")).unwrap();
        out.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).unwrap().to_string()
    };
    assert_eq!(key(work.path(), "cluster-key"), key(k3d.path(), "cluster-key"));
    assert_ne!(key(work.path(), "node-key"), key(k3d.path(), "node-key"));
    let edited = work.path().join("tmp/scenario.yaml");
    let s = meshcheck::scenario::Scenario::from_path(&edited).unwrap_or_else(|e| panic!("the edited scenario: {e}"));
    let home = work.path().join("home/image-cache/cluster");
    assert_eq!(s.cluster.image_archive.as_deref(), Some(home.join("every-node.tar").to_str().unwrap()));
    assert_eq!(s.cluster.workload_image_archive.as_deref(), Some(home.join("workloads.tar").to_str().unwrap()));
}
