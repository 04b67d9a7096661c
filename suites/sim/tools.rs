//! Stand-in `kind`, `k3d`, `helm`, `docker` and `sysctl`: bash scripts that forward their argv
//! to the simulation's control port over `/dev/tcp` (the tool name, the argument count, then each
//! argument NUL-terminated) and replay its answer (an exit code line, a base64 stderr line, then
//! stdout until the connection closes). The simulation does what the real tool would do to the
//! simulated cluster.

use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc, time::Duration};

use base64::Engine;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{Cluster, Shared, bootstrap};

const TOOLS: &[&str] = &["kind", "k3d", "helm", "docker", "sysctl"];

/// Writes the stand-ins into `<dir>/bin`.
pub fn write_stand_ins(dir: &Path, port: u16) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    for tool in TOOLS {
        let script = format!(
            "#!/usr/bin/env bash\n\
             # Stand-in `{tool}` of the simulated cluster (suites/sim/tools.rs).\n\
             exec 3<>/dev/tcp/127.0.0.1/{port} || exit 127\n\
             {{ printf '%s\\n%s\\n' {tool} \"$#\"; for a in \"$@\"; do printf '%s\\0' \"$a\"; done; }} >&3\n\
             IFS= read -r code <&3 || exit 1\n\
             IFS= read -r err <&3\n\
             printf '%s' \"$err\" | base64 -d >&2\n\
             cat <&3\n\
             exit \"$code\"\n"
        );
        let path = bin.join(tool);
        std::fs::write(&path, script).expect("write stand-in");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// A kubeconfig for the simulated API server.
pub fn kubeconfig(shared: &Shared, context: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {context}\n  cluster:\n    server: http://127.0.0.1:{}\n\
         contexts:\n- name: {context}\n  context:\n    cluster: {context}\n    user: {context}\n\
         current-context: {context}\nusers:\n- name: {context}\n  user: {{}}\n",
        shared.api_port
    )
}

/// What a tool answers.
pub struct Answer {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Exit 0 with `stdout`.
pub fn ok(stdout: impl Into<String>) -> Answer {
    Answer { code: 0, stdout: stdout.into(), stderr: String::new() }
}

/// Exit `code` with `stderr`.
pub fn fail(code: i32, stderr: impl Into<String>) -> Answer {
    Answer { code, stdout: String::new(), stderr: stderr.into() }
}

/// Serves the control port: each stand-in call is noted, then done to the simulated cluster.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    serve_calls(listener, move |tool, args| {
        let shared = shared.clone();
        async move {
            shared.note(format!("{tool} {}", args.join(" ")));
            run(&shared, &tool, &args).await
        }
    })
    .await
}

/// Serves the stand-ins' protocol on `listener`, each call answered by `answer(tool, args)`: the
/// simulation's tools, or the real control-plane tier's.
pub async fn serve_calls<F, A>(listener: tokio::net::TcpListener, answer: F)
where
    F: Fn(String, Vec<String>) -> A + Clone + Send + 'static,
    A: std::future::Future<Output = Answer> + Send,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let answer = answer.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let (mut tool, mut count) = (String::new(), String::new());
            if r.read_line(&mut tool).await.is_err() || r.read_line(&mut count).await.is_err() {
                return;
            }
            let mut args = Vec::new();
            for _ in 0..count.trim().parse::<usize>().unwrap_or(0) {
                let mut arg = Vec::new();
                if r.read_until(0, &mut arg).await.is_err() {
                    return;
                }
                arg.pop();
                args.push(String::from_utf8_lossy(&arg).into_owned());
            }
            let a = answer(tool.trim().to_string(), args).await;
            let err = base64::engine::general_purpose::STANDARD.encode(a.stderr);
            let _ = w.write_all(format!("{}\n{err}\n{}", a.code, a.stdout).as_bytes()).await;
            let _ = w.shutdown().await;
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest).await;
        });
    }
}

/// The value of the option `name` in `args`.
pub fn opt<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
}

