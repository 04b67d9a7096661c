//! Keycloak 26.6.4 as its pod configures it (rules read in keycloak/keycloak 26.x sources, paths
//! under services/src/main/java/org/keycloak unless said otherwise): the realms it imported at start (`start-dev
//! --import-realm` reads the `.json` files mounted at /opt/keycloak/data/import; a realm that
//! already exists is skipped, docs/guides/server/importExport.adoc), its frontend URL from
//! `KC_HOSTNAME` (hostname v2: a full URL fixes scheme, host and port whoever asks,
//! services/.../url/HostnameV2Provider.java), and the OpenID Connect endpoints of the
//! authorization-code flow with the answers Keycloak gives when something is wrong:
//! - authorization endpoint: an unknown client is 400 "Client not found.", a redirect URI the
//!   client does not register 400 "Invalid parameter: redirect_uri"
//!   (AuthorizationEndpointChecker.checkRedirectUri);
//! - login form (`id="kc-form-login"`, action `/login-actions/authenticate?session_code=…&
//!   execution=…&client_id=…&tab_id=…&client_data=…`, HTML-escaped; themes keycloak.v2 login.ftl):
//!   a wrong password renders the form again, 200 "Invalid username or password."; a user without
//!   email, first or last name stops at "Update Account Information" (the declarative user
//!   profile, keycloak-default-user-profile.json, VerifyProfile on by default); a good login is a
//!   302 to the redirect URI with `state`, `session_state`, `iss` and `code` (OIDCLoginProtocol);
//! - token endpoint: a confidential client without its secret, or with another, is 401
//!   `unauthorized_client` "Invalid client or Invalid client credentials"
//!   (ClientIdAndSecretAuthenticator); a used or unknown code, another redirect URI or a PKCE
//!   verifier that does not match is 400 `invalid_grant`.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{
    State,
    shapes::s,
    web::{HttpReply, HttpRequest, encode},
};

/// Where `--import-realm` reads realm files (docs/guides/server/importExport.adoc: "For the
/// Keycloak containers, the import directory is /opt/keycloak/data/import").
const IMPORT_DIR: &str = "/opt/keycloak/data/import";

/// The OpenID Connect state of the cluster: Keycloak's authentication sessions by tab and the codes
/// it issued, Kiali's sessions, and a counter for fresh ids.
#[derive(Default)]
pub(crate) struct Oidc {
    sessions: BTreeMap<String, AuthSession>,
    codes: BTreeMap<String, AuthSession>,
    /// Kiali's sessions (the values of its `kiali-token-<cluster>` cookie).
    pub kiali_sessions: std::collections::BTreeSet<String>,
    pub next: u64,
}

/// An authorization request Keycloak is in the middle of.
#[derive(Clone)]
struct AuthSession {
    realm: String,
    client_id: String,
    redirect_uri: String,
    state: String,
    nonce: String,
    challenge: Option<(String, String)>,
    user: Option<String>,
}

/// A fresh id: Keycloak's are random; the simulation's only need to differ.
pub(super) fn fresh_id(counter: &mut u64) -> String {
    *counter += 1;
    let mut z = counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    format!("{:016x}{:016x}", z, z.rotate_left(17) ^ 0x94D0_49BB_1331_11EB)
}

