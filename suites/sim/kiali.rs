//! Kiali v2.29.0 as its custom resource configures it (suites/sim/UPSTREAM-RULES.md §3): routes
//! under `server.web_root`, authentication by `auth.strategy`, the graph computed from what the
//! Prometheus at `external_services.prometheus.url` answers, and query parameters validated as
//! `graph/options.go` does.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    State,
    shapes::s,
    web::{HttpReply, HttpRequest, encode},
};

/// Kiali's configuration: its custom resource, with the operator's defaults filled in.
pub(super) struct Config {
    pub web_root: String,
    pub strategy: String,
    pub prometheus_url: String,
    pub port: u16,
    /// `auth.openid` and the client secret Kiali found at start.
    pub openid: OpenId,
    /// `server.web_schema`, `web_fqdn`, `web_port` (empty: from the request).
    pub web: (String, String, String),
}

/// Kiali's OpenID settings (kiali v2.29.0 config/config.go OpenIdConfig; defaults
/// `username_claim: sub`).
pub(super) struct OpenId {
    pub client_id: String,
    pub issuer_uri: String,
    /// `oidc-secret` of the Secret `kiali` in Kiali's namespace, if that Secret existed when the pod
    /// was created: Kiali reads /kiali-secret/oidc-secret only at start (config.go
    /// `if fileExists(oidcClientSecretFile)` when the configuration loads).
    pub client_secret: Option<String>,
}

/// The cluster name Kiali's cookies carry: `kiali-token-<cluster>` (session_persistor.go); Kiali
/// takes it from istiod, whose default cluster id is `Kubernetes`.
const CLUSTER: &str = "Kubernetes";

