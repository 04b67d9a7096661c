//! Traces from the waypoint: in ambient mode only proxies make spans, so a trace through
//! bookinfo has spans from anything but the ingress gateway only where a waypoint carries a call
//! (istio.io docs/ambient/usage/l7-features). Requests sent through the gateway with chosen trace
//! ids (as the traces check sends them) must arrive in Tempo with spans from book-info's waypoint,
//! whose `service.name` is `waypoint.book-info`: istiod names an OpenTelemetry provider's service
//! after the proxy's service cluster (istio/istio@1.30.3 pilot/pkg/networking/core/tracing.go
//! `otelConfig(serviceCluster, …)`), which is `<app label>.<namespace>`, else
//! `<workload name>.<namespace>` (pkg/bootstrap/config.go `serviceClusterOrDefault`); the waypoint
//! template gives its pods no app label and the Deployment the Gateway's name
//! (manifests/charts/istio-control/istio-discovery/files/waypoint.yaml).
//!
//! The gateway's own call to productpage skips the waypoint unless the Service is labelled
//! `istio.io/ingress-use-waypoint` (pilot/pkg/model/service.go); productpage's calls to details and
//! reviews, which forward the trace context, go through it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{
    BoxFuture, CheckDef, Collector,
    traces::{self, Sent, Stored},
};
use crate::{
    cluster::live::{Live, LiveError},
    common::{catalog, names},
    evidence::{Evidence, Findings, Verdict},
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::L7_TRACES, collect: Collector::Cluster(collect), judge };

const DIR: &str = "l7-traces";
const EXPECT: &str = "l7-traces/expect.json";
const SENT: &str = "l7-traces/sent.json";

/// `l7-traces/expect.json`: whose spans each trace must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expect {
    /// The waypoint's `service.name`.
    pub waypoint_service: String,
}

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let expect = Expect { waypoint_service: format!("{}.{}", names::WAYPOINT, names::BOOKINFO_NS) };
        live.save_json(EXPECT, &expect)?;
        traces::send_traced(live, DIR, |span| span.service == expect.waypoint_service).await
    })
}

/// Judges which sent traces arrived with spans from the waypoint.
pub fn judge(ev: &Evidence) -> Verdict {
    let Expect { waypoint_service: waypoint } = match ev.read_json(EXPECT) {
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
    let mut found = Findings::reading([EXPECT.to_string(), SENT.to_string()]);
    let mut ok = 0;
    for s in &sent {
        let id = s.trace_id.to_ascii_lowercase();
        match traces::stored(ev, DIR, &id) {
            Stored::Missing if s.status.starts_with("error") => found.unjudged(format!(
                "trace {id}: the request got no answer from the gateway ({}), so no trace was expected",
                s.status
            )),
            Stored::Missing => found.fail(format!("trace {id} (gateway answered {}) never arrived in Tempo", s.status)),
            Stored::Unreadable(why) => found.unjudged(why),
            Stored::Spans(file, spans) => {
                found.read(file.clone());
                let from_waypoint = spans.iter().filter(|sp| sp.service == waypoint).count();
                if from_waypoint == 0 {
                    let services: BTreeSet<&str> = spans.iter().map(|sp| sp.service.as_str()).collect();
                    found.fail(format!(
                        "trace {id}: no span from the waypoint (`{waypoint}`), only from {services:?}: the calls skipped it, or it does not trace"
                    ));
                } else {
                    ok += 1;
                    found.note(format!("trace {id}: {from_waypoint} span(s) from {waypoint}"));
                }
            }
        }
    }
    found.verdict(format!("{ok} of {} traces have spans from the waypoint {waypoint}", sent.len()), |n| {
        format!("{n} of {} traces without spans from the waypoint {waypoint}", sent.len())
    })
}
