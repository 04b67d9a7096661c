//! The live conformance run: `cargo test --test conformance`.
//!
//! Trials, in order: `preflight::phase`, then each phase (`provision::phase`, `install::phase`, …)
//! followed by its checks (`checks::mtls`, …). The environment is built once and shared by the
//! trials, which run one at a time in plan order. A trial after a failed phase is reported as
//! ignored with the reason, and recorded as not run in the run folder's `junit.xml`.
//!
//! Under cargo-nextest every trial is its own process. The first process of a nextest run executes
//! the whole run (one cluster, every trial, one run folder); the others wait for it and report the
//! verdict recorded for their own trial (`session::shared_run`, keyed by `NEXTEST_RUN_ID`), so
//! nextest's JUnit and the run folder's `junit.xml` never disagree.

use std::{
    process::ExitCode,
    sync::{Arc, Mutex},
};

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use meshcheck::{
    evidence::{Outcome, Verdict},
    plan,
    scenario::Scenario,
    session::{RunOptions, Session, TrialSpec},
};

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // Trials share one environment and depend on each other: run them in plan order.
    args.test_threads = Some(1);
    let scenario = match Scenario::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(meshcheck::EXIT_BAD_INPUT);
        }
    };
    let specs = Session::trials(&plan::build(&scenario, &plan::RunContext::for_plan()));
    if args.list {
        let trials = specs.iter().map(|t| Trial::test(t.trial_name(), || Ok(()))).collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }
    if let Err(e) = meshcheck::runner::install_interrupt_handler() {
        eprintln!("error: cannot install the Ctrl-C handler: {e}");
        return ExitCode::FAILURE;
    }
    let reports =
        std::env::var("MESHCHECK_REPORTS").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/reports").into());
    let keep = matches!(std::env::var("MESHCHECK_KEEP").as_deref(), Ok("1") | Ok("true"));
    // As `meshcheck run --parallel`: how many steps run at once, 1 for one after another.
    let parallel = match std::env::var("MESHCHECK_PARALLEL") {
        Err(_) => meshcheck::session::DEFAULT_PARALLEL,
        Ok(v) => match v.parse() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("error: MESHCHECK_PARALLEL={v:?} is not a number of steps (1 or more)");
                return ExitCode::from(meshcheck::EXIT_BAD_INPUT);
            }
        },
    };
    let opts =
        RunOptions { reports_dir: reports.into(), keep, progress: meshcheck::progress::Style::detect(), parallel };
    if std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test")
        && let Ok(run_id) = std::env::var("NEXTEST_RUN_ID")
    {
        return nextest_trial(&args, scenario, &opts, &specs, &run_id);
    }
    let mut session = match Session::start(scenario, &opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot create the run folder: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The checks of a phase run together: only those the test filter keeps.
    let selected: Vec<TrialSpec> = specs
        .iter()
        .filter(|t| {
            let trial = Trial::test(t.trial_name(), || Ok(()));
            !args.is_filtered_out(&trial) && !args.is_ignored(&trial)
        })
        .cloned()
        .collect();
    session.select(&selected);
    let run_dir = session.run_dir.clone();
    let shared = Arc::new(Mutex::new(Some(session)));
    let trials: Vec<Trial> = specs
        .iter()
        .cloned()
        .map(|spec: TrialSpec| {
            let shared = shared.clone();
            Trial::ignorable_test(spec.trial_name(), move || {
                let mut guard = shared.lock().map_err(|_| Failed::from("session lock poisoned"))?;
                let session = guard.as_mut().ok_or_else(|| Failed::from("session already finished"))?;
                trial_result(session.run_trial(&spec), false)
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    let mut session = shared.lock().expect("no trial holds the lock now").take().expect("session present");
    // Trials filtered out on the command line are recorded as not run, never as passes.
    session.mark_rest_not_run(&specs, "not selected by the test filter");
    let record = session.finish();
    eprintln!("meshcheck report: {}/junit.xml ({})", run_dir.display(), record.outcome);
    if meshcheck::runner::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        return ExitCode::from(meshcheck::EXIT_INTERRUPTED);
    }
    if record.outcome != Outcome::Pass && !conclusion.has_failed() {
        return ExitCode::FAILURE;
    }
    conclusion.exit_code()
}

/// One trial in nextest's process-per-test mode: the first process runs everything, every process
/// reports the recorded verdict of the trial nextest asked for.
fn nextest_trial(args: &Arguments, scenario: Scenario, opts: &RunOptions, specs: &[TrialSpec], key: &str) -> ExitCode {
    let run = || {
        let mut session = Session::start(scenario, opts).map_err(|e| format!("cannot create the run folder: {e}"))?;
        for spec in specs {
            session.run_trial(spec);
        }
        let dir = session.run_dir.clone();
        session.finish();
        eprintln!("meshcheck report: {}/junit.xml", dir.display());
        Ok(dir)
    };
    let record = match meshcheck::session::shared_run(&opts.reports_dir, key, run) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let trials = specs
        .iter()
        .map(|spec| {
            let verdict = record
                .results
                .iter()
                .find(|r| r.suite == spec.suite() && r.name == spec.name())
                .map(|r| r.verdict.clone());
            Trial::ignorable_test(spec.trial_name(), move || match verdict {
                Some(v) => trial_result(v, true),
                None => Err(Failed::from("the run recorded no result for this trial")),
            })
        })
        .collect();
    libtest_mimic::run(args, trials).exit_code()
}

/// What a trial reports for its verdict. A trial that did not run is ignored with the reason,
/// except under nextest, which has no run-time skip and counts an ignored exit as a pass: there it
/// fails with the reason, so it never shows as passed.
fn trial_result(v: Verdict, under_nextest: bool) -> Result<Completion, Failed> {
    match v.outcome {
        Outcome::Pass => Ok(Completion::Completed),
        Outcome::NotRun if under_nextest => Err(Failed::from(format!("not run: {}", v.reason))),
        Outcome::NotRun => Ok(Completion::ignored_with(v.reason)),
        Outcome::Fail | Outcome::Error => Err(Failed::from(format!("{}: {}", v.outcome, v.explanation()))),
    }
}
