//! Helpers shared by the offline tests.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The list of every upstream file the tests read: path, sha256, licence, source URL at the pinned
/// commit. `suites/fetch-upstream` fetches and verifies it into the cache `target/upstream`.
pub const UPSTREAM_MANIFEST: &str = "suites/upstream-manifest.tsv";

/// Where the upstream data is, first found of: `$MESHCHECK_UPSTREAM` (when set, nothing else is
/// tried, so a wrong value never falls back silently); `../shared/upstream` beside the repository;
/// the cache `target/upstream`, taken only while its copy of the manifest equals this checkout's
/// (a manifest that gained a file makes an older cache stale). `Err` says why none serves.
fn locate_upstream() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("MESHCHECK_UPSTREAM").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_dir() {
            Ok(dir)
        } else {
            Err(format!("MESHCHECK_UPSTREAM={} is not a folder", dir.display()))
        };
    }
    let shared = root().join("../shared/upstream");
    if shared.is_dir() {
        return Ok(shared);
    }
    let cache = root().join("target/upstream");
    let manifest = std::fs::read(root().join(UPSTREAM_MANIFEST)).unwrap_or_else(|e| panic!("{UPSTREAM_MANIFEST}: {e}"));
    match std::fs::read(cache.join("upstream-manifest.tsv")) {
        Ok(copy) if copy == manifest => Ok(cache),
        Ok(_) => Err(format!("target/upstream was fetched for another {UPSTREAM_MANIFEST}")),
        Err(_) => Err("neither $MESHCHECK_UPSTREAM, ../shared/upstream nor target/upstream is there".to_string()),
    }
}

/// `CI` set to anything but empty, `0` or `false`, as GitHub Actions and this project's CI set it.
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// A tool a test needs is missing: under CI that fails the test (CI installs it, so its absence is
/// a broken setup, never a pass); elsewhere the test says SKIP on stderr and returns.
pub fn tool_missing(test: &str, tool: &str, fix: &str) {
    assert!(!under_ci(), "{test} needs {tool}, and CI is set: {fix}");
    eprintln!("SKIP {test}: {tool} is missing ({fix}); this part did not run");
}

/// How many tests of this process skipped for want of upstream data.
static UPSTREAM_SKIPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The upstream data folder ([`locate_upstream`]), for a test that reads it. Without one the test
/// fails under CI, which must never count a test that did not run as passed; elsewhere it returns
/// `None` and the test skips, after a SKIP line naming it and the running count. The line goes to
/// the process's stderr directly: libtest captures only `print!`/`eprint!` output, so `cargo test`
/// shows it (nextest keeps each test's stderr; `--success-output immediate` shows it).
/// The simulated cluster (suites/sim) is handed the same folder (`SimOptions::upstream`).
pub fn upstream() -> Option<PathBuf> {
    static LOCATED: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let why = match LOCATED.get_or_init(locate_upstream) {
        Ok(dir) => return Some(dir.clone()),
        Err(why) => why,
    };
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    let fix = format!(
        "run suites/fetch-upstream (fetches and verifies what {UPSTREAM_MANIFEST} lists into target/upstream) or set MESHCHECK_UPSTREAM"
    );
    assert!(!under_ci(), "{test} needs the upstream data, and CI is set: {why}; {fix}");
    let skipped = UPSTREAM_SKIPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: no upstream data: {why}; {fix}. upstream data: {skipped} tests skipped so far"
    );
    None
}

/// Reads an upstream file ([`upstream`]).
pub fn upstream_file(rel: &str) -> Option<Vec<u8>> {
    upstream().map(|u| std::fs::read(u.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")))
}

/// Writes files into a fresh evidence folder.
pub fn evidence(files: &[(&str, &[u8])]) -> (tempfile::TempDir, meshcheck::evidence::Evidence) {
    let dir = tempfile::tempdir().unwrap();
    for (rel, bytes) in files {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let ev = meshcheck::evidence::Evidence::new(dir.path());
    (dir, ev)
}

/// Compares text with a golden file; `UPDATE_GOLDEN=1` rewrites it.
pub fn golden(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|_| panic!("missing golden {} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the output; rerun with UPDATE_GOLDEN=1 and review the diff",
        path.display()
    );
}

/// A minimal HTTP/1.1 server on 127.0.0.1 for tests, alive until the test process ends. Each
/// connection reads one request head, gets the complete response `respond` builds from the request
/// line (it may sleep to stall the client), and is closed. Returns the port.
pub fn http_server(respond: impl Fn(&str) -> String + Send + Sync + 'static) -> u16 {
    http_server_with_body(move |request_line, _body| respond(request_line))
}

/// [`http_server`] for requests with a body (`Content-Length`), which `respond` gets as well. The
/// body is always read: closing a connection with unread data resets it, and the client may lose
/// the response.
pub fn http_server_with_body(respond: impl Fn(&str, &str) -> String + Send + Sync + 'static) -> u16 {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let respond = std::sync::Arc::new(respond);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let respond = respond.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    return;
                }
                let (mut header, mut length) = (String::new(), 0);
                while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                    if let Some((name, value)) = header.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    header.clear();
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let _ = stream.write_all(respond(&request_line, &String::from_utf8_lossy(&body)).as_bytes());
            });
        }
    });
    port
}

