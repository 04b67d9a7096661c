//! Application traffic to bookinfo through the ingress gateway, straight from the host (never
//! through the API server, which STRICT mTLS rejects): a few requests to warm metrics and graphs,
//! and a steady-rate generator that records every response during an upgrade.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::cluster::live::Live;

/// Sends `n` GETs to `/productpage` so that ztunnel, Prometheus and Kiali have traffic to show.
/// Returns how many got HTTP 200; the judges decide what that means, so a dead gateway is not an
/// error here.
pub async fn drive_bookinfo(live: &Live, n: usize) -> usize {
    let url = format!("{}/productpage", live.scenario.ingress.base_url());
    let mut ok = 0;
    for _ in 0..n {
        if let Ok(r) = live.http.get(&url).send().await
            && r.status() == reqwest::StatusCode::OK
        {
            ok += 1;
        }
        tokio::time::sleep(live.scenario.settle(Duration::from_millis(100))).await;
    }
    tracing::info!("sent {n} requests to {url}: {ok} answered 200");
    ok
}

/// One request of the generator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestRecord {
    /// Milliseconds since the generator started.
    pub at_ms: u64,
    /// Phase label at send time (`before`, `during`, `after`).
    pub phase: String,
    /// HTTP status, or 0 when no response arrived.
    pub status: u16,
    /// Latency in milliseconds (up to the timeout).
    pub latency_ms: f64,
    /// Transport error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The upgrade step under way when it was sent: the helm release being upgraded (from its
    /// `helm upgrade` until the next one starts); none outside the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// What `upgrade/traffic.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrafficRecord {
    /// Target URL.
    pub url: String,
    /// Requests per second asked for.
    pub rate_per_second: u32,
    /// Failed requests the check tolerates during the upgrade (never before or after it).
    pub failure_budget: u64,
    /// The longest outage tolerated during the upgrade, in seconds (absent in run folders of
    /// format 1, whose budget covered the whole record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_outage_secs: Option<f64>,
    /// The least share of requests each upgrade step must answer, by helm release (the
    /// scenario's rules with their defaults; empty in a record from before they existed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub step_min_success: BTreeMap<String, f64>,
    /// Every request, in send order.
    pub requests: Vec<RequestRecord>,
}

/// A running generator. Requests go out at a fixed rate whatever the latency (each in its own task),
/// so a stalled gateway shows as slow or failed requests rather than as a lower rate.
pub struct TrafficGenerator {
    phase: Arc<Mutex<String>>,
    step: Arc<Mutex<Option<String>>>,
    records: Arc<Mutex<Vec<RequestRecord>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    url: String,
    rate: u32,
    budget: Budget,
}

/// What the continuity check tolerates during the upgrade.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Failed requests.
    pub failed_requests: u64,
    /// Longest outage.
    pub max_outage: Duration,
    /// The least share of requests each upgrade step must answer, by helm release.
    pub step_min_success: BTreeMap<String, f64>,
}

impl TrafficGenerator {
    /// Starts sending GETs to `url` at `rate` per second, for at most `max_requests`.
    pub fn start(url: &str, rate: u32, timeout: Duration, budget: Budget, max_requests: usize) -> TrafficGenerator {
        let phase = Arc::new(Mutex::new("before".to_string()));
        let step: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let records = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let http = reqwest::Client::builder().timeout(timeout).build().expect("client builds");
        let (p, r, u, st) = (phase.clone(), records.clone(), url.to_string(), step.clone());
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
            let mut inflight = tokio::task::JoinSet::new();
            for _ in 0..max_requests {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let (http, url, records) = (http.clone(), u.clone(), r.clone());
                let phase = p.lock().expect("phase lock").clone();
                let step = st.lock().expect("step lock").clone();
                let at_ms = started.elapsed().as_millis() as u64;
                inflight.spawn(async move {
                    let t0 = Instant::now();
                    let (status, error) = match http.get(&url).send().await {
                        Ok(resp) => (resp.status().as_u16(), None),
                        Err(e) => (0, Some(crate::cluster::live::with_causes(&e))),
                    };
                    let rec = RequestRecord {
                        at_ms,
                        phase,
                        status,
                        latency_ms: t0.elapsed().as_secs_f64() * 1000.0,
                        error,
                        step,
                    };
                    records.lock().expect("records lock").push(rec);
                });
            }
            while inflight.join_next().await.is_some() {}
        });
        TrafficGenerator { phase, step, records, stop, task, url: url.to_string(), rate, budget }
    }

    /// Labels requests sent from now on; a new phase ends the step under way.
    pub fn set_phase(&self, phase: &str) {
        *self.phase.lock().expect("phase lock") = phase.to_string();
        *self.step.lock().expect("step lock") = None;
    }

    /// Attributes requests sent from now on to an upgrade step.
    pub fn set_step(&self, step: &str) {
        *self.step.lock().expect("step lock") = Some(step.to_string());
    }

    /// Stops sending, waits for requests in flight, and returns the record sorted by send time.
    pub async fn finish(self) -> TrafficRecord {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let mut requests = std::mem::take(&mut *self.records.lock().expect("records lock"));
        requests.sort_by_key(|r| r.at_ms);
        TrafficRecord {
            url: self.url,
            rate_per_second: self.rate,
            failure_budget: self.budget.failed_requests,
            max_outage_secs: Some(self.budget.max_outage.as_secs_f64()),
            step_min_success: self.budget.step_min_success,
            requests,
        }
    }
}

