//! Kiali behind OpenID Connect (`kiali.auth: openid`): the kiali check's login. An anonymous call
//! must be refused; then meshcheck logs in as a browser would through Kiali's authorization-code
//! flow (kiali v2.29.0 handlers/authentication/openid_auth_controller.go): Kiali's
//! `/api/auth/openid_redirect` sends the browser to Keycloak's authorization endpoint, Keycloak
//! serves its login form, the posted form redirects back to Kiali with a code, Kiali exchanges the
//! code with its client secret and sets its session cookie. The record of that walk
//! (`kiali/login.json`) is the evidence; the credentials are read from the cluster and never kept.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    cluster::{
        browser::{Browser, Hop, Page},
        live::{Live, LiveError},
    },
    evidence::Evidence,
};

/// Kiali's URL as Kiali computes its redirect URI: `web_schema://web_fqdn:web_port` + `web_root`
/// (fixtures/values/kiali-openid.yaml; web_root `/kiali`, the operator's default off OpenShift;
/// kiali v2.29.0 util/httputil/http_util.go GuessKialiURL). The realm's only redirect URI.
pub const KIALI_URL: &str = "http://kiali.istio-system.svc.cluster.local:20001/kiali";

/// The issuer: Keycloak's `KC_HOSTNAME` + `/realms/<realm>` (fixtures/manifests/keycloak.yaml),
/// and Kiali's `issuer_uri` (fixtures/values/kiali-openid.yaml).
pub const ISSUER: &str = "http://keycloak.keycloak.svc.cluster.local:8080/realms/meshcheck";

/// The Secret with the login the realm import created (fixtures/manifests/keycloak.yaml).
pub const LOGIN_SECRET: (&str, &str) = ("keycloak", "meshcheck-login");

/// The graph query the kiali check asks, with or without a login (kiali v2.29.0 graph/options.go
/// parameters). Here rather than in `kiali` because that module uses this one.
pub const GRAPH_QUERY: &str = "namespaces=book-info&graphType=workload&duration=600s";

/// The evidence file of the login.
pub const LOGIN: &str = "kiali/login.json";

/// Kiali's session cookie: `kiali-token-<cluster>` and its chunks (handlers/authentication/
/// session_persistor.go `SessionCookieName`); the nonce and PKCE cookies share the prefix and are
/// not a session.
fn is_session_cookie(name: &str) -> bool {
    name.starts_with("kiali-token") && !name.starts_with("kiali-token-nonce") && !name.starts_with("kiali-token-pkce")
}

/// What the login did, as `kiali/login.json` keeps it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Login {
    /// The Kiali URL the walk started from.
    pub kiali_url: String,
    /// The issuer Kiali is configured with.
    pub issuer: String,
    /// The anonymous call to the graph API (no cookies).
    pub anonymous: Vec<Hop>,
    /// The login walk: Kiali's redirect, Keycloak's form, the post, the callback.
    pub hops: Vec<Hop>,
    /// Whether Kiali set its session cookie.
    pub session: bool,
}

/// The login's outcome for the collector: the browser with Kiali's session when there is one.
pub struct LoggedIn<'a> {
    /// The browser, with its cookies.
    pub browser: Browser<'a>,
    /// The record to save.
    pub login: Login,
}

/// The anonymous call, then the login through the authorization-code flow. Transport failures
/// are errors; an answer the flow did not expect is recorded, for the judge.
pub async fn log_in(live: &Live) -> Result<LoggedIn<'_>, LiveError> {
    let mut anonymous = Browser::new(live);
    anonymous.get(&format!("{KIALI_URL}/api/namespaces/graph?{GRAPH_QUERY}")).await?;
    let (user, password) = credentials(live).await?;
    let mut browser = Browser::new(live);
    let page = browser.get(&format!("{KIALI_URL}/api/auth/openid_redirect")).await?;
    if on_login_form(&page) {
        browser.submit(&page, &[("username", &user), ("password", &password)]).await?;
    }
    let login = Login {
        kiali_url: KIALI_URL.into(),
        issuer: ISSUER.into(),
        anonymous: anonymous.hops,
        hops: browser.hops.clone(),
        session: browser.cookie_names().iter().any(|n| is_session_cookie(n)),
    };
    Ok(LoggedIn { browser, login })
}

/// Keycloak's login page: a page under the issuer with a post form.
fn on_login_form(page: &Page) -> bool {
    page.url.starts_with(ISSUER)
        && page.status == 200
        && crate::cluster::browser::post_form(&String::from_utf8_lossy(&page.body)).is_some()
}