/// SHA-256, base64url without padding: a PKCE S256 challenge (RFC 7636 §4.2).
pub(super) fn s256(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The realms a Keycloak pod imported: every `.json` file of the Secret or ConfigMap mounted at
/// [`IMPORT_DIR`], when it was started with `--import-realm`.
fn realms(st: &State, pod: &Value) -> Vec<Value> {
    let container = &pod["spec"]["containers"][0];
    let args: Vec<&str> = container["args"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !args.contains(&"--import-realm") {
        return Vec::new();
    }
    let ns = s(pod, "/metadata/namespace");
    let mounts = container["volumeMounts"].as_array().cloned().unwrap_or_default();
    let Some(volume) = mounts.iter().find(|m| s(m, "/mountPath").trim_end_matches('/') == IMPORT_DIR) else {
        return Vec::new();
    };
    let volumes = pod["spec"]["volumes"].as_array().cloned().unwrap_or_default();
    let Some(source) = volumes.iter().find(|v| v["name"] == volume["name"]) else { return Vec::new() };
    let files: Vec<(String, String)> = if let Some(name) = source.pointer("/secret/secretName").and_then(Value::as_str)
    {
        let secret = st.store.get("", "secrets", ns, name).cloned().unwrap_or(Value::Null);
        secret["data"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str()?).ok()?;
                Some((k.clone(), String::from_utf8(bytes).ok()?))
            })
            .collect()
    } else if let Some(name) = source.pointer("/configMap/name").and_then(Value::as_str) {
        let cm = st.store.get("", "configmaps", ns, name).cloned().unwrap_or(Value::Null);
        cm["data"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), s(v, "").to_string())).collect()
    } else {
        Vec::new()
    };
    files.iter().filter(|(k, _)| k.ends_with(".json")).filter_map(|(_, text)| serde_json::from_str(text).ok()).collect()
}

/// The frontend URL: `KC_HOSTNAME` when it is a full URL, else the request's own host (start-dev:
/// hostname-strict false).
fn frontend(pod: &Value, req: &HttpRequest) -> String {
    let env = pod["spec"]["containers"][0]["env"].as_array().cloned().unwrap_or_default();
    let hostname = env.iter().find(|e| e["name"] == "KC_HOSTNAME").map(|e| s(e, "/value").to_string());
    match hostname {
        Some(h) if h.contains("://") => h.trim_end_matches('/').to_string(),
        Some(h) if !h.is_empty() => format!("http://{h}:8080"),
        _ => format!("http://{}", req.header("host").unwrap_or("localhost:8080")),
    }
}

/// What Keycloak's HTTP port (8080) answers.
pub(super) fn serve(st: &mut State, pod: &Value, req: &HttpRequest) -> HttpReply {
    let path = req.path().to_string();
    let Some(rest) = path.strip_prefix("/realms/") else {
        return HttpReply::new(404, "text/html", "<html><head><title>Page not found</title></head></html>");
    };
    let (realm_name, route) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(realm) = realms(st, pod).into_iter().find(|r| s(r, "/realm") == realm_name) else {
        return HttpReply::json(404, &json!({"error": "Realm does not exist"}));
    };
    let issuer = format!("{}/realms/{realm_name}", frontend(pod, req));
    match (req.method.as_str(), route) {
        ("GET", ".well-known/openid-configuration") => HttpReply::json(
            200,
            &json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/protocol/openid-connect/auth"),
                "token_endpoint": format!("{issuer}/protocol/openid-connect/token"),
                "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
                "userinfo_endpoint": format!("{issuer}/protocol/openid-connect/userinfo"),
                "response_types_supported": ["code", "none", "id_token", "token", "id_token token", "code id_token", "code token", "code id_token token"],
                "code_challenge_methods_supported": ["plain", "S256"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }),
        ),
        ("GET", "protocol/openid-connect/auth") => authorize(st, &realm, &issuer, req),
        ("POST", "login-actions/authenticate") => authenticate(st, &realm, &issuer, req),
        ("POST", "protocol/openid-connect/token") => token(st, &realm, &issuer, req),
        _ => HttpReply::new(404, "text/html", "<html><head><title>Page not found</title></head></html>"),
    }
}

fn error_page(status: u16, message: &str) -> HttpReply {
    HttpReply::new(
        status,
        "text/html;charset=utf-8",
        format!(
            "<html><head><title>We are sorry...</title></head><body><p id=\"kc-error-message\">{message}</p></body></html>"
        ),
    )
}

fn client<'a>(realm: &'a Value, client_id: &str) -> Option<&'a Value> {
    realm["clients"].as_array()?.iter().find(|c| s(c, "/clientId") == client_id && c["enabled"] != json!(false))
}

/// A redirect URI the client registers: exact, or a pattern ending in `*`.
fn registered(client: &Value, uri: &str) -> bool {
    client["redirectUris"].as_array().into_iter().flatten().filter_map(Value::as_str).any(|r| {
        match r.strip_suffix('*') {
            Some(prefix) => uri.starts_with(prefix),
            None => r == uri,
        }
    })
}