/// The hosts of the chart repositories and registries a shipped kind or k3d scenario reaches from
/// this machine, each of which `meshcheck preflight` checks.
pub const UPSTREAM_HOSTS: &[&str] = &[
    "helm.cilium.io",
    "istio-release.storage.googleapis.com",
    "prometheus-community.github.io",
    "grafana-community.github.io",
    "kiali.org",
    "quay.io",
    "registry.k8s.io",
    "registry-1.docker.io",
    "registry.istio.io",
    "ghcr.io",
    "raw.githubusercontent.com",
    "github.com",
];

/// `scenario` with `mirrors` that send every [`UPSTREAM_HOSTS`] request to `<base>/<host>/`.
pub fn mirrored_to(scenario: &str, base: &str) -> String {
    let mut text = format!("{scenario}\nmirrors:\n");
    for host in UPSTREAM_HOSTS {
        text.push_str(&format!("  https://{host}/: {base}/{host}/\n"));
    }
    text
}

/// `scenario` with [`UPSTREAM_HOSTS`] mirrored to a local server that answers like them: a chart
/// repository's `index.yaml` and the registry API check `/v2/` with 200, anything else with 404.
pub fn with_answering_upstream(scenario: &str) -> String {
    let port = http_server(|request_line| {
        let path = request_line.split_whitespace().nth(1).unwrap_or("");
        if path.ends_with("/index.yaml") || path.ends_with("/v2/") || path.ends_with(".yaml") {
            http_response("200 OK", "application/json", "{}")
        } else {
            http_response("404 Not Found", "text/plain", "404 page not found")
        }
    });
    mirrored_to(scenario, &format!("http://127.0.0.1:{port}"))
}

/// An HTTP/1.1 response that closes the connection.
pub fn http_response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The real helm and the pinned charts the simulation's stand-in helm renders with (issue 21):
/// helm is `$MESHCHECK_HELM`, else what `.ci/build-go-tools helm` built into
/// `target/go-tools/bin` (built here, once, when Go is on PATH and it is missing); the charts are
/// `$MESHCHECK_CHARTS`, else `charts/` of the upstream data, else `target/charts` (what
/// `suites/fetch-charts target/charts` fetches). Without them a test fails under `CI=true` and
/// says SKIP elsewhere.
pub fn helm() -> Option<crate::sim::helm::Helm> {
    static LOCATED: std::sync::OnceLock<Result<crate::sim::helm::Helm, String>> = std::sync::OnceLock::new();
    let located = LOCATED.get_or_init(|| {
        let upstream = upstream().ok_or("no upstream data")?;
        Ok(crate::sim::helm::Helm { binary: helm_binary()?, charts: charts_dir(&upstream)? })
    });
    or_skip(located, "the pinned helm and charts")
}

/// What a test needs, or (when it is missing) a failure under `CI=true` and a SKIP line elsewhere.
fn or_skip<T: Clone>(located: &Result<T, String>, what: &str) -> Option<T> {
    match located {
        Ok(found) => Some(found.clone()),
        Err(why) => {
            let test = std::thread::current().name().unwrap_or("a test").to_string();
            assert!(!under_ci(), "{test} needs {what}, and CI is set: {why}");
            let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
            None
        }
    }
}

fn helm_binary() -> Result<PathBuf, String> {
    go_tool("helm", "MESHCHECK_HELM")
}

/// A pinned Go program of `.ci/build-go-tools`: `$<env>`, else [`built_go_tool`].
fn go_tool(name: &str, env: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    built_go_tool(name)
}

/// What `.ci/build-go-tools` built into its folder (`$MESHCHECK_GO_TOOLS`, else
/// `target/go-tools/bin`): built here, once, when Go is on PATH and it is missing.
fn built_go_tool(name: &str) -> Result<PathBuf, String> {
    let built = go_tools_dir().join(name);
    if !built.is_file() {
        build_go_tool(name, &built)?;
    }
    Ok(built)
}

/// Where `.ci/build-go-tools` puts what it builds: `$MESHCHECK_GO_TOOLS`, else `target/go-tools/bin`.
fn go_tools_dir() -> PathBuf {
    std::env::var_os("MESHCHECK_GO_TOOLS")
        .filter(|v| !v.is_empty())
        .map_or_else(|| root().join("target/go-tools/bin"), PathBuf::from)
}

