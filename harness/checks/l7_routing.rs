//! L7 routing at the waypoint: the bookinfo sample's HTTPRoute `reviews`
//! (`gateway-api/route-reviews-90-10.yaml` of the pinned release: parentRef the reviews Service,
//! backends reviews-v1 weight 90 and reviews-v2 weight 10) splits traffic by its weights. Before
//! it, reviews answers from every version (the baseline: a version outside the route answers);
//! under it, only the route's backends answer, each in its share within an exact binomial test;
//! after it is taken back, a version outside the route answers again. reviews names the pod that
//! answered (`podname`, istio/istio@1.30.3 samples/bookinfo/src/reviews/.../LibertyRestEndpoint.java).
//!
//! In ambient mode an HTTPRoute on a Service is carried out by the Service's waypoint; without one
//! it changes nothing (istio.io docs/ambient/usage/l7-features).

use std::time::Duration;

use serde_json::Value;

use super::{BoxFuture, CheckDef, Collector};
use crate::{
    cluster::{
        download,
        live::{Live, LiveError},
    },
    common::{catalog, names, stats},
    evidence::{Evidence, Findings, Verdict},
    plan::{self, fixtures},
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::L7_ROUTING, collect: Collector::Cluster(collect), judge };

const RESULTS: &str = "l7-routing/results.json";
const SAMPLE: &str = "gateway-api/route-reviews-90-10.yaml";
const URL: &str = "http://reviews.book-info.svc.cluster.local:9080/reviews/0";
/// Requests under the route: at 200, a 10 % backend expects 20 answers (σ ≈ 4.2), and the test
/// rejects counts outside 6–34 at p < 0.001.
const SAMPLES: usize = 200;
/// Requests before the route, enough that a version outside it (1 in 3) answers.
const BASELINE: usize = 30;
/// A route is not followed below this p-value of a backend's count.
const ALPHA: f64 = 0.001;

/// `l7-routing/results.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Results {
    /// The route, as `Kind namespace/name`, and the URL it was read from.
    pub route: String,
    /// Where the route came from.
    pub source: String,
    /// The route's backends and weights, as applied.
    pub weights: Vec<(String, u64)>,
    /// The answering pod of each request before the route (`None`: no answer naming one).
    pub before: Vec<Option<String>>,
    /// The same under the route.
    pub during: Vec<Option<String>>,
    /// The same after the route was deleted, until a version outside it answered.
    pub after: Vec<Option<String>>,
}

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let source = plan::bookinfo_url(&live.scenario, SAMPLE);
        let text = download::MANIFESTS.text(&source).await?;
        let route = fixtures::parse_manifests(&text, &source)?;
        let weights = route
            .iter()
            .flat_map(|o| {
                o.data.pointer("/spec/rules/0/backendRefs").and_then(Value::as_array).cloned().unwrap_or_default()
            })
            .map(|b| (b["name"].as_str().unwrap_or("").to_string(), b["weight"].as_u64().unwrap_or(1)))
            .collect();
        let mut results = Results {
            route: "HTTPRoute book-info/reviews".into(),
            source,
            weights,
            before: Vec::new(),
            during: Vec::new(),
            after: Vec::new(),
        };
        for _ in 0..BASELINE {
            results.before.push(answering_pod(live).await);
        }
        let change = live.apply(&route, Some(names::BOOKINFO_NS), true).await?;
        // istiod's push to the waypoint, as for STRICT (checks::mtls).
        tokio::time::sleep(live.scenario.settle(Duration::from_secs(10))).await;
        for _ in 0..SAMPLES {
            results.during.push(answering_pod(live).await);
        }
        let removed = live.revert(change).await;
        let backends: Vec<String> = results.weights.iter().map(|w| w.0.clone()).collect();
        for _ in 0..SAMPLES {
            let pod = answering_pod(live).await;
            let outside = pod.as_deref().is_some_and(|p| version_of(p, &backends).is_none());
            results.after.push(pod);
            if outside {
                break;
            }
            tokio::time::sleep(live.scenario.settle(Duration::from_millis(250))).await;
        }
        live.save_json(RESULTS, &results)?;
        removed
    })
}

/// One request from the meshed client; the pod reviews names, if it answered.
async fn answering_pod(live: &Live) -> Option<String> {
    let out = live.exec(names::INSIDE_NS, "curl-inside", &["curl", "-s", "--max-time", "10", URL]).await.ok()?;
    let body: Value = serde_json::from_str(out.stdout.trim()).ok()?;
    body["podname"].as_str().map(String::from)
}

/// The route backend a pod belongs to (`reviews-v1-5b5d6494f4-qwjv4` → `reviews-v1`), if any.
fn version_of<'a>(pod: &str, backends: &'a [String]) -> Option<&'a str> {
    backends.iter().find(|b| pod.strip_prefix(b.as_str()).is_some_and(|r| r.starts_with('-'))).map(String::as_str)
}

/// Judges the baseline, the split under the route and the route's removal.
pub fn judge(ev: &Evidence) -> Verdict {
    let r: Results = match ev.read_json(RESULTS) {
        Ok(r) => r,
        Err(e) => return e.into(),
    };
    let mut found = Findings::reading([RESULTS.to_string()]);
    let backends: Vec<String> = r.weights.iter().map(|w| w.0.clone()).collect();
    let total: u64 = r.weights.iter().map(|w| w.1).sum();
    if backends.is_empty() || total == 0 {
        return Verdict::error(format!("{RESULTS}: the route has no weighted backends"))
            .with_evidence([RESULTS.to_string()]);
    }
    let outside =
        |pods: &[Option<String>]| pods.iter().flatten().filter(|p| version_of(p, &backends).is_none()).count();
    if outside(&r.before) == 0 {
        found.unjudged(format!(
            "before the route no version outside it ({}) answered in {} request(s): a route keeping them out would prove nothing",
            backends.join(", "),
            r.before.len()
        ));
    }
    let answered: Vec<&String> = r.during.iter().flatten().collect();
    let n = answered.len() as u64;
    let unanswered = r.during.len() - answered.len();
    if unanswered * 20 > r.during.len() {
        found.fail(format!("{unanswered} of {} request(s) under the route got no answer naming a pod", r.during.len()));
    }
    let strays = outside(&r.during);
    if strays > 0 {
        found.fail(format!(
            "under {} {strays} of {n} answer(s) came from versions outside it: the route is not applied (does reviews go through a waypoint?)",
            r.route
        ));
    }
    for (backend, weight) in &r.weights {
        let k = answered.iter().filter(|p| version_of(p, &backends) == Some(backend.as_str())).count() as u64;
        let share = *weight as f64 / total as f64;
        let p = stats::binomial_two_sided_p(k, n, share);
        let seen = format!(
            "{backend}: {k} of {n} ({:.1} %), weight {weight} of {total} ({:.1} %), p = {p:.4}",
            100.0 * k as f64 / n.max(1) as f64,
            100.0 * share
        );
        if n > 0 && p < ALPHA {
            found.fail(format!("{seen} < {ALPHA} under Binomial({n}, {share}): not the route's split"));
        } else {
            found.note(seen);
        }
    }
    if outside(&r.after) == 0 {
        found.fail(format!(
            "after the route was deleted no version outside it answered in {} request(s): the route was not taken back",
            r.after.len()
        ));
    }
    found.verdict(format!("{} split reviews by its weights and was taken back", r.route), |c| {
        format!("{c} L7 routing finding(s) for {}", r.route)
    })
}
