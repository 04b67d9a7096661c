//! HTTP plumbing every simulated server shares: the response body type, JSON and `Status` replies,
//! query decoding, and one accept loop for the servers on the host (the mirror, the gateway).

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use std::collections::BTreeMap;

use serde_json::{Value, json};

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder().status(status).header("content-type", content_type).body(full(body)).expect("response")
}

pub fn json_reply(status: StatusCode, v: &Value) -> Response<Body> {
    respond(status, "application/json", serde_json::to_vec(v).expect("json"))
}

/// A `Status` error as the API server sends it.
pub fn status_error(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_reply(
        StatusCode::from_u16(code).expect("status code"),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

/// Percent-decoding (and `+` as space) of a query component.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(c) => {
                        out.push(c);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters kept).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP request as a program in a pod receives it (over a port-forward or from another pod):
/// what a login flow needs, headers and body included.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn get(target: &str) -> HttpRequest {
        HttpRequest { method: "GET".into(), target: target.into(), ..HttpRequest::default() }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// A query parameter, decoded.
    pub fn query(&self, key: &str) -> Option<String> {
        params(self.target.split_once('?').map_or("", |(_, q)| q)).remove(key)
    }

    /// A form field of an `application/x-www-form-urlencoded` body, decoded.
    pub fn form(&self, key: &str) -> Option<String> {
        params(&String::from_utf8_lossy(&self.body)).remove(key)
    }

    /// A cookie the request carries.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.header("cookie")?
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    }
}

/// `k=v&…` decoded into a map (the first value of a repeated key wins).
pub fn params(query: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in query.split('&').filter_map(|p| p.split_once('=')) {
        out.entry(decode(k)).or_insert_with(|| decode(v));
    }
    out
}

/// An HTTP answer with headers.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> HttpReply {
        HttpReply { status, headers: vec![("Content-Type".into(), content_type.into())], body: body.into() }
    }

    pub fn json(status: u16, v: &Value) -> HttpReply {
        HttpReply::new(status, "application/json", serde_json::to_vec(v).expect("json"))
    }

    /// A `302 Found` to `location`, as Go's `http.Redirect` and Keycloak answer.
    pub fn found(location: &str) -> HttpReply {
        HttpReply::new(302, "text/html; charset=utf-8", format!("<a href=\"{location}\">Found</a>.\n"))
            .with("Location", location)
    }

    pub fn with(mut self, name: &str, value: &str) -> HttpReply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The reply on the wire (HTTP/1.1, the connection closes after it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = StatusCode::from_u16(self.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Unknown");
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (n, v) in &self.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", self.body.len()));
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// A request from its bytes on the wire, once the head and `Content-Length` bytes of body are there.
pub fn parse_request(buf: &[u8]) -> Option<HttpRequest> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let body = buf.get(head_end + 4..head_end + 4 + length)?.to_vec();
    Some(HttpRequest { method, target, headers, body })
}
