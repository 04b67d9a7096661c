//! The `meshcheck` command: plan, preflight, run, judge, compare, images, schema, gc.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use meshcheck::{
    EXIT_BAD_INPUT, EXIT_INTERRUPTED,
    evidence::Outcome,
    plan,
    progress::stderr_line,
    report,
    runner::{CommandError, CommandSpec, INTERRUPTED, Runner},
    scenario::{self, Scenario},
    session::{RunOptions, Session},
};

#[derive(Parser)]
#[command(name = "meshcheck", version, about = "Conformance suite for Istio ambient mode on Cilium")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Print every step a run would take, without touching anything.
    Plan {
        /// Scenario file (default: $MESHCHECK_SCENARIO, else the embedded ambient-kind scenario).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Check that this machine can do a live run.
    Preflight {
        /// Scenario file.
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
    /// Run the whole suite (provision, install, deploy, checks, cleanup).
    Run {
        /// Scenario file.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Keep the cluster at the end.
        #[arg(long, env = "MESHCHECK_KEEP", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
        keep: bool,
        /// Folder for run folders.
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        /// How many steps (or checks) run at once; 1 runs them one after another, in plan order.
        #[arg(long, env = "MESHCHECK_PARALLEL", default_value_t = meshcheck::session::DEFAULT_PARALLEL)]
        parallel: std::num::NonZeroUsize,
    },
    /// Re-judge a run folder offline and rewrite its junit.xml and summary.md.
    Judge {
        /// The run folder.
        run: PathBuf,
    },
    /// Compare a baseline with a candidate (run folders or junit.xml files); non-zero on regression.
    Compare {
        /// Baseline.
        baseline: PathBuf,
        /// Candidate.
        candidate: PathBuf,
    },
    /// List the pinned images a run starts, one per line (for a CI image cache).
    Images {
        /// Scenario file.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Only the images that run inside the cluster (not the node image): what
        /// `cluster.image_archive` should hold.
        #[arg(long)]
        in_cluster: bool,
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MESHCHECK_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            stderr_line(format_args!("error: {e:#}"));
            if e.downcast_ref::<scenario::ScenarioError>().is_some() {
                ExitCode::from(EXIT_BAD_INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plan { scenario, output } => {
            let s = load(scenario)?;
            let p = plan::build(&s, &plan::RunContext::for_plan());
            match output {
                Output::Text => print!("{}", plan::render_text(&p)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&p)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Preflight { scenario } => {
            let s = load(scenario)?;
            let dir = tempdir_for_preflight()?;
            let problems = meshcheck::preflight::tool_problems(&s, &Runner::new(&dir));
            if problems.is_empty() {
                println!("preflight: ready for a live {} run", s.provider.as_str());
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &problems {
                    println!("missing: {p}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Run { scenario, keep, reports, parallel } => {
            let s = load(scenario)?;
            meshcheck::runner::install_interrupt_handler().context("installing the Ctrl-C handler")?;
            let mut session = Session::start(
                s,
                &RunOptions { reports_dir: reports, keep, progress: meshcheck::progress::Style::detect(), parallel },
            )
            .context("creating the run folder")?;
            let trials = Session::trials(&session.plan);
            for t in &trials {
                let v = session.run_trial(t);
                stderr_line(format_args!(
                    "[{}] {} {}: {}",
                    meshcheck::util::now_rfc3339(),
                    t.trial_name(),
                    v.outcome,
                    v.reason
                ));
            }
            let dir = session.run_dir.clone();
            let record = session.finish();
            stderr_line(format_args!("report: {}", dir.display()));
            if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
            Ok(if record.outcome == Outcome::Pass { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Judge { run } => {
            let record = meshcheck::session::rejudge(&run)?;
            for r in &record.results {
                println!("{}::{} {}: {}", r.suite, r.name, r.verdict.outcome, r.verdict.reason);
            }
            Ok(if record.outcome == Outcome::Pass { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Compare { baseline, candidate } => {
            let gate =
                |p: &std::path::Path, pass: &str| -> anyhow::Result<_> { Ok(report::load_outcomes(p, Some(pass))?) };
            // For a release-gate run folder the baseline and candidate passes are suites of one
            // report; for separate runs each side has only `checks`, which both filters keep.
            let before = gate(&baseline, "baseline")?;
            let after = gate(&candidate, "candidate")?;
            let rows = report::compare(&before, &after);
            let mut bad = false;
            for c in &rows {
                let label = match c.change {
                    report::Change::Regressed => "REGRESSED",
                    report::Change::Fixed => "fixed",
                    report::Change::New => "new",
                    report::Change::Missing => "MISSING",
                    report::Change::Same => continue,
                };
                bad |= c.change == report::Change::Regressed
                    || (c.change == report::Change::Missing && c.before == Some(Outcome::Pass));
                println!("{label:10} {} ({} -> {})", c.key, show(c.before), show(c.after));
            }
            println!(
                "{} compared, {} regressed",
                rows.len(),
                rows.iter().filter(|c| c.change == report::Change::Regressed).count()
            );
            Ok(if bad { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Images { scenario, in_cluster } => {
            let s = load(scenario)?;
            let images = if in_cluster {
                meshcheck::checks::image_architectures::cluster_images(&s)
            } else {
                meshcheck::checks::image_architectures::images(&s)
            };
            for image in &images.refs {
                println!("{image}");
            }
            for c in &images.unlisted {
                stderr_line(format_args!("error: no pinned image list for {c}: add it to fixtures/images.yaml"));
            }
            Ok(if images.unlisted.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&scenario::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc { delete } => {
            let dir = tempdir_for_preflight()?;
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
            Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn show(o: Option<Outcome>) -> String {
    o.map(|o| o.to_string()).unwrap_or_else(|| "absent".into())
}

fn tempdir_for_preflight() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("meshcheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
