//! Fault injection on the command boundary: stand-in `docker`, `k3d`, `kind`, `helm` on PATH.

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command, time::Duration};

use meshcheck::{
    cluster::runner::{CommandError, Runner},
    plan::CommandSpec,
};

/// Writes a stand-in tool that logs its argv and then runs `body`.
fn stub(dir: &Path, tool: &str, body: &str) {
    let p = dir.join(tool);
    std::fs::write(&p, format!("#!/bin/sh\necho \"{tool} $*\" >> \"{}/calls.log\"\n{body}\n", dir.display())).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Stand-in tools on PATH and a folder for reports, for driving the real `meshcheck` binary.
struct Bench {
    bin: tempfile::TempDir,
    work: tempfile::TempDir,
}

impl Bench {
    fn new() -> Bench {
        Bench { bin: tempfile::tempdir().unwrap(), work: tempfile::tempdir().unwrap() }
    }

    fn stub(&self, tool: &str, body: &str) {
        stub(self.bin.path(), tool, body);
    }

    /// Writes the k3d scenario, edited, and returns its path. Its chart repositories and
    /// registries answer from a local server, so that preflight passes offline.
    fn k3d_scenario(&self, edit: impl FnOnce(String) -> String) -> std::path::PathBuf {
        let text = std::fs::read_to_string(crate::common::root().join("scenarios/ambient-k3d.yaml")).unwrap();
        let path = self.work.path().join("s.yaml");
        std::fs::write(&path, crate::common::with_answering_upstream(&edit(text))).unwrap();
        path
    }

    /// `meshcheck <args>` with the stand-ins first on PATH.
    fn meshcheck(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshcheck"));
        cmd.args(args);
        cmd.env("PATH", format!("{}:{}", self.bin.path().display(), std::env::var("PATH").unwrap()));
        cmd
    }

    /// `meshcheck run` on `scenario` with the stand-ins first on PATH.
    fn meshcheck_run(&self, scenario: &Path) -> Command {
        let mut cmd = self.meshcheck(&["run", "--scenario"]);
        cmd.arg(scenario).arg("--reports").arg(self.work.path().join("reports"));
        cmd
    }

    /// Every call the stand-ins received.
    fn calls(&self) -> String {
        std::fs::read_to_string(self.bin.path().join("calls.log")).unwrap_or_default()
    }

    fn latest(&self, file: &str) -> String {
        std::fs::read_to_string(self.work.path().join("reports/latest").join(file)).unwrap()
    }
}

#[test]
fn runner_records_times_out_and_names_missing_tools() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::new(dir.path());
    let err = runner.run(&CommandSpec::new("sleep", ["5"], Duration::from_secs(1))).unwrap_err();
    assert!(matches!(err, CommandError::TimedOut { after_secs: 1, .. }), "{err}");
    let err = runner.run(&CommandSpec::new("meshcheck-no-such-tool", ["x"], Duration::from_secs(1))).unwrap_err();
    assert!(err.to_string().contains("was not found on PATH"), "{err}");
    let err = runner
        .run(&CommandSpec::new("sh", ["-c", "echo token: s3cr3t >&2; exit 3"], Duration::from_secs(5)))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("exit code 3") && !msg.contains("s3cr3t"), "{msg}");
    let records: Vec<_> = std::fs::read_dir(dir.path().join("commands")).unwrap().collect();
    assert_eq!(records.len(), 3);
    let text = std::fs::read_to_string(dir.path().join("commands/003-sh.json")).unwrap();
    assert!(text.contains("\"exit_code\": 3") && !text.contains("s3cr3t"), "{text}");
}

