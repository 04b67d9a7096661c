//! The curl clients: what `curl` in a client pod answers, by where it runs and what it asks.

use std::{sync::Arc, time::Duration};

use super::{
    Shared,
    cilium::{Source, ingress_allowed},
    mesh::{captured, resolve, serving as mesh_serving, waypoint_of},
    shapes::s,
    store::match_labels,
    xds,
};

/// A command in a pod. Only curl is installed in the client images (and fortio in fortio's,
/// [`super::fortio`]); curl behaves as curl does:
/// `-w %{http_code}` prints `000` when no response came, and the exit code says why (6 no such
/// host, 7 refused, 28 timed out, 56 connection reset).
pub async fn exec(shared: &Arc<Shared>, ns: &str, pod: &str, command: &[String]) -> (String, i32) {
    if command.first().map(String::as_str) == Some("fortio") {
        let mut st = shared.lock();
        let Some(client) = st.store.get("", "pods", ns, pod).cloned().filter(super::fortio::runs_fortio) else {
            return (String::new(), 127);
        };
        return match command.get(1).map(String::as_str) {
            Some("load") => super::fortio::load(&mut st, &client, command),
            _ => (String::new(), 1),
        };
    }
    if command.first().map(String::as_str) != Some("curl") {
        return (String::new(), 127);
    }
    let max_time: u64 = command
        .iter()
        .position(|a| a == "--max-time")
        .and_then(|i| command.get(i + 1))
        .and_then(|t| t.parse().ok())
        .unwrap_or(300);
    let Some(url) = command.iter().rev().find(|a| a.starts_with("http://")) else { return ("000".into(), 3) };
    let authority = url.trim_start_matches("http://").split('/').next().unwrap_or("").to_string();
    let host = authority.split(':').next().unwrap_or("").to_string();
    let port: u16 = authority.split(':').nth(1).and_then(|p| p.parse().ok()).unwrap_or(80);
    let path = url.trim_start_matches("http://").find('/').map_or("/", |i| &url["http://".len() + i..]).to_string();
    enum Outcome {
        /// Answered 200, by this pod when a Service's backend answered.
        Ok(Option<serde_json::Value>),
        Status(&'static str),
        Fail(i32),
        Hang,
        TimeOut,
    }
    let outcome = {
        let mut st = shared.lock();
        let labels: Vec<&str> = host.split('.').collect();
        // A pod IP reaches that pod directly; a name goes through its Service.
        let by_ip = host
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .and_then(|_| st.store.list("", "pods", None).into_iter().find(|p| s(p, "/status/podIP") == host));
        let (svc, target_ns) = match (&by_ip, labels.as_slice()) {
            (Some(p), _) => (String::new(), s(p, "/metadata/namespace").to_string()),
            (None, [svc, tns, "svc", ..]) => (svc.to_string(), tns.to_string()),
            (None, [svc, tns]) => (svc.to_string(), tns.to_string()),
            (None, [svc]) => (svc.to_string(), ns.to_string()),
            _ => (String::new(), String::new()),
        };
        xds::push(shared, &mut st);
        let strict = xds::strict(&st, &target_ns);
        let client = st.store.get("", "pods", ns, pod).cloned();
        let in_mesh = client.as_ref().is_some_and(|p| captured(&st, p));
        let client_peer = client
            .as_ref()
            .filter(|_| in_mesh)
            .map(|c| (s(c, "/metadata/namespace"), s(c, "/spec/serviceAccountName")));
        // A meshed client's request to a Service with a waypoint goes through the waypoint, which
        // decides by the policies attached to it with the client's identity and the request's
        // method and path; the destination's ztunnel then sees the waypoint's identity.
        let service = st.store.get("", "services", &target_ns, &svc).cloned();
        let via =
            service.filter(|_| in_mesh && by_ip.is_none()).and_then(|sv| waypoint_of(&st, &sv).map(|gw| (gw, sv)));
        let at_waypoint = via.as_ref().map(|(gw, sv)| {
            let name = s(gw, "/metadata/name");
            let up =
                st.store.list("", "pods", Some(&target_ns)).iter().any(|p| {
                    s(p, "/metadata/labels/gateway.networking.k8s.io~1gateway-name") == name && mesh_serving(p)
                });
            if !up {
                return Err(format!("waypoint {target_ns}/{name} has no serving pod"));
            }
            let request = xds::Request { peer: client_peer, port, http: Some(("GET", path.as_str())) };
            xds::decide_at_waypoint(&st, gw, sv, request).map_err(|reason| format!("403 {reason}"))
        });
        let peer = match &via {
            Some((gw, _)) => Some((target_ns.as_str(), s(gw, "/metadata/name"))),
            None => client_peer,
        };
        // The destination's ztunnel decides by the policies pushed to it, for the peer's identity
        // (none for plaintext) and the pod's port.
        let target = by_ip.clone().map(|p| (p, port)).or_else(|| resolve(&st, &target_ns, &svc, port).ok());
        let denied = target
            .as_ref()
            .filter(|(p, _)| captured(&st, p))
            .and_then(|(p, target_port)| xds::decide(&st, peer, p, *target_port).err());
        let target_captured = match &by_ip {
            Some(p) => captured(&st, p),
            None => resolve(&st, &target_ns, &svc, port).is_ok_and(|(p, _)| captured(&st, &p)),
        };
        if by_ip.is_none() && st.store.get("", "services", &target_ns, &svc).is_none() {
            Outcome::Fail(if host.parse::<std::net::Ipv4Addr>().is_ok() { 7 } else { 6 })
        } else if by_ip.is_none() && resolve(&st, &target_ns, &svc, port).is_err() {
            Outcome::Fail(7)
        } else if strict && st.faults.curl_hangs_under_strict {
            Outcome::Hang
        } else if !in_mesh && !reachable_in_plaintext(&st, by_ip.clone(), &target_ns, &svc, port) {
            Outcome::TimeOut
        } else if !in_mesh && strict && target_captured {
            Outcome::Fail(56)
        } else if let Some(Err(reason)) = at_waypoint {
            st.calls.push(format!("waypoint {target_ns}: {ns}/{pod} GET {path}: {reason}"));
            // Envoy's RBAC filter answers a denied request 403 "RBAC: access denied"; a waypoint
            // that does not serve leaves the connection to fail.
            if reason.starts_with("403") { Outcome::Status("403") } else { Outcome::Fail(56) }
        } else if let Some(reason) = denied {
            // ztunnel closes a denied connection: curl exits 56, as istio.io's ambient
            // getting-started (secure-and-visualize) shows for a client an L4 policy refuses.
            st.calls.push(format!("ztunnel {target_ns}: {ns}/{pod} {reason}"));
            Outcome::Fail(56)
        } else if by_ip.is_some() {
            Outcome::Ok(None)
        } else {
            let client = format!("{ns}/{}", pod);
            *st.connections.entry((client, format!("{target_ns}/{svc}-v1"))).or_default() += 1;
            // Which pod answers: a waypoint follows the Service's HTTPRoute, else the Service
            // balances over its serving pods (ztunnel and kube-proxy pick at random).
            let draw = unit(st.draws);
            st.draws += 1;
            let backend =
                via.as_ref().and_then(|(_, sv)| xds::routed_backend(&st, sv, draw)).unwrap_or_else(|| svc.clone());
            let pods = backend_pods(&st, &target_ns, &backend);
            let pick = unit(st.draws.wrapping_mul(31));
            Outcome::Ok(pods.get((pick * pods.len() as f64) as usize).cloned())
        }
    };
    match outcome {
        // `-w %{http_code}` prints the code; without it curl prints the body.
        Outcome::Ok(pod) if !command.iter().any(|a| a == "-w") => (body(pod.as_ref()), 0),
        Outcome::Ok(_) => ("200".into(), 0),
        Outcome::Status(code) => (code.into(), 0),
        Outcome::Fail(code) => ("000".into(), code),
        Outcome::TimeOut => {
            tokio::time::sleep(shared.sim(Duration::from_secs(max_time))).await;
            ("000".into(), 28)
        }
        Outcome::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            ("000".into(), 28)
        }
    }
}

