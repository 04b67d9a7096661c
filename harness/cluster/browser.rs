//! A browser for login flows, as much of one as an OpenID Connect login needs: it keeps cookies,
//! follows redirects, reads an HTML form and posts it. It reaches in-cluster URLs
//! (`http://<service>.<namespace>.svc.cluster.local:<port>/…`) the way a browser with a hosts file
//! would: over a port-forward to a Ready pod behind that Service, with the URL's own `Host` header,
//! so Keycloak and Kiali answer exactly what they answer each other inside the cluster.
//!
//! What it records ([`Hop`]) is evidence that can be kept: query values other than the
//! harmless ones, cookie values and request bodies never leave it.

use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::live::{Live, LiveError};

/// How many redirects one navigation follows before it gives up, as browsers do (Chromium: 20).
const MAX_REDIRECTS: usize = 20;

/// Query parameters whose values a hop keeps: what says where a flow went, never what proves it
/// (`code`, `state`, `nonce`, `session_code`, PKCE challenges).
pub const SHOWN_PARAMETERS: &[&str] = &[
    "client_id",
    "response_type",
    "redirect_uri",
    "scope",
    "code_challenge_method",
    "openid_error",
    "error",
    "iss",
    "namespaces",
    "graphType",
    "duration",
];

/// One request the browser made and what came back, as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// `GET` or `POST`.
    pub method: String,
    /// The URL, query values other than [`SHOWN_PARAMETERS`] replaced by `…`.
    pub url: String,
    /// The HTTP status.
    pub status: u16,
    /// Where a redirect pointed, shown as [`Hop::url`] is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Names of the cookies the answer set (values are never kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set_cookies: Vec<String>,
    /// The `<title>` of an HTML answer, which names a login page or an error page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The start of an error answer that is not HTML (a program's own error text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A page the browser ended on.
#[derive(Debug, Clone)]
pub struct Page {
    /// Its URL (the last one of the redirects).
    pub url: String,
    /// Its status.
    pub status: u16,
    /// Its body.
    pub body: Bytes,
}

#[derive(Debug, Clone)]
struct Cookie {
    name: String,
    value: String,
    host: String,
    path: String,
}

/// The browser: a cookie jar and the hops so far.
pub struct Browser<'a> {
    live: &'a Live,
    jar: Vec<Cookie>,
    /// Every request made, in order.
    pub hops: Vec<Hop>,
}

