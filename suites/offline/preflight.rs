//! `meshcheck preflight` as a user runs it: stand-in tools alone on PATH, local HTTP servers in
//! place of the chart repositories, registries and API servers, and the simulated cluster.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
};

use meshcheck::preflight::Tool;
use serde_json::Value;

use crate::common::{http_response, http_server, http_server_with_body, root, with_answering_upstream};

/// Stand-in tools and a work folder. The stand-ins are the only programs on PATH.
struct Bench {
    bin: tempfile::TempDir,
    work: tempfile::TempDir,
}

/// What `meshcheck preflight` said: whether it found the machine ready, and its problem lines.
struct Said {
    ready: bool,
    problems: Vec<String>,
}

impl Bench {
    /// Stand-ins printing what current releases print, in the formats harness/preflight.rs cites.
    fn new() -> Bench {
        let bench = Bench { bin: tempfile::tempdir().unwrap(), work: tempfile::tempdir().unwrap() };
        bench.stub("docker", "echo 28.5.1");
        bench.stub("kind", "echo 'kind v0.31.0 go1.25.5 linux/amd64'");
        bench.stub("k3d", "printf 'k3d version v5.8.3\\nk3s version v1.33.6-k3s1 (default)\\n'");
        bench.stub("helm", "echo 'v3.19.0+g3d8990f'");
        bench.stub("sysctl", "case \"$2\" in fs.inotify.max_user_watches) echo 524288;; *) echo 512;; esac");
        bench
    }

    fn stub(&self, tool: &str, body: &str) {
        let path = self.bin.path().join(tool);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn remove(&self, tool: &str) {
        std::fs::remove_file(self.bin.path().join(tool)).unwrap();
    }

    /// A shipped scenario, edited, written into the work folder.
    fn scenario(&self, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
        let text = std::fs::read_to_string(root().join(format!("scenarios/{name}.yaml"))).unwrap();
        let path = self.work.path().join(format!("{name}.yaml"));
        std::fs::write(&path, edit(text)).unwrap();
        path
    }

    /// `meshcheck preflight [extra] --scenario <scenario>`, from the work folder.
    fn run(&self, extra: &[&str], scenario: &Path) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_meshcheck"))
            .arg("preflight")
            .args(extra)
            .arg("--scenario")
            .arg(scenario)
            .env("PATH", self.bin.path())
            .env("MESHCHECK_LOG", "warn")
            .env_remove("KUBECONFIG")
            .current_dir(self.work.path())
            .output()
            .unwrap()
    }

