//! The live conformance run: `cargo test --test conformance`.
//!
//! Trials, in order: `preflight::phase`, then each phase (`provision::phase`, `install::phase`, …)
//! followed by its checks (`checks::mtls`, …). The environment is built once and shared by the
//! trials, which run one at a time in plan order. The phase that stops the run says it is the root
//! cause; each trial after it is reported as ignored, "not run because `<root cause>` did not
//! pass", and recorded as not run in the run folder's `junit.xml`.
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
    evidence::Outcome,
    plan,
    report::{self, RunRecord, TrialResult},
    run::{RunOptions, Session, TrialSpec},
    scenario::Scenario,
};

fn main() -> ExitCode {
    meshcheck::common::progress::init_logging(meshcheck::common::progress::Color::Auto);
    let mut args = Arguments::from_args();
    // Trials share one environment and depend on each other: run them in plan order.
    args.test_threads = Some(1);
    let mut scenario = match Scenario::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(meshcheck::EXIT_BAD_INPUT);
        }
    };
    tracing::debug!(scenario = %scenario.name, provider = ?scenario.provider, "conformance run");
    let mut specs = Session::trials(&plan::build(&scenario, &plan::RunContext::for_plan()));
    // Under nextest every process is handed one exact trial name and all of them share one run, so
    // a filter there selects what to report, never what to run.
    let nextest = std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test");
    if !nextest && let Some(checks) = selected_checks(&args, &specs) {
        // `-- checks::mtls`: run that check and the phases it stands on (and install only what it
        // needs), instead of filtering the phases out and reporting the check as not run.
        eprintln!("meshcheck: the filter selects checks [{}]; their phases run too", checks.join(", "));
        scenario.checks = checks;
        specs = Session::trials(&plan::build(&scenario, &plan::RunContext::for_plan()));
        args.filter = None;
        args.skip.clear();
        args.exact = false;
    }
    if args.list {
        let trials = specs.iter().map(|t| Trial::test(t.trial_name(), || Ok(()))).collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }
    // A filter that selects nothing (a typo: `checks::mlts`) would run nothing and pass.
    if !nextest && selects_nothing(&args, &specs) {
        let names: Vec<String> = specs.iter().map(TrialSpec::trial_name).collect();
        eprintln!("error: the test filter selects no trial; the trials are:\n  {}", names.join("\n  "));
        return ExitCode::from(meshcheck::EXIT_COULD_NOT_RUN);
    }
    if let Err(e) = meshcheck::cluster::runner::install_interrupt_handler(meshcheck::EXIT_INTERRUPTED) {
        eprintln!("error: cannot install the Ctrl-C handler: {e}");
        return ExitCode::from(meshcheck::EXIT_COULD_NOT_RUN);
    }
    let reports =
        std::env::var("MESHCHECK_REPORTS").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/reports").into());
    // The same words as `meshcheck run --keep` (clap's BoolishValueParser: y/yes/t/true/on/1).
    let keep = match std::env::var_os("MESHCHECK_KEEP") {
        None => false,
        Some(v) => match clap::builder::TypedValueParser::parse_ref(
            &clap::builder::BoolishValueParser::new(),
            &clap::Command::new("conformance"),
            None,
            &v,
        ) {
            Ok(keep) => keep,
            Err(_) => {
                eprintln!("error: MESHCHECK_KEEP={v:?} is not yes or no (1/0, true/false, on/off)");
                return ExitCode::from(meshcheck::EXIT_BAD_INPUT);
            }
        },
    };
    // As `meshcheck run --parallel`: how many steps run at once, 1 for one after another.
    let parallel = match std::env::var("MESHCHECK_PARALLEL") {
        Err(_) => meshcheck::run::DEFAULT_PARALLEL,
        Ok(v) => match v.parse() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("error: MESHCHECK_PARALLEL={v:?} is not a number of steps (1 or more)");
                return ExitCode::from(meshcheck::EXIT_BAD_INPUT);
            }
        },
    };
    let opts = RunOptions {
        reports_dir: reports.into(),
        keep,
        progress: meshcheck::common::progress::Style::detect(),
        parallel,
    };
    if std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test")
        && let Ok(run_id) = std::env::var("NEXTEST_RUN_ID")
    {
        return nextest_trial(&args, scenario, &opts, &specs, &run_id);
    }
    let mut session = match Session::start(scenario, &opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot create the run folder: {e}");
            return ExitCode::from(meshcheck::EXIT_COULD_NOT_RUN);
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
                // A trial that panicked poisoned the lock: libtest-mimic caught the panic and failed
                // it; what follows does not run on a session in an unknown state.
                let mut guard =
                    shared.lock().map_err(|_| Failed::from("not run: an earlier trial panicked (see its output)"))?;
                let session = guard.as_mut().ok_or_else(|| Failed::from("session already finished"))?;
                if session.run_trial(&spec).outcome == Outcome::Pass {
                    return Ok(Completion::Completed);
                }
                // The session keeps run.json current after every result: read back, it names the
                // root cause a trial that did not run waited on.
                let record = RunRecord::load(&session.run_dir)
                    .map_err(|e| Failed::from(format!("the run record cannot be read: {e}")))?;
                recorded_result(&record, &spec, false)
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Even after a trial panicked, the session finishes: cleanup runs and the report is written.
    let panicked = shared.is_poisoned();
    let mut session = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
        .expect("the session is taken only here");
    // Trials filtered out on the command line are recorded as not run, never as passes.
    let why = if panicked { "not run: an earlier trial panicked" } else { "not selected by the test filter" };
    session.mark_rest_not_run(&specs, why);
    let record = session.finish();
    eprintln!("meshcheck report: {}/junit.xml ({})", run_dir.display(), record.outcome);
    if meshcheck::cluster::runner::is_interrupted() {
        return ExitCode::from(meshcheck::EXIT_INTERRUPTED);
    }
    if record.outcome != Outcome::Pass && !conclusion.has_failed() {
        return ExitCode::FAILURE;
    }
    conclusion.exit_code()
}

