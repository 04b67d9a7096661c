//! The one way meshcheck runs an external command (kind, k3d, helm, docker, istioctl).
//!
//! Every call is recorded in `commands/NNN-<tool>.json` of the run folder (argv, working directory,
//! start, duration, exit code, redacted output tails), has a deadline, and a failure becomes an error
//! that names the command and shows the tail of its stderr. Ctrl-C cancels a token that stops the
//! command in flight, so the run can still clean up and write its report.
//!
//! Each command runs in a process group of its own, so stopping it reaches everything it started
//! (`kind` and `k3d` run `docker`, `helm` runs plugins): on its deadline or Ctrl-C the group gets
//! SIGTERM, a grace period ([`STOP_GRACE`]) to exit, then SIGKILL. Its own group also keeps the
//! terminal's Ctrl-C away from it: meshcheck decides when and how it stops. Whatever it printed
//! until then is kept in its record and quoted in the error.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rustix::process::{Pid, Signal};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _},
    process::Child,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use serde::{Deserialize, Serialize};

use crate::{
    common::util::{tail, write_atomic},
    plan::CommandSpec,
    redact::{redact, redact_argv},
};

/// Cancelled by the Ctrl-C handler: commands in flight are stopped and report
/// [`CommandError::Interrupted`], awaited API calls are abandoned. Never reset: an interrupted
/// process only cleans up and reports.
static INTERRUPT: LazyLock<CancellationToken> = LazyLock::new(CancellationToken::new);

/// Whether Ctrl-C (or SIGTERM, SIGHUP) arrived.
pub fn is_interrupted() -> bool {
    INTERRUPT.is_cancelled()
}

/// Installs the handler that cancels the interrupt token ([`interrupted`], [`is_interrupted`]) on
/// Ctrl-C (SIGINT), SIGTERM (what GitLab, Jenkins and Kubernetes-hosted CI send on cancel) and
/// SIGHUP (a closed terminal): the command in flight is killed, awaited API calls are abandoned,
/// cleanup runs and the report is written (exit code 130). Both `meshcheck run` and the
/// conformance entry point install it.
///
/// A second signal exits at once with `second_exit_code` (cleanup itself is stuck), saying what
/// may be left ([`set_left_behind`]).
pub fn install_interrupt_handler(second_exit_code: u8) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (mut int, mut term, mut hup) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    std::thread::spawn(move || {
        rt.block_on(async {
            let mut next = async || {
                tokio::select! {
                    _ = int.recv() => "Ctrl-C",
                    _ = term.recv() => "SIGTERM",
                    _ = hup.recv() => "SIGHUP",
                }
            };
            let name = next().await;
            crate::common::progress::stderr_line(format_args!(
                "interrupted ({name}): stopping, cleaning up and writing the report (again to stop at once)"
            ));
            INTERRUPT.cancel();
            // A second signal means cleanup itself is stuck (a wedged container engine): leave now,
            // saying what may be left and how to remove it.
            let name = next().await;
            let left = LEFT_BEHIND.lock().map(|l| l.clone()).unwrap_or_default();
            crate::common::progress::stderr_line(format_args!(
                "interrupted again ({name}): stopping now, without finishing cleanup or the report; {}",
                left.unwrap_or_else(|| "what the run created may be left".into())
            ));
            std::process::exit(i32::from(second_exit_code));
        })
    });
    Ok(())
}

/// What a run may leave if it is stopped before its cleanup finishes, and how to remove it: said on
/// a second Ctrl-C ([`install_interrupt_handler`]). The session sets it once it knows its plan.
static LEFT_BEHIND: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Sets what a second Ctrl-C says may be left.
pub fn set_left_behind(hint: String) {
    if let Ok(mut left) = LEFT_BEHIND.lock() {
        *left = Some(hint);
    }
}

/// Resolves when Ctrl-C arrives, for racing against a future that has no deadline of its own.
pub async fn interrupted() {
    INTERRUPT.cancelled().await
}

/// Lines of output quoted in an error.
const OUTPUT_TAIL_LINES: usize = 15;
/// Bytes of output kept in a command record.
const OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// How long a stopped command's process group has between SIGTERM and SIGKILL.
///
/// 10 s is the default of `docker stop --timeout` (docs.docker.com/reference/cli/docker/container/stop),
/// the convention of the container tools meshcheck drives. `helm install`/`upgrade` catch SIGTERM
/// and cancel the release's context (helm/helm `cmd/helm/install.go`, `runInstall`:
/// `signal.Notify(cSignal, os.Interrupt, syscall.SIGTERM)`), which needs a moment, not minutes. It
/// also leaves two thirds of the 30 s a Kubernetes-hosted CI job gets between SIGTERM and SIGKILL
/// (`terminationGracePeriodSeconds`' default, Kubernetes PodSpec reference) for meshcheck's own
/// cleanup and report.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a stopped command's output is still read once its process group is gone. A process
/// that left the group (`setsid`, a daemon) can hold the pipes open forever; what it printed after
/// this is not waited for.
const DRAIN_AFTER_STOP: Duration = Duration::from_secs(2);

