//! The simulation's programs behind a real API server (issue 21, the real control-plane tier). No
//! API server, controllers or stand-in tools of its own: its store is a copy of what kube-apiserver
//! holds ([`Mirrored::replace`], kept fresh by the tier's mirror), and what runs in the pods
//! answers the kubelet's streaming calls, which `kubelet-streams` (suites/controlplane/kubelet)
//! passes on over a Unix socket: exec (curl in the client pods), port-forward (ztunnel's admin
//! and stats ports and every other program's) and container logs. Each is computed from the copy
//! by the same rules the rehearsals use, so a check on the real tier meets the same programs.
//!
//! The socket's protocol: one connection a call; the caller's JSON line, then the answer's
//! (`{"error": ...}` when the call fails as the kubelet's would). `exec` answers `stdout` and
//! `exit_code`; `logs` answers `text`; `ports` the pods' declared ports; `portforward` (to a
//! pod's port) and `connect` (to a pod's or a Service's address, as the API server's service proxy
//! dials it) read the forwarded HTTP request after their line, then answer `{}` and the program's
//! reply, the connection closing after it, as a simulated port does after one answer. A
//! `connect` to istiod's webhook port is TLS after the `{}` line, with istiod's certificate
//! ([`Mirrored::new`]): the API server's admission webhook call, which verifies it against the
//! `caBundle` istiod patched in.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{Shared, SimOptions, Timings, services, web};

/// How long a call waits for its pod to reach the copy: several of the mirror's refreshes.
const KNOWN_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// The programs of a simulation whose objects are another API server's.
pub struct Mirrored {
    shared: Arc<Shared>,
    /// istiod's serving certificate on its webhook port ([`super::istiod::WEBHOOK_PORT`]).
    istiod_tls: tokio_rustls::TlsAcceptor,
}

/// The answer's line of a call that failed as the kubelet's would.
fn error_line(error: &str) -> Vec<u8> {
    [serde_json::to_vec(&json!({ "error": error })).unwrap_or_default(), b"\n".to_vec()].concat()
}

/// What came in on a connection before its first HTTP request was whole.
enum Incoming {
    Request(web::HttpRequest),
    /// A TLS handshake record (type 22) first.
    TlsHandshake,
    Closed,
}

/// Reads one HTTP request, or stops at a TLS handshake in its first bytes.
async fn read_request(r: &mut (impl tokio::io::AsyncRead + Unpin)) -> Incoming {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return Incoming::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.first() == Some(&0x16) {
            return Incoming::TlsHandshake;
        }
        if let Some(request) = web::parse_request(&buf) {
            return Incoming::Request(request);
        }
    }
}

/// A pod's probes ([`Mirrored::probes`]): each as its period and failure threshold in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Probes {
    pub reach: bool,
    pub readiness: Option<(u64, u64)>,
    pub liveness: Option<(u64, u64)>,
}

/// What the caller asks for on the socket.
#[derive(serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Call {
    Exec {
        namespace: String,
        pod: String,
        command: Vec<String>,
    },
    Logs {
        namespace: String,
        pod: String,
    },
    Portforward {
        namespace: String,
        pod: String,
        port: u16,
    },
    /// The ports the pods declare, for kubelet-streams to listen on.
    Ports,
    /// A connection made to a pod's or a Service's address (the service proxy's dial).
    Connect {
        address: String,
        port: u16,
    },
}

impl Mirrored {
    /// Programs answering from an empty copy, with the rehearsals' timings; istiod serves its
    /// webhook with `istiod_tls`.
    pub fn new(opts: SimOptions, istiod_tls: tokio_rustls::TlsAcceptor) -> Mirrored {
        Mirrored { shared: super::shared(&opts, Timings::rehearsal(), [0; 5]), istiod_tls }
    }

    /// The objects of one type are now exactly `items`, as the real API server listed them; istiod
    /// sees the change (policies it pushes after its delay, as in the rehearsals).
    pub fn replace(&self, group: &str, plural: &str, items: Vec<Value>) {
        let mut st = self.shared.lock();
        st.store.mirror(group, plural, items);
        super::xds::push(&self.shared, &mut st);
    }

