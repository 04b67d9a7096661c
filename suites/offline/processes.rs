//! External commands as real processes with real signals: a stopped command's whole process group
//! gets SIGTERM, then SIGKILL after the grace period, and what it printed is kept; a closed stderr
//! pipe does not panic `meshcheck run`; an HTTP error names its cause.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use meshcheck::{
    cluster::live::LiveError,
    cluster::runner::{CommandError, OutputTails, Runner},
    plan::CommandSpec,
};
use serde_json::Value;

/// Writes an executable `sh` script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs `body` as a stand-in that hangs past its 1 s deadline. Its argument is a file where it
/// writes the pid of the child it started. Returns the error, the command record and that pid.
fn hang_past_deadline(runner: &Runner, dir: &Path, body: &str) -> (CommandError, Value, u32) {
    let stand_in = script(dir, "stand-in", body);
    let pid_file = dir.join("child.pid");
    let spec = CommandSpec::new(stand_in.to_str().unwrap(), [pid_file.to_str().unwrap()], Duration::from_secs(1));
    let err = runner.run(&spec).unwrap_err();
    let record = std::fs::read_to_string(dir.join("commands/001-stand-in.json")).unwrap();
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    (err, serde_json::from_str(&record).unwrap(), pid)
}

/// Whether `pid` is a live process: it has a `/proc` entry and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may itself hold spaces.
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start()).unwrap_or_default();
    !state.starts_with('Z')
}

fn timed_out_output(err: &CommandError) -> &OutputTails {
    match err {
        CommandError::TimedOut { after_secs: 1, output, .. } => output,
        other => panic!("expected a timeout, got: {other}"),
    }
}

#[test]
fn a_command_past_its_deadline_gets_sigterm_on_its_whole_group_and_keeps_what_it_printed() {
    let dir = tempfile::tempdir().unwrap();
    let (err, record, child) = hang_past_deadline(
        &Runner::new(dir.path()),
        dir.path(),
        "trap 'echo \"stand-in: got SIGTERM\" >&2; exit 143' TERM\n\
         echo 'stand-in: pulling images' >&2\n\
         echo 'stand-in: 2 of 3 nodes ready'\n\
         sleep 300 &\n\
         echo $! > \"$1\"\n\
         wait",
    );
    let output = timed_out_output(&err);
    assert!(output.stderr.contains("stand-in: pulling images"), "partial stderr is in the error: {err}");
    assert!(output.stderr.contains("stand-in: got SIGTERM"), "the group got SIGTERM: {err}");
    assert!(output.stdout.contains("2 of 3 nodes ready"), "partial stdout is in the error: {err}");
    let text = err.to_string();
    assert!(text.contains("did not finish within 1s") && text.contains("stand-in: got SIGTERM"), "{text}");
    assert_eq!(record["timed_out"], true, "{record}");
    assert_eq!(record["stopped_with"], "term", "SIGTERM was enough: {record}");
    assert_eq!(record["exit_code"], 143, "the trap's exit code: {record}");
    assert!(record["stderr"].as_str().unwrap().contains("stand-in: got SIGTERM"), "{record}");
    assert!(record["stdout"].as_str().unwrap().contains("2 of 3 nodes ready"), "{record}");
    assert!(!alive(child), "the stand-in's child {child} survived SIGTERM to its group");
}

#[test]
fn a_command_that_ignores_sigterm_is_killed_with_its_group_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    // An ignored signal stays ignored across fork and exec, so the child ignores SIGTERM too.
    let (err, record, child) = hang_past_deadline(
        &Runner::with_stop_grace(dir.path(), Duration::from_millis(200)),
        dir.path(),
        "trap '' TERM\n\
         echo 'stand-in: ignoring SIGTERM' >&2\n\
         sleep 300 &\n\
         echo $! > \"$1\"\n\
         wait",
    );
    let output = timed_out_output(&err);
    assert!(output.stderr.contains("stand-in: ignoring SIGTERM"), "partial stderr is in the error: {err}");
    assert_eq!(record["stopped_with"], "kill", "{record}");
    assert_eq!(record["exit_code"], Value::Null, "killed by a signal: {record}");
    assert!(record["stderr"].as_str().unwrap().contains("stand-in: ignoring SIGTERM"), "{record}");
    assert!(!alive(child), "the stand-in's child {child} survived SIGKILL to its group");
}

#[test]
fn a_command_that_finishes_is_not_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::new(dir.path());
    let out = runner.run(&CommandSpec::new("sh", ["-c", "echo out; echo err >&2"], Duration::from_secs(5))).unwrap();
    assert_eq!(out, "out\n");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("commands/001-sh.json")).unwrap()).unwrap();
    assert_eq!(record["exit_code"], 0, "{record}");
    assert!(record.get("stopped_with").is_none(), "{record}");
    assert_eq!(record["stderr"], "err\n", "{record}");
}