/// The checks a test filter selects (libtest's rules: a substring of the trial name, or the whole
/// name with `--exact`; `--skip` removes), when it selects at least one check; `None` without a
/// filter or when it selects phases only, which libtest then filters as usual.
fn selected_checks(args: &Arguments, specs: &[TrialSpec]) -> Option<Vec<String>> {
    if args.filter.is_none() && args.skip.is_empty() {
        return None;
    }
    let matches = |pattern: &str, name: &str| if args.exact { name == pattern } else { name.contains(pattern) };
    let checks: Vec<String> = specs
        .iter()
        .filter(|t| matches!(t.trial, meshcheck::run::Trial::Check(_)))
        .filter(|t| args.filter.as_deref().is_none_or(|f| matches(f, &t.trial_name())))
        .filter(|t| !args.skip.iter().any(|s| matches(s, &t.trial_name())))
        .map(|t| t.name().to_string())
        .collect();
    let mut unique = Vec::new();
    for c in checks {
        if !unique.contains(&c) {
            unique.push(c);
        }
    }
    (!unique.is_empty()).then_some(unique)
}

/// Whether a test filter is given and keeps no trial at all.
fn selects_nothing(args: &Arguments, specs: &[TrialSpec]) -> bool {
    let filtered = args.filter.is_some() || !args.skip.is_empty();
    filtered
        && specs.iter().all(|t| {
            let trial = Trial::test(t.trial_name(), || Ok(()));
            args.is_filtered_out(&trial)
        })
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
    let record = match meshcheck::run::shared_run(&opts.reports_dir, key, run) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(meshcheck::EXIT_COULD_NOT_RUN);
        }
    };
    let trials = specs
        .iter()
        .map(|spec| {
            let result = recorded_result(&record, spec, true);
            Trial::ignorable_test(spec.trial_name(), move || result)
        })
        .collect();
    libtest_mimic::run(args, trials).exit_code()
}

/// What a trial reports for its recorded result (an error when the run recorded none).
fn recorded_result(record: &RunRecord, spec: &TrialSpec, under_nextest: bool) -> Result<Completion, Failed> {
    match record.results.iter().rposition(|r| r.suite == spec.suite() && r.name == spec.name()) {
        Some(index) => trial_result(&record.results, index, under_nextest),
        None => Err(Failed::from("the run recorded no result for this trial")),
    }
}

/// What a trial reports: a failure gives the reason and every detail, and the trial that stopped
/// the run says it is the root cause; a trial that did not run names that root cause and is
/// ignored. Under nextest, which has no run-time skip and counts an ignored exit as a pass, it
/// fails instead, with a message that begins with `not run` (which `report::load_outcomes` reads
/// back as not run), so it never shows as passed.
fn trial_result(results: &[TrialResult], index: usize, under_nextest: bool) -> Result<Completion, Failed> {
    let outcome = results[index].verdict.outcome;
    match outcome {
        Outcome::Pass => Ok(Completion::Completed),
        Outcome::NotRun => {
            let why = report::not_run_explanation(results, index);
            let why = if why.starts_with("not run") { why } else { format!("not run: {why}") };
            if under_nextest { Err(Failed::from(why)) } else { Ok(Completion::ignored_with(why)) }
        }
        Outcome::Fail | Outcome::Error => Err(Failed::from(format!("{outcome}: {}", report::explain(results, index)))),
    }
}