impl<'a> Browser<'a> {
    /// A browser with no cookies.
    pub fn new(live: &'a Live) -> Browser<'a> {
        Browser { live, jar: Vec::new(), hops: Vec::new() }
    }

    /// The names of the cookies in the jar.
    pub fn cookie_names(&self) -> Vec<String> {
        self.jar.iter().map(|c| c.name.clone()).collect()
    }

    /// Navigates to `url`, following redirects.
    pub async fn get(&mut self, url: &str) -> Result<Page, LiveError> {
        self.navigate("GET", url.to_string(), None).await
    }

    /// Posts an HTML form: the first `<form method="post">` of `page`, its inputs with `fill`
    /// overriding theirs (as a person types into them), to its `action`; then follows redirects.
    pub async fn submit(&mut self, page: &Page, fill: &[(&str, &str)]) -> Result<Page, LiveError> {
        let html = String::from_utf8_lossy(&page.body);
        let form = post_form(&html).ok_or_else(|| LiveError::Http {
            what: format!("the page at {}", shown(&page.url)),
            message: format!("no <form method=\"post\"> on it (status {})", page.status),
        })?;
        let mut fields = form.fields;
        for (name, value) in fill {
            match fields.iter_mut().find(|(n, _)| n == name) {
                Some(field) => field.1 = value.to_string(),
                None => fields.push((name.to_string(), value.to_string())),
            }
        }
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let action = resolve(&page.url, &form.action);
        self.navigate("POST", action, Some(Bytes::from(body))).await
    }

    async fn navigate(&mut self, method: &str, mut url: String, mut body: Option<Bytes>) -> Result<Page, LiveError> {
        let mut method = method.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let answer = self.request(&method, &url, body.take()).await?;
            let status = answer.status().as_u16();
            let location = answer.headers().get(http::header::LOCATION).and_then(|v| v.to_str().ok()).map(String::from);
            let host = authority(&url).unwrap_or_default();
            let mut set = Vec::new();
            for value in answer.headers().get_all(http::header::SET_COOKIE) {
                if let Some(cookie) = value.to_str().ok().and_then(|v| parse_set_cookie(v, &host)) {
                    set.push(cookie.name.clone());
                    self.store(cookie);
                }
            }
            let target = location.as_deref().filter(|_| answer.status().is_redirection()).map(|l| resolve(&url, l));
            self.hops.push(Hop {
                method: method.clone(),
                url: shown(&url),
                status,
                location: target.as_deref().map(shown),
                set_cookies: set,
                title: title(answer.body()),
                error: error_text(&answer),
            });
            match target {
                // 302 and 303 after a POST become a GET, as every browser does (RFC 9110 §15.4.3).
                Some(next) => {
                    url = next;
                    method = "GET".into();
                }
                None => return Ok(Page { url, status, body: answer.into_body() }),
            }
        }
        Err(LiveError::Http {
            what: format!("the login flow from {}", self.hops.first().map_or("?", |h| h.url.as_str())),
            message: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    fn store(&mut self, cookie: Cookie) {
        self.jar.retain(|c| !(c.name == cookie.name && c.host == cookie.host && c.path == cookie.path));
        if !cookie.value.is_empty() {
            self.jar.push(cookie);
        }
    }

    /// One request to an in-cluster URL over a port-forward, with the cookies that match it.
    async fn request(&self, method: &str, url: &str, body: Option<Bytes>) -> Result<http::Response<Bytes>, LiveError> {
        let target = Target::parse(url).ok_or_else(|| LiveError::Http {
            what: format!("{method} {}", shown(url)),
            message: "not an in-cluster URL (http://<service>.<namespace>.svc[.cluster.local][:port]/…)".into(),
        })?;
        let (pod, port) = self.backend(&target).await?;
        let cookies: Vec<String> = self
            .jar
            .iter()
            .filter(|c| c.host == target.authority && target.path.starts_with(&c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        let mut request =
            http::Request::builder().method(method).uri(&target.path).header(http::header::HOST, &target.authority);
        if !cookies.is_empty() {
            request = request.header(http::header::COOKIE, cookies.join("; "));
        }
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = request
            .body(body.unwrap_or_default())
            .map_err(|e| LiveError::http(format!("{method} {}", shown(url)), &e))?;
        self.live.pod_http(&target.namespace, &pod, port, request).await
    }

    /// A Ready pod behind the Service and the port its `targetPort` names.
    async fn backend(&self, target: &Target) -> Result<(String, u16), LiveError> {
        let what = format!("Service {}/{}", target.namespace, target.service);
        let fail = |message: String| LiveError::Http { what: what.clone(), message };
        let path = format!("/api/v1/namespaces/{}/services/{}", target.namespace, target.service);
        let service: Value =
            serde_json::from_slice(&self.live.get_raw(&path).await?).map_err(|e| fail(e.to_string()))?;
        let port = service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .and_then(|ports| ports.iter().find(|p| p["port"].as_u64() == Some(u64::from(target.port))))
            .ok_or_else(|| fail(format!("has no port {}", target.port)))?;
        let selector = service
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",")
            })
            .filter(|s| !s.is_empty())
            .ok_or_else(|| fail("has no selector".into()))?;
        let pods = self.live.running_pods(&target.namespace, &selector).await?;
        let ready = pods
            .iter()
            .find(|p| super::waits::pod_ready(p))
            .ok_or_else(|| fail(format!("no Ready pod matches {selector}")))?;
        let name = ready.metadata.name.clone().unwrap_or_default();
        let number = match &port["targetPort"] {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(named) => ready.spec.as_ref().and_then(|spec| {
                spec.containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .find(|p| p.name.as_deref() == Some(named.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok())
            }),
            _ => Some(target.port),
        }
        .ok_or_else(|| fail(format!("targetPort {} is not a port of pod {name}", port["targetPort"])))?;
        Ok((name, number))
    }
}

/// An in-cluster URL taken apart.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    service: String,
    namespace: String,
    port: u16,
    /// `host[:port]` as the URL has it, which is the `Host` header.
    authority: String,
    /// Path and query.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Option<Target> {
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, 80),
        };
        let labels: Vec<&str> = host.split('.').collect();
        let (service, namespace) = match labels.as_slice() {
            [s, n, "svc", "cluster", "local"] | [s, n, "svc"] => (*s, *n),
            _ => return None,
        };
        Some(Target {
            service: service.into(),
            namespace: namespace.into(),
            port,
            authority: authority.into(),
            path: path.into(),
        })
    }
}