async fn run(shared: &Arc<Shared>, tool: &str, args: &[String]) -> Answer {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match (tool, a.as_slice()) {
        ("sysctl", ["-n", key]) => match *key {
            "fs.inotify.max_user_watches" => ok("524288\n"),
            "fs.inotify.max_user_instances" => ok("512\n"),
            k => {
                fail(255, format!("sysctl: cannot stat /proc/sys/{}: No such file or directory\n", k.replace('.', "/")))
            }
        },
        ("docker", ["info", ..]) => ok("28.5.1\n"),
        ("docker", ["exec", node, ..]) => {
            let known = shared.lock().cluster.as_ref().is_some_and(|c| c.nodes.iter().any(|n| n == node));
            if known { ok("") } else { fail(1, format!("Error response from daemon: No such container: {node}\n")) }
        }
        ("kind", ["version"]) => ok("kind v0.31.0 go1.25.5 linux/amd64\n"),
        ("kind", ["get", "clusters"]) => {
            ok(shared.lock().cluster.as_ref().map(|c| format!("{}\n", c.name)).unwrap_or_default())
        }
        ("kind", ["create", "cluster", ..]) => kind_create(shared, args).await,
        ("kind", ["delete", "cluster", ..]) => {
            if shared.lock().faults.cluster_delete_hangs {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            delete_cluster(shared, opt(args, "--name").unwrap_or("kind"), "kind")
        }
        ("kind", ["load", ..]) | ("k3d", ["image", "import", ..]) => {
            tokio::time::sleep(shared.sim(shared.timings.image_load)).await;
            ok("")
        }
        ("k3d", ["version"]) => ok("k3d version v5.8.3\nk3s version v1.31.5-k3s1 (default)\n"),
        ("k3d", ["cluster", "create", name, ..]) => k3d_create(shared, name, args).await,
        ("k3d", ["cluster", "delete", name]) => delete_cluster(shared, name, "k3d"),
        ("k3d", ["cluster", "list", ..]) => {
            ok(shared.lock().cluster.as_ref().map(|c| format!("{}   1/1   2/2   true\n", c.name)).unwrap_or_default())
        }
        ("k3d", ["kubeconfig", "write", name, "--output", path]) => {
            if shared.lock().cluster.as_ref().is_none_or(|c| c.name != *name) {
                return fail(1, format!("FATA[0000] failed to get cluster {name}: No nodes found for given cluster\n"));
            }
            match std::fs::write(path, kubeconfig(shared, &format!("k3d-{name}"))) {
                Ok(()) => ok(format!("{path}\n")),
                Err(e) => fail(1, format!("FATA[0000] {e}\n")),
            }
        }
        ("helm", ["version", ..]) => ok("v3.20.0+g1a2b3c4\n"),
        ("helm", ["upgrade", ..]) => helm_upgrade(shared, args).await,
        ("helm", ["uninstall", release, ..]) => helm_uninstall(shared, release, args),
        _ => fail(1, format!("{tool}: the simulation does not know `{}`\n", args.join(" "))),
    }
}

/// kind: `create cluster --name N --config FILE --kubeconfig PATH --wait 0s`.
async fn kind_create(shared: &Arc<Shared>, args: &[String]) -> Answer {
    let name = opt(args, "--name").unwrap_or("kind").to_string();
    let config: Value = match opt(args, "--config").map(std::fs::read_to_string) {
        Some(Ok(text)) => serde_saphyr::from_str(&text).unwrap_or(Value::Null),
        _ => return fail(1, "ERROR: failed to create cluster: unable to read config\n"),
    };
    let nodes = config["nodes"].as_array().cloned().unwrap_or_default();
    let mut names = vec![format!("{name}-control-plane")];
    let workers = nodes.iter().filter(|n| n["role"] == "worker").count();
    names.extend((1..=workers).map(|i| if i == 1 { format!("{name}-worker") } else { format!("{name}-worker{i}") }));
    let mapping = nodes
        .iter()
        .flat_map(|n| n["extraPortMappings"].as_array().cloned().unwrap_or_default())
        .find(|m| m["hostPort"].is_u64());
    let port = |k: &str| mapping.as_ref().and_then(|m| m[k].as_u64()).and_then(|p| u16::try_from(p).ok());
    let ports = (port("hostPort"), port("containerPort"));
    let Some(kc) = opt(args, "--kubeconfig") else { return fail(1, "ERROR: no --kubeconfig\n") };
    if let Err(e) = create(shared, &name, names, ports, "kind") {
        return e;
    }
    tokio::time::sleep(shared.sim(shared.timings.create_cluster)).await;
    match std::fs::write(kc, kubeconfig(shared, &format!("kind-{name}"))) {
        Ok(()) => Answer {
            code: 0,
            stdout: String::new(),
            stderr: format!(
                "Creating cluster \"{name}\" ...\n ✓ Ensuring node image\n ✓ Preparing nodes\n ✓ Starting control-plane\nSet kubectl context to \"kind-{name}\"\n"
            ),
        },
        Err(e) => fail(1, format!("ERROR: failed to create cluster: {e}\n")),
    }
}

/// k3d: `cluster create N --image … --agents W … -p 127.0.0.1:H:NP@server:0 …`.
async fn k3d_create(shared: &Arc<Shared>, name: &str, args: &[String]) -> Answer {
    let agents: usize = opt(args, "--agents").and_then(|a| a.parse().ok()).unwrap_or(0);
    let mapping: Vec<&str> = opt(args, "-p").map(|p| p.split(['@', ':']).collect()).unwrap_or_default();
    let ports = (mapping.get(1).and_then(|p| p.parse().ok()), mapping.get(2).and_then(|p| p.parse().ok()));
    let mut names = vec![format!("k3d-{name}-server-0")];
    names.extend((0..agents).map(|i| format!("k3d-{name}-agent-{i}")));
    if let Err(e) = create(shared, name, names, ports, "k3d") {
        return e;
    }
    tokio::time::sleep(shared.sim(shared.timings.create_cluster)).await;
    Answer {
        code: 0,
        stdout: String::new(),
        stderr: format!("INFO[0000] Prep: Network\nINFO[0020] Cluster '{name}' created successfully!\n"),
    }
}

fn create(
    shared: &Shared,
    name: &str,
    nodes: Vec<String>,
    (host_port, node_port): (Option<u16>, Option<u16>),
    provider: &str,
) -> Result<(), Answer> {
    let mut st = shared.lock();
    if let Some(c) = &st.cluster {
        return Err(fail(
            1,
            format!(
                "ERROR: failed to create cluster: node(s) already exist for a cluster with the name \"{}\"\n",
                c.name
            ),
        ));
    }
    st.store.reset();
    bootstrap::create_cluster(&mut st, provider, &nodes);
    st.cluster = Some(Cluster { name: name.into(), nodes, host_port, node_port });
    let _ = shared.api_up.send(true);
    Ok(())
}

fn delete_cluster(shared: &Shared, name: &str, provider: &str) -> Answer {
    let mut st = shared.lock();
    if st.cluster.as_ref().is_some_and(|c| c.name == name) {
        st.cluster = None;
        st.store.reset();
        st.releases.clear();
        st.pods.clear();
        let _ = shared.api_up.send(false);
    }
    match provider {
        "kind" => Answer { code: 0, stdout: String::new(), stderr: format!("Deleting cluster \"{name}\" ...\n") },
        _ => Answer {
            code: 0,
            stdout: String::new(),
            stderr: format!("INFO[0000] Deleting cluster '{name}'\nINFO[0001] Successfully deleted cluster {name}!\n"),
        },
    }
}

/// The repository URL a run names with `--repo`, with the simulation's mirror prefix taken off
/// (a scenario's `mirrors` point the chart repositories here).
fn repository(shared: &Shared, url: &str) -> String {
    let mirror = format!("http://127.0.0.1:{}/", shared.mirror_port);
    url.strip_prefix(&mirror).map_or_else(|| url.to_string(), |rest| format!("https://{rest}"))
}

/// Where the positional arguments of `helm upgrade ...` (release, chart) are in `args`: the flags
/// meshcheck passes take a value each, but `--install` and `--wait`.
pub fn helm_upgrade_positional(args: &[String]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--install" | "--wait" => i += 1,
            a if a.starts_with("--") => i += 2,
            _ => {
                out.push(i);
                i += 1;
            }
        }
    }
    out
}

