//! The one way meshcheck runs an external command (kind, k3d, helm, docker, istioctl).
//!
//! Every call is recorded in `commands/NNN-<tool>.json` of the run folder (argv, working directory,
//! start, duration, exit code, redacted output tails), has a deadline, and a failure becomes an error
//! that names the command and shows the tail of its stderr. Ctrl-C sets a flag that stops the
//! command in flight, so the run can still clean up and write its report.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use std::io::Write as _;

use serde::{Deserialize, Serialize};

use crate::util::{redact, tail, write_atomic};

/// Set by the Ctrl-C handler; commands in flight are killed and report [`CommandError::Interrupted`].
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler that sets [`INTERRUPTED`] on Ctrl-C (SIGINT), SIGTERM (what GitLab,
/// Jenkins and Kubernetes-hosted CI send on cancel) and SIGHUP (a closed terminal): the command in
/// flight is killed, awaited API calls are abandoned, cleanup runs and the report is written (exit
/// code 130). Both `meshcheck run` and the conformance entry point install it.
pub fn install_interrupt_handler() -> std::io::Result<()> {
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
            let name = tokio::select! {
                _ = int.recv() => "Ctrl-C",
                _ = term.recv() => "SIGTERM",
                _ = hup.recv() => "SIGHUP",
            };
            // A closed stderr (`meshcheck run 2>&1 | head`) must not stop the cleanup.
            let _ = writeln!(std::io::stderr(), "interrupted ({name}): stopping, cleaning up and writing the report");
            INTERRUPTED.store(true, Ordering::SeqCst);
        })
    });
    Ok(())
}

/// Resolves when [`INTERRUPTED`] is set, for racing against a future that has no deadline of its own.
pub async fn interrupted() {
    while !INTERRUPTED.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lines of stderr quoted in an error.
const STDERR_TAIL_LINES: usize = 15;
/// Bytes of output kept in a command record.
const OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// One command to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSpec {
    /// Program name, looked up on `PATH`.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// Deadline.
    pub timeout_secs: u64,
}

impl CommandSpec {
    /// A command with a deadline.
    pub fn new(program: &str, args: impl IntoIterator<Item = impl Into<String>>, timeout: Duration) -> CommandSpec {
        CommandSpec {
            program: program.to_string(),
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            timeout_secs: timeout.as_secs().max(1),
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> CommandSpec {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The command line as one shell-like string (for messages and plans).
    pub fn display(&self) -> String {
        let mut parts: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
        parts.push(self.program.clone());
        parts.extend(self.args.iter().map(|a| quote(a)));
        parts.join(" ")
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
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
    /// Tail of stdout, redacted.
    pub stdout: String,
    /// Tail of stderr, redacted.
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
    /// It ran past its deadline and was killed.
    #[error("`{command}` did not finish within {after_secs}s and was killed; stderr ends with:\n{stderr_tail}")]
    TimedOut {
        /// Full command line.
        command: String,
        /// Deadline in seconds.
        after_secs: u64,
        /// Last lines of stderr.
        stderr_tail: String,
    },
    /// Ctrl-C arrived while it ran.
    #[error("`{command}` was interrupted (Ctrl-C, SIGTERM or SIGHUP)")]
    Interrupted {
        /// Full command line.
        command: String,
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

/// Runs commands and records them under a run folder's `commands/`.
#[derive(Debug, Clone)]
pub struct Runner {
    dir: PathBuf,
    counter: Arc<AtomicUsize>,
}

impl Runner {
    /// A runner recording into `<run_dir>/commands`.
    pub fn new(run_dir: &Path) -> Runner {
        Runner { dir: run_dir.join("commands"), counter: Arc::new(AtomicUsize::new(0)) }
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
        let started = Instant::now();
        let started_at = crate::util::now_rfc3339();
        let mut expr = duct::cmd(&spec.program, &spec.args).stdout_capture().stderr_capture().stdin_null().unchecked();
        for (k, v) in &spec.env {
            expr = expr.env(k, v);
        }
        let handle = match expr.start() {
            Ok(h) => h,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.record(
                    spec,
                    &started_at,
                    started,
                    Ending { code: None, timed_out: false, interrupted: false },
                    b"",
                    e.to_string().as_bytes(),
                );
                return Err(CommandError::NotFound { program: spec.program.clone(), command });
            }
            Err(source) => return Err(CommandError::Io { command, source }),
        };
        let deadline = started + Duration::from_secs(spec.timeout_secs);
        let (output, timed_out, interrupted) = loop {
            let step = (Instant::now() + Duration::from_millis(100)).min(deadline);
            match handle.wait_deadline(step) {
                Ok(Some(out)) => break (Some(out.clone()), false, false),
                Ok(None) if Instant::now() >= deadline => {
                    handle.kill().ok();
                    break (None, true, false);
                }
                Ok(None) if interruptible && INTERRUPTED.load(Ordering::SeqCst) => {
                    handle.kill().ok();
                    break (None, false, true);
                }
                Ok(None) => continue,
                Err(source) => return Err(CommandError::Io { command, source }),
            }
        };
        let (stdout, stderr, code) = match &output {
            Some(o) => (o.stdout.clone(), o.stderr.clone(), o.status.code()),
            None => (Vec::new(), Vec::new(), None),
        };
        self.record(spec, &started_at, started, Ending { code, timed_out, interrupted }, &stdout, &stderr);
        let stderr_text = redact(&String::from_utf8_lossy(&stderr));
        let stderr_tail = tail_lines(&stderr_text, STDERR_TAIL_LINES);
        if interrupted {
            return Err(CommandError::Interrupted { command });
        }
        if timed_out {
            return Err(CommandError::TimedOut { command, after_secs: spec.timeout_secs, stderr_tail });
        }
        match output {
            Some(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
            _ => Err(CommandError::Failed { command, code: code.unwrap_or(-1), stderr_tail }),
        }
    }

    fn record(
        &self,
        spec: &CommandSpec,
        started_at: &str,
        started: Instant,
        ending: Ending,
        stdout: &[u8],
        stderr: &[u8],
    ) {
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let tool = Path::new(&spec.program).file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let record = CommandRecord {
            argv: std::iter::once(spec.program.clone()).chain(spec.args.iter().cloned()).map(|a| redact(&a)).collect(),
            cwd: std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
            started_at: started_at.to_string(),
            duration_secs: started.elapsed().as_secs_f64(),
            exit_code: ending.code,
            timed_out: ending.timed_out,
            interrupted: ending.interrupted,
            stdout: redact(&tail(&String::from_utf8_lossy(stdout), OUTPUT_TAIL_BYTES)),
            stderr: redact(&tail(&String::from_utf8_lossy(stderr), OUTPUT_TAIL_BYTES)),
        };
        let path = self.dir.join(format!("{n:03}-{tool}.json"));
        if let Err(e) = write_atomic(&path, &serde_json::to_vec_pretty(&record).expect("record serializes")) {
            tracing::warn!("could not record command in {}: {e}", path.display());
        }
    }
}

/// How a command ended, for its record.
struct Ending {
    code: Option<i32>,
    timed_out: bool,
    interrupted: bool,
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}
