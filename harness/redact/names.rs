//! Which names say "secret": keys, flags and environment variables.

/// Whether the text holds a Kubernetes Secret (YAML, JSON, or JSON escaped in a string).
pub(super) fn holds_secret_object(text: &str) -> bool {
    let squeezed: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '\\'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    squeezed.contains("kind:secret")
}

/// Whether a key, env var or flag name names a secret (see [`redact`] for the rule).
pub(super) fn is_secret_name(name: &str) -> bool {
    const ENDINGS: &[&str] = &[
        "password",
        "passwd",
        "passphrase",
        "token",
        "secret",
        "secretkey",
        "secretaccesskey",
        "apikey",
        "privatekey",
        "keydata",
        "certificatedata",
        "authoritydata",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "fromliteral",
        // Plural keys (`passwords: [a, b]`; not `tokens`, a count in LLM and quota settings), Rails'
        // `SECRET_KEY_BASE`, `JWT_SIGNING_KEY`, Azure
        // connection strings' `AccountKey=`/`SharedAccessKey=`, request signatures
        // (`X-Amz-Signature=`).
        "passwords",
        "secrets",
        "apikeys",
        "keybase",
        "signingkey",
        "accountkey",
        "sharedaccesskey",
        "signature",
    ];
    // `grafana.adminPassword`, `auth/token`, `list[0].password`: the last segment names it; in Go's
    // `map[password:x]` the key follows an unclosed `[`.
    let last = name.rsplit(['.', '/']).next().unwrap_or(name);
    let last = match last.rsplit_once('[') {
        Some((_, after)) if !after.contains(']') => after,
        _ => last.split('[').next().unwrap_or(last),
    };
    let words = words(last);
    let joined = words.concat();
    match words.as_slice() {
        [] => false,
        [.., last] if last == "auth" => true,
        [_, .., last] if last == "pass" => true,
        // An Azure SAS token's signature (`?sv=…&sig=…`).
        [only] if only == "sig" => true,
        _ => ENDINGS.iter().any(|e| joined.ends_with(e)),
    }
}

/// Whether a command-line word is a flag whose value is secret: `--token`, `--password`,
/// `--client-secret`, Go-style `-token`, without a value attached (`--token=x` is a key=value).
///
/// Single-letter flags are never taken as secret, because one letter means different things to
/// the tools meshcheck drives: `-p` is `--patch` to `kubectl patch` (kubernetes.io/docs/reference/
/// kubectl/generated/kubectl_patch), `--port` to `k3d cluster create` (k3d.io/stable/usage/commands/
/// k3d_cluster_create), which meshcheck's own k3d command passes (`providers.rs`), and `--publish`
/// to `docker run`. Hiding those would hide evidence; and a tool that does take a password as `-p`
/// (`mysql -pX`) attaches it, which no word-level rule can tell apart.
pub(super) fn is_secret_flag(word: &str) -> bool {
    let name = word.trim_start_matches('-');
    let dashes = word.len() - name.len();
    (1..=2).contains(&dashes)
        && name.len() > 1
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        && is_secret_name(name)
}

/// The lower-case words of a name: split at `-`, `_` and lower-to-upper case changes.
pub(super) fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut after_lower = false;
    for c in name.chars() {
        let boundary = matches!(c, '-' | '_') || (c.is_ascii_uppercase() && after_lower);
        if boundary && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        after_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        if !matches!(c, '-' | '_') {
            current.push(c.to_ascii_lowercase());
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}