    /// `meshcheck preflight --scenario <scenario>`, and the same with `-o json`, which must agree.
    fn preflight(&self, scenario: &Path) -> Said {
        let out = self.run(&[], scenario);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        let problems: Vec<String> =
            stdout.lines().filter_map(|l| l.strip_prefix("missing: ")).map(String::from).collect();
        assert_eq!(out.status.success(), problems.is_empty(), "exit status and problem lines disagree:\n{stdout}");
        // `-o json` (issue 27, item 13) says the same, with the same exit status.
        let json = self.run(&["-o", "json"], scenario);
        let doc: Value = serde_json::from_slice(&json.stdout).expect("one JSON document");
        assert_eq!(json.status.code(), out.status.code());
        assert_eq!(doc["ready"], problems.is_empty(), "{doc}");
        let listed: Vec<&str> = doc["problems"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(listed.len(), problems.len(), "{doc}");
        Said { ready: stdout.contains("preflight: ready for a live"), problems }
    }
}

/// The one problem line, which must contain every one of `parts`.
fn only_problem(said: &Said, parts: &[&str]) {
    assert_eq!(said.problems.len(), 1, "expected exactly one problem: {:#?}", said.problems);
    for part in parts {
        assert!(said.problems[0].contains(part), "`{part}` missing from: {}", said.problems[0]);
    }
}

#[test]
fn the_version_parsers_read_the_upstream_formats_and_nothing_else() {
    let v = |tool: Tool, out: &str| tool.parse_version(out).map(|v| (v.core, v.pre_release));
    // What the release binaries print (formats cited beside `Tool::parse_version`).
    assert_eq!(v(Tool::Kind, "kind v0.31.0 go1.25.5 linux/amd64\n"), Some(((0, 31, 0), false)));
    assert_eq!(v(Tool::K3d, "k3d version v5.8.3\nk3s version v1.33.6-k3s1 (default)\n"), Some(((5, 8, 3), false)));
    assert_eq!(v(Tool::Helm, "v3.19.0+g3d8990f\n"), Some(((3, 19, 0), false)));
    assert_eq!(v(Tool::Helm, "v4.2.4+g0123456\n"), Some(((4, 2, 4), false)));
    // Builds outside a release: kind's pre-release, helm without its Makefile, helm 2.
    assert_eq!(v(Tool::Kind, "kind v0.31.0-alpha.12+0123456789abcd go1.25.5 linux/amd64"), Some(((0, 31, 0), true)));
    assert_eq!(v(Tool::Helm, "v3.19"), Some(((3, 19, 0), false)));
    assert_eq!(v(Tool::Helm, "Client: v2.17.0+ga690bad\n"), Some(((2, 17, 0), false)));
    // Not versions.
    for (tool, out) in [
        (Tool::Kind, ""),
        (Tool::Kind, "v0.31.0"),
        (Tool::Kind, "kind version 0.31.0"),
        (Tool::K3d, "k3d version v5-dev\nk3s version v1.35.5-k3s1 (default)"),
        (Tool::K3d, "v5.8.3"),
        (Tool::Helm, "version.BuildInfo{Version:\"v3.19.0\", GitCommit:\"3d8990f\"}"),
        (Tool::Helm, "v3.x.0"),
    ] {
        assert_eq!(v(tool, out), None, "{tool:?} `{out}`");
    }
    let pre = Tool::Kind.parse_version("kind v0.31.0-alpha go1.25.5 linux/amd64").unwrap();
    assert!(!pre.at_least(Tool::Kind.minimum()), "a pre-release of the minimum is not the minimum");
}

#[test]
fn current_tools_and_answering_repositories_and_registries_are_ready() {
    let bench = Bench::new();
    for name in ["ambient-kind", "ambient-k3d", "upgrade-gate"] {
        let said = bench.preflight(&bench.scenario(name, |t| with_answering_upstream(&t)));
        assert!(said.ready && said.problems.is_empty(), "{name}: {:#?}", said.problems);
    }
}

#[test]
fn old_and_garbage_tool_versions_are_problems_with_their_fix() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "ambient-kind",
            "kind",
            "echo 'kind v0.30.0 go1.24.2 linux/amd64'",
            &["kind: v0.30.0 is older than the 0.31", "kind.sigs.k8s.io"],
        ),
        (
            "ambient-kind",
            "kind",
            "echo 'kind v0.31.0-alpha.12+0123456789abcd go1.25.5 linux/amd64'",
            &["v0.31.0-alpha.12+0123456789abcd is older than the 0.31"],
        ),
        (
            "ambient-kind",
            "kind",
            "echo 'Usage: kind [command]'",
            &["`kind version` printed `Usage: kind [command]`, not a version"],
        ),
        ("ambient-kind", "kind", "exit 0", &["`kind version` printed nothing"]),
        (
            "ambient-k3d",
            "k3d",
            "printf 'k3d version v4.4.8\\nk3s version v1.21.3-k3s1 (default)\\n'",
            &["k3d: v4.4.8 is older than the 5.6", "k3d.io"],
        ),
        ("ambient-k3d", "k3d", "echo 'k3d version v5-dev'", &["printed `k3d version v5-dev`, not a version"]),
        (
            "ambient-kind",
            "helm",
            "echo 'Client: v2.17.0+ga690bad'",
            &["helm: v2.17.0+ga690bad is older than the 3.6", "helm.sh"],
        ),
        ("ambient-k3d", "helm", "echo 'v3.5.4+g1b5edb6'", &["helm: v3.5.4+g1b5edb6 is older than the 3.6"]),
        (
            "ambient-kind",
            "helm",
            "echo 'version.BuildInfo{Version:\"v3.19.0\"}'",
            &["`helm version --short` printed `version.BuildInfo{Version:\"v3.19.0\"}`, not a version"],
        ),
        (
            "ambient-kind",
            "helm",
            "echo 'Error: boom' >&2; exit 1",
            &["helm: `helm version --short` failed with exit code 1"],
        ),
    ];
    for (scenario, tool, body, parts) in cases {
        let bench = Bench::new();
        bench.stub(tool, body);
        let said = bench.preflight(&bench.scenario(scenario, |t| with_answering_upstream(&t)));
        assert!(!said.ready, "{tool} `{body}` was taken as ready");
        only_problem(&said, parts);
    }
}

