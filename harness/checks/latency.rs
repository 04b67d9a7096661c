//! What the mesh adds to a request: fortio holds a fixed rate against the same echo server outside
//! the mesh (meshcheck-outside) and inside it (meshcheck-inside, ambient), in turns, a few times
//! each, from a fortio client in the same namespace (fixtures/manifests/latency.yaml). Each side's
//! p50, p90 and p99 are the median over the repetitions with their spread (smallest to largest);
//! the overhead is the median of the paired differences (inside minus outside of the same
//! repetition), so that a drift of the node over the run cancels. In a release gate's candidate
//! pass the baseline's runs are copied beside its own and the p99 overhead may grow by at most
//! `gate.latency.p99_overhead_ms`.
//!
//! fortio.org/fortio v1.68.2 `load -json -` writes its result to stdout: `DurationHistogram`
//! (`Count`, `Percentiles` of `Percentile` and `Value` in seconds) and `RetCodes` (HTTP status →
//! count). Its histogram resolution defaults to 1 ms (`-r 0.001`), coarser than the overhead being
//! measured: the check asks for 0.1 ms.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    BASELINE_COPY, BoxFuture, CheckDef, Collector,
    ztunnel::{self, Parts},
};
use crate::{
    cluster::live::{Live, LiveError},
    common::{
        catalog,
        names::{INSIDE_NS, OUTSIDE_NS},
        stats::{median, spread},
    },
    evidence::{Evidence, Measurement, NumberRules, Unit, Verdict},
    formats::kjson,
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::LATENCY, collect: Collector::Cluster(collect), judge };

const DIR: &str = "latency";

/// fortio's histogram resolution, seconds.
const RESOLUTION: &str = "0.0001";

/// fortio's connections: the rate is spread over them, so one slow response does not hold the
/// next request back.
const CONNECTIONS: u32 = 4;

/// Fewer requests than this in one run make its p99 the slowest one or two: not a percentile.
pub const MIN_REQUESTS: u64 = 100;

/// The two sides of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// meshcheck-outside: not in the mesh.
    Outside,
    /// meshcheck-inside: ambient.
    Inside,
}

impl Side {
    fn namespace(self) -> &'static str {
        match self {
            Side::Outside => OUTSIDE_NS,
            Side::Inside => INSIDE_NS,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Side::Outside => "outside",
            Side::Inside => "inside",
        }
    }
}

/// One fortio run as the collector made it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunFile {
    /// Which side.
    pub side: Side,
    /// Which repetition, from 0.
    pub repetition: u32,
    /// Its output, relative to the evidence folder's `latency/`.
    pub file: String,
    /// fortio's exit code.
    pub exit_code: Option<i32>,
}

/// How the load was made, and the rule it is held to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadPlan {
    /// Requests per second asked of fortio (the scenario's).
    pub rate_per_second: u32,
    /// Requests per run.
    pub requests: u64,
    /// `gate.latency.p99_overhead_ms`.
    pub p99_overhead_ms: f64,
    /// Every run, in the order made.
    pub runs: Vec<RunFile>,
}