/// The Kiali CR a Kiali pod was made from (the operator labels the pods
/// `app.kubernetes.io/instance: <deployment.instance_name>`), and its defaults:
/// `auth.strategy` `token` off OpenShift (kiali-operator v2.29.0
/// roles/default/kiali-deploy/tasks/main.yml#L334-L336), `server.web_root` `/kiali` off OpenShift,
/// trailing `/` stripped (#L300-L306), `external_services.prometheus.url`
/// `http://prometheus.<Kiali's namespace>:9090` (#L265-L266), `server.port` 20001
/// (defaults/main.yml#L465).
pub(super) fn config(st: &State, pod: &Value) -> Option<Config> {
    let ns = s(pod, "/metadata/namespace");
    let instance = s(pod, "/metadata/labels/app.kubernetes.io~1instance");
    let cr = st.store.list("kiali.io", "kialis", None).into_iter().find(|cr| {
        let name = cr.pointer("/spec/deployment/instance_name").and_then(Value::as_str).unwrap_or("kiali");
        name == instance && s(cr, "/metadata/namespace") == ns
    })?;
    let spec = &cr["spec"];
    let text = |pointer: &str| spec.pointer(pointer).map(|v| v.as_str().map_or_else(|| v.to_string(), String::from));
    let created = |o: &Value| {
        u64::from_str_radix(s(o, "/metadata/uid").rsplit('-').next().unwrap_or_default(), 16).unwrap_or(u64::MAX)
    };
    // The store hands out uids in creation order: a Secret with a smaller one existed first.
    let client_secret = st
        .store
        .get("", "secrets", ns, "kiali")
        .filter(|secret| created(secret) < created(pod))
        .and_then(|secret| secret.pointer("/data/oidc-secret").and_then(Value::as_str).map(String::from))
        .and_then(|b64| {
            use base64::Engine as _;
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok()
        });
    let openid = OpenId {
        client_id: text("/auth/openid/client_id").unwrap_or_default(),
        issuer_uri: text("/auth/openid/issuer_uri").unwrap_or_default(),
        client_secret,
    };
    let web = (
        text("/server/web_schema").unwrap_or_default(),
        text("/server/web_fqdn").unwrap_or_default(),
        text("/server/web_port").unwrap_or_default(),
    );
    let web_root = spec.pointer("/server/web_root").and_then(Value::as_str).unwrap_or("/kiali");
    let web_root = if web_root == "/" { String::new() } else { web_root.trim_end_matches('/').to_string() };
    Some(Config {
        web_root,
        strategy: spec.pointer("/auth/strategy").and_then(Value::as_str).unwrap_or("token").to_string(),
        prometheus_url: spec
            .pointer("/external_services/prometheus/url")
            .and_then(Value::as_str)
            .map_or_else(|| format!("http://prometheus.{ns}:9090"), String::from),
        port: spec.pointer("/server/port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()).unwrap_or(20001),
        openid,
        web,
    })
}

/// Asks the Prometheus at a URL an instant query: its JSON answer, or `None` when it cannot be
/// reached.
pub(super) type Prometheus<'a> = &'a dyn Fn(&str, &str) -> Option<Value>;

/// What Kiali answers: status code, content type, body. `session` says the request carries a
/// session Kiali issued (never through the API server's service proxy).
pub(super) fn serve(
    st: &State,
    config: &Config,
    path: &str,
    session: bool,
    prometheus: Prometheus,
) -> (u16, &'static str, Vec<u8>) {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let Some(route) = route.strip_prefix(&config.web_root).filter(|r| r.is_empty() || r.starts_with('/')) else {
        return (404, "text/plain", b"404 page not found\n".to_vec());
    };
    let authenticated = matches!(route, "/api/status" | "/api/namespaces/graph" | "/api/config");
    // handlers/authentication.go: token and openid read only the `kiali-token` cookie, which the
    // API server's service proxy never carries; without it, 401 `Unauthorized` in plain text.
    if authenticated && config.strategy != "anonymous" && !session {
        return (401, "text/plain; charset=utf-8", b"Unauthorized\n".to_vec());
    }
    let body = |v: Value| (200, "application/json", serde_json::to_vec(&v).expect("json"));
    match route {
        "/healthz" => (200, "text/plain", Vec::new()),
        // The UI's index page, where every login ends.
        "" | "/" => {
            (200, "text/html; charset=utf-8", b"<!doctype html><html><head><title>Kiali</title></head></html>".to_vec())
        }
        "/api" | "/api/status" => body(status(st)),
        "/api/namespaces/graph" => match graph(config, query, prometheus) {
            Ok(g) => body(g),
            Err((code, message)) => {
                (code, "application/json", serde_json::to_vec(&json!({"error": message})).expect("json"))
            }
        },
        _ => (404, "text/plain", b"404 page not found\n".to_vec()),
    }
}

fn status(st: &State) -> Value {
    let istio = st
        .releases
        .get(&("istio-system".to_string(), "istiod".to_string()))
        .map(|r| r.version.clone())
        .unwrap_or_default();
    json!({
        "status": {"Kiali commit hash": "5e1f0000", "Kiali container version": "v2.29.0", "Kiali state": "running", "Kiali version": "v2.29.0", "Meshes": ""},
        "externalServices": [{"name": "Istio", "version": istio}, {"name": "Prometheus", "version": "3.5.0"}, {"name": "Kubernetes", "version": "v1.35.0"}],
        "warningMessages": [],
        "istioEnvironment": {"isMaistra": false, "istioAPIEnabled": true},
    })
}

/// The query parameters graph/options.go validates (the ones the harness sends and their
/// neighbours): 400 with its message on a bad value.
fn validate(query: &str) -> Result<(Vec<String>, String), (u16, String)> {
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), super::web::decode(v)))
        .collect();
    let graph_type = params.get("graphType").cloned().unwrap_or_else(|| "workload".into());
    if !matches!(graph_type.as_str(), "app" | "service" | "versionedApp" | "workload") {
        return Err((400, format!("Invalid graphType [{graph_type}]")));
    }
    if let Some(d) = params.get("duration") {
        let digits = d.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &d[digits.len()..];
        if digits.is_empty()
            || digits.parse::<u64>().is_err()
            || !matches!(unit, "ms" | "s" | "m" | "h" | "d" | "w" | "y")
        {
            return Err((400, format!("Invalid duration [{d}]")));
        }
    }
    let namespaces: Vec<String> = params
        .get("namespaces")
        .map(|n| n.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect())
        .unwrap_or_default();
    if namespaces.is_empty() {
        return Err((400, "At least one namespace must be specified via the namespaces query parameter.".into()));
    }
    Ok((namespaces, graph_type))
}