    /// A Prometheus pod's targets two ways ([`super::prometheus::both_ways`]): by its configuration
    /// file, and by the Rust path of prometheus-operator's rules; `None` without that pod.
    pub fn prometheus_both_ways(&self, namespace: &str, pod: &str) -> Option<(Vec<String>, Vec<String>)> {
        let st = self.shared.lock();
        let pod = st.store.get("", "pods", namespace, pod)?.clone();
        Some(super::prometheus::both_ways(&st, &pod))
    }

    /// The ingress gateway on the host (as a LoadBalancer's address: the gateway Service's port
    /// 80 to a Ready gateway pod a bookinfo Gateway selects, [`services::serve_gateway`]).
    pub async fn serve_gateway(self: Arc<Self>, listener: tokio::net::TcpListener) {
        services::serve_gateway(listener, self.shared.clone()).await
    }

    /// The mirror of upstream manifests and chart repository indexes a scenario's `mirrors` point
    /// at ([`services::serve_mirror`]), as in the rehearsals.
    pub async fn serve_mirror(self: Arc<Self>, listener: tokio::net::TcpListener) {
        services::serve_mirror(listener, self.shared.clone()).await
    }

    /// A pod's probes as the Rust-only tier's kubelet judges them: whether they reach its probed
    /// port (from the node, or from istio-cni's SNAT address through Cilium's policies when the pod
    /// is captured: [`super::controllers::probes_reach`]), and its readiness and liveness probes;
    /// `None` for a pod not in the copy or without probes.
    pub fn probes(&self, namespace: &str, pod: &str) -> Option<Probes> {
        let st = self.shared.lock();
        let pod = st.store.get("", "pods", namespace, pod)?;
        let containers = pod.pointer("/spec/containers").and_then(Value::as_array)?;
        let readiness = containers.iter().find_map(|c| super::controllers::probe(c, "readinessProbe"));
        let liveness = containers.iter().find_map(|c| super::controllers::probe(c, "livenessProbe"));
        if readiness.is_none() && liveness.is_none() {
            return None;
        }
        Some(Probes { reach: super::controllers::probes_reach(&st, pod), readiness, liveness })
    }