fn login_page(issuer: &str, tab: &str, client_id: &str, error: Option<&str>) -> HttpReply {
    let action = format!(
        "{issuer}/login-actions/authenticate?session_code={tab}-code&amp;execution=auth-username-password-form&amp;client_id={}&amp;tab_id={tab}&amp;client_data=e30",
        encode(client_id)
    );
    let realm = issuer.rsplit('/').next().unwrap_or_default();
    let alert = error.map(|e| format!("<span id=\"input-error\" aria-live=\"polite\">{e}</span>")).unwrap_or_default();
    HttpReply::new(
        200,
        "text/html;charset=utf-8",
        format!(
            "<!DOCTYPE html><html><head><title>Sign in to {realm}</title></head><body>{alert}\
             <form id=\"kc-form-login\" class=\"pf-v5-c-form\" novalidate=\"novalidate\" action=\"{action}\" method=\"post\">\
             <input id=\"username\" name=\"username\" value=\"\" type=\"text\" autocomplete=\"username\" autofocus>\
             <input id=\"password\" name=\"password\" value=\"\" type=\"password\" autocomplete=\"current-password\">\
             <input type=\"hidden\" id=\"id-hidden-input\" name=\"credentialId\"/>\
             <button class=\"pf-v5-c-button pf-m-primary pf-m-block\" name=\"login\" id=\"kc-login\" type=\"submit\">Sign In</button>\
             </form></body></html>"
        ),
    )
}

fn authorize(st: &mut State, realm: &Value, issuer: &str, req: &HttpRequest) -> HttpReply {
    let client_id = req.query("client_id").unwrap_or_default();
    let Some(client) = client(realm, &client_id) else { return error_page(400, "Client not found.") };
    let redirect_uri = req.query("redirect_uri").unwrap_or_default();
    if !registered(client, &redirect_uri) {
        return error_page(400, "Invalid parameter: redirect_uri");
    }
    if req.query("response_type").as_deref() != Some("code") || client["standardFlowEnabled"] == json!(false) {
        return error_page(400, "Client is not allowed to initiate browser login with given response_type.");
    }
    let challenge =
        req.query("code_challenge").map(|c| (c, req.query("code_challenge_method").unwrap_or("plain".into())));
    let required = client.pointer("/attributes/pkce.code.challenge.method").and_then(Value::as_str);
    if let Some(method) = required
        && challenge.as_ref().is_none_or(|(_, m)| m != method)
    {
        return error_page(400, "Missing parameter: code_challenge_method");
    }
    let tab = fresh_id(&mut st.oidc.next);
    let session = AuthSession {
        realm: s(realm, "/realm").into(),
        client_id: client_id.clone(),
        redirect_uri,
        state: req.query("state").unwrap_or_default(),
        nonce: req.query("nonce").unwrap_or_default(),
        challenge,
        user: None,
    };
    st.oidc.sessions.insert(tab.clone(), session);
    let cookie_path = format!("/realms/{}/", s(realm, "/realm"));
    login_page(issuer, &tab, &client_id, None)
        .with("Set-Cookie", &format!("AUTH_SESSION_ID={tab}; Version=1; Path={cookie_path}; HttpOnly; SameSite=None"))
        .with("Set-Cookie", &format!("KC_RESTART={tab}-restart; Version=1; Path={cookie_path}; HttpOnly"))
}