/// The chart repositories and registries of a kind run, mirrored to a local server that answers
/// some of them badly. Docker Hub's 401 is an answer (it wants a token first); registry.k8s.io's
/// mirror does not listen.
#[test]
fn repositories_and_registries_that_do_not_answer_each_get_a_line() {
    let bench = Bench::new();
    let port = http_server(|request_line| {
        let path = request_line.split_whitespace().nth(1).unwrap_or("");
        match path {
            "/kiali.org/helm-charts/index.yaml" => http_response("404 Not Found", "text/plain", "404"),
            "/quay.io/v2/" => http_response("503 Service Unavailable", "text/plain", "down"),
            "/registry-1.docker.io/v2/" => http_response("401 Unauthorized", "application/json", "{}"),
            p if p.ends_with("/index.yaml") || p.ends_with("/v2/") => http_response("200 OK", "application/json", "{}"),
            p if p.ends_with(".yaml") => http_response("200 OK", "text/plain", "kind: List"),
            _ => http_response("404 Not Found", "text/plain", "404"),
        }
    });
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let scenario = bench.scenario("ambient-kind", |t| {
        crate::common::mirrored_to(&t, &format!("http://127.0.0.1:{port}")).replace(
            &format!("https://registry.k8s.io/: http://127.0.0.1:{port}/"),
            &format!("https://registry.k8s.io/: http://127.0.0.1:{closed}/"),
        )
    });
    let said = bench.preflight(&scenario);
    let mut problems = said.problems.clone();
    problems.sort();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    let expect = [
        "chart repository of `kiali-operator` (http://127.0.0.1:",
        "registry quay.io does not answer: GET http://127.0.0.1:",
        "registry registry.k8s.io does not answer: GET http://127.0.0.1:",
    ];
    for (line, start) in problems.iter().zip(expect) {
        assert!(line.starts_with(start), "{line}");
    }
    assert!(problems[0].contains("/kiali.org/helm-charts) does not answer"), "{}", problems[0]);
    assert!(problems[0].contains("/kiali.org/helm-charts/index.yaml: HTTP 404"), "{}", problems[0]);
    assert!(problems[1].contains("HTTP 503") && problems[1].contains("images come from it"), "{}", problems[1]);
    // Issue 27, item 8: every unreachable host's line names the option made for an offline machine.
    assert!(problems.iter().all(|p| p.contains("`mirrors`")), "{problems:#?}");
    assert!(problems[2].contains("refused"), "{}", problems[2]);
}