fn client_pod(pods: &Value) -> Option<String> {
    kjson::items(pods)
        .iter()
        .find(|p| kjson::label(p, "app") == Some("fortio-client") && kjson::pod_phase(p) == "Running")
        .map(|p| kjson::name(p).to_string())
}

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let rules = &live.scenario.gate.latency;
        // Who ztunnel holds captured: an "inside" that is not is no measure of the mesh.
        ztunnel::collect(live, DIR, Parts::ConfigDump).await?;
        let mut clients = Vec::new();
        for side in [Side::Outside, Side::Inside] {
            let ns = side.namespace();
            let pods = live.get_raw(&format!("/api/v1/namespaces/{ns}/pods")).await?;
            live.save(&format!("{DIR}/pods-{ns}.json"), &pods)?;
            let list: Value = serde_json::from_slice(&pods)
                .map_err(|e| LiveError::Http { what: format!("pods of {ns}"), message: e.to_string() })?;
            clients.push(client_pod(&list).ok_or_else(|| LiveError::Http {
                what: format!("the fortio client in {ns}"),
                message: "no Running pod labelled app=fortio-client".into(),
            })?);
        }
        let requests = u64::from(rules.rate_per_second) * rules.duration.0.as_secs().max(1);
        // The requests of a run are the scenario's; a rehearsal's clock runs faster, so the rate does.
        let seconds = live.scenario.settle(rules.duration.0).as_secs_f64().max(1e-3);
        let qps = format!("{:.3}", requests as f64 / seconds);
        let mut plan = LoadPlan {
            rate_per_second: rules.rate_per_second,
            requests,
            p99_overhead_ms: rules.p99_overhead_ms,
            runs: Vec::new(),
        };
        for repetition in 0..rules.repetitions {
            // In turns, each side first every other time: a drift of the node falls on both.
            let order = if repetition % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let side = [Side::Outside, Side::Inside][i];
                let url = format!("http://fortio-server.{}.svc.cluster.local:8080/echo", side.namespace());
                let (n, c) = (requests.to_string(), CONNECTIONS.to_string());
                let command =
                    ["fortio", "load", "-qps", &qps, "-n", &n, "-c", &c, "-r", RESOLUTION, "-json", "-", &url];
                // The run lasts `duration` by design; the API call gets that and its own deadline.
                let deadline = live.scenario.settle(rules.duration.0) + crate::cluster::live::CALL_DEADLINE;
                let outcome = live.exec_within(side.namespace(), &clients[i], &command, deadline).await?;
                let file = format!("{}-{repetition}.json", side.name());
                live.save(&format!("{DIR}/{file}"), outcome.stdout.as_bytes())?;
                plan.runs.push(RunFile { side, repetition, file, exit_code: outcome.exit_code });
            }
        }
        live.save_json(&format!("{DIR}/plan.json"), &plan)?;
        super::copy_baseline(live, DIR)
    })
}

/// What one fortio run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunResult {
    /// Requests made.
    pub count: u64,
    /// Of those, answered 200.
    pub ok: u64,
    /// Percentiles in milliseconds.
    pub p50: f64,
    /// See `p50`.
    pub p90: f64,
    /// See `p50`.
    pub p99: f64,
}

/// A fortio `load -json` result, or why it is not one.
pub fn parse_run(v: &Value) -> Result<RunResult, String> {
    let h = v.get("DurationHistogram").ok_or("no DurationHistogram")?;
    let count = h["Count"].as_u64().ok_or("no DurationHistogram.Count")?;
    let percentile = |p: f64| -> Result<f64, String> {
        h["Percentiles"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["Percentile"].as_f64() == Some(p))
            .and_then(|e| e["Value"].as_f64())
            .map(|s| s * 1000.0)
            .ok_or_else(|| format!("no {p}th percentile"))
    };
    let ok = v.pointer("/RetCodes/200").and_then(Value::as_u64).unwrap_or(0);
    Ok(RunResult { count, ok, p50: percentile(50.0)?, p90: percentile(90.0)?, p99: percentile(99.0)? })
}

/// A figure over the repetitions: the median and the smallest and largest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    /// Median, ms.
    pub median: f64,
    /// Smallest, ms.
    pub low: f64,
    /// Largest, ms.
    pub high: f64,
}

impl Figure {
    fn of(values: &[f64]) -> Option<Figure> {
        let (low, high) = spread(values)?;
        Some(Figure { median: median(values)?, low, high })
    }

    fn show(&self, sign: &str) -> String {
        format!("{sign}{:.2} ms ({sign}{:.2} to {sign}{:.2})", self.median, self.low, self.high)
    }
}

/// p50, p90, p99.
pub type Percentiles = [Figure; 3];

const NAMES: [&str; 3] = ["p50", "p90", "p99"];

/// One pass's latency: each side's runs, their figures, and the overhead.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    /// How the load was made.
    pub plan: LoadPlan,
    /// Each side's runs, by repetition.
    pub outside: Vec<RunResult>,
    /// See `outside`.
    pub inside: Vec<RunResult>,
    /// Each side's percentiles over the repetitions.
    pub outside_figures: Percentiles,
    /// See `outside_figures`.
    pub inside_figures: Percentiles,
    /// Inside minus outside, per repetition, over the repetitions.
    pub overhead: Percentiles,
}

fn percentiles(runs: &[RunResult]) -> Option<Percentiles> {
    let pick = |f: fn(&RunResult) -> f64| Figure::of(&runs.iter().map(f).collect::<Vec<_>>());
    Some([pick(|r| r.p50)?, pick(|r| r.p90)?, pick(|r| r.p99)?])
}

