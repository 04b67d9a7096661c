//! mTLS between bookinfo workloads, from four independent signals that must all agree:
//! ztunnel's workload view (every bookinfo workload captured with HBONE), ztunnel's metrics (every
//! connection between bookinfo workloads is `mutual_tls` with SPIFFE principals of book-info
//! service accounts), ztunnel's access log (every hop of bookinfo's call graph logged with both
//! SPIFFE identities, each that of the workload's own service account), and behaviour (under
//! STRICT, a client outside the mesh is refused while a client inside gets through).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::{
    BoxFuture, CheckDef, Collector, Curl,
    ztunnel::{self, Parts},
};
use crate::{
    cluster::live::{Live, LiveError},
    common::catalog,
    common::names,
    evidence::{Evidence, Findings, Format, Verdict},
    formats::{promtext, ztunnel_log},
    plan::fixtures,
};

/// Registration.
pub const CHECK: CheckDef = CheckDef { info: &catalog::MTLS, collect: Collector::Cluster(collect), judge };

/// Namespace whose workloads must be in the mesh.
pub const NAMESPACE: &str = "book-info";
/// Bookinfo's apps; each must have a captured workload.
pub const APPS: &[&str] = &["productpage", "details", "ratings", "reviews"];

const STRICT: &str = "mtls/strict.json";
const EXPECT: &str = "mtls/expect.json";

/// `mtls/expect.json`: whose workloads must be in the mesh. The collector writes it, the judge
/// reads it; a missing or malformed one is an error verdict.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Expect {
    /// The namespace of the workloads.
    pub namespace: String,
    /// The apps, each of which must have a captured workload.
    pub apps: Vec<String>,
    /// The calls between apps that ztunnel's access log must show as mutual TLS. Folders written
    /// before the access log was judged have none recorded: bookinfo's, the only app ever deployed.
    #[serde(default = "bookinfo_hops")]
    pub hops: Vec<Hop>,
}

/// One call of an app's graph: `from` opens connections to `to`'s Service.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hop {
    /// The calling app.
    pub from: String,
    /// The called app.
    pub to: String,
}

/// Bookinfo's calls between its apps: productpage calls details and reviews
/// (istio/istio@1.30.3 samples/bookinfo/src/productpage/productpage.py, `details`/`reviews`
/// services), reviews v2 and v3 call ratings (samples/bookinfo/src/reviews/.../LibertyRestEndpoint.java,
/// `ENABLE_RATINGS`, set by platform/kube/bookinfo.yaml for v2 and v3 only).
pub fn bookinfo_hops() -> Vec<Hop> {
    [("productpage", "details"), ("productpage", "reviews"), ("reviews", "ratings")]
        .into_iter()
        .map(|(from, to)| Hop { from: from.into(), to: to.into() })
        .collect()
}

/// This check's folder. Its ztunnel evidence is its own (`mtls/ztunnel/<node>/`, the metrics check
/// keeps another copy), so re-judging mtls reads exactly what the live run judged.
const CHECK_DIR: &str = "mtls";

fn collect(live: &Live) -> BoxFuture<'_, Result<(), LiveError>> {
    Box::pin(async move {
        let expect = Expect {
            namespace: NAMESPACE.into(),
            apps: APPS.iter().map(|a| a.to_string()).collect(),
            hops: bookinfo_hops(),
        };
        live.save_json(EXPECT, &expect)?;
        crate::cluster::traffic::drive_bookinfo(live, 20).await;
        ztunnel::collect(live, CHECK_DIR, Parts::All).await?;
        let target = format!("http://productpage.{NAMESPACE}.svc.cluster.local:9080/productpage");
        // The baseline: before STRICT the plaintext client must get through, else a "refusal" under
        // STRICT could be DNS, a dead pod or a policy that blocks everything.
        let mut results = vec![curl(live, "before", Client::Outside, &target).await];
        let policy = fixtures::manifest("mtls-strict.yaml")?;
        let strict = live.apply(&policy, Some(NAMESPACE), true).await?;
        // istiod converts the PeerAuthentication into a ztunnel DENY policy; give it time to propagate.
        tokio::time::sleep(live.scenario.settle(std::time::Duration::from_secs(10))).await;
        for client in [Client::Outside, Client::Inside] {
            results.push(curl(live, "strict", client, &target).await);
        }
        // STRICT comes off before anything else can fail; had this collector failed or timed out
        // earlier, the session would have taken it off (Live::revert_all).
        let removed = live.revert(strict).await;
        live.save_json(
            STRICT,
            &json!({ "policy": "PeerAuthentication book-info/meshcheck-strict mode STRICT", "results": results }),
        )?;
        removed
    })
}