/// Issue 22 (smaller): preflight also probes the manifests the run downloads itself and, for k3d,
/// ghcr.io, where k3d's own proxy and tools images come from.
#[test]
fn the_manifests_and_k3ds_own_registry_are_probed_too() {
    let bench = Bench::new();
    let port = http_server(|request_line| {
        let path = request_line.split_whitespace().nth(1).unwrap_or("");
        match path {
            "/ghcr.io/v2/" => http_response("503 Service Unavailable", "text/plain", "down"),
            p if p.ends_with("/standard-install.yaml") => http_response("404 Not Found", "text/plain", "404"),
            p if p.ends_with("/index.yaml") || p.ends_with("/v2/") || p.ends_with(".yaml") => {
                http_response("200 OK", "application/json", "{}")
            }
            _ => http_response("404 Not Found", "text/plain", "404"),
        }
    });
    let scenario =
        bench.scenario("ambient-k3d", |t| crate::common::mirrored_to(&t, &format!("http://127.0.0.1:{port}")));
    let said = bench.preflight(&scenario);
    let manifest = said.problems.iter().find(|p| p.starts_with("manifest does not answer"));
    assert!(manifest.is_some_and(|p| p.contains("standard-install.yaml: HTTP 404")), "{:#?}", said.problems);
    let ghcr = said.problems.iter().find(|p| p.starts_with("registry ghcr.io"));
    assert!(ghcr.is_some_and(|p| p.contains("HTTP 503") && p.contains("k3d-proxy")), "{:#?}", said.problems);
}

#[test]
fn a_missing_image_archive_is_a_problem() {
    let bench = Bench::new();
    let with_archive = |t: String| {
        with_answering_upstream(
            &t.replace("  architecture: auto\n", "  architecture: auto\n  image_archive: images.tar\n"),
        )
    };
    let archive = bench.work.path().join("images.tar");
    let said = bench.preflight(&bench.scenario("ambient-kind", with_archive));
    only_problem(
        &said,
        &["cluster.image_archive:", &format!("{} does not exist", archive.display()), "docker save -o images.tar"],
    );
    std::fs::create_dir(&archive).unwrap();
    let said = bench.preflight(&bench.scenario("ambient-kind", with_archive));
    only_problem(&said, &["images.tar is not a file"]);
    std::fs::remove_dir(&archive).unwrap();
    std::fs::write(&archive, b"").unwrap();
    assert!(bench.preflight(&bench.scenario("ambient-kind", with_archive)).ready);
}

/// A kubeconfig with one context, `sim`, whose cluster is `server`.
fn kubeconfig(path: &Path, server: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {server}\nusers:\n- name: sim\n  user:\n    token: t\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\ncurrent-context: sim\n"
        ),
    )
    .unwrap();
}

/// The existing-cluster scenario with this kubeconfig, and `extra` lines in its `existing:` section.
fn existing(bench: &Bench, kubeconfig: &Path, extra: &str) -> PathBuf {
    bench.scenario("existing-cluster", |t| {
        t.replace("  kubeconfig: ~/.kube/config\n", &format!("  kubeconfig: {}\n{extra}", kubeconfig.display()))
    })
}

/// [`existing`] with `install: true`, its chart repositories answering.
fn existing_install(bench: &Bench, kubeconfig: &Path) -> PathBuf {
    let path = existing(bench, kubeconfig, "");
    let text = std::fs::read_to_string(&path).unwrap().replace("  install: false\n", "  install: true\n");
    std::fs::write(&path, with_answering_upstream(&text)).unwrap();
    path
}

#[test]
fn an_existing_cluster_against_the_simulation_is_ready_and_needs_helm_only_to_install() {
    let Some(options) = crate::common::sim_options("existing", 0.01, Default::default()) else { return };
    let sim = crate::sim::Sim::start(options);
    let bench = Bench::new();
    bench.remove("helm");
    let said = bench.preflight(&existing(&bench, &sim.kubeconfig(), ""));
    assert!(said.ready, "{:#?}", said.problems);
    only_problem(&bench.preflight(&existing_install(&bench, &sim.kubeconfig())), &["helm: `helm` is not on PATH"]);
}

