//! ztunnel's access log: one `connection complete` event per connection it proxied.
//!
//! ztunnel 1.30.3 writes it with target `access` at level `info` (or `error`, with an `error`
//! field, when the connection failed) in Istio's plain format, tab-separated:
//! `<time>\t<level>\taccess\tconnection complete\t<k=v …>`, where string values are quoted in
//! Rust's Debug form and addresses are not (istio/ztunnel@1.30.3 src/telemetry.rs `IstioFormat`,
//! src/proxy/metrics.rs `access_log!`); with `LOG_FORMAT=json`, one JSON object per line with
//! `level`, `time`, `scope` and the fields as keys (`IstioJsonFormat`). Older ztunnels wrote
//! tracing's default `<time>  INFO access: connection complete` with the fields on the following
//! lines; documentation wraps lines. All three read the same way: a record starts at a line that
//! starts with a timestamp (or is a JSON object), and lines that do not continue it.
//!
//! `src.identity` and `dst.identity` are written only for a `mutual_tls` connection
//! (`.filter(|_| mtls)` in `access_log!`): their presence is ztunnel's own statement that the
//! connection was mutual TLS between those SPIFFE identities.

use std::collections::BTreeMap;

/// One access-log event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEvent {
    /// `info` for a completed connection, `error` for a failed one (lowercase).
    pub level: String,
    /// The message, `connection complete` for a finished connection.
    pub message: String,
    /// The `key=value` fields (`src.identity`, `dst.service`, `direction`, …), unquoted.
    pub fields: BTreeMap<String, String>,
}

impl AccessEvent {
    /// A field's value, if the event has it.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

/// The access events of a log; lines of other targets and lines that are not events are skipped.
pub fn parse(text: &str) -> Vec<AccessEvent> {
    records(text).iter().filter_map(|r| if r.starts_with('{') { json_event(r) } else { plain_event(r) }).collect()
}

/// Joins a log into records: a line starting with a timestamp or a `{` starts one, any other line
/// continues the one before (wrapped or multi-line fields).
fn records(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()) {
        match out.last_mut() {
            Some(last) if !starts_record(line) => {
                last.push(' ');
                last.push_str(line.trim_start());
            }
            _ => out.push(line.to_string()),
        }
    }
    out
}

/// An RFC 3339 time (`2024-05-04T09:59:05.028709Z`) or a JSON object opens a record.
fn starts_record(line: &str) -> bool {
    let b = line.as_bytes();
    line.starts_with('{')
        || (b.len() > 10 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[7] == b'-' && b[10] == b'T')
}

/// `<time> <level> access[:] <message> <k=v>…`, separated by tabs or spaces.
fn plain_event(record: &str) -> Option<AccessEvent> {
    let mut rest = record;
    let mut next = || {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (word, tail) = t.split_at(end);
        rest = tail;
        word
    };
    let (_time, level, target) = (next(), next().to_ascii_lowercase(), next());
    if target.trim_end_matches(':') != "access" {
        return None;
    }
    let (message, fields) = split_fields(rest.trim());
    Some(AccessEvent { level, message, fields })
}

/// Splits `connection complete\tk=v k="quoted value" …` into the message and the fields. The
/// message is what comes before the first `key=` token.
fn split_fields(text: &str) -> (String, BTreeMap<String, String>) {
    let mut fields = BTreeMap::new();
    let mut message = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let word_end = text[start..].find(|ch: char| ch.is_whitespace() || ch == '=').map_or(text.len(), |i| start + i);
        let key = &text[start..word_end];
        let is_key = text[word_end..].starts_with('=')
            && !key.is_empty()
            && key.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '_');
        if !is_key {
            let end = text[start..].find(char::is_whitespace).map_or(text.len(), |i| start + i);
            message.push(&text[start..end]);
            while chars.peek().is_some_and(|&(i, _)| i < end) {
                chars.next();
            }
            continue;
        }
        while chars.peek().is_some_and(|&(i, _)| i <= word_end) {
            chars.next();
        }
        let value = if chars.peek().is_some_and(|&(_, ch)| ch == '"') {
            chars.next();
            let mut v = String::new();
            while let Some((_, ch)) = chars.next() {
                match ch {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            v.push(escaped);
                        }
                    }
                    '"' => break,
                    other => v.push(other),
                }
            }
            v
        } else {
            let mut v = String::new();
            while let Some(&(_, ch)) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                v.push(ch);
                chars.next();
            }
            v
        };
        fields.insert(key.to_string(), value);
    }
    (message.join(" "), fields)
}

/// One `LOG_FORMAT=json` line whose `scope` is `access`.
fn json_event(record: &str) -> Option<AccessEvent> {
    let serde_json::Value::Object(map) = serde_json::from_str(record).ok()? else { return None };
    if map.get("scope").and_then(|s| s.as_str()) != Some("access") {
        return None;
    }
    let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let level = map.get("level").map(text).unwrap_or_default().to_ascii_lowercase();
    let message = map.get("message").map(text).unwrap_or_default();
    let fields = map
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "level" | "time" | "scope" | "message"))
        .map(|(k, v)| (k.clone(), text(v)))
        .collect();
    Some(AccessEvent { level, message, fields })
}