/// `helm upgrade [--install] REL CHART --repo URL --version V --namespace NS --values F… [--wait] --timeout Ts --kubeconfig K …`
async fn helm_upgrade(shared: &Arc<Shared>, args: &[String]) -> Answer {
    let install = args.iter().any(|a| a == "--install");
    let positional: Vec<&String> = helm_upgrade_positional(args).into_iter().map(|i| &args[i]).collect();
    let (Some(release), Some(chart)) = (positional.first(), positional.get(1)) else {
        return fail(1, "Error: \"helm upgrade\" requires 2 arguments\n");
    };
    let version = opt(args, "--version").unwrap_or("").to_string();
    let Some(repo) = opt(args, "--repo") else {
        // helm v3.22.0 pkg/cmd install: a chart reference without a local repository of that name.
        return fail(1, format!("Error: repo {} not found\n", chart.split('/').next().unwrap_or(chart)));
    };
    let chart_name = chart.to_string();
    let chart = match shared.helm.chart(&repository(shared, repo), chart, &version) {
        Ok(chart) => chart,
        Err(e) => return fail(1, format!("{e}\n")),
    };
    // `--repo`: helm downloads the repository's index before it renders anything.
    tokio::time::sleep(shared.sim(shared.timings.repo_index)).await;
    let ns = opt(args, "--namespace").unwrap_or("default").to_string();
    let verb = if install { "INSTALLATION" } else { "UPGRADE" };
    let reachable = opt(args, "--kubeconfig")
        .and_then(|k| std::fs::read_to_string(k).ok())
        .is_some_and(|k| k.contains(&format!("127.0.0.1:{}", shared.api_port)))
        && *shared.api_up.borrow();
    if !reachable {
        return fail(
            1,
            format!(
                "Error: {verb} FAILED: Kubernetes cluster unreachable: Get \"http://127.0.0.1:{}/version\": dial tcp: connect: connection refused\n",
                shared.api_port
            ),
        );
    }
    let (fails, hangs) = {
        let st = shared.lock();
        (
            st.faults.helm_fails.as_deref() == Some(release.as_str()),
            st.faults.helm_hangs.as_deref() == Some(release.as_str()),
        )
    };
    if hangs {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if fails {
        tokio::time::sleep(shared.sim(Duration::from_secs(5))).await;
        return fail(
            1,
            format!(
                "Error: {verb} FAILED: failed pre-install: 1 error occurred:\n\t* timed out waiting for the condition (simulated failure of {release})\n"
            ),
        );
    }
    let values: Vec<std::path::PathBuf> =
        args.windows(2).filter(|w| w[0] == "--values").map(|w| std::path::PathBuf::from(&w[1])).collect();
    let sets: Vec<String> = args.windows(2).filter(|w| w[0] == "--set").map(|w| w[1].clone()).collect();
    let rendered = tokio::task::block_in_place(|| shared.helm.template(&chart, release, &ns, &values, &sets));
    // helm renders the chart and sends it to the API server; its objects exist when it returns.
    tokio::time::sleep(shared.sim(shared.timings.helm(release))).await;
    let rest = {
        let mut st = shared.lock();
        if let Some(rolling) = super::controllers::rollout_in_progress(&st).filter(|_| !install) {
            st.during_rollout.push(format!("helm upgrade {release} while {rolling}"));
        }
        let key = (ns.clone(), release.to_string());
        if !install && !st.releases.contains_key(&key) {
            return fail(1, format!("Error: UPGRADE FAILED: \"{release}\" has no deployed releases\n"));
        }
        if st.store.get("", "namespaces", "", &ns).is_none() {
            return fail(1, format!("Error: {verb} FAILED: create: failed to create: namespaces \"{ns}\" not found\n"));
        }
        let objects = match rendered {
            Ok(o) => o,
            Err(e) => return fail(1, format!("{e}\n")),
        };
        let (crds, rest): (Vec<_>, Vec<_>) = objects.into_iter().partition(|o| o["kind"] == "CustomResourceDefinition");
        if let Err(e) = bootstrap::put_all(&mut st, crds, &ns) {
            return fail(1, format!("Error: {verb} FAILED: failed to install CRD: {e}\n"));
        }
        rest
    };
    // helm installs a chart's CRDs first and waits (60 s) for the API server to establish them
    // before it sends the objects that use them (helm v3.22.0 pkg/action/install.go installCRDs,
    // `KubeClient.Wait`).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !shared.lock().store.crds_established() {
        if tokio::time::Instant::now() > deadline {
            return fail(1, format!("Error: {verb} FAILED: timed out waiting for the CRDs to be established\n"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let objects = {
        let mut st = shared.lock();
        if let Err(e) = bootstrap::put_all(&mut st, rest.clone(), &ns) {
            return fail(
                1,
                format!("Error: {verb} FAILED: unable to build kubernetes objects from release manifest: {e}\n"),
            );
        }
        let owned = bootstrap::uninstalled_by_helm(&st, &rest, &ns);
        bootstrap::record_release(&mut st, &ns, release, &version, owned);
        rest
    };
    if args.iter().any(|a| a == "--wait") {
        let timeout = opt(args, "--timeout").and_then(|t| t.trim_end_matches('s').parse().ok()).unwrap_or(300u64);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        while !objects.iter().all(|o| workload_ready(shared, o)) {
            if tokio::time::Instant::now() > deadline {
                return fail(1, format!("Error: {verb} FAILED: context deadline exceeded\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    ok(format!(
        "Release \"{release}\" has been {}. Happy Helming!\nNAME: {release}\nNAMESPACE: {ns}\nSTATUS: deployed\nCHART: {chart_name}-{version}\n",
        if install { "installed" } else { "upgraded" }
    ))
}

/// `helm uninstall REL --namespace NS [--ignore-not-found] [--wait] …`: deletes what the release's
/// manifest holds (helm v3.22.0 pkg/action/uninstall.go: the release's resources less those kept,
/// then the release record). Pods go through their grace period, as a real delete's do.
fn helm_uninstall(shared: &Shared, release: &str, args: &[String]) -> Answer {
    let ns = opt(args, "--namespace").unwrap_or("default").to_string();
    let mut st = shared.lock();
    let Some(found) = st.releases.remove(&(ns.clone(), release.to_string())) else {
        return if args.iter().any(|a| a == "--ignore-not-found") {
            ok("")
        } else {
            fail(1, format!("Error: uninstall: Release not loaded: {release}: release: not found\n"))
        };
    };
    for (group, plural, ns, name) in found.objects {
        let Some(mut obj) = st.store.get(&group, &plural, &ns, &name).cloned() else { continue };
        if group.is_empty() && plural == "pods" {
            super::controllers::delete_pod(&mut st, &ns, &name);
        } else if super::store::has_finalizers(&obj) {
            // helm deletes through the API server: an object with finalizers stays, marked, until
            // its controller removes them (a Kiali CR whose operator goes in the same uninstall
            // never does).
            obj["metadata"]["deletionTimestamp"] = serde_json::json!(super::store::now());
            st.store.put(&group, &plural, obj);
        } else {
            st.store.delete(&group, &plural, &ns, &name);
        }
    }
    // Without --keep-history helm purges the release's records (pkg/action/uninstall.go).
    for revision in 1..=found.revision {
        st.store.delete("", "secrets", &ns, &bootstrap::release_secret(release, revision));
    }
    ok(format!("release \"{release}\" uninstalled\n"))
}

fn workload_ready(shared: &Shared, o: &Value) -> bool {
    let plural = match o["kind"].as_str() {
        Some("Deployment") => "deployments",
        Some("DaemonSet") => "daemonsets",
        Some("StatefulSet") => "statefulsets",
        _ => return true,
    };
    let st = shared.lock();
    let ns = o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    st.store.get("apps", plural, ns, name).is_some_and(|w| {
        let i = |p: &str| w.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        match plural {
            "daemonsets" => {
                i("/status/numberReady") == i("/status/desiredNumberScheduled")
                    && i("/status/desiredNumberScheduled") > 0
            }
            _ => i("/status/readyReplicas") >= w.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1),
        }
    })
}
