//! The redaction of secrets from anything meshcheck records: command lines and their output, applied
//! manifests, evidence. The run folder is uploaded as a CI artifact, so whatever survives here is
//! public. A security component of its own (not a utility): a leaf that imports nothing of meshcheck,
//! so every writer of the run folder can use it.
//!
//! Files: `engine` (the line-by-line redactor) uses `names` (which names say secret) and `scan`
//! (byte scanners over a line); `tests` runs the corpus in `corpus/` against [`redact`] and
//! [`redact_argv`].

use std::borrow::Cow;

/// What stands in for a removed secret.
pub const REDACTED: &str = "[REDACTED]";

/// Removes secrets from text that is about to be recorded: command lines, command output, applied
/// manifests. The run folder is uploaded as a CI artifact, so whatever survives here is public.
///
/// What goes, in any letter case:
/// - the value of a key whose name says secret, in every notation a tool prints: YAML `key: v`, JSON
///   `"key": "v"` (also escaped inside a JSON string, as in `last-applied-configuration`), env and
///   INI `KEY=v`, flags `--key=v`, `--key v` and `-key v`, helm `--set a.b.key=v`, query strings
///   `?key=v`, YAML block scalars `key: |` and arrays. The name counts when it ends in `password`,
///   `passwd`, `passphrase`, `token`, `secret`, `secretkey`, `secretaccesskey`, `apikey`,
///   `privatekey`, `keydata`, `certificatedata`, `authoritydata`, `authorization`, `cookie`,
///   `credential(s)` or `fromliteral` once `-`, `_` and case are dropped (`adminPassword`,
///   `AWS_SECRET_ACCESS_KEY`, `client-key-data`, `--from-literal`), or when its last word is `auth`,
///   or `pass` after another word (`DB_PASS`);
/// - the value after `- name: <secret name>` (`value: x`, an env var of a pod or a kubeconfig
///   `exec` plugin);
/// - every value under `data`/`stringData` when the text holds a Secret (`kind: Secret`, YAML or
///   JSON), whatever the keys are called;
/// - bearer tokens, the credentials of `Authorization:` (the scheme stays, the rest of the header
///   goes: Digest's `response=`), URL userinfo (`https://user:pw@host`), PEM and PGP private keys;
/// - tokens known by their shape wherever they stand (GitHub `ghp_`/`github_pat_`…, Slack `xoxb-`…,
///   Google `AIza…`, a Slack webhook's path), the text of XML elements with a secret name, a
///   `.netrc` password, the password of curl's `--user user:password`;
/// - a secret key's value on the deeper lines below it (`password:` then the value), and keys
///   split from their value by ANSI colours (the colours are dropped first).
///
/// Every match on a line is redacted, not only the first. Text around a secret stays, with one
/// exception: an unquoted YAML-style value (`key: v`) runs to the end of the line (or of the
/// quoted string it sits in), because YAML plain scalars may hold spaces, so `password: a b # note`
/// loses the note too. Without a space after the colon (Go's `{User:ci Password:x}`) a value ends
/// at whitespace.
///
/// False positives accepted, because a leak costs more than a hidden harmless value:
/// `existingSecret: <name of a Secret>` (helm charts), placeholders such as Kiali's
/// `"password" : "xxx"`, the word after `secret:` in prose (`secret:<secretName>` in Kiali's CRD),
/// any `data:` of a ConfigMap printed in the same text as a Secret, and a word after `Bearer` in
/// prose (except "token"). Kept on purpose: `true`/`false`/`null` values
/// (`automountServiceAccountToken: false` is evidence, not a secret), names that only contain a
/// secret word (`tokenizer`, `passwordless`, `token_count`, `secretName`, `secretKeyRef`,
/// `bypass`), the shell's `PWD`, image digests (`alpine@sha256:…`), and single-letter flags such
/// as `-p` (see `names::is_secret_flag`).
///
/// Not caught: a bare secret with no name next to it (`kubectl get secret -o jsonpath=...` prints
/// only the value).
pub fn redact(text: &str) -> String {
    if text.contains('\u{1b}') {
        // Colours split a key from its value (`\e[33mpassword\e[0m: x`): what is recorded loses them.
        let plain = without_ansi(text);
        return Redactor::new(&plain, Unit::Text).run(&plain);
    }
    Redactor::new(text, Unit::Text).run(text)
}

/// `text` without ANSI escape sequences: CSI (`ESC [ … final byte`) and OSC (`ESC ] … BEL` or
/// `ESC \\`); any other ESC goes alone.
fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('[') => {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Redacts a program's argument vector. Unlike [`redact`] on each argument, it also removes the
/// value that follows a secret flag as an argument of its own (`["--password", "x"]`), and an
/// argument's value runs to its end, spaces included (`["PASSWORD=a b"]`), since no shell quoting
/// marks where it ends.
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let mut secret_next = false;
    argv.iter()
        .map(|arg| {
            let is_secret_value = secret_next && !arg.starts_with('-');
            secret_next = is_secret_flag(arg);
            if is_secret_value { REDACTED.to_string() } else { Redactor::new(arg, Unit::Argument).run(arg) }
        })
        .collect()
}

mod engine;
mod names;
mod scan;
#[cfg(test)]
mod tests;

use engine::Redactor;
use names::is_secret_flag;

/// What one call redacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Free text, such as a shell-quoted command line or a tool's output: an unquoted `KEY=value`
    /// ends at whitespace.
    Text,
    /// One argument of an argument vector: it is all one word.
    Argument,
}

