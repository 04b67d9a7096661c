//! Small utilities every layer uses: atomic writes, timestamps, tails of long text, and the redaction
//! of secrets from anything recorded. A leaf: it imports no other meshcheck module, so the run
//! folder writers ([`crate::report`], [`crate::evidence`]) and the executors ([`crate::runner`],
//! [`crate::live`]) can share it without importing each other.

use std::{
    io::Write,
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
};

/// Writes a file atomically: a temp file in the same folder, then rename. Creates parent folders.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().map(|s| s.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Current time, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The last `max` bytes of text, cut at a character boundary, marked when cut.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {start} bytes cut …]{}", &text[start..])
}

/// Removes secrets from text that is about to be recorded: bearer tokens, kubeconfig credentials
/// (`token`, `client-key-data`, `client-certificate-data`, `password`), Secret `data:` values and
/// basic-auth in URLs. Conservative: it redacts the value of any such key wherever it appears.
pub fn redact(text: &str) -> String {
    const KEYS: &[&str] = &[
        "token",
        "client-key-data",
        "client-certificate-data",
        "certificate-authority-data",
        "password",
        "id-token",
        "refresh-token",
        "access-token",
    ];
    let mut out = String::with_capacity(text.len());
    let mut in_secret_data = false;
    let mut data_indent = 0usize;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        let indent = body.len() - body.trim_start().len();
        let trimmed = body.trim_start();
        if in_secret_data && (indent <= data_indent && !trimmed.is_empty()) {
            in_secret_data = false;
        }
        let mut redacted = if in_secret_data && trimmed.contains(':') {
            let key = trimmed.split(':').next().unwrap_or_default();
            format!("{}{key}: [REDACTED]", &body[..indent])
        } else {
            redact_line(body, KEYS)
        };
        if trimmed == "data:" || trimmed == "stringData:" {
            in_secret_data = text.contains("kind: Secret");
            data_indent = indent;
        }
        redacted = redact_bearer(&redacted);
        redacted = redact_url_userinfo(&redacted);
        out.push_str(&redacted);
        out.push_str(ending);
    }
    out
}

fn redact_line(line: &str, keys: &[&str]) -> String {
    for key in keys {
        for pattern in [format!("{key}:"), format!("\"{key}\":"), format!("--{key}="), format!("{key}=")] {
            if let Some(pos) = line.find(&pattern) {
                let before_ok = pos == 0
                    || !line.as_bytes()[pos - 1].is_ascii_alphanumeric()
                    || pattern.starts_with('-')
                    || pattern.starts_with('"');
                let value = line[pos + pattern.len()..].trim();
                if before_ok && !value.is_empty() && value != "\"\"" && value != "[REDACTED]" {
                    return format!("{}{} [REDACTED]", &line[..pos], pattern);
                }
            }
        }
    }
    line.to_string()
}

fn redact_bearer(line: &str) -> String {
    match line.find("Bearer ") {
        Some(pos) => format!("{}Bearer [REDACTED]", &line[..pos]),
        None => line.to_string(),
    }
}

fn redact_url_userinfo(line: &str) -> String {
    let mut out = line.to_string();
    for scheme in ["https://", "http://"] {
        if let Some(start) = out.find(scheme) {
            let rest = &out[start + scheme.len()..];
            let end = rest.find(['/', ' ', '"']).unwrap_or(rest.len());
            if let Some(at) = rest[..end].rfind('@') {
                out = format!("{}{}[REDACTED]@{}", &out[..start], scheme, &rest[at + 1..]);
            }
        }
    }
    out
}

static MANIFEST_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Records an applied object as `manifests/NNN-<kind>-<namespace>-<name>.yaml` (as JSON-compatible
/// YAML, redacted).
pub fn record_manifest(
    run_dir: &Path,
    obj: &kube::api::DynamicObject,
    default_ns: Option<&str>,
) -> std::io::Result<()> {
    let n = MANIFEST_COUNTER.fetch_add(1, Ordering::SeqCst) + 1;
    let kind = obj.types.as_ref().map(|t| t.kind.to_lowercase()).unwrap_or_default();
    let ns = obj.metadata.namespace.as_deref().or(default_ns).unwrap_or("cluster");
    let name = obj.metadata.name.as_deref().unwrap_or("unnamed");
    let text = serde_json::to_string_pretty(obj).map_err(std::io::Error::other)?;
    write_atomic(&run_dir.join(format!("manifests/{n:03}-{kind}-{ns}-{name}.yaml")), redact(&text).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_cut_at_char_boundaries() {
        let t = tail("ééééé", 3);
        assert!(t.ends_with('é'));
    }
}