/// `meshcheck run 2>&1 | head`: once `head` has its lines the pipe is closed, and every later
/// write to stderr fails with EPIPE. The run must still fail or pass on its own terms, clean up and
/// write its report, not panic (exit code 101).
#[test]
fn a_closed_stderr_pipe_does_not_panic_the_run() {
    let bin = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let calls = bin.path().join("calls.log");
    let stand_in = |tool: &str, body: &str| {
        script(bin.path(), tool, &format!("echo \"{tool} $*\" >> \"{}\"\n{body}", calls.display()));
    };
    stand_in("docker", "exit 0");
    // k3d's real version output (k3d-io/k3d cmd/root.go), so preflight lets the run reach `cluster create`.
    stand_in(
        "k3d",
        "case \"$1\" in version) printf 'k3d version v5.8.3\\nk3s version v1.33.6-k3s1 (default)\\n';; *) exit 0;; esac",
    );
    stand_in(
        "helm",
        "case \"$1 $2\" in \"version --short\") echo v3.20.0;; *) echo 'Error: INSTALLATION FAILED: boom' >&2; exit 1;; esac",
    );
    let scenario = work.path().join("s.yaml");
    let text = std::fs::read_to_string(crate::common::root().join("scenarios/ambient-k3d.yaml")).unwrap();
    std::fs::write(&scenario, crate::common::with_answering_upstream(&text)).unwrap();
    let (closed, stderr) = std::io::pipe().unwrap();
    drop(closed);
    let out = Command::new(env!("CARGO_BIN_EXE_meshcheck"))
        .args(["run", "--scenario"])
        .arg(&scenario)
        .arg("--reports")
        .arg(work.path().join("reports"))
        .env("PATH", format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap()))
        .env("MESHCHECK_PROGRESS", "lines")
        .stdin(Stdio::null())
        .stderr(stderr)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(101), "meshcheck panicked: {stdout}");
    assert_eq!(out.status.code(), Some(1), "the failed install fails the run: {stdout}");
    assert!(!stdout.contains("panicked"), "{stdout}");
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert!(calls.contains("k3d cluster delete meshcheck-"), "cleanup ran: {calls}");
    let latest = work.path().join("reports/latest");
    let junit = std::fs::read_to_string(latest.join("junit.xml")).unwrap();
    assert!(junit.contains("INSTALLATION FAILED: boom"), "the report is written: {junit}");
    let run = std::fs::read_to_string(latest.join("run.json")).unwrap();
    assert!(!run.contains("panicked"), "{run}");
    // Issue 26: the shipped scenario fixes no host port, so the run took a free one: plan.json
    // names it and k3d was asked to map exactly it (not 8080, which another run may hold).
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(latest.join("plan.json")).unwrap()).unwrap();
    let port = plan["host_port"].as_u64().expect("the run chose a host port");
    assert!(calls.contains(&format!("-p 127.0.0.1:{port}:30080@server:0")), "{calls}");
}

/// A local port with nothing listening: bound, read, released.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn an_http_error_names_its_cause() {
    let port = closed_port();
    // The OS's own wording ("Connection refused (os error 111)" on Linux), from a plain connect.
    let refused = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err().to_string();
    let url = format!("http://127.0.0.1:{port}/");

    let err = reqwest::get(&url).await.unwrap_err();
    assert!(!err.to_string().contains(&refused), "reqwest alone does not say why: {err}");
    let text = LiveError::http(format!("GET {url}"), &err).to_string();
    assert!(text.contains("error sending request") && text.contains(&refused), "{text}");

    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let request = http::Request::get("/api/v1/nodes").body(Vec::new()).unwrap();
    let source = client.request_text(request).await.unwrap_err();
    let text = LiveError::Kube { what: "GET /api/v1/nodes".into(), source }.to_string();
    assert!(text.starts_with("GET /api/v1/nodes: ") && text.contains(&refused), "{text}");
    assert_eq!(text.matches("client error (Connect)").count(), 1, "causes are not repeated: {text}");
}