#[test]
fn a_failing_helm_install_stops_the_run_reports_it_and_deletes_the_cluster() {
    let bench = Bench::new();
    bench.stub("docker", "exit 0");
    bench.stub("k3d", "[ \"$1\" = version ] && echo 'k3d version v5.8.3'; exit 0");
    bench.stub(
        "helm",
        "case \"$1 $2\" in \"version --short\") echo v3.20.0;; *) echo 'Error: INSTALLATION FAILED: cilium boom' >&2; exit 1;; esac",
    );
    let scenario = bench.k3d_scenario(|t| format!("{}checks: [node-architecture]\n", t.replace("  - mtls\n", "")));
    let out = bench.meshcheck_run(&scenario).output().unwrap();
    assert!(!out.status.success());
    let calls = bench.calls();
    assert!(calls.contains("k3d cluster create meshcheck-"), "{calls}");
    assert!(calls.contains("k3d cluster delete meshcheck-"), "cleanup not attempted:\n{calls}");
    let junit = bench.latest("junit.xml");
    assert!(junit.contains("INSTALLATION FAILED: cilium boom"), "{junit}");
    assert!(junit.contains("<skipped"), "later trials must be marked not run");
    let summary = bench.latest("summary.md");
    assert!(summary.contains("| provision | phase | 💥 error |"), "{summary}");
}

/// Stand-ins whose `k3d cluster create` hangs (exec, so a kill reaches the sleeping process itself).
fn hanging_create(bench: &Bench) {
    bench.stub("docker", "exit 0");
    bench.stub("helm", "echo v3.20.0");
    bench.stub(
        "k3d",
        "case \"$1 $2\" in \"cluster create\") exec sleep 60;; \"version \") echo 'k3d version v5.8.3';; *) exit 0;; esac",
    );
}

#[test]
fn ctrl_c_on_a_real_meshcheck_process_kills_the_command_cleans_up_and_reports() {
    interrupt_during_create("-INT");
}

/// SIGTERM is what GitLab, Jenkins and Kubernetes-hosted CI send on cancel; SIGHUP a closed terminal.
#[test]
fn sigterm_and_sighup_are_handled_like_ctrl_c() {
    interrupt_during_create("-TERM");
    interrupt_during_create("-HUP");
}