/// The graph from Prometheus' ztunnel series: every (source, destination) workload pair that
/// touches a requested namespace, mTLS where `connection_security_policy` says `mutual_tls`. An
/// unreachable Prometheus gives an empty graph, as Kiali's lazy client does until Prometheus
/// answers `/-/healthy` (prometheus/lazy_client.go, noop_client.go: empty results, no error).
fn graph(config: &Config, query: &str, prometheus: Prometheus) -> Result<Value, (u16, String)> {
    let (namespaces, graph_type) = validate(query)?;
    let mut nodes: BTreeMap<String, Value> = BTreeMap::new();
    let mut edges = Vec::new();
    let promql = "sum by (source_workload_namespace, source_workload, source_app, destination_workload_namespace, destination_workload, destination_app, connection_security_policy) (istio_tcp_sent_bytes_total{reporter=\"destination\"})";
    let answer = prometheus(&config.prometheus_url, promql).unwrap_or(Value::Null);
    let id = |w: &str| super::controllers::template_hash(&json!(w));
    for series in answer.pointer("/data/result").and_then(Value::as_array).into_iter().flatten() {
        let m = &series["metric"];
        let (sns, dns) = (s(m, "/source_workload_namespace"), s(m, "/destination_workload_namespace"));
        if !namespaces.iter().any(|n| n == sns || n == dns) {
            continue;
        }
        let mut node = |ns: &str, wl: &str, app: &str| {
            let key = format!("{ns}/{wl}");
            nodes.entry(key.clone()).or_insert_with(|| json!({"data": {"id": id(&key), "nodeType": "workload", "cluster": "Kubernetes", "namespace": ns, "workload": wl, "app": app, "version": wl.rsplit('-').next(), "traffic": [{"protocol": "tcp", "rates": {"tcpIn": "1.00"}}], "healthData": null}}));
            id(&key)
        };
        let source = node(sns, s(m, "/source_workload"), s(m, "/source_app"));
        let target = node(dns, s(m, "/destination_workload"), s(m, "/destination_app"));
        let mtls = s(m, "/connection_security_policy") == "mutual_tls";
        let rate =
            series.pointer("/value/1").and_then(Value::as_str).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        edges.push(json!({"data": {"id": id(&format!("{source}>{target}")), "source": source, "target": target,
                                   "isMTLS": if mtls { "100" } else { "0" },
                                   "traffic": {"protocol": "tcp", "rates": {"tcp": format!("{rate:.2}")}}}}));
    }
    Ok(json!({"timestamp": chrono::Utc::now().timestamp(), "duration": 600, "graphType": graph_type,
              "elements": {"nodes": nodes.into_values().collect::<Vec<_>>(), "edges": edges}}))
}

/// Whether a request carries one of Kiali's sessions.
pub(super) fn has_session(st: &State, req: &HttpRequest) -> bool {
    req.cookie(&format!("kiali-token-{CLUSTER}")).is_some_and(|sid| st.oidc.kiali_sessions.contains(&sid))
}