/// `host[:port]` of an absolute URL.
fn authority(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?']).next().unwrap_or_default().to_string())
}

/// A `Location` or form `action` against the URL it came from: absolute, or absolute path.
fn resolve(base: &str, reference: &str) -> String {
    if reference.contains("://") {
        return reference.to_string();
    }
    let origin = base.split_once("://").map_or(String::new(), |(scheme, rest)| {
        format!("{scheme}://{}", rest.split(['/', '?']).next().unwrap_or_default())
    });
    if reference.starts_with('/') {
        return format!("{origin}{reference}");
    }
    let dir = base.split('?').next().unwrap_or(base).rsplit_once('/').map_or(base, |(d, _)| d);
    format!("{dir}/{reference}")
}

/// A URL with its query values hidden but for [`SHOWN_PARAMETERS`].
pub fn shown(url: &str) -> String {
    let Some((path, query)) = url.split_once('?') else { return url.to_string() };
    let shown: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| if SHOWN_PARAMETERS.contains(&k.as_ref()) { format!("{k}={v}") } else { format!("{k}=…") })
        .collect();
    format!("{path}?{}", shown.join("&"))
}

/// A `Set-Cookie` header as the jar keeps it: name, value, and where it goes back (the host that
/// set it, `Path` or `/`). An expired or empty one deletes.
fn parse_set_cookie(header: &str, host: &str) -> Option<Cookie> {
    let mut parts = header.split(';');
    let (name, value) = parts.next()?.trim().split_once('=')?;
    let mut cookie =
        Cookie { name: name.trim().into(), value: value.trim().into(), host: host.into(), path: "/".into() };
    for attribute in parts {
        let (key, val) = attribute.trim().split_once('=').unwrap_or((attribute.trim(), ""));
        match key.to_ascii_lowercase().as_str() {
            "path" if val.starts_with('/') => cookie.path = val.to_string(),
            "max-age" if val.trim().parse::<i64>().is_ok_and(|s| s <= 0) => cookie.value.clear(),
            _ => {}
        }
    }
    Some(cookie)
}

/// The first 300 characters of an error answer that is not HTML, whitespace collapsed.
fn error_text(answer: &http::Response<Bytes>) -> Option<String> {
    let html = answer
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("html"));
    if answer.status().as_u16() < 400 || html {
        return None;
    }
    let text: String = String::from_utf8_lossy(answer.body()).split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then(|| text.chars().take(300).collect())
}

/// The `<title>` of an HTML body, whitespace collapsed.
fn title(body: &[u8]) -> Option<String> {
    let html = String::from_utf8_lossy(body);
    let lower = html.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let open_end = lower[start..].find('>')? + start + 1;
    let end = lower[open_end..].find("</title>")? + open_end;
    let text = unescape(&html[open_end..end]).split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

/// A form to post: its `action` and its named inputs with their values.
#[derive(Debug, PartialEq, Eq)]
pub struct Form {
    /// Where it posts, as written (entities decoded).
    pub action: String,
    /// `name` → `value` of each `<input>`, in order.
    pub fields: Vec<(String, String)>,
}

/// The first `<form method="post">` of an HTML page.
pub fn post_form(html: &str) -> Option<Form> {
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find("<form").map(|i| i + from) {
        let tag_end = lower[at..].find('>')? + at;
        let form = attributes(&html[at + "<form".len()..tag_end]);
        let end = lower[tag_end..].find("</form").map_or(html.len(), |i| i + tag_end);
        from = end;
        let method = form.iter().find(|(k, _)| k == "method").map(|(_, v)| v.to_ascii_lowercase());
        if method.as_deref() != Some("post") {
            continue;
        }
        let action = form.iter().find(|(k, _)| k == "action").map(|(_, v)| v.clone()).unwrap_or_default();
        let inner = &html[tag_end..end];
        let inner_lower = &lower[tag_end..end];
        let mut fields = Vec::new();
        let mut pos = 0;
        while let Some(i) = inner_lower[pos..].find("<input").map(|i| i + pos) {
            let close = inner_lower[i..].find('>').map_or(inner.len(), |j| j + i);
            let input = attributes(&inner[i + "<input".len()..close]);
            let get = |key: &str| input.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            if let Some(name) = get("name") {
                fields.push((name, get("value").unwrap_or_default()));
            }
            pos = close;
        }
        return Some(Form { action, fields });
    }
    None
}

/// The attributes of a tag's inside: `key="value"`, `key='value'`, `key=value` or a bare `key`;
/// keys lowercased, values with entities decoded.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let chars: Vec<char> = tag.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == '/') {
            i += 1;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' && chars[i] != '/' {
            i += 1;
        }
        if start == i {
            i += 1;
            continue;
        }
        let key: String = chars[start..i].iter().collect::<String>().to_ascii_lowercase();
        let mut value = String::new();
        if i < chars.len() && chars[i] == '=' {
            i += 1;
            if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') {
                let quote = chars[i];
                i += 1;
                let s = i;
                while i < chars.len() && chars[i] != quote {
                    i += 1;
                }
                value = chars[s..i.min(chars.len())].iter().collect();
                i += 1;
            } else {
                let s = i;
                while i < chars.len() && !chars[i].is_whitespace() {
                    i += 1;
                }
                value = chars[s..i].iter().collect();
            }
        }
        out.push((key, unescape(&value)));
    }
    out
}