/// Counts and latency percentiles of one phase.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseStats {
    /// Phase label.
    pub phase: String,
    /// Requests sent.
    pub total: usize,
    /// Requests without a 2xx answer.
    pub failed: usize,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// Per-phase statistics, in the order phases first appear.
pub fn phase_stats(record: &TrafficRecord) -> Vec<PhaseStats> {
    let mut phases: Vec<String> = Vec::new();
    for r in &record.requests {
        if !phases.contains(&r.phase) {
            phases.push(r.phase.clone());
        }
    }
    phases
        .into_iter()
        .map(|phase| {
            let rs: Vec<&RequestRecord> = record.requests.iter().filter(|r| r.phase == phase).collect();
            let mut lat: Vec<f64> = rs.iter().map(|r| r.latency_ms).collect();
            lat.sort_by(f64::total_cmp);
            PhaseStats {
                total: rs.len(),
                failed: rs.iter().filter(|r| !(200..300).contains(&r.status)).count(),
                p50_ms: percentile(&lat, 50.0),
                p99_ms: percentile(&lat, 99.0),
                phase,
            }
        })
        .collect()
}

/// What one upgrade step cost: its requests, those without a 2xx answer, its longest outage.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// The helm release the step upgraded.
    pub step: String,
    /// Requests sent while it was under way.
    pub total: usize,
    /// Requests without a 2xx answer.
    pub failed: usize,
    /// The longest stretch of failures within the step, seconds.
    pub longest_outage_secs: f64,
}

impl StepStats {
    /// The share of requests answered 2xx (1 for a step that saw none).
    pub fn success(&self) -> f64 {
        if self.total == 0 { 1.0 } else { (self.total - self.failed) as f64 / self.total as f64 }
    }
}

/// Per-step statistics of the requests sent during the upgrade, in the order the steps ran.
pub fn step_stats(record: &TrafficRecord) -> Vec<StepStats> {
    let mut steps: Vec<String> = Vec::new();
    for step in record.requests.iter().filter_map(|r| r.step.as_ref()) {
        if !steps.contains(step) {
            steps.push(step.clone());
        }
    }
    steps
        .into_iter()
        .map(|step| {
            let only = TrafficRecord {
                requests: record.requests.iter().filter(|r| r.step.as_ref() == Some(&step)).cloned().collect(),
                ..record.clone()
            };
            let phase = only.requests.first().map(|r| r.phase.clone()).unwrap_or_default();
            StepStats {
                total: only.requests.len(),
                failed: only.requests.iter().filter(|r| !(200..300).contains(&r.status)).count(),
                longest_outage_secs: longest_outage_secs(&only, &phase),
                step,
            }
        })
        .collect()
}

/// Nearest-rank percentile of sorted values (0 for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The longest stretch of failing requests in `phase`, in seconds: from the first failure of a run
/// of failures to the next success (or, for a run that lasts to the end of the phase, one request
/// interval past its last failure).
pub fn longest_outage_secs(record: &TrafficRecord, phase: &str) -> f64 {
    let interval_ms = 1000.0 / f64::from(record.rate_per_second.max(1));
    let (mut longest, mut run): (f64, Option<(u64, u64)>) = (0.0, None);
    for r in record.requests.iter().filter(|r| r.phase == phase) {
        let ok = (200..300).contains(&r.status);
        match (ok, run) {
            (false, None) => run = Some((r.at_ms, r.at_ms)),
            (false, Some((start, _))) => run = Some((start, r.at_ms)),
            (true, Some((start, _))) => {
                longest = longest.max((r.at_ms - start) as f64);
                run = None;
            }
            (true, None) => {}
        }
    }
    if let Some((start, last)) = run {
        longest = longest.max((last - start) as f64 + interval_ms);
    }
    longest / 1000.0
}