#[test]
fn an_unusable_kubeconfig_context_or_api_server_is_one_line_saying_which() {
    let bench = Bench::new();
    let dir = bench.work.path();
    let said = bench.preflight(&existing(&bench, &dir.join("absent"), ""));
    only_problem(
        &said,
        &[&format!("kubeconfig: {} does not exist", dir.join("absent").display()), "existing.kubeconfig"],
    );
    let said = bench.preflight(&existing(&bench, dir, ""));
    only_problem(&said, &["is not a file"]);
    let config = dir.join("kubeconfig");
    std::fs::write(&config, "clusters: [").unwrap();
    only_problem(&bench.preflight(&existing(&bench, &config, "")), &["is not a kubeconfig"]);
    // Issue 26: kube's YAML error quotes the lines around the fault; none of them is recorded.
    std::fs::write(
        &config,
        "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    token: s3cr3t-token-value\n    password: hunter2-pw\n  bad: [unclosed\nclusters: []\n",
    )
    .unwrap();
    let said = bench.preflight(&existing(&bench, &config, ""));
    only_problem(&said, &["is not a kubeconfig", "line 9 column 9"]);
    assert!(said.problems.iter().all(|p| !p.contains("hunter2") && !p.contains("s3cr3t")), "{:#?}", said.problems);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    kubeconfig(&config, &format!("http://127.0.0.1:{closed}"));
    only_problem(
        &bench.preflight(&existing(&bench, &config, "  context: prod\n")),
        &["context `prod` is not in", "(it has: sim)", "existing.context"],
    );
    only_problem(
        &bench.preflight(&existing(&bench, &config, "")),
        &["API server of context `sim`", "does not answer GET /version", "refused"],
    );
}