fn authenticate(st: &mut State, realm: &Value, issuer: &str, req: &HttpRequest) -> HttpReply {
    let tab = req.query("tab_id").unwrap_or_default();
    let Some(session) =
        st.oidc.sessions.get(&tab).cloned().filter(|_| req.cookie("AUTH_SESSION_ID").as_deref() == Some(&tab))
    else {
        return error_page(400, "Cookie not found. Please make sure cookies are enabled in your browser.");
    };
    let username = req.form("username").unwrap_or_default();
    let password = req.form("password").unwrap_or_default();
    let user = realm["users"].as_array().into_iter().flatten().find(|u| s(u, "/username") == username).cloned();
    let valid = user.as_ref().is_some_and(|u| {
        u["enabled"] != json!(false)
            && u["credentials"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| s(c, "/type") == "password" && s(c, "/value") == password && !password.is_empty())
    });
    let Some(user) = user.filter(|_| valid) else {
        return login_page(issuer, &tab, &session.client_id, Some("Invalid username or password."));
    };
    if ["email", "firstName", "lastName"].iter().any(|f| s(&user, &format!("/{f}")).is_empty()) {
        return HttpReply::new(
            200,
            "text/html;charset=utf-8",
            format!(
                "<html><head><title>Update Account Information</title></head><body>\
                 <form id=\"kc-update-profile-form\" action=\"{issuer}/login-actions/required-action?execution=VERIFY_PROFILE&amp;tab_id={tab}\" method=\"post\">\
                 <input name=\"email\"><input name=\"firstName\"><input name=\"lastName\"></form></body></html>"
            ),
        );
    }
    st.oidc.sessions.remove(&tab);
    let code = fresh_id(&mut st.oidc.next);
    let session_state = fresh_id(&mut st.oidc.next);
    let location = format!(
        "{}{}state={}&session_state={session_state}&iss={}&code={code}",
        session.redirect_uri,
        if session.redirect_uri.contains('?') { "&" } else { "?" },
        encode(&session.state),
        encode(issuer)
    );
    st.oidc.codes.insert(code, AuthSession { user: Some(s(&user, "/username").to_string()), ..session });
    let cookie_path = format!("/realms/{}/", s(realm, "/realm"));
    HttpReply::found(&location)
        .with("Set-Cookie", &format!("KEYCLOAK_IDENTITY={session_state}; Version=1; Path={cookie_path}; HttpOnly"))
        .with("Set-Cookie", &format!("KEYCLOAK_SESSION={session_state}; Version=1; Path={cookie_path}"))
}

fn token(st: &mut State, realm: &Value, issuer: &str, req: &HttpRequest) -> HttpReply {
    let basic = req.header("authorization").and_then(|h| h.strip_prefix("Basic ")).and_then(|b| {
        let text = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).ok()?).ok()?;
        let (id, secret) = text.split_once(':')?;
        Some((super::web::decode(id), super::web::decode(secret)))
    });
    let (client_id, secret) = match basic {
        Some((id, secret)) => (id, Some(secret)),
        None => (req.form("client_id").unwrap_or_default(), req.form("client_secret")),
    };
    let unauthorized = || {
        HttpReply::json(
            401,
            &json!({"error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"}),
        )
    };
    let Some(client) = client(realm, &client_id) else { return unauthorized() };
    if client["publicClient"] != json!(true) && secret.as_deref() != Some(s(client, "/secret")) {
        return unauthorized();
    }
    let invalid_grant = |why: &str| HttpReply::json(400, &json!({"error": "invalid_grant", "error_description": why}));
    let code = req.form("code").unwrap_or_default();
    let Some(grant) = st.oidc.codes.remove(&code) else { return invalid_grant("Code not valid") };
    if grant.client_id != client_id || grant.realm != s(realm, "/realm") {
        return invalid_grant("Code not valid");
    }
    if req.form("redirect_uri").as_deref() != Some(grant.redirect_uri.as_str()) {
        return invalid_grant("Incorrect redirect_uri");
    }
    if let Some((challenge, method)) = &grant.challenge {
        let verifier = req.form("code_verifier").unwrap_or_default();
        let computed = if method == "S256" { s256(&verifier) } else { verifier };
        if &computed != challenge {
            return invalid_grant("PKCE verification failed: Code mismatch");
        }
    }
    let user = grant.user.clone().unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": issuer, "aud": client_id, "sub": format!("sub-{user}"), "preferred_username": user,
                        "nonce": grant.nonce, "iat": now, "exp": now + 300, "typ": "ID", "azp": client_id});
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
    let id_token = format!("{}.{}.c2lt", b64(&json!({"alg": "RS256", "typ": "JWT", "kid": "sim"})), b64(&claims));
    HttpReply::json(
        200,
        &json!({"access_token": id_token, "id_token": id_token, "token_type": "Bearer", "expires_in": 300, "scope": "openid profile email"}),
    )
}