/// One pass's latency from its evidence (`prefix` empty for this pass, `baseline/` for the copy).
pub fn measure(ev: &Evidence, prefix: &str) -> Result<Latency, Verdict> {
    let plan: LoadPlan = ev.read_json(&format!("{DIR}/{prefix}plan.json")).map_err(Verdict::from)?;
    let (mut outside, mut inside) = (Vec::new(), Vec::new());
    for run in &plan.runs {
        let file = format!("{DIR}/{prefix}{}", run.file);
        let v: Value = ev.read_json(&file).map_err(|_| {
            Verdict::error(format!(
                "fortio in {} gave no JSON result (exit {:?}): the load was not measured",
                run.side.namespace(),
                run.exit_code
            ))
            .with_evidence([file.clone()])
        })?;
        let result = parse_run(&v).map_err(|why| {
            Verdict::error(format!("{file} is not a fortio result: {why}")).with_evidence([file.clone()])
        })?;
        match run.side {
            Side::Outside => outside.push(result),
            Side::Inside => inside.push(result),
        }
    }
    let paired: Vec<(RunResult, RunResult)> = inside.iter().copied().zip(outside.iter().copied()).collect();
    let differences = |f: fn(&RunResult) -> f64| paired.iter().map(|(i, o)| f(i) - f(o)).collect::<Vec<_>>();
    let none = || Verdict::error(format!("{DIR}/{prefix}plan.json lists no run of both sides"));
    let overhead = [
        Figure::of(&differences(|r| r.p50)).ok_or_else(none)?,
        Figure::of(&differences(|r| r.p90)).ok_or_else(none)?,
        Figure::of(&differences(|r| r.p99)).ok_or_else(none)?,
    ];
    Ok(Latency {
        outside_figures: percentiles(&outside).ok_or_else(none)?,
        inside_figures: percentiles(&inside).ok_or_else(none)?,
        overhead,
        plan,
        outside,
        inside,
    })
}

impl Latency {
    /// `latency.<outside|inside|overhead>.<p50|p90|p99>`, medians, in milliseconds, each with the
    /// value of every repetition.
    pub fn measurements(&self) -> Vec<Measurement> {
        let pick: [fn(&RunResult) -> f64; 3] = [|r| r.p50, |r| r.p90, |r| r.p99];
        let paired: Vec<(&RunResult, &RunResult)> = self.inside.iter().zip(&self.outside).collect();
        let mut out = Vec::new();
        for (what, figures) in
            [("outside", &self.outside_figures), ("inside", &self.inside_figures), ("overhead", &self.overhead)]
        {
            for ((name, f), p) in NAMES.iter().zip(figures).zip(pick) {
                let samples = match what {
                    "outside" => self.outside.iter().map(p).collect(),
                    "inside" => self.inside.iter().map(p).collect(),
                    _ => paired.iter().map(|(i, o)| p(i) - p(o)).collect(),
                };
                out.push(Measurement {
                    samples,
                    ..Measurement::new(format!("latency.{what}.{name}"), Unit::Millis, f.median)
                });
            }
        }
        out
    }

    /// What failed among the runs themselves: too few requests, or requests that failed.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (side, runs) in [(Side::Outside, &self.outside), (Side::Inside, &self.inside)] {
            let where_ = if side == Side::Inside { "in the mesh" } else { "outside the mesh" };
            let (count, ok): (u64, u64) = runs.iter().fold((0, 0), |(c, o), r| (c + r.count, o + r.ok));
            if count > ok {
                out.push(format!("{} of {count} requests {where_} failed (not 200)", count - ok));
            }
            if let Some(short) = runs.iter().find(|r| r.count < MIN_REQUESTS) {
                out.push(format!(
                    "a run {where_} made {} requests, fewer than {MIN_REQUESTS}: its p99 is no percentile",
                    short.count
                ));
            }
        }
        out
    }
}

fn nodes(ev: &Evidence) -> Option<String> {
    let pods: Value = ev.read_json(&format!("{DIR}/pods-{INSIDE_NS}.json")).ok()?;
    let node = |app: &str| {
        kjson::items(&pods)
            .iter()
            .find(|p| kjson::label(p, "app") == Some(app))
            .and_then(|p| p.pointer("/spec/nodeName").and_then(Value::as_str).map(String::from))
    };
    let (client, server) = (node("fortio-client")?, node("fortio-server")?);
    Some(if client == server {
        format!("in the mesh the client and the server share node {client}: a request crosses one ztunnel")
    } else {
        format!(
            "in the mesh the client ({client}) and the server ({server}) are on two nodes: a request crosses two ztunnels"
        )
    })
}