/// The two curl clients the STRICT probe uses.
#[derive(Clone, Copy)]
enum Client {
    /// Plaintext, in a namespace outside the mesh.
    Outside,
    /// Meshed, in an ambient namespace.
    Inside,
}

/// One curl from a client pod; the result records the HTTP code, curl's exit code and the API status.
async fn curl(live: &Live, phase: &str, client: Client, target: &str) -> Value {
    let (name, ns, pod) = match client {
        Client::Outside => ("outside", names::OUTSIDE_NS, "curl-outside"),
        Client::Inside => ("inside", names::INSIDE_NS, "curl-inside"),
    };
    let mut record = json!({ "phase": phase, "client": name, "namespace": ns, "pod": pod, "target": target });
    if let (Some(r), Value::Object(outcome)) =
        (record.as_object_mut(), super::curl_from(live, ns, pod, target, 10).await)
    {
        r.extend(outcome);
    }
    record
}

/// Judges the three signals.
pub fn judge(ev: &Evidence) -> Verdict {
    let Expect { namespace: ns, apps, hops } = match ev.read_json(EXPECT) {
        Ok(v) => v,
        Err(e) => return e.into(),
    };
    if apps.is_empty() {
        return Verdict::error(format!("{EXPECT} names no apps: there is nothing to hold the mesh to"))
            .with_evidence([EXPECT.to_string()]);
    }
    let (root, nodes) = match ztunnel::nodes(ev, CHECK_DIR) {
        Ok(n) => n,
        Err(v) => return v,
    };
    let mut found = Findings::reading([EXPECT.to_string()]);
    ztunnel::note_draining(ev, CHECK_DIR, &mut found);

    // Signal 1: capture.
    let mut captured = BTreeSet::new();
    let mut workloads = Workloads::default();
    for node in &nodes {
        let file = format!("{root}/{node}/config_dump.json");
        let dump: Value = match ev.read_json(&file) {
            Ok(v) => v,
            Err(e) => return e.into(),
        };
        found.read(file.clone());
        for w in ztunnel::dump_workloads(&dump).into_iter().filter(|w| w["namespace"] == ns.as_str()) {
            let name = w["name"].as_str().unwrap_or("?");
            let app = w["canonicalName"].as_str().or(w["workloadName"].as_str()).unwrap_or(name);
            let protocol = w["protocol"].as_str().unwrap_or("none");
            workloads.add(name, app, w["serviceAccount"].as_str());
            match (protocol, apps.iter().any(|a| a == app)) {
                ("HBONE", true) => {
                    captured.insert(app.to_string());
                }
                (_, true) => found
                    .fail(format!("{file}: workload {ns}/{name} has protocol {protocol} (not captured by ambient)")),
                // Waypoints and gateways in the namespace speak TCP by design: not bookinfo's apps.
                (_, false) => {
                    found.note(format!("{ns}/{name} (app {app}) is not one of the expected apps; protocol {protocol}"))
                }
            }
        }
    }
    for app in &apps {
        if !captured.contains(app) {
            found.fail(format!("no ztunnel reports an HBONE workload for app `{app}` in {ns}"));
        }
    }
    found.note(format!("HBONE workloads: {}", captured.iter().cloned().collect::<Vec<_>>().join(", ")));

    // Signal 2: metrics.
    let mut mtls_series = 0usize;
    for node in &nodes {
        let file = format!("{root}/{node}/metrics.prom");
        let text = match ev.read_text(&file) {
            Ok(t) => t,
            Err(e) => return e.into(),
        };
        found.read(file.clone());
        let scrape = promtext::parse(&text);
        for s in scrape.samples_named("istio_tcp_connections_opened_total") {
            let internal =
                s.label("source_workload_namespace") == ns && s.label("destination_workload_namespace") == ns;
            if !internal || s.value <= 0.0 {
                continue;
            }
            let src_ok = s.label("source_principal").starts_with("spiffe://")
                && s.label("source_principal").contains(&format!("/ns/{ns}/sa/"));
            let dst_ok = s.label("destination_principal").contains(&format!("/ns/{ns}/sa/"));
            if s.label("connection_security_policy") != "mutual_tls" || !src_ok || !dst_ok {
                found.fail(format!(
                    "{file}: {} -> {} reported by {} with connection_security_policy=\"{}\", source_principal=\"{}\", destination_principal=\"{}\"",
                    s.label("source_workload"),
                    s.label("destination_workload"),
                    s.label("reporter"),
                    s.label("connection_security_policy"),
                    s.label("source_principal"),
                    s.label("destination_principal")
                ));
            } else {
                mtls_series += 1;
            }
        }
    }
    if mtls_series == 0 {
        found.fail(format!(
            "no ztunnel metric shows a connection between {ns} workloads (istio_tcp_connections_opened_total)"
        ));
    }
    found.note(format!("{mtls_series} mutual_tls connection series between {ns} workloads"));

    // Signal 3: the access log, hop by hop.
    let mut events = Vec::new();
    for node in &nodes {
        let file = format!("{root}/{node}/access.log");
        match ev.read_text(&file) {
            Ok(text) => {
                found.read(file.clone());
                events.extend(ztunnel_log::parse(&text));
            }
            Err(e) => return e.into(),
        }
    }
    judge_access_log(&events, &ns, &apps, &hops, &workloads, &mut found);

    // Signal 4: behaviour under STRICT, against a baseline taken before it.
    match ev.read_json::<Value>(STRICT) {
        Err(e) => found.unreadable(e),
        Ok(_) if ev.format() == Format::One => {
            found.read(STRICT);
            found.unjudged(format!(
                "format 1: {STRICT} has no baseline (the outside client before STRICT) and no curl exit codes, \
                 format-2 evidence without which a refusal under STRICT proves nothing"
            ));
        }
        Ok(strict) => {
            found.read(STRICT);
            judge_strict(&strict, &mut found);
        }
    }

    let pass = format!("mTLS confirmed by capture, metrics, access log and STRICT behaviour for {ns}");
    found.verdict(pass, |n| {
        format!(
            "{n} mTLS finding(s) in {ns}: expected HBONE capture, mutual_tls connections, both identities logged per hop and STRICT refusal"
        )
    })
}