/// Whether a client outside the mesh reaches the pod behind a Service (or a pod IP) in plaintext
/// through Cilium's policies ([`super::cilium`]).
fn reachable_in_plaintext(st: &super::State, by_ip: Option<serde_json::Value>, ns: &str, svc: &str, port: u16) -> bool {
    let target = match by_ip {
        Some(pod) => Some((pod, port)),
        None => resolve(st, ns, svc, port).ok(),
    };
    target.is_some_and(|(pod, target_port)| ingress_allowed(&st.store, &pod, Source::Cluster, target_port))
}

/// A uniform draw in [0, 1) from a counter (splitmix64): the simulation's balancing is repeatable
/// and spread like a random choice.
fn unit(counter: u64) -> f64 {
    let mut z = counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
}

/// The serving pods a Service selects.
fn backend_pods(st: &super::State, ns: &str, svc: &str) -> Vec<serde_json::Value> {
    let Some(selector) = st.store.get("", "services", ns, svc).and_then(|s| s.pointer("/spec/selector").cloned())
    else {
        return Vec::new();
    };
    st.store
        .list("", "pods", Some(ns))
        .into_iter()
        .filter(|p| {
            mesh_serving(p)
                && match_labels(&selector, p.pointer("/metadata/labels").unwrap_or(&serde_json::Value::Null))
        })
        .collect()
}

/// What an app answers: reviews names the pod that answered (istio/istio@1.30.3
/// samples/bookinfo/src/reviews/.../LibertyRestEndpoint.java: `podname` is `$HOSTNAME`).
fn body(pod: Option<&serde_json::Value>) -> String {
    match pod {
        Some(p) if s(p, "/metadata/labels/app") == "reviews" => format!(
            "{{\"id\": \"0\",\"podname\": \"{}\",\"clustername\": \"null\",\"reviews\": [{{  \"reviewer\": \"Reviewer1\",  \"text\": \"An extremely entertaining play by Shakespeare.\"}}]}}",
            s(p, "/metadata/name")
        ),
        _ => "{}".into(),
    }
}