/// `.ci/build-go-tools NAME`: Go and the module proxy are all it needs; a second test process
/// finds the stamp and skips the build.
fn build_go_tool(name: &str, missing: &Path) -> Result<(), String> {
    let out = std::process::Command::new(root().join(".ci/build-go-tools"))
        .arg(name)
        .current_dir(root())
        .output()
        .map_err(|e| format!(".ci/build-go-tools {name}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{} is missing and `.ci/build-go-tools {name}` failed: {}",
            missing.display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        ));
    }
    Ok(())
}

/// The folder holding the real control plane's programs (etcd, etcdctl, kube-apiserver,
/// kube-controller-manager, kube-scheduler, kwok at the versions `suites/controlplane/*/go.mod`
/// pin, and kubelet-streams), for `suites/controlplane/start.sh`, which also needs root (or password-less sudo, as on
/// GitHub's runners) and `ip` for its network namespace. Without them a test fails under `CI=true` and says SKIP elsewhere.
pub fn control_plane_tools() -> Option<PathBuf> {
    static LOCATED: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let located = LOCATED.get_or_init(|| {
        let sudo = || std::process::Command::new("sudo").args(["-n", "true"]).output();
        if !rustix::process::geteuid().is_root() && !sudo().is_ok_and(|o| o.status.success()) {
            return Err("root or password-less sudo, for the control plane's network namespace".to_string());
        }
        let ip = std::process::Command::new("ip").arg("-V").output();
        if !ip.is_ok_and(|o| o.status.success()) {
            return Err("the `ip` command (iproute2), for the control plane's network namespace".to_string());
        }
        let programs = [
            "etcd",
            "etcdctl",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
            "kubelet-streams",
            "prometheus-operator",
        ];
        for name in programs {
            built_go_tool(name)?;
        }
        let folder = go_tools_dir();
        // kwok's stages, which the same script copies beside the binaries.
        let stages = folder.join("kwok-stages");
        if !stages.is_dir() {
            build_go_tool("kwok", &stages)?;
        }
        // Cilium's CRDs from its module's source, which the tier's stand-in operator registers.
        let crds = folder.join("cilium-crds");
        if !crds.is_dir() {
            build_go_tool("cilium-crds", &crds)?;
        }
        Ok(folder)
    });
    or_skip(located, "the real control plane (.ci/build-go-tools)")
}

/// The real fortio (fortio.org/fortio at the version suites/controlplane/fortio/go.mod pins):
/// `$MESHCHECK_FORTIO`, else `.ci/build-go-tools fortio`'s. Without it a test fails under
/// `CI=true` and says SKIP elsewhere.
pub fn fortio() -> Option<PathBuf> {
    static LOCATED: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    or_skip(LOCATED.get_or_init(|| go_tool("fortio", "MESHCHECK_FORTIO")), "the pinned fortio")
}

fn charts_dir(upstream: &Path) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("MESHCHECK_CHARTS").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    [upstream.join("charts"), root().join("../shared/upstream/charts"), root().join("target/charts")]
        .into_iter()
        .find(|d| d.is_dir())
        .ok_or_else(|| "no pinned charts: set MESHCHECK_CHARTS or run `suites/fetch-charts target/charts`".to_string())
}

/// What a simulation needs: the upstream data and the real helm with the pinned charts.
pub fn sim_options(provider: &'static str, scale: f64, faults: crate::sim::Faults) -> Option<crate::sim::SimOptions> {
    let upstream = upstream()?;
    let helm = helm()?;
    Some(crate::sim::SimOptions { provider, scale, faults, upstream, helm })
}

/// Waits for `child` to exit, at most `limit` after `since`; panics naming `what` if it does not
/// (after killing it), so a test of "stops at once" can never hang the suite.
pub fn exit_within(
    child: &mut std::process::Child,
    since: std::time::Instant,
    limit: std::time::Duration,
    what: &str,
) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if since.elapsed() > limit {
            let _ = child.kill();
            panic!("{what}: still running {limit:?} on");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// meshcheck's API client on a running simulation, as a run makes it: the client, a [`Live`] over
/// the embedded default scenario with its evidence in a temporary folder (kept alive by the
/// returned guard).
///
/// [`Live`]: meshcheck::cluster::live::Live
pub async fn live_on(sim: &crate::sim::Sim) -> (kube::Client, meshcheck::cluster::live::Live, tempfile::TempDir) {
    let kubeconfig = kube::config::Kubeconfig::read_from(sim.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let evidence = meshcheck::evidence::Evidence::new(dir.path().join("evidence"));
    let scenario = meshcheck::scenario::Scenario::embedded_default();
    let live = meshcheck::cluster::live::Live::new(client.clone(), scenario, dir.path().into(), evidence).unwrap();
    (client, live, dir)
}

/// A writer whose bytes the test can read back: a progress reporter's, a tracing subscriber's.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// What was written so far (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