/// A value that continues on the following lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// The `data`/`stringData` of a Secret whose key line is indented by `indent`: lines indented
    /// by `child` (the first line's indent) keep their key, deeper lines are values.
    SecretData { indent: usize, child: Option<usize> },
    /// A secret YAML block scalar (`token: |`): every line indented deeper than its key line.
    Indented { indent: usize },
    /// A secret key with nothing after it (`password:`): the plain value on the deeper lines below
    /// it goes; a mapping or list below it (`serviceAccountToken:` then `path: token`) is judged
    /// key by key as usual.
    ScalarBelow { indent: usize },
    /// A secret array left open (`"token": [`): every line up to the one starting with `]`.
    Array,
    /// The body of a PEM private key, up to its `-----END` line.
    PrivateKey,
}

/// The separator between a key and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sep {
    /// `key: value`, YAML, JSON, HTTP headers.
    Colon,
    /// `Key:value` with an unquoted key: Go's `%+v` (`{User:ci Password:x}`), or prose such as
    /// `secret:<name>`. The value ends at whitespace.
    Tight,
    /// `KEY=value`, env, INI, flags, query strings.
    Equals,
}

/// Where a secret key's value starts and how it is written.
#[derive(Debug, Clone, Copy)]
struct Value {
    /// Its first byte.
    start: usize,
    /// What separates it from its key.
    sep: Sep,
    /// The quote the key sits in (see [`quote_states`]), or 0.
    enclosing: u8,
    /// Whether the key was quoted, as in JSON.
    json: bool,
}

/// How a key's value is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Not secret.
    Plain,
    /// Secret.
    Secret,
    /// An `Authorization` header: the scheme stays, the credentials go.
    Authorization,
    /// `data`/`stringData` of a Secret.
    SecretData,
    /// `name` of an env var: secret when the name is, then so is its `value`.
    EnvName,
}

/// Where a secret env var's `name` key was.
#[derive(Debug, Clone, Copy)]
struct EnvName {
    line_no: usize,
    column: usize,
}

/// The annotation in which `kubectl apply` keeps the whole object it applied, a Secret's data
/// included (`LastAppliedConfigAnnotation`, k8s.io/kubernetes pkg/api/annotations).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An API response (a JSON object or list, as the API server returned it) with its secret-bearing
/// fields blanked structurally before it is kept as evidence: every container env var's literal
/// `value` (names and `valueFrom` references stay: on an existing cluster a cloud or CSI pod's env
/// may carry credentials), the values that follow secret flags in `command`/`args`
/// ([`redact_argv`]), `last-applied-configuration` and any secret pairs in other annotations
/// ([`redact`]), and a Secret's `data`/`stringData`. A body with none of these, or that is not
/// JSON, is returned as it came (so evidence stays what the API server said); one that changed is
/// written back pretty-printed.
pub fn api_json(bytes: &[u8]) -> Cow<'_, [u8]> {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(bytes) else { return Cow::Borrowed(bytes) };
    if !blank(&mut value) {
        return Cow::Borrowed(bytes);
    }
    Cow::Owned(serde_json::to_vec_pretty(&value).expect("JSON serializes"))
}

/// [`api_json`]'s walk; whether anything changed.
fn blank(v: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    let mut changed = false;
    match v {
        Value::Array(items) => {
            for item in items {
                changed |= blank(item);
            }
        }
        Value::Object(map) => {
            if map.get("kind").and_then(Value::as_str) == Some("Secret") {
                for field in ["data", "stringData"] {
                    if let Some(values) = map.get_mut(field).and_then(Value::as_object_mut) {
                        for value in values.values_mut().filter(|v| v.as_str() != Some(REDACTED)) {
                            *value = Value::String(REDACTED.into());
                            changed = true;
                        }
                    }
                }
            }
            for (key, value) in map.iter_mut() {
                match (key.as_str(), value) {
                    ("env", Value::Array(vars)) => {
                        for var in vars.iter_mut().filter_map(Value::as_object_mut) {
                            if let Some(literal) =
                                var.get_mut("value").filter(|v| v.as_str().is_some_and(|s| s != REDACTED))
                            {
                                *literal = Value::String(REDACTED.into());
                                changed = true;
                            }
                        }
                    }
                    ("command" | "args", Value::Array(argv)) if argv.iter().all(Value::is_string) => {
                        let words: Vec<String> = argv.iter().filter_map(|a| a.as_str().map(String::from)).collect();
                        let redacted = redact_argv(&words);
                        if redacted != words {
                            *argv = redacted.into_iter().map(Value::String).collect();
                            changed = true;
                        }
                    }
                    ("annotations", Value::Object(annotations)) => {
                        for (name, text) in annotations.iter_mut() {
                            let Some(was) = text.as_str() else { continue };
                            let now = if name == LAST_APPLIED { REDACTED.to_string() } else { redact(was) };
                            if now != was {
                                *text = Value::String(now);
                                changed = true;
                            }
                        }
                    }
                    (_, nested) => changed |= blank(nested),
                }
            }
        }
        _ => {}
    }
    changed
}

/// The object with a Secret's values replaced by [`REDACTED`]; other kinds unchanged.
pub fn without_secret_values(obj: &kube::api::DynamicObject) -> Cow<'_, kube::api::DynamicObject> {
    if obj.types.as_ref().is_none_or(|t| t.kind != "Secret") {
        return Cow::Borrowed(obj);
    }
    let mut secret = obj.clone();
    for field in ["data", "stringData"] {
        if let Some(values) = secret.data.get_mut(field).and_then(serde_json::Value::as_object_mut) {
            values.values_mut().for_each(|v| *v = serde_json::Value::String(REDACTED.into()));
        }
    }
    if let Some(last_applied) = secret.metadata.annotations.as_mut().and_then(|a| a.get_mut(LAST_APPLIED)) {
        *last_applied = REDACTED.into();
    }
    Cow::Owned(secret)
}