    /// Answers the socket's calls until the listener is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::UnixListener) {
        while let Ok((conn, _)) = listener.accept().await {
            let me = self.clone();
            tokio::spawn(async move { me.answer(conn).await });
        }
    }

    async fn answer(&self, conn: tokio::net::UnixStream) {
        let mut conn = BufReader::new(conn);
        let mut line = String::new();
        if conn.read_line(&mut line).await.is_err() {
            return;
        }
        let reply = match serde_json::from_str::<Call>(&line) {
            Err(e) => json!({"error": format!("a call meshcheck's simulation does not know: {e}")}),
            Ok(
                Call::Exec { namespace, pod, .. }
                | Call::Logs { namespace, pod }
                | Call::Portforward { namespace, pod, .. },
            ) if !self.knows(&namespace, &pod).await => {
                json!({"error": format!("pod {namespace}/{pod} not found")})
            }
            Ok(Call::Exec { namespace, pod, command }) => {
                let (stdout, code) = services::exec(&self.shared, &namespace, &pod, &command).await;
                json!({"stdout": stdout, "exit_code": code})
            }
            Ok(Call::Logs { namespace, pod }) => match services::pod_log(&self.shared, &namespace, &pod) {
                Some(text) => json!({"text": text}),
                None => json!({"error": format!("pod {namespace}/{pod} not found")}),
            },
            Ok(Call::Ports) => json!({"ports": self.ports()}),
            Ok(Call::Connect { address, port }) => match self.at(&address, port) {
                Some((namespace, pod, port)) if self.is_istiod_webhook(&namespace, &pod, port) => {
                    return self.webhook(conn).await;
                }
                Some((namespace, pod, port)) => return self.forward(conn, &namespace, &pod, port).await,
                None => json!({"error": format!("dial tcp {address}:{port}: connect: connection refused")}),
            },
            Ok(Call::Portforward { namespace, pod, port }) => return self.forward(conn, &namespace, &pod, port).await,
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_default();
        out.push(b'\n');
        let _ = conn.get_mut().write_all(&out).await;
    }

    /// One HTTP exchange with the program on the pod's port, the connection closing after it.
    async fn forward(&self, mut conn: BufReader<tokio::net::UnixStream>, namespace: &str, pod: &str, port: u16) {
        let request = match read_request(&mut conn).await {
            Incoming::Request(request) => request,
            Incoming::Closed => return,
            // A TLS handshake to a port whose program the simulation serves in plain HTTP: the
            // caller (the API server calling a webhook: kube-prometheus-stack's operator on 10250)
            // sees the handshake fail at once, as against a certificate it does not trust, instead
            // of waiting out its timeout for an HTTP request that never comes.
            Incoming::TlsHandshake => {
                let error = format!("{namespace}/{pod}:{port}: the simulation serves no TLS here");
                let _ = conn.get_mut().write_all(&error_line(&error)).await;
                return;
            }
        };
        let out = match services::pod_exchange(&self.shared, namespace, pod, port, &request) {
            Some(reply) => [b"{}\n".to_vec(), reply.to_bytes()].concat(),
            // What the kubelet's port-forward says when nothing listens (the runtime's dial error).
            None => {
                let error = format!(
                    "failed to connect to localhost:{port} inside namespace of pod {namespace}/{pod}: connection refused"
                );
                error_line(&error)
            }
        };
        let _ = conn.get_mut().write_all(&out).await;
    }

    fn is_istiod_webhook(&self, ns: &str, pod: &str, port: u16) -> bool {
        let st = self.shared.lock();
        port == super::istiod::WEBHOOK_PORT
            && st
                .store
                .get("", "pods", ns, pod)
                .is_some_and(|p| super::mesh::program(p) == super::mesh::Program::Istiod)
    }

    /// One admission call to istiod's webhook: the `{}` line, then TLS with istiod's certificate
    /// (a client that does not trust it ends the handshake) and one HTTP exchange inside it.
    async fn webhook(&self, mut conn: BufReader<tokio::net::UnixStream>) {
        if conn.get_mut().write_all(b"{}\n").await.is_err() {
            return;
        }
        let Ok(mut tls) = self.istiod_tls.accept(conn).await else { return };
        let Incoming::Request(request) = read_request(&mut tls).await else { return };
        let reply = super::istiod::inject(&self.shared.lock(), &request);
        let _ = tls.write_all(&reply.to_bytes()).await;
        let _ = tls.shutdown().await;
    }

    /// Every port the pods of the copy declare, and every Service port (a cluster address's
    /// port, which the API server dials for a webhook).
    fn ports(&self) -> Vec<u64> {
        let st = self.shared.lock();
        let ports: std::collections::BTreeSet<u64> = st
            .store
            .iter("", "pods", None)
            .flat_map(|p| p.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default())
            .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["containerPort"].as_u64())
            .chain(
                st.store
                    .iter("", "services", None)
                    .flat_map(|s| s.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default())
                    .filter_map(|p| p["port"].as_u64()),
            )
            .collect();
        ports.into_iter().collect()
    }

    /// The pod and port a connection to `address:port` reaches: a pod's own address, or a
    /// Service's cluster address through its selector and `targetPort`.
    fn at(&self, address: &str, port: u16) -> Option<(String, String, u16)> {
        let st = self.shared.lock();
        let name = |p: &Value| {
            let at = |k: &str| p.pointer(k).and_then(Value::as_str).unwrap_or_default().to_string();
            (at("/metadata/namespace"), at("/metadata/name"))
        };
        if let Some(pod) = st
            .store
            .iter("", "pods", None)
            .find(|p| p.pointer("/status/podIP").and_then(Value::as_str) == Some(address))
        {
            let (ns, pod) = name(pod);
            return Some((ns, pod, port));
        }
        let svc = st
            .store
            .iter("", "services", None)
            .find(|s| s.pointer("/spec/clusterIP").and_then(Value::as_str) == Some(address))?;
        let (ns, svc) = name(svc);
        let (pod, target) = super::mesh::resolve(&st, &ns, &svc, port).ok()?;
        let (ns, pod) = name(&pod);
        Some((ns, pod, target))
    }

    /// Whether the pod is in the copy, waiting up to [`KNOWN_WITHIN`] for it: a kubelet knows
    /// its pods before they run, while the copy may be a refresh behind the API server that
    /// told meshcheck the pod is Running.
    async fn knows(&self, ns: &str, pod: &str) -> bool {
        let since = std::time::Instant::now();
        loop {
            if self.shared.lock().store.get("", "pods", ns, pod).is_some() {
                return true;
            }
            if since.elapsed() >= KNOWN_WITHIN {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