/// Kiali's URL as it computes its redirect URI: configured schema, host and port first, else the
/// request's (util/httputil/http_util.go GuessKialiURL), then `web_root`.
fn kiali_url(config: &Config, req: &HttpRequest) -> String {
    let (schema, fqdn, port) = &config.web;
    let host_header = req.header("host").unwrap_or_default();
    let (req_host, req_port) = host_header.rsplit_once(':').unwrap_or((host_header, ""));
    let schema = if schema.is_empty() { "http" } else { schema.as_str() };
    let host = if fqdn.is_empty() { req_host } else { fqdn.as_str() };
    let port = if !port.is_empty() {
        port.clone()
    } else if fqdn.is_empty() && !req_port.is_empty() {
        req_port.to_string()
    } else {
        config.port.to_string()
    };
    let default_port = (schema == "http" && port == "80") || (schema == "https" && port == "443");
    let url = if default_port {
        format!("{schema}://{host}{}", config.web_root)
    } else {
        format!("{schema}://{host}:{port}{}", config.web_root)
    };
    url.trim_end_matches('/').to_string()
}

/// An HTTP call from Kiali to another program in the cluster (the OpenID provider).
pub(super) type Fetch<'a> = &'a mut dyn FnMut(&mut State, &str, HttpRequest) -> Option<HttpReply>;

