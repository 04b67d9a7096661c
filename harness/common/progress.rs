//! Progress of the long phases on the terminal: a spinner line with the running step and its
//! elapsed time when stderr is a terminal, plain timestamped lines otherwise (CI logs, files).
//! Steps run side by side, so several can be in flight: each ends by its label, and the spinner
//! shows the oldest with how many more run beside it.
//! Only presentation: the run folder is the record, so a failed write (a closed pipe) is ignored.

use std::{
    io::{IsTerminal, Write},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// When the console may use terminal escapes: colours in the log, the redrawn spinner line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Color {
    /// Only when stderr is a terminal and `NO_COLOR` is unset or empty (no-color.org).
    #[default]
    Auto,
    /// Always, even into a file or a pipe.
    Always,
    /// Never: plain text for logs that are read later.
    Never,
}

impl Color {
    /// Whether escapes are used on stderr.
    pub fn enabled(self) -> bool {
        match self {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }
}

/// Sends `tracing` events to stderr, filtered by `MESHCHECK_LOG` (an `EnvFilter`, `info` by
/// default), coloured only as `color` allows. Both entries call it, `meshcheck` and the conformance
/// suite, so the variable means the same under `cargo test --test conformance` as on the command line.
pub fn init_logging(color: Color) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHCHECK_LOG").unwrap_or_else(|_| "info".into());
    // A second call (a test that calls it twice) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color.enabled())
        .with_writer(std::io::stderr)
        .try_init();
}

const FRAMES: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A redrawn spinner line.
    Spinner,
    /// One timestamped line per start and end.
    Lines,
    /// Nothing (tests).
    Quiet,
}

impl Style {
    /// Spinner on a terminal, lines otherwise; `MESHCHECK_PROGRESS=lines|spinner|quiet` overrides.
    pub fn detect() -> Style {
        Style::detect_with(Color::Auto)
    }

    /// As [`Style::detect`], the spinner only where `color` allows terminal escapes (it redraws
    /// its line with them): `--color never` gives plain lines on a terminal too.
    pub fn detect_with(color: Color) -> Style {
        match std::env::var("MESHCHECK_PROGRESS").as_deref() {
            Ok("lines") => Style::Lines,
            Ok("spinner") => Style::Spinner,
            Ok("quiet") => Style::Quiet,
            _ if color != Color::Never && std::io::stderr().is_terminal() => Style::Spinner,
            _ => Style::Lines,
        }
    }
}

struct Current {
    label: String,
    started: Instant,
}

/// Reports steps as they start and end.
pub struct Progress {
    style: Style,
    /// The steps in flight, oldest first.
    current: Arc<Mutex<Vec<Current>>>,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Progress {
    /// Progress to stderr in `style`.
    pub fn new(style: Style) -> Progress {
        Progress::to_writer(style, Box::new(std::io::stderr()))
    }

    /// Progress to any writer (tests read it back).
    pub fn to_writer(style: Style, out: Box<dyn Write + Send>) -> Progress {
        let progress = Progress {
            style,
            current: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            out: Arc::new(Mutex::new(out)),
        };
        if style == Style::Spinner {
            let (current, stop, out) = (progress.current.clone(), progress.stop.clone(), progress.out.clone());
            std::thread::spawn(move || {
                let mut frame = 0;
                while !stop.load(Ordering::SeqCst) {
                    let current = current.lock().expect("progress lock");
                    if let Some(c) = current.first() {
                        let more = match current.len() - 1 {
                            0 => String::new(),
                            n => format!(" and {n} more"),
                        };
                        let mut out = out.lock().expect("progress lock");
                        let _ = write!(
                            out,
                            "\r\x1b[2K{} {} ({}){more}",
                            FRAMES[frame % FRAMES.len()],
                            c.label,
                            elapsed(c.started.elapsed())
                        );
                        let _ = out.flush();
                        frame += 1;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        progress
    }

    /// A step starts.
    pub fn begin(&self, label: &str) {
        self.current.lock().expect("progress lock").push(Current { label: label.to_string(), started: Instant::now() });
        if self.style == Style::Lines {
            self.line(&format!("{label} …"));
        }
    }

    /// The step begun with `label` ends; `outcome` is a short word (`done`, `failed`, `pass`, …).
    pub fn end(&self, label: &str, outcome: &str) {
        let c = {
            let mut current = self.current.lock().expect("progress lock");
            let Some(at) = current.iter().position(|c| c.label == label) else { return };
            current.remove(at)
        };
        let took = elapsed(c.started.elapsed());
        match self.style {
            Style::Spinner => {
                let mut out = self.out.lock().expect("progress lock");
                let _ = writeln!(
                    out,
                    "\r\x1b[2K{} {} ({took})",
                    if outcome == "done" || outcome == "pass" { '✔' } else { '✘' },
                    c.label
                );
            }
            Style::Lines => self.line(&format!("{} {outcome} in {took}", c.label)),
            Style::Quiet => {}
        }
    }

    fn line(&self, text: &str) {
        let mut out = self.out.lock().expect("progress lock");
        let _ = writeln!(out, "[{}] {text}", crate::common::util::now_rfc3339());
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Writes one line to stderr and ignores a failure: `eprintln!` panics when stderr is a closed pipe
/// (`meshcheck run 2>&1 | head` once `head` has its lines), and a panic would skip the cleanup
/// and the report.
pub fn stderr_line(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{}", crate::common::util::printable(&line.to_string()));
}

fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 { format!("{}m{:02}s", s / 60, s % 60) } else { format!("{:.1}s", d.as_secs_f64()) }
}