/// The signal that ended a command meshcheck stopped (deadline or Ctrl-C).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopSignal {
    /// Its process group exited within the grace period after SIGTERM.
    Term,
    /// Something in its process group outlived the grace period and got SIGKILL.
    Kill,
}

/// What a command did, as recorded in the run folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandRecord {
    /// Program and arguments (redacted).
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// Exit code; `None` when killed, timed out or not started.
    pub exit_code: Option<i32>,
    /// Whether the deadline passed.
    pub timed_out: bool,
    /// Whether Ctrl-C stopped it.
    #[serde(default)]
    pub interrupted: bool,
    /// How meshcheck stopped it, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_with: Option<StopSignal>,
    /// Tail of stdout, redacted; for a stopped command, what it printed until it ended.
    pub stdout: String,
    /// Tail of stderr, redacted; for a stopped command, what it printed until it ended.
    pub stderr: String,
}

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program is not on PATH.
    #[error("`{program}` was not found on PATH (needed for: {command})")]
    NotFound {
        /// Program.
        program: String,
        /// Full command line.
        command: String,
    },
    /// It exited non-zero.
    #[error("`{command}` failed with exit code {code}; stderr ends with:\n{stderr_tail}")]
    Failed {
        /// Full command line.
        command: String,
        /// Exit code (-1 when killed by a signal).
        code: i32,
        /// Last lines of stderr.
        stderr_tail: String,
    },
    /// It ran past its deadline and was stopped.
    #[error("`{command}` did not finish within {after_secs}s and was killed{}", quoted_output(.output))]
    TimedOut {
        /// Full command line.
        command: String,
        /// Deadline in seconds.
        after_secs: u64,
        /// What it printed until it ended.
        output: OutputTails,
    },
    /// Ctrl-C arrived while it ran, and it was stopped.
    #[error("`{command}` was interrupted (Ctrl-C, SIGTERM or SIGHUP){}", quoted_output(.output))]
    Interrupted {
        /// Full command line.
        command: String,
        /// What it printed until it ended.
        output: OutputTails,
    },
    /// It could not be started or recorded.
    #[error("`{command}`: {source}")]
    Io {
        /// Full command line.
        command: String,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The last lines (redacted) a stopped command wrote to stdout and stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTails {
    /// Last lines of stdout.
    pub stdout: String,
    /// Last lines of stderr.
    pub stderr: String,
}

/// `; stderr ends with: …` and `stdout ends with: …` for the streams that have anything.
fn quoted_output(output: &OutputTails) -> String {
    let quoted: Vec<String> = [("stderr", &output.stderr), ("stdout", &output.stdout)]
        .into_iter()
        .filter(|(_, text)| !text.is_empty())
        .map(|(name, text)| format!("{name} ends with:\n{text}"))
        .collect();
    if quoted.is_empty() { String::new() } else { format!("; {}", quoted.join("\n")) }
}

/// Runs commands and records them under a run folder's `commands/`.
#[derive(Debug, Clone)]
pub struct Runner {
    dir: PathBuf,
    counter: Arc<AtomicUsize>,
    stop_grace: Duration,
}

impl Runner {
    /// A runner recording into `<run_dir>/commands`, giving stopped commands [`STOP_GRACE`].
    pub fn new(run_dir: &Path) -> Runner {
        Runner::with_stop_grace(run_dir, STOP_GRACE)
    }

    /// A runner whose stopped commands get `stop_grace` between SIGTERM and SIGKILL (tests use a
    /// short one).
    pub fn with_stop_grace(run_dir: &Path, stop_grace: Duration) -> Runner {
        Runner { dir: run_dir.join("commands"), counter: Arc::new(AtomicUsize::new(0)), stop_grace }
    }

    /// Runs a command to completion (blocking), honouring its deadline and Ctrl-C.
    pub fn run(&self, spec: &CommandSpec) -> Result<String, CommandError> {
        self.run_inner(spec, true)
    }

    /// Like [`Runner::run`], but not stopped by Ctrl-C: for cleanup after an interrupt.
    pub fn run_ignoring_interrupt(&self, spec: &CommandSpec) -> Result<String, CommandError> {
        self.run_inner(spec, false)
    }

    fn run_inner(&self, spec: &CommandSpec, interruptible: bool) -> Result<String, CommandError> {
        let command = redact(&spec.display());
        // `run` is called from blocking code (the steps' `spawn_blocking`, the preflight, `gc`): a
        // runtime of the command's own lets it wait on the exit, the deadline and Ctrl-C at once.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| CommandError::Io { command: command.clone(), source })?;
        runtime.block_on(self.run_async(spec, command, interruptible))
    }

    async fn run_async(
        &self,
        spec: &CommandSpec,
        command: String,
        interruptible: bool,
    ) -> Result<String, CommandError> {
        let started = Instant::now();
        let started_at = crate::common::util::now_rfc3339();
        let spawned = tokio::process::Command::new(&spec.program)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let ending = Ending { code: None, timed_out: false, interrupted: false, stopped_with: None };
                self.record(spec, &started_at, started, ending, "", &redact(&e.to_string()));
                return Err(CommandError::NotFound { program: spec.program.clone(), command });
            }
            Err(source) => return Err(CommandError::Io { command, source }),
        };
        let io = |source| CommandError::Io { command: command.clone(), source };
        // The leader's pid is its group's id (`process_group(0)`); read before it can be reaped.
        let group = child
            .id()
            .and_then(|id| Pid::from_raw(i32::try_from(id).ok()?))
            .ok_or_else(|| io(std::io::ErrorKind::NotFound.into()))?;
        let mut stdout = Capture::start(child.stdout.take().expect("stdout is piped"));
        let mut stderr = Capture::start(child.stderr.take().expect("stderr is piped"));
        let deadline = tokio::time::Instant::from_std(started + Duration::from_secs(spec.timeout_secs));
        // Done when it exited and both pipes reached their end (every process holding them closed them).
        let finished = async {
            let status = child.wait().await;
            stdout.finish().await;
            stderr.finish().await;
            status
        };
        let (mut status, timed_out, interrupted) = tokio::select! {
            status = finished => (Some(status.map_err(io)?), false, false),
            () = tokio::time::sleep_until(deadline) => (None, true, false),
            () = INTERRUPT.cancelled(), if interruptible => (None, false, true),
        };
        let stopped_with = if timed_out || interrupted {
            let signal = stop_group(&mut child, group, &mut status, self.stop_grace).await.map_err(io)?;
            let _ = tokio::time::timeout(DRAIN_AFTER_STOP, async {
                stdout.finish().await;
                stderr.finish().await;
            })
            .await;
            Some(signal)
        } else {
            None
        };
        let (stdout, stderr) = (stdout.bytes(), stderr.bytes());
        let (stdout_text, stderr_text) = (redacted_output(&stdout), redacted_output(&stderr));
        let code = status.and_then(|s| s.code());
        self.record(
            spec,
            &started_at,
            started,
            Ending { code, timed_out, interrupted, stopped_with },
            &stdout_text,
            &stderr_text,
        );
        let tail_of = |text: &str| tail_lines(text, OUTPUT_TAIL_LINES);
        if interrupted {
            let output = OutputTails { stdout: tail_of(&stdout_text), stderr: tail_of(&stderr_text) };
            return Err(CommandError::Interrupted { command, output });
        }
        if timed_out {
            let output = OutputTails { stdout: tail_of(&stdout_text), stderr: tail_of(&stderr_text) };
            return Err(CommandError::TimedOut { command, after_secs: spec.timeout_secs, output });
        }
        match status {
            // What a caller reads (a tool's version, a list of clusters) is small; a cut one says so.
            Some(s) if s.success() && stdout.1 == 0 => Ok(String::from_utf8_lossy(&stdout.0).into_owned()),
            Some(s) if s.success() => Ok(stdout_text),
            _ => Err(CommandError::Failed { command, code: code.unwrap_or(-1), stderr_tail: tail_of(&stderr_text) }),
        }
    }

    fn record(
        &self,
        spec: &CommandSpec,
        started_at: &str,
        started: Instant,
        ending: Ending,
        stdout: &str,
        stderr: &str,
    ) {
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let tool = Path::new(&spec.program).file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let record = CommandRecord {
            argv: redact_argv(
                &std::iter::once(spec.program.clone()).chain(spec.args.iter().cloned()).collect::<Vec<_>>(),
            ),
            cwd: std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
            started_at: started_at.to_string(),
            duration_secs: started.elapsed().as_secs_f64(),
            exit_code: ending.code,
            timed_out: ending.timed_out,
            interrupted: ending.interrupted,
            stopped_with: ending.stopped_with,
            // Redacted whole (what was kept), then cut: a cut could separate a Secret's values from
            // the `data:` line that marks them.
            stdout: tail(stdout, OUTPUT_TAIL_BYTES),
            stderr: tail(stderr, OUTPUT_TAIL_BYTES),
        };
        let path = self.dir.join(format!("{n:03}-{tool}.json"));
        if let Err(e) = write_atomic(&path, &serde_json::to_vec_pretty(&record).expect("record serializes")) {
            tracing::warn!("could not record command in {}: {e}", path.display());
        }
    }
}