/// Kiali's OpenID routes (openid_auth_controller.go), or `None` for a request they do not handle:
/// `/api/auth/openid_redirect`, and the callback to `web_root` with `code` and `state` and the
/// nonce cookie (without it, the callback handler falls back to the UI).
pub(super) fn openid(st: &mut State, config: &Config, req: &HttpRequest, fetch: Fetch) -> Option<HttpReply> {
    if config.strategy != "openid" {
        return None;
    }
    let route = req.path().strip_prefix(&config.web_root)?;
    let nonce_cookie = format!("kiali-token-nonce-{CLUSTER}");
    let pkce_cookie = format!("kiali-token-pkce-verifier-{CLUSTER}");
    let root = if config.web_root.is_empty() { "/".to_string() } else { config.web_root.clone() };
    let root_slash = format!("{}/", config.web_root);
    let cookie = |name: &str, value: &str| format!("{name}={value}; Path={root}; HttpOnly; SameSite=Lax");
    let expired =
        |name: &str| format!("{name}=; Path={root}; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly");
    let openid = &config.openid;
    // getOpenIdMetadata: the discovery document, whose issuer must equal issuer_uri exactly.
    let metadata = |st: &mut State, fetch: &mut dyn FnMut(&mut State, &str, HttpRequest) -> Option<HttpReply>| {
        let url = format!("{}/.well-known/openid-configuration", openid.issuer_uri.trim_end_matches('/'));
        let reply = fetch(st, &url, HttpRequest::get(""))
            .ok_or_else(|| format!("Get \"{url}\": dial tcp: lookup: no such host"))?;
        let meta: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
        if reply.status != 200 {
            return Err(format!("cannot fetch OpenId Metadata (HTTP response status = {})", reply.status));
        }
        if s(&meta, "/issuer") != openid.issuer_uri {
            return Err(format!(
                "mismatch between the configured issuer_uri ({}) and the exposed Issuer URI in OpenId provider metadata ({})",
                openid.issuer_uri,
                s(&meta, "/issuer")
            ));
        }
        Ok(meta)
    };
    if route == "/api/auth/openid_redirect" {
        let meta = match metadata(st, fetch) {
            Ok(m) => m,
            Err(e) => {
                return Some(HttpReply::new(
                    500,
                    "text/plain; charset=utf-8",
                    format!("Error fetching OpenID metadata: {e}"),
                ));
            }
        };
        let nonce = super::keycloak::fresh_id(&mut st.oidc.next);
        let verifier = super::keycloak::fresh_id(&mut st.oidc.next) + &super::keycloak::fresh_id(&mut st.oidc.next);
        let location = format!(
            "{}?client_id={}&response_type=code&redirect_uri={}&scope={}&nonce={}&state={}&code_challenge={}&code_challenge_method=S256",
            s(&meta, "/authorization_endpoint"),
            encode(&openid.client_id),
            encode(&kiali_url(config, req)),
            encode("openid profile email"),
            super::keycloak::s256(&format!("nonce:{nonce}")),
            state_of(&nonce),
            super::keycloak::s256(&verifier)
        );
        return Some(
            HttpReply::found(&location)
                .with("Set-Cookie", &cookie(&nonce_cookie, &nonce))
                .with("Set-Cookie", &cookie(&pkce_cookie, &verifier)),
        );
    }
    if !(route.is_empty() || route == "/") {
        return None;
    }
    let (code, state, nonce, verifier) =
        (req.query("code")?, req.query("state")?, req.cookie(&nonce_cookie)?, req.cookie(&pkce_cookie)?);
    let fail = |why: String| {
        HttpReply::found(&format!("{root_slash}?openid_error={}", encode(&why)))
            .with("Set-Cookie", &expired(&nonce_cookie))
            .with("Set-Cookie", &expired(&pkce_cookie))
    };
    if state != state_of(&nonce) {
        return Some(fail("Request rejected: CSRF mitigation".into()));
    }
    let meta = match metadata(st, fetch) {
        Ok(m) => m,
        Err(e) => return Some(fail(e)),
    };
    // requestOpenIdToken: basic auth with the client secret when Kiali has one, else client_id as a
    // form field (a public client).
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("code", &code).append_pair("grant_type", "authorization_code");
    form.append_pair("redirect_uri", &kiali_url(config, req));
    let mut headers = vec![("content-type".to_string(), "application/x-www-form-urlencoded".to_string())];
    match &openid.client_secret {
        Some(secret) => {
            use base64::Engine as _;
            let pair = format!("{}:{}", encode(&openid.client_id), encode(secret));
            headers.push((
                "authorization".into(),
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)),
            ));
        }
        None => {
            form.append_pair("client_id", &openid.client_id);
        }
    }
    form.append_pair("code_verifier", &verifier);
    let token_url = s(&meta, "/token_endpoint").to_string();
    let path =
        token_url.split_once("://").and_then(|(_, r)| r.find('/').map(|i| r[i..].to_string())).unwrap_or_default();
    let request = HttpRequest { method: "POST".into(), target: path, headers, body: form.finish().into_bytes() };
    let Some(reply) = fetch(st, &token_url, request) else {
        return Some(fail(format!("failure when requesting token from IdP: Post \"{token_url}\": no such host")));
    };
    if reply.status != 200 {
        let reason = http::StatusCode::from_u16(reply.status).ok().and_then(|c| c.canonical_reason()).unwrap_or("");
        return Some(fail(format!("request failed (HTTP response status = {} {reason})", reply.status)));
    }
    let tokens: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let claims: Value = s(&tokens, "/id_token")
        .split('.')
        .nth(1)
        .and_then(|p| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    // validateOpenIdTokenInHouse and validateOpenIdNonceCode.
    if s(&claims, "/iss") != s(&meta, "/issuer") {
        return Some(fail(format!("the OpenId token has unexpected issuer claim; got iss = '{}'", s(&claims, "/iss"))));
    }
    if s(&claims, "/aud") != openid.client_id {
        return Some(fail(format!("the OpenId token is not targeted for Kiali; got aud [{}]", s(&claims, "/aud"))));
    }
    if s(&claims, "/nonce") != super::keycloak::s256(&format!("nonce:{nonce}")) {
        return Some(fail("OpenId token rejected: nonce code mismatch".into()));
    }
    let sid = super::keycloak::fresh_id(&mut st.oidc.next);
    st.oidc.kiali_sessions.insert(sid.clone());
    Some(
        HttpReply::found(&root_slash)
            .with("Set-Cookie", &expired(&nonce_cookie))
            .with("Set-Cookie", &expired(&pkce_cookie))
            .with("Set-Cookie", &cookie(&format!("kiali-token-{CLUSTER}"), &sid)),
    )
}

/// The `state` Kiali sends with a nonce and checks on the callback (the real one is a hash of
/// the nonce, a timestamp and Kiali's signing key: validateOpenIdState).
fn state_of(nonce: &str) -> String {
    super::keycloak::s256(&format!("state:{nonce}"))
}