/// A flag with a separate value (`--password X`) is redacted in the command record's argv and in
/// its printed form, and a Secret the command prints is redacted before its output is cut.
#[test]
fn a_command_record_keeps_no_secret_from_its_arguments_or_output() {
    let dir = tempfile::tempdir().unwrap();
    let stand_in =
        script(dir.path(), "stand-in", "printf 'apiVersion: v1\\nkind: Secret\\ndata:\\n  token: c2VjcmV0LXZhbHVl\\n'");
    let spec = CommandSpec::new(
        stand_in.to_str().unwrap(),
        ["--password", "hunter2", "--set", "grafana.adminPassword=swordfish"],
        Duration::from_secs(10),
    );
    Runner::new(dir.path()).run(&spec).unwrap();
    let record = std::fs::read_to_string(dir.path().join("commands/001-stand-in.json")).unwrap();
    for secret in ["hunter2", "swordfish", "c2VjcmV0LXZhbHVl"] {
        assert!(!record.contains(secret), "{secret} leaked into the command record:\n{record}");
    }
    assert!(record.contains("--password"), "the flag itself stays: {record}");
}

/// Issue 26: a tool that prints without end costs a bounded tail, not its whole output in memory
/// and redaction. 64 MiB on one line, then a secret and a last line: the line is dropped whole (a
/// fragment could be a secret whose name was cut away), what follows is kept and redacted, and the
/// record says how much was not kept.
#[test]
fn a_flood_of_output_keeps_a_bounded_redacted_tail() {
    let dir = tempfile::tempdir().unwrap();
    let flood = "head -c 67108864 /dev/zero | tr '\\0' x; echo; echo 'password: hunter2'; echo last";
    let runner = Runner::new(dir.path());
    let out = runner.run(&CommandSpec::new("sh", ["-c", flood], Duration::from_secs(60))).unwrap();
    assert!(out.len() < 512 * 1024, "returned {} bytes", out.len());
    assert!(out.starts_with("[meshcheck: the first 67108865 bytes were not kept]\n"), "{}", &out[..out.len().min(200)]);
    assert!(out.ends_with("password: [REDACTED]\nlast\n"), "{out}");
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("commands/001-sh.json")).unwrap()).unwrap();
    let stdout = record["stdout"].as_str().unwrap();
    assert!(!stdout.contains("hunter2") && stdout.ends_with("last\n"), "{stdout}");
    // Without a flood nothing is dropped or marked (the control).
    let out = runner.run(&CommandSpec::new("sh", ["-c", "echo 'password: hunter2'"], Duration::from_secs(5))).unwrap();
    assert_eq!(out, "password: hunter2\n", "a caller reads a short output as printed");
}

/// A fake API server answering `GET /version`, and an HTTP CONNECT proxy that tunnels every
/// CONNECT to it and records what was asked. Returns (api port, proxy port, the CONNECT lines).
async fn api_behind_a_proxy() -> (u16, u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_port = api.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = api.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = r#"{"major":"1","minor":"35","gitVersion":"v1.35.0"}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = proxy.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = proxy.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && client.read_exact(&mut byte).await.is_ok() {
                    head.push(byte[0]);
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
                record.lock().unwrap().push(line);
                let mut upstream = tokio::net::TcpStream::connect(("127.0.0.1", api_port)).await.unwrap();
                client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (api_port, proxy_port, seen)
}

/// Issue 26: with HTTPS_PROXY set (corporate runners), an API server the proxy must carry is
/// reached through it with CONNECT, and a loopback one (kind's, k3d's) directly, as kubectl and
/// helm of the same run do; preflight's message names the proxy. Without kube's http-proxy
/// feature the first client cannot even be built, and without the loopback rule the second one
/// goes to the proxy.
#[tokio::test]
async fn the_api_is_reached_through_https_proxy_except_on_loopback() {
    let (api_port, proxy_port, seen) = api_behind_a_proxy().await;
    let mut remote = kube::Config::new("http://kube.example.invalid:6443".parse().unwrap());
    remote.proxy_url = Some(format!("http://127.0.0.1:{proxy_port}").parse().unwrap());
    let note = meshcheck::cluster::live::proxy_note(&remote).unwrap();
    assert!(note.contains(&format!("through the proxy http://127.0.0.1:{proxy_port}")), "{note}");
    let version = meshcheck::cluster::live::client_for(remote).unwrap().apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.35.0");
    assert_eq!(seen.lock().unwrap().as_slice(), ["CONNECT kube.example.invalid:6443 HTTP/1.1"]);

    let mut local = kube::Config::new(format!("http://127.0.0.1:{api_port}").parse().unwrap());
    local.proxy_url = Some(format!("http://127.0.0.1:{}", closed_port()).parse().unwrap());
    assert_eq!(meshcheck::cluster::live::proxy_note(&local), None);
    let version = meshcheck::cluster::live::client_for(local).unwrap().apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.35.0");
    assert_eq!(seen.lock().unwrap().len(), 1, "the loopback API server is not proxied");
}