/// Stops the process group `child` leads: SIGTERM, up to `grace` for the whole group to be gone,
/// then SIGKILL. Reaps `child` into `status`. The group is gone once `kill(-pgid, 0)` finds no
/// member (ESRCH), for which there is no event to wait on; the leader counts until it is reaped,
/// so it is reaped while waiting.
async fn stop_group(
    child: &mut Child,
    group: Pid,
    status: &mut Option<ExitStatus>,
    grace: Duration,
) -> std::io::Result<StopSignal> {
    signal_group(group, Signal::TERM)?;
    let until = Instant::now() + grace;
    loop {
        if status.is_none() {
            *status = child.try_wait()?;
        }
        if status.is_some() && rustix::process::test_kill_process_group(group).is_err() {
            return Ok(StopSignal::Term);
        }
        let now = Instant::now();
        if now >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10).min(until - now)).await;
    }
    signal_group(group, Signal::KILL)?;
    if status.is_none() {
        *status = Some(child.wait().await?);
    }
    Ok(StopSignal::Kill)
}

/// Sends `signal` to every process of `group`; a group that is already gone is not an error.
fn signal_group(group: Pid, signal: Signal) -> std::io::Result<()> {
    match rustix::process::kill_process_group(group, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Most output kept of one stream while a command runs: its end, from the start of a line. A tool
/// that prints hundreds of MB costs this much memory and redaction time, not the whole.
const CAPTURE_MAX: usize = 4 * OUTPUT_TAIL_BYTES;

/// The end of a stream, and how many bytes before it were not kept.
#[derive(Debug, Default)]
struct Kept {
    bytes: Vec<u8>,
    dropped: u64,
    /// Inside a line whose start was dropped: the rest of it goes too.
    mid_line: bool,
}

impl Kept {
    /// Appends, then (past twice the bound) drops the front down to [`CAPTURE_MAX`], cutting at a
    /// line start; a line longer than that is dropped whole, to its end, since a fragment of it
    /// could be a secret whose name was cut away.
    fn push(&mut self, mut chunk: &[u8]) {
        if self.mid_line {
            let Some(end) = chunk.iter().position(|&b| b == b'\n') else {
                self.dropped += chunk.len() as u64;
                return;
            };
            self.dropped += end as u64 + 1;
            chunk = &chunk[end + 1..];
            self.mid_line = false;
        }
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() <= 2 * CAPTURE_MAX {
            return;
        }
        let cut = self.bytes.len() - CAPTURE_MAX;
        let from = match self.bytes[cut..].iter().position(|&b| b == b'\n') {
            Some(i) => cut + i + 1,
            None => {
                self.mid_line = true;
                self.bytes.len()
            }
        };
        self.dropped += from as u64;
        self.bytes.drain(..from);
    }
}

/// One of a command's output pipes, read to its end by a task of its own so that what the
/// command printed is there even when it has to be stopped.
struct Capture {
    kept: Arc<Mutex<Kept>>,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(mut pipe: impl AsyncRead + Unpin + Send + 'static) -> Capture {
        let kept = Arc::new(Mutex::new(Kept::default()));
        let sink = kept.clone();
        let reader = tokio::spawn(async move {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk).await {
                    Ok(0) => break,
                    Ok(n) => sink.lock().expect("capture lock").push(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        });
        Capture { kept, reader: Some(reader) }
    }

    /// Resolves once the pipe reached its end; again at once after that.
    async fn finish(&mut self) {
        if let Some(reader) = self.reader.as_mut() {
            let _ = reader.await;
            self.reader = None;
        }
    }

    /// What was kept so far, and how many bytes before it were not.
    fn bytes(&self) -> (Vec<u8>, u64) {
        let kept = self.kept.lock().expect("capture lock");
        (kept.bytes.clone(), kept.dropped)
    }
}

/// Captured output as text for a record or an error, redacted. When its beginning was dropped the
/// text may have lost the `kind: Secret` line that makes `data` values secret, so it is redacted as
/// if it held one; a first line says how much is missing.
fn redacted_output((bytes, dropped): &(Vec<u8>, u64)) -> String {
    let text = String::from_utf8_lossy(bytes);
    if *dropped == 0 {
        return redact(&text);
    }
    const AS_SECRET: &str = "kind: Secret\n";
    let red = redact(&format!("{AS_SECRET}{text}"));
    format!("[meshcheck: the first {dropped} bytes were not kept]\n{}", red.strip_prefix(AS_SECRET).unwrap_or(&red))
}

/// How a command ended, for its record.
struct Ending {
    code: Option<i32>,
    timed_out: bool,
    interrupted: bool,
    stopped_with: Option<StopSignal>,
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}