/// The workloads the config dumps list: pod name → (app, service account).
#[derive(Default)]
struct Workloads(std::collections::BTreeMap<String, (String, Option<String>)>);

impl Workloads {
    fn add(&mut self, pod: &str, app: &str, service_account: Option<&str>) {
        self.0.insert(pod.to_string(), (app.to_string(), service_account.map(str::to_string)));
    }

    /// The app of a logged workload: the config dump's canonical name for the pod, else the app
    /// (of `apps`) whose name prefixes the pod's (Deployment pods are `<app>-<version>-<hash>-<hash>`).
    fn app<'a>(&'a self, pod: &str, apps: &'a [String]) -> Option<&'a str> {
        self.0.get(pod).map(|(app, _)| app.as_str()).or_else(|| {
            apps.iter().find(|a| pod.strip_prefix(a.as_str()).is_some_and(|r| r.starts_with('-'))).map(String::as_str)
        })
    }

    /// The service account the config dump gives the pod, if it does.
    fn service_account(&self, pod: &str) -> Option<&str> {
        self.0.get(pod).and_then(|(_, sa)| sa.as_deref())
    }
}

/// Signal 3: each hop of the app graph is proven when ztunnel logged a completed connection for it
/// with both SPIFFE identities, which ztunnel writes only for `mutual_tls` connections
/// ([`ztunnel_log`]), each in the namespace and, where the config dump names the pod's service
/// account, that account's. A hop logged only without identities was plaintext; a hop never
/// logged is unproven. Either fails, naming the hop.
fn judge_access_log(
    events: &[ztunnel_log::AccessEvent],
    ns: &str,
    apps: &[String],
    hops: &[Hop],
    workloads: &Workloads,
    found: &mut Findings,
) {
    let mut proven = Vec::new();
    let mut names: Vec<String> = apps.to_vec();
    names.extend(hops.iter().flat_map(|h| [h.from.clone(), h.to.clone()]));
    let apps = names.as_slice();
    for Hop { from, to } in hops {
        let of_hop: Vec<&ztunnel_log::AccessEvent> = events
            .iter()
            .filter(|e| e.message == "connection complete")
            .filter(|e| {
                // ztunnel leaves out dst.namespace when it knows no destination workload; the
                // Service's host (`<svc>.<ns>.svc…`) still names it.
                let dst_ns =
                    e.field("dst.namespace").or_else(|| e.field("dst.service").and_then(|s| s.split('.').nth(1)));
                e.field("src.namespace") == Some(ns) && dst_ns == Some(ns)
            })
            .filter(|e| e.field("src.workload").and_then(|w| workloads.app(w, apps)) == Some(from.as_str()))
            .filter(|e| {
                let by_pod = e.field("dst.workload").and_then(|w| workloads.app(w, apps));
                let by_service = e.field("dst.service").and_then(|s| s.split('.').next());
                by_pod.or(by_service) == Some(to.as_str())
            })
            .collect();
        let identity_ok = |e: &ztunnel_log::AccessEvent, end: &str| {
            let Some(id) = e.field(&format!("{end}.identity")) else { return false };
            let sa = e.field(&format!("{end}.workload")).and_then(|w| workloads.service_account(w));
            id.starts_with("spiffe://")
                && match sa {
                    Some(sa) => id.ends_with(&format!("/ns/{ns}/sa/{sa}")),
                    None => id.contains(&format!("/ns/{ns}/sa/")),
                }
        };
        let completed: Vec<_> = of_hop.iter().filter(|e| e.level == "info").collect();
        let good = completed.iter().filter(|e| identity_ok(e, "src") && identity_ok(e, "dst")).count();
        let failed = of_hop.len() - completed.len();
        if failed > 0 {
            found.note(format!("{from} -> {to}: {failed} failed connection(s) logged by ztunnel"));
        }
        match (completed.first(), good) {
            _ if of_hop.is_empty() => {
                found.fail(format!("no ztunnel access-log line shows a connection {from} -> {to} in {ns}"))
            }
            (None, _) => found.fail(format!(
                "{from} -> {to}: all {failed} logged connection(s) failed (level error), e.g. error={}",
                of_hop[0].field("error").unwrap_or("(none given)")
            )),
            (Some(e), 0) => {
                found.fail(format!(
                    "{from} -> {to}: {} access-log line(s), none with both SPIFFE identities of {ns} service accounts \
                     (ztunnel writes them only for mutual TLS); e.g. src.identity={}, dst.identity={}, direction={}",
                    completed.len(),
                    e.field("src.identity").unwrap_or("(absent)"),
                    e.field("dst.identity").unwrap_or("(absent)"),
                    e.field("direction").unwrap_or("?")
                ));
            }
            (_, good) => proven.push(format!("{from} -> {to} ({good})")),
        }
    }
    found.note(format!("hops logged with both identities: {}", proven.join(", ")));
}