/// Sends `signal` to a real `meshcheck run` while its `k3d cluster create` hangs, and checks that
/// the command is killed, the cluster deleted and the report final.
fn interrupt_during_create(signal: &str) {
    let bench = Bench::new();
    hanging_create(&bench);
    let scenario = bench.k3d_scenario(|t| t);
    let mut child = bench
        .meshcheck_run(&scenario)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !bench.calls().contains("k3d cluster create") {
        assert!(started.elapsed() < Duration::from_secs(30), "k3d cluster create was never called");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let sent = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "meshcheck did not stop within 20 s of {signal}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(meshcheck::EXIT_INTERRUPTED as i32), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(45), "the hanging create was killed, not waited out");
    let log = bench.calls();
    assert!(log.contains("k3d cluster delete meshcheck-"), "cleanup not attempted after Ctrl-C:\n{log}");
    let junit = bench.latest("junit.xml");
    assert!(junit.contains("interrupted"), "{junit}");
    assert!(junit.contains("<skipped"), "trials after the interrupt are not run: {junit}");
    let latest = bench.work.path().join("reports/latest");
    let outcomes = meshcheck::report::load_outcomes(&latest, None).unwrap();
    assert_eq!(outcomes["provision::phase"], meshcheck::evidence::Outcome::Error);
    let run: serde_json::Value = serde_json::from_str(&bench.latest("run.json")).unwrap();
    assert!(!run["ended_at"].as_str().unwrap_or_default().is_empty(), "run.json is final");
    let steps = run["steps"].as_array().unwrap();
    let create = steps.iter().find(|s| s["step"] == "create k3d cluster").expect("the create step is recorded");
    assert!(create["error"].as_str().unwrap().contains("interrupted"), "{create}");
    let phases = &run["phase_durations_secs"];
    assert!(phases["provision"].as_f64().unwrap() >= 0.3, "the interrupted phase took its time: {phases}");
    assert!(phases["cleanup"].is_number(), "{phases}");
    let create_record = std::fs::read_dir(latest.join("commands"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .find(|t| t.contains("\"create\""))
        .expect("the interrupted create is recorded");
    assert!(create_record.contains("\"interrupted\": true"), "{create_record}");
}

#[test]
fn a_create_that_hangs_past_its_timeout_is_killed_reported_and_cleaned_up() {
    let bench = Bench::new();
    hanging_create(&bench);
    let scenario = bench.k3d_scenario(|t| t.replace("  provision: 15m\n", "  provision: 2s\n"));
    assert!(std::fs::read_to_string(&scenario).unwrap().contains("provision: 2s"), "the scenario sets the timeout");
    let started = std::time::Instant::now();
    let out = bench.meshcheck_run(&scenario).output().unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(30), "the hang was cut at its deadline");
    let calls = bench.calls();
    assert!(calls.contains("k3d cluster delete meshcheck-"), "cleanup not attempted:\n{calls}");
    let junit = bench.latest("junit.xml");
    // k3d's own --timeout is the scenario's 2s; meshcheck waits a grace period longer, so k3d's
    // rollback on its own timeout is never killed half-way.
    assert!(calls.contains("--timeout 2s"), "{calls}");
    assert!(junit.contains("did not finish within 3s and was killed"), "{junit}");
    let summary = bench.latest("summary.md");
    assert!(summary.contains("| provision | phase | 💥 error |"), "{summary}");
}

/// A kubeconfig whose only cluster is `server`, with a token user (plain HTTP is enough for kube-rs).
fn kubeconfig(path: &Path, server: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {server}\nusers:\n- name: sim\n  user:\n    token: rehearsal\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\ncurrent-context: sim\n"
    );
    std::fs::write(path, text).unwrap();
}

/// A run that reaches a cluster ends through `Session::finish`, which takes the end-of-run snapshot
/// on the session's runtime. This API server answers every call with 404, so the node wait fails at
/// once and the run goes straight to teardown with a live connection: it must end with a final
/// report, not a panic ("there is no reactor running", exit 101). It answers what preflight asks
/// (`/version`, and every SelfSubjectAccessReview with allowed), so the run gets that far.
#[test]
fn a_run_that_reached_the_api_server_finishes_its_report_without_panicking() {
    let bench = Bench::new();
    bench.stub("helm", "echo v3.20.0");
    let port = crate::common::http_server(|request_line| {
        if request_line.starts_with("GET /version") {
            return crate::common::http_response("200 OK", "application/json", r#"{"major":"1","minor":"35"}"#);
        }
        if request_line.contains("/selfsubjectaccessreviews") {
            return crate::common::http_response("201 Created", "application/json", r#"{"status":{"allowed":true}}"#);
        }
        crate::common::http_response(
            "404 Not Found",
            "application/json",
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"not found"}"#,
        )
    });
    let config = bench.work.path().join("kubeconfig");
    kubeconfig(&config, &format!("http://127.0.0.1:{port}"));
    let text = std::fs::read_to_string(crate::common::root().join("scenarios/existing-cluster.yaml")).unwrap();
    let scenario = bench.work.path().join("s.yaml");
    std::fs::write(&scenario, text.replace("~/.kube/config", &config.display().to_string())).unwrap();
    let out = bench.meshcheck_run(&scenario).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "checks failed, no panic:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let run: serde_json::Value = serde_json::from_str(&bench.latest("run.json")).unwrap();
    assert!(!run["ended_at"].as_str().unwrap_or_default().is_empty(), "run.json is final: {run}");
    assert_ne!(run["outcome"], "not-run", "{run}");
    let junit = bench.latest("junit.xml");
    assert!(junit.contains("waiting for"), "the failed node wait is the reason: {junit}");
}

#[test]
fn preflight_refuses_podman_alone_for_k3d_and_says_how_to_fix_it() {
    let bench = Bench::new();
    bench.stub("docker", "echo 'Cannot connect to the Docker daemon' >&2; exit 1");
    bench.stub("podman", "echo 5.4.0");
    bench.stub("k3d", "echo v5.8.3");
    bench.stub("helm", "echo v3.20.0");
    let scenario = bench.k3d_scenario(|t| t);
    let out = bench.meshcheck(&["preflight", "--scenario"]).arg(&scenario).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("only Podman answers") && stdout.contains("DOCKER_HOST"), "{stdout}");
}

#[test]
fn gc_reports_tool_failures_tries_every_cluster_and_exits_non_zero() {
    let bench = Bench::new();
    let gc = |bench: &Bench, delete: bool| {
        let args: &[&str] = if delete { &["gc", "--delete"] } else { &["gc"] };
        bench.meshcheck(args).output().unwrap()
    };
    // kind fails to list: not "no leftover clusters".
    bench.stub("kind", "echo 'failed to list nodes: permission denied' >&2; exit 1");
    bench.stub("k3d", "exit 0");
    let out = gc(&bench, false);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && !stdout.contains("no leftover"), "{stdout}{stderr}");
    assert!(stderr.contains("listing kind clusters failed"), "{stderr}");
    // Two leftovers, the first delete fails: the second is still tried, and the exit is non-zero.
    bench.stub(
        "kind",
        "case \"$1\" in get) printf 'meshcheck-a\\nmeshcheck-b\\nother\\n';; delete) [ \"$4\" = meshcheck-a ] && { echo boom >&2; exit 1; }; exit 0;; esac",
    );
    let out = gc(&bench, true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("deleting kind cluster meshcheck-a failed"), "{stderr}");
    let calls = bench.calls();
    assert!(calls.contains("kind delete cluster --name meshcheck-b"), "{calls}");
    assert!(!calls.contains("--name other"), "{calls}");
}