/// The fortio pods of each namespace that ztunnel's config dumps list with protocol HBONE (captured
/// by ambient) and those they list without, or the error verdict when no dump was read.
fn capture(ev: &Evidence) -> Result<Vec<String>, Verdict> {
    let root = ztunnel::dir(DIR);
    let mut hbone = std::collections::BTreeSet::new();
    let nodes = ev.subdirs(&root);
    for node in &nodes {
        let dump: Value = ev.read_json(&format!("{root}/{node}/config_dump.json")).map_err(Verdict::from)?;
        for w in ztunnel::dump_workloads(&dump) {
            if w["protocol"] == "HBONE" {
                hbone.insert(format!(
                    "{}/{}",
                    w["namespace"].as_str().unwrap_or_default(),
                    w["name"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    if nodes.is_empty() {
        return Err(Verdict::error(format!(
            "no ztunnel config dump under {root}/: whether the mesh captured the inside side cannot be told"
        )));
    }
    let mut problems = Vec::new();
    for side in [Side::Outside, Side::Inside] {
        let ns = side.namespace();
        let pods: Value = ev.read_json(&format!("{DIR}/pods-{ns}.json")).map_err(Verdict::from)?;
        for pod in
            kjson::items(&pods).iter().filter(|p| kjson::label(p, "app").is_some_and(|a| a.starts_with("fortio-")))
        {
            let name = format!("{ns}/{}", kjson::name(pod));
            match (side, hbone.contains(&name)) {
                (Side::Inside, false) => problems.push(format!(
                    "{name} is not captured by ambient (no ztunnel config dump lists it with protocol HBONE): the overhead measured is not the mesh's"
                )),
                (Side::Outside, true) => problems.push(format!(
                    "{name} is captured by ambient: the side outside the mesh is in it, and the overhead measured is not the mesh's"
                )),
                _ => {}
            }
        }
    }
    Ok(problems)
}

/// Judges one pass's latency, and in a candidate pass the growth of the p99 overhead.
pub fn judge(ev: &Evidence) -> Verdict {
    let own = match measure(ev, "") {
        Ok(l) => l,
        Err(v) => return v,
    };
    let mut problems = match capture(ev) {
        Ok(p) => p,
        Err(v) => return v,
    };
    problems.extend(own.problems());
    let line = |label: &str, figures: &Percentiles, sign: &str| {
        let parts: Vec<String> = NAMES.iter().zip(figures).map(|(n, f)| format!("{n} {}", f.show(sign))).collect();
        format!("{label}: {}", parts.join(", "))
    };
    let plan = &own.plan;
    let mut notes = vec![
        format!(
            "{} runs a side of {} requests at {} per second, in turns; medians over the runs, smallest to largest in brackets",
            own.outside.len(),
            plan.requests,
            plan.rate_per_second
        ),
        line("outside the mesh", &own.outside_figures, ""),
        line("in the mesh", &own.inside_figures, ""),
        line("overhead (in minus out, per run)", &own.overhead, "+"),
    ];
    notes.extend(nodes(ev));
    let compared = ev.path(&format!("{DIR}/{BASELINE_COPY}/plan.json")).is_file();
    if compared && problems.is_empty() {
        let baseline = match measure(ev, &format!("{BASELINE_COPY}/")) {
            Ok(b) => b,
            Err(v) => return v,
        };
        let rules = NumberRules { max_ratio: f64::INFINITY, p99_overhead_ms: plan.p99_overhead_ms };
        let (b, a) = (baseline.overhead[2].median, own.overhead[2].median);
        notes.push(line("the baseline's overhead", &baseline.overhead, "+"));
        if let Some(rule) = rules.hold("latency.overhead.p99", Unit::Millis, b, a).broken {
            problems
                .push(format!("latency.overhead.p99: {a:.2} ms in the candidate, {b:.2} ms in the baseline: {rule}"));
        }
    }
    let measurements = own.measurements();
    let files = vec![format!("{DIR}/plan.json")];
    let verdict = if problems.is_empty() {
        let against =
            if compared { format!(", within {} ms of the baseline's", plan.p99_overhead_ms) } else { String::new() };
        Verdict::pass(format!(
            "the mesh adds {:+.2} ms at p50 and {:+.2} ms at p99{against}",
            own.overhead[0].median, own.overhead[2].median
        ))
        .with_details(notes)
    } else {
        Verdict::fail(problems[0].clone()).with_details(problems.into_iter().skip(1).chain(notes))
    };
    verdict.with_evidence(files).with_measurements(measurements)
}