/// The login from the Secret the run created with fresh values; it stays in memory.
async fn credentials(live: &Live) -> Result<(String, String), LiveError> {
    let (ns, name) = LOGIN_SECRET;
    let what = format!("Secret {ns}/{name} (the Keycloak login meshcheck created)");
    let secret: Value =
        serde_json::from_slice(&live.get_raw(&format!("/api/v1/namespaces/{ns}/secrets/{name}")).await?)
            .map_err(|e| LiveError::Http { what: what.clone(), message: e.to_string() })?;
    let field = |key: &str| -> Result<String, LiveError> {
        use base64::Engine as _;
        secret
            .pointer(&format!("/data/{key}"))
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| LiveError::Http { what: what.clone(), message: format!("no data.{key}") })
    };
    Ok((field("username")?, field("password")?))
}

/// What is wrong with a recorded login, each finding naming the step and the likely cause; empty
/// when Kiali refused the anonymous call and the flow ended in a Kiali session.
pub fn judge_login(login: &Login) -> Vec<String> {
    let mut problems = Vec::new();
    match login.anonymous.last() {
        Some(h) if h.status == 401 => {}
        Some(h) => problems.push(format!(
            "an anonymous call to Kiali's graph API got HTTP {}: Kiali serves without a login (auth.strategy is not openid?)",
            h.status
        )),
        None => problems.push("no anonymous call was recorded".into()),
    }
    let authorize = format!("{}/protocol/openid-connect/auth", login.issuer);
    let Some(first) = login.hops.first() else {
        problems.push("the login made no request".into());
        return problems;
    };
    let to_keycloak = first.location.as_deref().is_some_and(|l| l.starts_with(&authorize));
    if first.status != 302 || !to_keycloak {
        problems.push(format!(
            "Kiali's {} answered HTTP {} ({}) instead of sending the browser to Keycloak's authorization endpoint \
             {authorize}. Kiali could not start the login; its issuer_uri must be Keycloak's issuer exactly, and \
             Keycloak must serve {}/.well-known/openid-configuration",
            first.url,
            first.status,
            first.location.as_deref().or(first.error.as_deref()).or(first.title.as_deref()).unwrap_or("no detail"),
            login.issuer
        ));
        return problems;
    }
    let Some(form) = login.hops.iter().find(|h| h.url.starts_with(&authorize)) else {
        problems.push(format!("the browser never reached {authorize}"));
        return problems;
    };
    if form.status != 200 {
        problems.push(format!(
            "Keycloak's authorization endpoint answered HTTP {} ({}): it refused Kiali's request; is the redirect URI \
             in {} registered for the client?",
            form.status,
            form.title.as_deref().unwrap_or("no title"),
            form.url
        ));
        return problems;
    }
    let Some(post) = login.hops.iter().find(|h| h.method == "POST") else {
        problems.push(format!(
            "Keycloak's page ({}) had no login form to post",
            form.title.as_deref().unwrap_or("no title")
        ));
        return problems;
    };
    let back_to_kiali =
        post.location.as_deref().is_some_and(|l| l.starts_with(&login.kiali_url) && l.contains("code="));
    if !back_to_kiali {
        problems.push(format!(
            "posting the login form answered HTTP {} ({}) instead of redirecting to {} with a code: Keycloak did not \
             accept the login (wrong credentials, or a required action such as Update Account Information)",
            post.status,
            post.location.as_deref().or(post.title.as_deref()).unwrap_or("no title"),
            login.kiali_url
        ));
        return problems;
    }
    let callback = login.hops.iter().skip_while(|h| h.method != "POST").nth(1);
    let error = callback
        .and_then(|h| h.location.as_deref())
        .and_then(|l| l.split_once("openid_error=").map(|(_, e)| e.split('&').next().unwrap_or(e).to_string()));
    if let Some(error) = error {
        let hint = if error.contains("401") {
            ": Keycloak refused Kiali's client credentials; the Secret kiali (oidc-secret) must hold the realm's \
             client secret and exist before Kiali starts (Kiali reads it only at start)"
        } else if error.contains("issuer") {
            ": Kiali's issuer_uri must equal Keycloak's issuer exactly (KC_HOSTNAME)"
        } else {
            ""
        };
        problems.push(format!("Kiali rejected the login: {error}{hint}"));
    } else if !login.session {
        problems.push(format!(
            "Kiali set no session cookie after the callback ({})",
            callback.map_or("no callback".to_string(), |h| format!("{} {}", h.status, h.url))
        ));
    }
    problems
}

/// The login record of a run's evidence, when the run logged in.
pub fn recorded(ev: &Evidence) -> Option<Result<Login, crate::evidence::EvidenceError>> {
    ev.exists(LOGIN).then(|| ev.read_json(LOGIN))
}
