//! Trace arrival in Tempo: requests sent to the ingress gateway with W3C `traceparent` ids chosen
//! here must arrive in Tempo with spans from the gateway carrying the `Telemetry` resource's
//! literal custom tag.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{BoxFuture, CheckDef, Collector};
use crate::{
    cluster::live::{Live, LiveError},
    common::catalog,
    evidence::{Evidence, Findings, Verdict},
    formats::tempo::{self, TraceFormat},
    scenario::Backend,
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::TRACES, collect: Collector::Cluster(collect), judge };

/// The custom tag of fixtures/manifests/telemetry.yaml.
pub const TAG_KEY: &str = "meshcheck.run";
/// Its literal value.
pub const TAG_VALUE: &str = "conformance";
/// Substring of the gateway's `service.name` (`istio-ingress.istio-ingress` for release istio-ingress).
pub const GATEWAY_SERVICE: &str = "istio-ingress";

const TRACES: usize = 5;
const EXPECT: &str = "traces/expect.json";
const SENT: &str = "traces/sent.json";
const ARRIVAL: &str = "traces/arrival.json";

/// `traces/expect.json`: what the gateway's spans must carry. The collector writes it, the judge
/// reads it; a missing or malformed one is an error verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expect {
    /// Attribute key of the Telemetry resource's custom tag.
    pub tag_key: String,
    /// Its literal value.
    pub tag_value: String,
    /// Substring of the gateway's `service.name`.
    pub gateway_service: String,
}

/// One request sent to the gateway, an entry of `traces/sent.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The trace id of its `traceparent`, lowercase hex.
    pub trace_id: String,
    /// When it was sent (RFC 3339).
    #[serde(default)]
    pub sent_at: String,
    /// The gateway's HTTP status, or `error: …` when no answer came.
    pub status: String,
    /// Its place in the sequence.
    #[serde(default)]
    pub seq: usize,
}

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let expect =
            Expect { tag_key: TAG_KEY.into(), tag_value: TAG_VALUE.into(), gateway_service: GATEWAY_SERVICE.into() };
        live.save_json(EXPECT, &expect)?;
        send_traced(live, "traces", |span| span.service.contains(GATEWAY_SERVICE)).await
    })
}

/// Sends [`TRACES`] requests to productpage through the gateway, each with a `traceparent` of its
/// own, and reads each trace back from Tempo until it holds a span that is `awaited` or the
/// deadline passes. Each proxy exports its spans on its own schedule (Envoy's OpenTelemetry tracer
/// batches per proxy), so Tempo may first answer with part of a trace: the gateway's span without
/// the waypoint's. Writes `<dir>/sent.json`, `<dir>/tempo/<id>.<format>` (the last answer) per
/// trace that arrived, and `<dir>/arrival.json` (when the awaited span was first there).
pub(crate) async fn send_traced(
    live: &Live,
    dir: &str,
    awaited: impl Fn(&tempo::SpanInfo) -> bool,
) -> Result<(), LiveError> {
    let url = format!("{}/productpage", live.scenario.ingress.base_url());
    let mut sent = Vec::new();
    for seq in 0..TRACES {
        let no_randomness = |e: getrandom::Error| LiveError::Http {
            what: format!("traceparent for GET {url}"),
            message: e.to_string(),
        };
        let trace_id = tempo::hex(&random_bytes::<16>().map_err(no_randomness)?);
        let parent = tempo::hex(&random_bytes::<8>().map_err(no_randomness)?);
        let sent_at = crate::common::util::now_rfc3339();
        let status = match live.http.get(&url).header("traceparent", format!("00-{trace_id}-{parent}-01")).send().await
        {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) => format!("error: {}", crate::cluster::live::with_causes(&e)),
        };
        sent.push(Sent { trace_id, sent_at, status, seq });
    }
    live.save_json(&format!("{dir}/sent.json"), &sent)?;
    let deadline = Instant::now() + live.scenario.timeouts.check.0.min(live.scenario.settle(Duration::from_secs(180)));
    let mut arrival = BTreeMap::new();
    // A request the gateway never answered started no trace (the judge's rule too): nothing to wait
    // for. When none was answered, Tempo is not asked at all, and the verdict names the gateway,
    // not a Tempo it never needed (the real control-plane tier, whose gateway has no pods, waited
    // out this deadline and the collector's before).
    for s in sent.iter().filter(|s| !s.status.starts_with("error")) {
        let id = &s.trace_id;
        let started = Instant::now();
        loop {
            let got = live.backend_get(Backend::Tempo, &format!("api/traces/{id}"), tempo::PROTOBUF).await;
            // Tempo not where the scenario says is no trace that has yet to arrive.
            if let Err(e @ LiveError::NoService { .. }) = got {
                return Err(e);
            }
            if let Ok(answer) = got {
                let format = TraceFormat::of_v1_answer(&answer.content_type);
                let spans = format.decode(&answer.body).unwrap_or_default();
                if !spans.is_empty() {
                    live.save(&format!("{dir}/tempo/{id}.{}", format.suffix()), &answer.body)?;
                }
                if spans.iter().any(&awaited) {
                    arrival.insert(id.clone(), started.elapsed().as_secs_f64());
                    break;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(live.scenario.settle(Duration::from_secs(3))).await;
        }
    }
    live.save_json(&format!("{dir}/arrival.json"), &arrival)
}

/// What the evidence holds of one sent trace.
pub(crate) enum Stored {
    /// Tempo never returned it.
    Missing,
    /// Its file could not be read or decoded: the judge cannot judge it.
    Unreadable(String),
    /// Its file and the spans with its trace id.
    Spans(String, Vec<tempo::SpanInfo>),
}

/// The spans of trace `id` as `<dir>/tempo/` holds them, in whichever format was stored.
pub(crate) fn stored(ev: &Evidence, dir: &str, id: &str) -> Stored {
    let Some((file, format)) = TraceFormat::ALL
        .into_iter()
        .map(|format| (format!("{dir}/tempo/{id}.{}", format.suffix()), format))
        .find(|(file, _)| ev.exists(file))
    else {
        return Stored::Missing;
    };
    let bytes = match ev.read_bytes(&file) {
        Ok(b) => b,
        Err(e) => return Stored::Unreadable(e.to_string()),
    };
    // An undecodable body says nothing about the trace: the judge cannot judge, it does not fail.
    match format.decode(&bytes) {
        Ok(spans) => Stored::Spans(file, spans.into_iter().filter(|sp| sp.trace_id == id).collect()),
        Err(e) => Stored::Unreadable(format!("evidence file {file} cannot be decoded: {e}")),
    }
}

/// `N` bytes from the operating system's random source, for `traceparent` ids: W3C Trace Context
/// (www.w3.org/TR/trace-context/#trace-id) wants trace ids unique across traces, which the clock
/// hashed in one process is not guaranteed to give (the all-zero id it calls invalid has odds 2^-128).
fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out)?;
    Ok(out)
}