/// The HTML character references templates write into attributes (`&amp;` in a form action).
fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2F;", "/")
        .replace("&#47;", "/")
        .replace("&#61;", "=")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_urls_name_service_namespace_and_port() {
        let t = Target::parse("http://keycloak.keycloak.svc.cluster.local:8080/realms/x?a=b").unwrap();
        assert_eq!((t.service.as_str(), t.namespace.as_str(), t.port), ("keycloak", "keycloak", 8080));
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("keycloak.keycloak.svc.cluster.local:8080", "/realms/x?a=b")
        );
        assert_eq!(Target::parse("http://kiali.istio-system.svc:20001").unwrap().path, "/");
        assert!(Target::parse("https://example.com/").is_none());
        assert!(Target::parse("http://example.com/").is_none(), "a public host is not in-cluster");
    }

    #[test]
    fn a_form_is_read_as_a_browser_reads_it() {
        let html = r#"<form id="x" method="get" action="/search"><input name="q"></form>
            <form id="kc-form-login" onsubmit="login.disabled = true; return true;"
                  action="http://kc/realms/r/login-actions/authenticate?session_code=a&amp;execution=b&amp;tab_id=c" method="post">
              <input tabindex="1" id="username" name="username" value="" type="text" autofocus autocomplete="off" />
              <input id="password" name="password" type="password">
              <input type="hidden" id="id-hidden-input" name="credentialId"/>
              <input tabindex="4" name="login" id="kc-login" type="submit" value="Sign In"/>
            </form>"#;
        let form = post_form(html).unwrap();
        assert_eq!(form.action, "http://kc/realms/r/login-actions/authenticate?session_code=a&execution=b&tab_id=c");
        let names: Vec<&str> = form.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["username", "password", "credentialId", "login"]);
        assert_eq!(form.fields[3].1, "Sign In");
        assert!(post_form("<form method=get action=/a><input name=b></form>").is_none());
    }

    #[test]
    fn hops_keep_where_a_flow_went_and_hide_what_proves_it() {
        let url = "http://kc/auth?client_id=kiali&redirect_uri=http%3A%2F%2Fk%2Fkiali&state=s3cr3t&code=abc&nonce=n";
        let s = shown(url);
        assert!(s.contains("client_id=kiali") && s.contains("redirect_uri=http://k/kiali"), "{s}");
        assert!(!s.contains("s3cr3t") && !s.contains("abc") && s.contains("code=…"), "{s}");
    }

    #[test]
    fn cookies_go_back_by_host_and_path_and_expire() {
        let c =
            parse_set_cookie("kiali-token-nonce-Kubernetes=n1; Path=/kiali; HttpOnly; SameSite=Lax", "k:1").unwrap();
        assert_eq!(
            (c.name.as_str(), c.value.as_str(), c.path.as_str()),
            ("kiali-token-nonce-Kubernetes", "n1", "/kiali")
        );
        assert!(parse_set_cookie("a=b; Max-Age=0", "h").unwrap().value.is_empty());
        assert_eq!(resolve("http://h:1/a/b?x=1", "/c"), "http://h:1/c");
        assert_eq!(resolve("http://h:1/a/b?x=1", "c?d"), "http://h:1/a/c?d");
        assert_eq!(
            title(b"<html><head><title>\n Sign in to meshcheck </title>").as_deref(),
            Some("Sign in to meshcheck")
        );
    }
}