/// Cleanup is a trial of its own: when the cluster cannot be deleted, run.json, junit.xml and
/// summary.md say so, name the cluster that may be left and how to remove it.
#[test]
fn a_failing_cluster_delete_is_a_cleanup_error_naming_the_cluster_and_gc() {
    let bench = Bench::new();
    bench.stub("docker", "exit 0");
    bench.stub(
        "k3d",
        "case \"$1 $2\" in \"version \") echo 'k3d version v5.8.3';; \"cluster delete\") echo 'FATA[0000] docker is gone' >&2; exit 1;; *) exit 0;; esac",
    );
    bench.stub(
        "helm",
        "case \"$1 $2\" in \"version --short\") echo v3.20.0;; *) echo 'Error: INSTALLATION FAILED: boom' >&2; exit 1;; esac",
    );
    let scenario = bench.k3d_scenario(|t| format!("{}checks: [node-architecture]\n", t.replace("  - mtls\n", "")));
    let out = bench.meshcheck_run(&scenario).output().unwrap();
    assert!(!out.status.success());
    let record: serde_json::Value = serde_json::from_str(&bench.latest("run.json")).unwrap();
    let cleanup =
        record["results"].as_array().unwrap().iter().find(|r| r["suite"] == "cleanup").expect("a cleanup result");
    let reason = cleanup["verdict"]["reason"].as_str().unwrap();
    assert_eq!(cleanup["verdict"]["outcome"], "error", "{cleanup}");
    assert!(reason.contains("cluster meshcheck-") && reason.contains("meshcheck gc --delete"), "{reason}");
    assert!(cleanup["verdict"]["details"].to_string().contains("docker is gone"), "{cleanup}");
    assert!(record["steps"].as_array().unwrap().iter().any(|s| s["phase"] == "cleanup"), "cleanup has step records");
    let junit = bench.latest("junit.xml");
    assert!(junit.contains("<testsuite name=\"cleanup\""), "{junit}");
    assert!(bench.latest("summary.md").contains("meshcheck gc --delete"));
}
