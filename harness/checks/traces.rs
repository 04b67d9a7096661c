//! Trace arrival in Tempo: requests sent to the ingress gateway with W3C `traceparent` ids chosen
//! here must arrive in Tempo with spans from the gateway carrying the `Telemetry` resource's
//! literal custom tag.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BoxFuture, CheckDef, Collector};
use crate::{
    catalog,
    evidence::{Evidence, Verdict},
    live::{Live, LiveError},
    tempo,
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

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        live.save_json(
            "traces/expect.json",
            &json!({ "tag_key": TAG_KEY, "tag_value": TAG_VALUE, "gateway_service": GATEWAY_SERVICE }),
        )?;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client builds");
        let url = format!("{}/productpage", live.scenario.ingress.base_url());
        let mut sent = Vec::new();
        for i in 0..TRACES {
            let trace_id = random_hex(16);
            let parent = random_hex(8);
            let sent_at = crate::util::now_rfc3339();
            let status = match http.get(&url).header("traceparent", format!("00-{trace_id}-{parent}-01")).send().await {
                Ok(r) => r.status().as_u16().to_string(),
                Err(e) => format!("error: {e}"),
            };
            sent.push(json!({ "trace_id": trace_id, "sent_at": sent_at, "status": status, "seq": i }));
        }
        live.save_json("traces/sent.json", &Value::Array(sent.clone()))?;
        let deadline =
            Instant::now() + live.scenario.timeouts.check.0.min(live.scenario.settle(Duration::from_secs(180)));
        let mut latencies = serde_json::Map::new();
        for s in &sent {
            let id = s["trace_id"].as_str().unwrap_or_default();
            let started = Instant::now();
            loop {
                let got = live.service_get("tempo", "tempo", 3200, &format!("api/traces/{id}")).await;
                if let Ok(body) = got
                    && !body.is_empty()
                    && tempo::decode_json(&body).map(|s| !s.is_empty()).unwrap_or(false)
                {
                    live.save(&format!("traces/tempo/{id}.json"), &body)?;
                    latencies.insert(id.to_string(), json!(started.elapsed().as_secs_f64()));
                    break;
                }
                if Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(live.scenario.settle(Duration::from_secs(3))).await;
            }
        }
        live.save_json("traces/arrival.json", &Value::Object(latencies))
    })
}

fn random_hex(bytes: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < bytes * 2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(bytes * 2);
    out
}

/// Judges which sent traces arrived with tagged gateway spans.
pub fn judge(ev: &Evidence) -> Verdict {
    let expect: Value = match ev.read_json("traces/expect.json") {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    let sent: Vec<Value> = match ev.read_json("traces/sent.json") {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    let key = expect["tag_key"].as_str().unwrap_or(TAG_KEY);
    let value = expect["tag_value"].as_str().unwrap_or(TAG_VALUE);
    let gateway = expect["gateway_service"].as_str().unwrap_or(GATEWAY_SERVICE);
    if sent.is_empty() {
        return Verdict::error("traces/sent.json lists no requests: nothing was sent");
    }
    let arrival: Value = ev.read_json("traces/arrival.json").unwrap_or(Value::Null);
    let mut files = vec!["traces/expect.json".to_string(), "traces/sent.json".to_string()];
    let (mut ok, mut problems, mut notes) = (0, Vec::new(), Vec::new());
    for s in &sent {
        let id = s["trace_id"].as_str().unwrap_or_default().to_ascii_lowercase();
        let status = s["status"].as_str().unwrap_or("?");
        let candidates = [
            (format!("traces/tempo/{id}.pb"), 1u8),
            (format!("traces/tempo/{id}.v2.pb"), 2),
            (format!("traces/tempo/{id}.json"), 0),
        ];
        let Some((file, shape)) = candidates.into_iter().find(|(f, _)| ev.exists(f)) else {
            problems.push(format!("trace {id} (gateway answered {status}) never arrived in Tempo"));
            continue;
        };
        files.push(file.clone());
        let bytes = match ev.read_bytes(&file) {
            Ok(b) => b,
            Err(e) => return e.into(),
        };
        let spans = match shape {
            1 => tempo::decode_v1_protobuf(&bytes),
            2 => tempo::decode_v2_protobuf(&bytes),
            _ => tempo::decode_json(&bytes),
        };
        // An undecodable body says nothing about the trace: the judge cannot judge, it does not fail.
        let spans = match spans {
            Ok(s) => s,
            Err(e) => {
                return Verdict::error(format!("evidence file {file} cannot be decoded: {e}")).with_evidence(files);
            }
        };
        let ours: Vec<_> = spans.iter().filter(|sp| sp.trace_id == id).collect();
        let gw: Vec<_> = ours.iter().filter(|sp| sp.service.contains(gateway)).collect();
        let tagged = gw.iter().any(|sp| sp.attributes.get(key).map(String::as_str) == Some(value));
        if ours.is_empty() {
            problems.push(format!("{file}: Tempo returned spans, none with trace id {id}"));
        } else if gw.is_empty() {
            let services: BTreeSet<&str> = ours.iter().map(|s| s.service.as_str()).collect();
            problems.push(format!("trace {id}: no span from the gateway (`{gateway}`); services seen: {services:?}"));
        } else if !tagged {
            problems.push(format!("trace {id}: gateway spans lack the Telemetry custom tag {key}={value}"));
        } else {
            ok += 1;
            if let Some(lat) = arrival.get(&id).and_then(Value::as_f64) {
                notes.push(format!("trace {id} arrived after {lat:.1}s"));
            }
        }
    }
    let pass = format!("{ok} of {} traces arrived with tagged gateway spans", sent.len());
    Verdict::from_findings(problems, notes, files, pass, |n| {
        format!("{n} of {} traces missing or incomplete: expected gateway spans tagged {key}={value}", sent.len())
    })
}

use std::collections::BTreeSet;
