//! The `meshcheck` command: plan, preflight, run, judge, compare, images, schema, gc.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use meshcheck::{
    EXIT_BAD_INPUT, EXIT_CHECKS_FAILED, EXIT_COULD_NOT_RUN, EXIT_INTERRUPTED,
    cluster::runner::{CommandError, Runner, is_interrupted},
    common::progress::{Color, stderr_line},
    evidence::Outcome,
    plan,
    plan::CommandSpec,
    report::{self, GateVerdict, RunRecord},
    run::{RunOptions, Session},
    scenario::{self, Scenario},
};

#[derive(Parser)]
#[command(name = "meshcheck", version, about = "Conformance suite for Istio ambient mode on Cilium")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// When to use colour and terminal escapes on stderr: auto (a terminal, and NO_COLOR unset),
    /// always, never.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    color: ColorChoice,
}

#[derive(Clone, Copy, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl From<ColorChoice> for Color {
    fn from(c: ColorChoice) -> Color {
        match c {
            ColorChoice::Auto => Color::Auto,
            ColorChoice::Always => Color::Always,
            ColorChoice::Never => Color::Never,
        }
    }
}

/// How a command prints its result on stdout.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Lines for people.
    Text,
    /// One JSON document for programs.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Print every step a run would take, without touching anything.
    Plan {
        /// Scenario file [default: $MESHCHECK_SCENARIO, else the embedded scenarios/ambient-kind.yaml].
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Check that this machine can do a live run.
    Preflight {
        /// Scenario file [default: $MESHCHECK_SCENARIO, else the embedded scenarios/ambient-kind.yaml].
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Run the whole suite (provision, install, deploy, checks, cleanup).
    Run {
        /// Scenario file [default: $MESHCHECK_SCENARIO, else the embedded scenarios/ambient-kind.yaml].
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Keep the cluster at the end.
        #[arg(long, env = "MESHCHECK_KEEP", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
        keep: bool,
        /// Folder for run folders (the flag wins over $MESHCHECK_REPORTS).
        #[arg(long, env = "MESHCHECK_REPORTS", default_value = "reports")]
        reports: PathBuf,
        /// How many steps (or checks) run at once; 1 runs them one after another, in plan order.
        #[arg(long, env = "MESHCHECK_PARALLEL", default_value_t = meshcheck::run::DEFAULT_PARALLEL)]
        parallel: std::num::NonZeroUsize,
    },
    /// Re-judge a run folder offline and rewrite its junit.xml and summary.md.
    Judge {
        /// The run folder.
        run: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Compare a baseline with a candidate (run folders or junit.xml files): exit 1 on a regression
    /// or when no check passed in the candidate, 3 when no check ran in it.
    Compare {
        /// Baseline.
        baseline: PathBuf,
        /// Candidate.
        candidate: PathBuf,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// List the pinned images a run starts, one per line (for a CI image cache).
    Images {
        /// Scenario file [default: $MESHCHECK_SCENARIO, else the embedded scenarios/ambient-kind.yaml].
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Only the images that run inside the cluster (not the node image): what
        /// `cluster.image_archive` should hold.
        #[arg(long)]
        in_cluster: bool,
        /// Only those whose pods run on every node, the control plane's included (DaemonSets,
        /// Cilium's operator): `cluster.image_archive` beside a `workload_image_archive`.
        #[arg(long, requires = "in_cluster", conflicts_with = "workloads")]
        every_node: bool,
        /// Only those whose pods run on worker nodes alone: `cluster.workload_image_archive`.
        #[arg(long, requires = "in_cluster")]
        workloads: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Print the JSON Schema of the scenario format.
    Schema,
    /// List (and with --delete, delete) leftover meshcheck kind/k3d clusters.
    Gc {
        /// Delete them.
        #[arg(long)]
        delete: bool,
    },
}

fn load(path: Option<PathBuf>) -> Result<Scenario, scenario::ScenarioError> {
    match path {
        Some(p) => Scenario::from_path(&p),
        None => Scenario::from_env(),
    }
}

/// Why a command ended without a verdict of its own, which decides its exit code (README "Exit
/// codes").
enum Stop {
    /// A scenario, run folder or report that cannot be used: [`EXIT_BAD_INPUT`].
    BadInput(anyhow::Error),
    /// meshcheck could not do its work (the run folder, the Ctrl-C handler, a report that cannot be
    /// written): [`EXIT_COULD_NOT_RUN`].
    CouldNotRun(anyhow::Error),
}

impl From<scenario::ScenarioError> for Stop {
    fn from(e: scenario::ScenarioError) -> Stop {
        Stop::BadInput(e.into())
    }
}

/// Sorts an error into a [`Stop`] at the call that knows which kind it is.
trait StopAs<T> {
    fn or_bad_input(self) -> Result<T, Stop>;
    fn or_could_not_run(self) -> Result<T, Stop>;
}

impl<T, E: Into<anyhow::Error>> StopAs<T> for Result<T, E> {
    fn or_bad_input(self) -> Result<T, Stop> {
        self.map_err(|e| Stop::BadInput(e.into()))
    }
    fn or_could_not_run(self) -> Result<T, Stop> {
        self.map_err(|e| Stop::CouldNotRun(e.into()))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    meshcheck::common::progress::init_logging(cli.color.into());
    tracing::debug!(version = env!("CARGO_PKG_VERSION"), "meshcheck starts");
    match run(cli) {
        Ok(code) => code,
        Err(Stop::BadInput(e)) => {
            stderr_line(format_args!("error: {}", chain(&e)));
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(Stop::CouldNotRun(e)) => {
            stderr_line(format_args!("error: {}", chain(&e)));
            ExitCode::from(EXIT_COULD_NOT_RUN)
        }
    }
}

/// An error and its causes on one line, each cause once: the library's errors already say their
/// source in their message (`{path}: {source}`), so a cause whose text is already there is not
/// repeated (anyhow's `{:#}` would print "No such file or directory (os error 2)" twice).
fn chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if text.is_empty() {
            text = said;
        } else if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
    }
    text
}

/// The exit code of a finished run or a re-judged run folder: 0 when it passed; 3 when it could
/// not run (preflight found missing pieces, or nothing ran); 1 when a check failed or errored or a
/// later phase did not pass.
fn exit_for(record: &RunRecord) -> ExitCode {
    let preflight_stopped_it =
        report::root_cause(&record.results).is_some_and(|i| record.results[i].trial_name() == "preflight::phase");
    match record.outcome {
        Outcome::Pass => ExitCode::SUCCESS,
        Outcome::NotRun => ExitCode::from(EXIT_COULD_NOT_RUN),
        Outcome::Fail | Outcome::Error if preflight_stopped_it => ExitCode::from(EXIT_COULD_NOT_RUN),
        Outcome::Fail | Outcome::Error => ExitCode::from(EXIT_CHECKS_FAILED),
    }
}

/// What the console says about a trial just run: its headline and details in full, and for a trial
/// that did not pass the failed commands' output too. The session keeps `run.json` current after
/// every result, so the record read back names the root cause a not-run trial waited on.
fn trial_report(run_dir: &std::path::Path, suite: &str, name: &str, verdict: &meshcheck::evidence::Verdict) -> String {
    let Ok(record) = RunRecord::load(run_dir) else { return verdict.explanation() };
    let Some(i) = record.results.iter().rposition(|r| r.suite == suite && r.name == name) else {
        return verdict.explanation();
    };
    if matches!(verdict.outcome, Outcome::Fail | Outcome::Error) {
        report::failure_text(&record.results, i, &report::failed_commands(run_dir))
    } else {
        report::explain(&record.results, i)
    }
}

fn indented(text: &str, indent: &str) -> String {
    text.lines().map(|l| format!("{indent}{l}")).collect::<Vec<_>>().join("\n")
}

fn run(cli: Cli) -> Result<ExitCode, Stop> {
    let color = Color::from(cli.color);
    match cli.command {
        Command::Plan { scenario, output } => {
            let s = load(scenario)?;
            let p = plan::build(&s, &plan::RunContext::for_plan());
            match output {
                // Redacted: commands carry the mirrored URLs, credentials included.
                Output::Text => print!("{}", meshcheck::redact::redact(&plan::render_text(&p))),
                Output::Json => {
                    println!("{}", meshcheck::redact::redact(&serde_json::to_string_pretty(&p).or_could_not_run()?))
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Preflight { scenario, output } => {
            let s = load(scenario)?;
            let dir = scratch_dir().or_could_not_run()?;
            let problems = meshcheck::preflight::tool_problems(&s, &Runner::new(&dir));
            let failed = report::failed_commands(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            let code = if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_COULD_NOT_RUN) };
            if output == Output::Json {
                let failed: Vec<String> = failed.iter().map(report::command_failure).collect();
                let doc = serde_json::json!({
                    "provider": s.provider.as_str(),
                    "ready": problems.is_empty(),
                    "problems": problems,
                    "failed_commands": failed,
                });
                println!("{}", serde_json::to_string_pretty(&doc).or_could_not_run()?);
                return Ok(code);
            }
            if problems.is_empty() {
                println!("preflight: ready for a live {} run", s.provider.as_str());
                return Ok(code);
            }
            for p in &problems {
                println!("missing: {p}");
            }
            // The problems are one line each; what the failed probes said is here in full.
            for c in &failed {
                println!("\n{}", indented(&report::command_failure(c), "  "));
            }
            Ok(code)
        }
        Command::Run { scenario, keep, reports, parallel } => {
            let s = load(scenario)?;
            meshcheck::cluster::runner::install_interrupt_handler(EXIT_INTERRUPTED)
                .context("installing the Ctrl-C handler")
                .or_could_not_run()?;
            let mut session = Session::start(
                s,
                &RunOptions {
                    reports_dir: reports,
                    keep,
                    progress: meshcheck::common::progress::Style::detect_with(color),
                    parallel,
                },
            )
            .context("creating the run folder")
            .or_could_not_run()?;
            let trials = Session::trials(&session.plan);
            for t in &trials {
                let v = session.run_trial(t);
                let text = trial_report(&session.run_dir, t.suite(), t.name(), &v);
                stderr_line(format_args!(
                    "[{}] {} {}: {text}",
                    meshcheck::common::util::now_rfc3339(),
                    t.trial_name(),
                    v.outcome
                ));
            }
            let dir = session.run_dir.clone();
            let record = session.finish();
            if let Some(cause) = report::root_cause(&record.results) {
                let blocked = (0..record.results.len()).filter(|&i| report::blocked_by(&record.results, i).is_some());
                stderr_line(format_args!(
                    "stopped at {} ({}, the root cause above); {} trial(s) after it did not run",
                    record.results[cause].trial_name(),
                    record.results[cause].verdict.outcome,
                    blocked.count()
                ));
            }
            stderr_line(format_args!("report: {} (summary.md has every failure in full)", dir.display()));
            if is_interrupted() {
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
            Ok(exit_for(&record))
        }
        Command::Judge { run, output } => {
            // A folder that cannot be read is bad input; one that cannot be written back is not.
            RunRecord::load(&run).or_bad_input()?;
            let record = meshcheck::run::rejudge(&run).or_could_not_run()?;
            if output == Output::Json {
                let results: Vec<serde_json::Value> = (0..record.results.len())
                    .map(|i| {
                        let r = &record.results[i];
                        serde_json::json!({
                            "trial": r.trial_name(),
                            "outcome": r.verdict.outcome,
                            "explanation": report::explain(&record.results, i),
                        })
                    })
                    .collect();
                let doc = serde_json::json!({"run": run, "outcome": record.outcome, "results": results});
                println!("{}", serde_json::to_string_pretty(&doc).or_could_not_run()?);
                return Ok(exit_for(&record));
            }
            for (i, r) in record.results.iter().enumerate() {
                // A run folder from elsewhere: its text never drives the terminal.
                let line = format!("{} {}: {}", r.trial_name(), r.verdict.outcome, report::explain(&record.results, i));
                println!("{}", meshcheck::common::util::printable(&line));
            }
            Ok(exit_for(&record))
        }
        Command::Compare { baseline, candidate, output } => {
            // For a release-gate run folder the baseline and candidate passes are suites of one
            // report; for separate runs each side has only `checks`, which both filters keep.
            let before = report::load_outcomes(&baseline, Some("baseline")).or_bad_input()?;
            let after = report::load_outcomes(&candidate, Some("candidate")).or_bad_input()?;
            let rows = report::compare(&before, &after);
            let (numbers_before, _) = report::load_measurements(&baseline, Some("baseline")).or_bad_input()?;
            let (numbers_after, rules) = report::load_measurements(&candidate, Some("candidate")).or_bad_input()?;
            let numbers = report::compare_numbers(&numbers_before, &numbers_after, &rules);
            let verdict = report::gate(&rows, &numbers);
            if output == Output::Json {
                return compare_json(&rows, &numbers, verdict);
            }
            for c in &rows {
                let label = match c.change {
                    report::Change::Regressed => "REGRESSED",
                    report::Change::Fixed => "fixed",
                    report::Change::New => "new",
                    report::Change::Missing => "MISSING",
                    report::Change::Same if c.is_check() && c.after == Some(Outcome::NotRun) => "not run",
                    report::Change::Same => continue,
                };
                let line = format!("{label:10} {} ({} -> {})", c.key, show(c.before), show(c.after));
                println!("{}", meshcheck::common::util::printable(&line));
            }
            for n in &numbers {
                let label = if n.over() { "OVER" } else { "number" };
                let line = format!(
                    "{label:10} {} ({} -> {}, ratio {:.2}{})",
                    n.key,
                    n.unit.show(n.before),
                    n.unit.show(n.after),
                    n.ratio,
                    n.broken.as_ref().map(|rule| format!(": {rule}")).unwrap_or_default()
                );
                println!("{}", meshcheck::common::util::printable(&line));
            }
            let checks: Vec<&report::Comparison> = rows.iter().filter(|c| c.is_check()).collect();
            let passed = checks.iter().filter(|c| c.after == Some(Outcome::Pass)).count();
            let regressed = rows.iter().filter(|c| c.regressed()).count() + numbers.iter().filter(|n| n.over()).count();
            let summary =
                format!("{} compared, {passed} of {} checks passed in the candidate", rows.len(), checks.len());
            Ok(match verdict {
                GateVerdict::Pass => {
                    println!("{summary}, none regressed");
                    ExitCode::SUCCESS
                }
                GateVerdict::Regressed => {
                    println!("{summary}, {regressed} regressed: the gate does not pass");
                    ExitCode::from(EXIT_CHECKS_FAILED)
                }
                GateVerdict::NothingPassed => {
                    println!("{summary}: none regressed, but the gate passes only on checks that passed");
                    ExitCode::from(EXIT_CHECKS_FAILED)
                }
                GateVerdict::NothingRan => {
                    println!("{summary}: no check ran in the candidate, so there is nothing to gate on");
                    ExitCode::from(EXIT_COULD_NOT_RUN)
                }
            })
        }
        Command::Images { scenario, in_cluster, every_node, workloads, output } => {
            use meshcheck::checks::image_architectures::{cluster_images, images, runs_on_every_node};
            let s = load(scenario)?;
            let mut images = if in_cluster { cluster_images(&s) } else { images(&s) };
            if every_node || workloads {
                images.refs.retain(|image| runs_on_every_node(image) == every_node);
            }
            if output == Output::Json {
                let doc = serde_json::json!({"images": images.refs, "unlisted": images.unlisted});
                println!("{}", serde_json::to_string_pretty(&doc).or_could_not_run()?);
            } else {
                for image in &images.refs {
                    println!("{image}");
                }
            }
            for c in &images.unlisted {
                stderr_line(format_args!("error: no pinned image list for {c}: add it to fixtures/images.yaml"));
            }
            // A scenario whose chart versions have no pinned image list asks for what meshcheck
            // cannot list.
            Ok(if images.unlisted.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_BAD_INPUT) })
        }
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&scenario::json_schema()).or_could_not_run()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc { delete } => {
            let dir = scratch_dir().or_could_not_run()?;
            let runner = Runner::new(&dir);
            let t = std::time::Duration::from_secs(120);
            let mut found = Vec::new();
            // A tool that is missing is no cluster of its kind; one that fails is a failure to look,
            // never "no leftover clusters".
            let mut failures = Vec::new();
            let mut listed = 0;
            for (tool, args) in [("kind", vec!["get", "clusters"]), ("k3d", vec!["cluster", "list", "--no-headers"])] {
                match runner.run(&CommandSpec::new(tool, args, t)) {
                    Ok(out) => {
                        listed += 1;
                        found.extend(
                            out.lines()
                                .filter_map(|l| l.split_whitespace().next())
                                .filter(|l| l.starts_with("meshcheck-"))
                                .map(|l| (tool, l.to_string())),
                        );
                    }
                    Err(CommandError::NotFound { .. }) => {}
                    Err(e) => failures.push(format!("listing {tool} clusters failed: {e}")),
                }
            }
            for (tool, name) in &found {
                // A run still working on it holds its lock: not a leftover.
                if meshcheck::cluster::liveness::in_use(name) {
                    println!("{tool} {name} (in use by a running meshcheck: left alone)");
                    continue;
                }
                println!("{tool} {name}");
                if delete {
                    let args: Vec<&str> = if *tool == "kind" {
                        vec!["delete", "cluster", "--name", name]
                    } else {
                        vec!["cluster", "delete", name]
                    };
                    // Try every cluster; report each failure.
                    if let Err(e) = runner.run(&CommandSpec::new(tool, args, t)) {
                        failures.push(format!("deleting {tool} cluster {name} failed: {e}"));
                    }
                }
            }
            if found.is_empty() && failures.is_empty() {
                if listed == 0 {
                    println!("neither kind nor k3d is installed: no meshcheck clusters to look for");
                } else {
                    println!("no leftover meshcheck clusters");
                }
            }
            for f in &failures {
                stderr_line(format_args!("error: {f}"));
            }
            let _ = std::fs::remove_dir_all(&dir);
            Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_COULD_NOT_RUN) })
        }
    }
}

/// The verdict's exit code, as `compare` gives it.
fn gate_exit(verdict: GateVerdict) -> ExitCode {
    match verdict {
        GateVerdict::Pass => ExitCode::SUCCESS,
        GateVerdict::Regressed | GateVerdict::NothingPassed => ExitCode::from(EXIT_CHECKS_FAILED),
        GateVerdict::NothingRan => ExitCode::from(EXIT_COULD_NOT_RUN),
    }
}

/// `compare -o json`: every row, the gate's verdict, and the same exit code as the text output.
fn compare_json(
    rows: &[report::Comparison],
    numbers: &[report::NumberRow],
    verdict: GateVerdict,
) -> Result<ExitCode, Stop> {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|c| {
            let change = match c.change {
                report::Change::Regressed => "regressed",
                report::Change::Fixed => "fixed",
                report::Change::New => "new",
                report::Change::Missing => "missing",
                report::Change::Same => "same",
            };
            serde_json::json!({"key": c.key, "change": change, "before": c.before, "after": c.after, "check": c.is_check()})
        })
        .collect();
    let verdict_name = match verdict {
        GateVerdict::Pass => "pass",
        GateVerdict::Regressed => "regressed",
        GateVerdict::NothingPassed => "nothing-passed",
        GateVerdict::NothingRan => "nothing-ran",
    };
    let numbers: Vec<serde_json::Value> = numbers
        .iter()
        .map(|n| {
            serde_json::json!({"key": n.key, "unit": n.unit, "before": n.before, "after": n.after, "ratio": n.ratio,
                               "over": n.over(), "rule": n.broken})
        })
        .collect();
    let doc = serde_json::json!({"verdict": verdict_name, "rows": rows, "numbers": numbers});
    println!("{}", serde_json::to_string_pretty(&doc).or_could_not_run()?);
    Ok(gate_exit(verdict))
}

fn show(o: Option<Outcome>) -> String {
    o.map(|o| o.to_string()).unwrap_or_else(|| "absent".into())
}

/// A fresh folder for the command records of `preflight` and `gc` (they have no run folder).
/// Emptied first: a folder left by an earlier process of the same id must not lend its records.
fn scratch_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("meshcheck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