/// Judges which sent traces arrived with tagged gateway spans.
pub fn judge(ev: &Evidence) -> Verdict {
    let Expect { tag_key: key, tag_value: value, gateway_service: gateway } = match ev.read_json(EXPECT) {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    let sent: Vec<Sent> = match ev.read_json(SENT) {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    if sent.is_empty() {
        return Verdict::error(format!("{SENT} lists no requests: nothing was sent"));
    }
    // Arrival times are notes only: a run folder without them is still judged.
    let arrival: BTreeMap<String, f64> = ev.read_json(ARRIVAL).unwrap_or_default();
    let mut found = Findings::reading([EXPECT.to_string(), SENT.to_string()]);
    let mut ok = 0;
    for s in &sent {
        let id = s.trace_id.to_ascii_lowercase();
        let status = &s.status;
        let (file, ours) = match stored(ev, "traces", &id) {
            // A request the gateway never answered started no trace there: nothing to look for.
            Stored::Missing if status.starts_with("error") => {
                found.unjudged(format!(
                    "trace {id}: the request got no answer from the gateway ({status}), so no trace was expected"
                ));
                continue;
            }
            Stored::Missing => {
                found.fail(format!("trace {id} (gateway answered {status}) never arrived in Tempo"));
                continue;
            }
            Stored::Unreadable(why) => {
                found.unjudged(why);
                continue;
            }
            Stored::Spans(file, spans) => (file, spans),
        };
        found.read(file.clone());
        let gw: Vec<_> = ours.iter().filter(|sp| sp.service.contains(gateway.as_str())).collect();
        let tagged = gw.iter().any(|sp| sp.attributes.get(&key) == Some(&value));
        if ours.is_empty() {
            found.fail(format!("{file}: Tempo returned spans, none with trace id {id}"));
        } else if gw.is_empty() {
            let services: BTreeSet<&str> = ours.iter().map(|s| s.service.as_str()).collect();
            found.fail(format!("trace {id}: no span from the gateway (`{gateway}`); services seen: {services:?}"));
        } else if !tagged {
            found.fail(format!("trace {id}: gateway spans lack the Telemetry custom tag {key}={value}"));
        } else {
            ok += 1;
            if let Some(lat) = arrival.get(&id) {
                found.note(format!("trace {id} arrived after {lat:.1}s"));
            }
        }
    }
    let pass = format!("{ok} of {} traces arrived with tagged gateway spans", sent.len());
    found.verdict(pass, |n| {
        format!("{n} of {} traces missing or incomplete: expected gateway spans tagged {key}={value}", sent.len())
    })
}