/// An API server that answers `/version`, records every SelfSubjectAccessReview it is asked and
/// allows it unless `deny` says otherwise. Returns its kubeconfig and the reviews.
fn reviewing_api_server(bench: &Bench, deny: fn(&Value) -> bool) -> (PathBuf, Arc<Mutex<Vec<Value>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let port = http_server_with_body(move |request_line, body| {
        if request_line.starts_with("GET /version") {
            return http_response("200 OK", "application/json", r#"{"major":"1","minor":"35","gitVersion":"v1.35.0"}"#);
        }
        if !request_line.starts_with("POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews") {
            return http_response("404 Not Found", "application/json", r#"{"kind":"Status","code":404}"#);
        }
        let attributes = serde_json::from_str::<Value>(body).unwrap()["spec"]["resourceAttributes"].clone();
        let allowed = !deny(&attributes);
        seen.lock().unwrap().push(attributes);
        let status = if allowed { r#"{"allowed":true}"# } else { r#"{"allowed":false,"reason":"RBAC: no rule"}"# };
        http_response("201 Created", "application/json", &format!(r#"{{"status":{status}}}"#))
    });
    let config = bench.work.path().join("kubeconfig");
    kubeconfig(&config, &format!("http://127.0.0.1:{port}"));
    (config, asked)
}

fn asked_for(asked: &Mutex<Vec<Value>>, verb: &str, resource: &str) -> bool {
    asked.lock().unwrap().iter().any(|a| a["verb"] == verb && a["resource"] == resource)
}

#[test]
fn each_access_the_run_needs_and_may_not_have_is_one_line_with_why() {
    let bench = Bench::new();
    let (config, asked) = reviewing_api_server(&bench, |a| {
        (a["verb"] == "create" && a["resource"] == "namespaces")
            || (a["resource"] == "pods" && a["subresource"] == "exec" && a["verb"] == "get")
    });
    let said = bench.preflight(&existing(&bench, &config, ""));
    let mut problems = said.problems.clone();
    problems.sort();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0]
            .starts_with("access: context `sim` may not create namespaces cluster-wide, and the run creates its own")
            && problems[0].contains("(the API server said: RBAC: no rule)"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].starts_with(
            "access: context `sim` may not get pods/exec in namespace meshcheck-outside, and mtls and probes run curl"
        ),
        "{}",
        problems[1]
    );
    // Read-only: the run creates only its clients and namespaces; it installs nothing.
    assert!(asked_for(&asked, "create", "pods") && asked_for(&asked, "create", "peerauthentications"));
    assert!(!asked_for(&asked, "create", "customresourcedefinitions") && !asked_for(&asked, "create", "clusterroles"));

    // With `install: true` it installs the charts and CRDs too.
    asked.lock().unwrap().clear();
    let install = existing_install(&bench, &config);
    assert_eq!(bench.preflight(&install).problems.len(), 2);
    for (verb, resource) in
        [("create", "customresourcedefinitions"), ("patch", "customresourcedefinitions"), ("create", "clusterroles")]
    {
        assert!(asked_for(&asked, verb, resource), "{verb} {resource} not asked");
    }
}

/// Issue 27, item 5: docker installed with its daemon down says so, quoting docker's own words,
/// and asks to start the daemon rather than to install Docker.
#[test]
fn docker_installed_with_its_daemon_down_is_told_to_start_it() {
    let bench = Bench::new();
    bench.stub(
        "docker",
        "echo 'Client: Docker Engine - Community' >&2; echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2; exit 1",
    );
    let scenario = bench.scenario("ambient-kind", |t| crate::common::with_answering_upstream(&t));
    let said = bench.preflight(&scenario);
    let engine = said.problems.iter().find(|p| p.starts_with("container engine")).expect("an engine problem");
    assert!(engine.contains("Cannot connect to the Docker daemon"), "{engine}");
    assert!(engine.contains("start the Docker daemon") && !engine.contains("Install Docker"), "{engine}");
    // The negative control: no docker at all still says to install it.
    bench.remove("docker");
    let said = bench.preflight(&scenario);
    assert!(said.problems.iter().any(|p| p.contains("docker is not installed")), "{:#?}", said.problems);
}

/// Issue 27, item 8: a preflight that passed says what it checked for this scenario. An existing
/// cluster's run checks no container engine and no cluster tool, and no longer claims it did.
#[test]
fn a_passed_preflight_names_what_it_checked_for_the_provider() {
    let scenario = |name: &str| {
        let text = std::fs::read_to_string(root().join(format!("scenarios/{name}.yaml"))).unwrap();
        meshcheck::scenario::Scenario::from_yaml(&text, name).unwrap()
    };
    let existing = meshcheck::preflight::checked(&scenario("existing-cluster"));
    assert!(existing.contains("the API server") && !existing.contains("container engine"), "{existing}");
    assert!(!existing.contains("kind") && !existing.contains("k3d"), "{existing}");
    let kind = meshcheck::preflight::checked(&scenario("ambient-kind"));
    assert!(kind.contains("the container engine") && kind.contains("kind") && kind.contains("helm"), "{kind}");
}

/// Issue 26: Ctrl-C during preflight's network checks stops them at once. Every chart repository
/// and registry is mirrored to a server that accepts connections and never answers, with a 120 s
/// preflight timeout: the run stops, reports and exits within seconds of the signal, not after the
/// probes' timeout.
#[test]
fn ctrl_c_during_the_network_checks_stops_the_run_without_waiting_out_the_probes() {
    let bench = Bench::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let scenario = bench.scenario("ambient-kind", |t| {
        crate::common::mirrored_to(&t, &format!("http://127.0.0.1:{port}"))
            .replace("  preflight: 20s\n", "  preflight: 120s\n")
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshcheck"))
        .args(["run", "--scenario"])
        .arg(&scenario)
        .arg("--reports")
        .arg(bench.work.path().join("reports"))
        .env("PATH", bench.bin.path())
        .env("MESHCHECK_LOG", "warn")
        .env("MESHCHECK_PROGRESS", "lines")
        .current_dir(bench.work.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let signalled = std::time::Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let status = crate::common::exit_within(
        &mut child,
        signalled,
        std::time::Duration::from_secs(60),
        "the run waiting out the probes",
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(signalled.elapsed() < std::time::Duration::from_secs(30), "took {:?}:\n{stderr}", signalled.elapsed());
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
}