/// The STRICT probe: the outside client reached productpage before STRICT, is refused at the
/// connection level under it (curl exit 56 or 52: istio.io's mtls-migration task shows `000` with
/// "command terminated with exit code 56" for a refused plaintext client), and the inside client
/// still gets 200. A failed baseline, an exec that did not run, or no connection at all where an
/// answer or a refusal was expected (curl exit 6, 7, 28) leaves the question open: unjudged.
fn judge_strict(strict: &Value, found: &mut Findings) {
    let results: Vec<&Value> = strict["results"].as_array().into_iter().flatten().collect();
    let find = |phase: &str, client: &str| {
        results.iter().copied().find(|r| r["phase"].as_str() == Some(phase) && r["client"] == client)
    };
    for (phase, client) in [("before", "outside"), ("strict", "outside"), ("strict", "inside")] {
        let Some(r) = find(phase, client) else {
            found.unjudged(match phase {
                "before" => format!(
                    "{STRICT} has no baseline: the outside client was not tried before STRICT, so a refusal proves nothing"
                ),
                _ => format!("{STRICT} has no result for the {client} client under STRICT"),
            });
            continue;
        };
        let target = r["target"].as_str().unwrap_or("?");
        let curl = Curl::of(r);
        let seen = format!("{phase}: {client} client got {curl}");
        match (phase, client, &curl) {
            (_, _, Curl::NotRun(_)) => found.unjudged(format!("{phase} probe from the {client} client: {curl}")),
            ("before", _, c) if !c.got_through() => found.unjudged(format!(
                "before STRICT the plaintext client outside the mesh could not reach {target} ({curl}): the baseline failed, so a refusal under STRICT would prove nothing"
            )),
            ("strict", _, Curl::NoConnection(_)) => found.unjudged(format!(
                "under STRICT the {client} client made no connection to {target} ({curl}): that proves nothing about mTLS"
            )),
            ("strict", "outside", c) if c.got_through() => found.fail(format!(
                "under STRICT a plaintext client outside the mesh still reached {target} ({curl}); expected refusal"
            )),
            ("strict", "outside", Curl::Reset(_)) => found.note(seen),
            ("strict", "outside", _) => found.fail(format!(
                "under STRICT the plaintext client outside the mesh got {curl}, not a connection reset (curl exit 56) or empty reply (52): that is not mTLS refusing plaintext"
            )),
            ("strict", "inside", Curl::Answered(code)) if code == "200" => found.note(seen),
            ("strict", "inside", _) => {
                found.fail(format!("under STRICT the client inside the mesh got {curl} from {target}; expected HTTP 200"))
            }
            _ => found.note(seen),
        }
    }
}
