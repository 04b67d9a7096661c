//! The redaction of secrets from anything meshcheck records: command lines and their output, applied
//! manifests, evidence. The run folder is uploaded as a CI artifact, so whatever survives here is
//! public. A security component of its own (not a utility): a leaf that imports nothing of meshcheck,
//! so every writer of the run folder can use it. Its corpus tests are in `suites/offline/security.rs`.

use std::{borrow::Cow, ops::Range};

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
/// - bearer tokens, the credentials of `Authorization:` (the scheme stays), URL userinfo
///   (`https://user:pw@host`), and PEM private keys.
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
/// as `-p` (see [`is_secret_flag`]).
///
/// Not caught: a bare secret with no name next to it (`kubectl get secret -o jsonpath=...` prints
/// only the value).
pub fn redact(text: &str) -> String {
    Redactor::new(text, Unit::Text).run(text)
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

/// Redaction state carried from one line to the next.
struct Redactor {
    unit: Unit,
    holds_secret_object: bool,
    block: Option<Block>,
    /// The `name` of an env var that names a secret: its `value` (on the same line, or later at the
    /// same column) is secret.
    env_name: Option<EnvName>,
    flag_value_pending: bool,
    line_no: usize,
}

/// Where a secret env var's `name` key was.
#[derive(Debug, Clone, Copy)]
struct EnvName {
    line_no: usize,
    column: usize,
}

impl Redactor {
    fn new(text: &str, unit: Unit) -> Redactor {
        Redactor {
            unit,
            holds_secret_object: holds_secret_object(text),
            block: None,
            env_name: None,
            flag_value_pending: false,
            line_no: 0,
        }
    }

    fn run(mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let body = line.trim_end_matches(['\n', '\r']);
            out.push_str(&self.line(body));
            out.push_str(&line[body.len()..]);
        }
        out
    }

    fn line(&mut self, line: &str) -> String {
        self.line_no += 1;
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            return line.to_string();
        }
        match self.block {
            Some(Block::PrivateKey) if !trimmed.starts_with("-----END") => return whole(line, indent),
            Some(Block::Array) if !trimmed.starts_with(']') => return whole(line, indent),
            Some(Block::Indented { indent: key }) if indent > key => return whole(line, indent),
            Some(Block::SecretData { indent: key, child }) if indent > key => {
                let child = child.unwrap_or(indent);
                self.block = Some(Block::SecretData { indent: key, child: Some(child) });
                return self.secret_data_child(line, indent, child);
            }
            _ => self.block = None,
        }
        let bytes = line.as_bytes();
        let mut spans = Vec::new();
        if trimmed.starts_with(['-', '{', '}']) {
            self.env_name = None;
        }
        self.pairs(line, indent, &mut spans);
        self.flags(bytes, &mut spans);
        bearer_tokens(bytes, &mut spans);
        url_userinfo(bytes, &mut spans);
        self.private_keys(bytes, &mut spans);
        splice(line, spans)
    }

    /// A line inside a Secret's `data`: at the children's indent the key stays and the value goes;
    /// anything else (a block scalar's lines) goes whole.
    fn secret_data_child(&mut self, line: &str, indent: usize, child: usize) -> String {
        let bytes = line.as_bytes();
        let Some(v) = (indent == child).then(|| leading_pair(bytes, indent)).flatten() else {
            return whole(line, indent);
        };
        if v >= bytes.len() || is_block_indicator(&bytes[v..]) || bytes[v..].starts_with(REDACTED.as_bytes()) {
            return line.to_string();
        }
        splice(line, vec![value_span(bytes, v, Sep::Colon, 0, self.unit)])
    }

    /// Every `key: value` and `key=value` on the line whose key is secret.
    fn pairs(&mut self, line: &str, indent: usize, spans: &mut Vec<Range<usize>>) {
        let b = line.as_bytes();
        let quotes = quote_states(b);
        for i in 0..b.len() {
            let sep = match b[i] {
                b':' if b[i + 1..].starts_with(b"//") || b.get(i + 1) == Some(&b'=') => continue,
                b':' if b.get(i + 1).is_none_or(u8::is_ascii_whitespace) => Sep::Colon,
                b':' => Sep::Tight,
                b'=' if b.get(i + 1) != Some(&b'=')
                    && b.get(i + 1) != Some(&b'>')
                    && !(i > 0 && matches!(b[i - 1], b'=' | b'!' | b'<' | b'>')) =>
                {
                    Sep::Equals
                }
                _ => continue,
            };
            let Some((key, open)) = key_before(b, i) else { continue };
            let quoted_key = open < key.start;
            let sep = if sep == Sep::Tight && quoted_key { Sep::Colon } else { sep };
            let role = self.role(&line[key.clone()], key.start);
            if role == Role::Plain {
                continue;
            }
            let v = skip_blanks(b, i + 1);
            if v >= b.len() {
                if role == Role::SecretData && sep == Sep::Colon {
                    self.block = Some(Block::SecretData { indent, child: None });
                }
                continue;
            }
            if b[v..].starts_with(REDACTED.as_bytes()) {
                continue;
            }
            match role {
                Role::Plain => {}
                Role::SecretData if b[v] == b'{' => {
                    if !object_values(b, v, spans) {
                        self.block = Some(Block::SecretData { indent, child: None });
                    }
                }
                Role::SecretData => {}
                Role::EnvName => {
                    let span = value_span(b, v, sep, quotes[open], self.unit);
                    self.env_name =
                        is_secret_name(&line[span]).then_some(EnvName { line_no: self.line_no, column: key.start });
                }
                Role::Secret | Role::Authorization => {
                    let value = Value { start: v, sep, enclosing: quotes[open], json: quoted_key };
                    self.secret_value(b, value, role, indent, spans)
                }
            }
        }
    }

    /// What a key's value is, given the key, its column, and the lines before.
    fn role(&mut self, key: &str, column: usize) -> Role {
        let line_no = self.line_no;
        if self.holds_secret_object && (key == "data" || key == "stringData") {
            Role::SecretData
        } else if key.eq_ignore_ascii_case("name") {
            Role::EnvName
        } else if key.eq_ignore_ascii_case("value")
            && self.env_name.take_if(|n| n.line_no == line_no || n.column == column).is_some()
        {
            Role::Secret
        } else if !is_secret_name(key) {
            Role::Plain
        } else if words(key).concat().ends_with("authorization") {
            Role::Authorization
        } else {
            Role::Secret
        }
    }

    /// Redacts the value of a secret key.
    fn secret_value(&mut self, b: &[u8], value: Value, role: Role, indent: usize, spans: &mut Vec<Range<usize>>) {
        let Value { start: v, sep, enclosing, json } = value;
        match b[v] {
            // A nested object: its own keys are judged one by one.
            b'{' => {}
            b'[' => match b[v..].iter().position(|&c| c == b']') {
                Some(len) => array_values(b, v, v + len, spans),
                None => {
                    spans.push(v + 1..b.len());
                    self.block = Some(Block::Array);
                }
            },
            b'|' | b'>' if is_block_indicator(&b[v..]) => self.block = Some(Block::Indented { indent }),
            _ => {
                let mut span = value_span(b, v, sep, enclosing, self.unit);
                // In JSON (a quoted key) the comma after an unquoted value (`"token": 5,`) is syntax.
                if json && b[..span.end].ends_with(b",") {
                    span.end -= 1;
                }
                if is_literal(&b[span.clone()]) {
                    return;
                }
                if role == Role::Authorization {
                    span.start = after_scheme(b, span.clone());
                }
                spans.push(span);
            }
        }
    }

    /// The value after a secret flag given as a word of its own (`--token abc`), on this line or,
    /// for a flag that ends a line (a YAML or JSON args list), the next.
    fn flags(&mut self, b: &[u8], spans: &mut Vec<Range<usize>>) {
        let words = words_of(b);
        if std::mem::take(&mut self.flag_value_pending)
            && let Some(first) = words.iter().find(|w| &b[(*w).clone()] != b"-")
        {
            flag_value(b, first.start, spans);
        }
        for (i, word) in words.iter().enumerate() {
            let core = trim_punctuation(&b[word.clone()]);
            if !std::str::from_utf8(core).is_ok_and(is_secret_flag) {
                continue;
            }
            match words.get(i + 1) {
                Some(next) => flag_value(b, next.start, spans),
                None => self.flag_value_pending = self.unit == Unit::Text,
            }
        }
    }

    /// The bodies of PEM private keys (RFC 7468 labels `PRIVATE KEY`, `RSA PRIVATE KEY`, …).
    fn private_keys(&mut self, b: &[u8], spans: &mut Vec<Range<usize>>) {
        let mut from = 0;
        while let Some(begin) = find(b, from, b"-----BEGIN ") {
            let label = begin + "-----BEGIN ".len();
            let Some(label_end) = find(b, label, b"-----") else { return };
            let body = label_end + "-----".len();
            from = body;
            if !b[label..label_end].ends_with(b"PRIVATE KEY") {
                continue;
            }
            match find(b, body, b"-----END") {
                Some(end) => {
                    spans.push(body..end);
                    from = end + "-----END".len();
                }
                None => {
                    spans.push(body..b.len());
                    self.block = Some(Block::PrivateKey);
                    return;
                }
            }
        }
    }
}

/// Whether the text holds a Kubernetes Secret (YAML, JSON, or JSON escaped in a string).
fn holds_secret_object(text: &str) -> bool {
    let squeezed: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '\\'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    squeezed.contains("kind:secret")
}

/// Whether a key, env var or flag name names a secret (see [`redact`] for the rule).
fn is_secret_name(name: &str) -> bool {
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
    ];
    // `grafana.adminPassword`, `auth/token`, `list[0].password`: the last segment names it.
    let last = name.rsplit(['.', '/']).next().unwrap_or(name);
    let last = last.split('[').next().unwrap_or(last);
    let words = words(last);
    let joined = words.concat();
    match words.as_slice() {
        [] => false,
        [.., last] if last == "auth" => true,
        [_, .., last] if last == "pass" => true,
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
fn is_secret_flag(word: &str) -> bool {
    let name = word.trim_start_matches('-');
    let dashes = word.len() - name.len();
    (1..=2).contains(&dashes)
        && name.len() > 1
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        && is_secret_name(name)
}

/// The lower-case words of a name: split at `-`, `_` and lower-to-upper case changes.
fn words(name: &str) -> Vec<String> {
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

/// Bytes a key can be made of (`grafana.adminPassword`, `client-key-data`, `list[0].token`).
fn is_key_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"_.-/[]".contains(&c)
}

/// For each byte, the quote (`"` or `'`) it sits in, or 0: shell words and JSON strings.
fn quote_states(b: &[u8]) -> Vec<u8> {
    let mut states = Vec::with_capacity(b.len() + 1);
    let mut quote = 0u8;
    let mut i = 0;
    while i < b.len() {
        states.push(quote);
        if b[i] == b'\\' && quote != b'\'' && i + 1 < b.len() {
            states.push(quote);
            i += 2;
            continue;
        }
        if quote == 0 && matches!(b[i], b'"' | b'\'') {
            quote = b[i];
        } else if b[i] == quote {
            quote = 0;
        }
        i += 1;
    }
    states.push(quote);
    states
}

/// The key ending just before the separator at `sep` (blanks and a closing quote, plain or
/// escaped, may stand between), and where the key starts including its opening quote.
fn key_before(b: &[u8], sep: usize) -> Option<(Range<usize>, usize)> {
    let mut end = sep;
    while end > 0 && matches!(b[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    let quote_len = if end >= 2 && b[end - 1] == b'"' && b[end - 2] == b'\\' {
        2
    } else if end >= 1 && matches!(b[end - 1], b'"' | b'\'') {
        1
    } else {
        0
    };
    end -= quote_len;
    let mut start = end;
    while start > 0 && is_key_byte(b[start - 1]) {
        start -= 1;
    }
    (start < end).then(|| (start..end, start.saturating_sub(quote_len)))
}

/// Where a key of a line (a Secret's data key) has its value: after `key:` or `"key":`.
fn leading_pair(b: &[u8], indent: usize) -> Option<usize> {
    let colon = indent + b[indent..].iter().position(|&c| c == b':')?;
    let (key, _) = key_before(b, colon)?;
    let opening = &b[indent..key.start];
    matches!(opening, b"" | b"\"" | b"'" | b"\\\"").then(|| skip_blanks(b, colon + 1))
}

fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t') {
        i += 1;
    }
    i
}

/// The content of the value starting at `v` (quotes excluded). A quoted value ends at its closing
/// quote. An unquoted one ends at the end of the line, at the closing quote of a quoted word or
/// string it sits in (`'PASSWORD=a b'`, `"-H", "X-Token: t"`), before a `,`, `&` or `;` that
/// starts the next pair (`a.password=x,b=y`, `?token=x&page=2`), and, for `KEY=value` in text, at
/// whitespace.
fn value_span(b: &[u8], v: usize, sep: Sep, enclosing: u8, unit: Unit) -> Range<usize> {
    if b[v..].starts_with(b"\\\"") {
        return v + 2..find(b, v + 2, b"\\\"").unwrap_or(b.len());
    }
    if matches!(b[v], b'"' | b'\'') {
        return v + 1..closing_quote(b, v + 1, b[v]);
    }
    let stop_at_space = sep == Sep::Tight || (enclosing == 0 && sep == Sep::Equals && unit == Unit::Text);
    let mut e = v;
    while e < b.len() {
        let c = b[e];
        if c == b'\\' {
            e += 2;
            continue;
        }
        if (enclosing != 0 && c == enclosing)
            || (stop_at_space && c.is_ascii_whitespace())
            || (matches!(c, b',' | b'&' | b';') && next_pair_at(b, e + 1))
        {
            break;
        }
        e += 1;
    }
    let mut e = e.min(b.len());
    while e > v && b[e - 1].is_ascii_whitespace() {
        e -= 1;
    }
    v..e
}

/// Where a quoted string that started before `from` ends: its next unescaped `quote` (YAML's
/// doubled `''` inside single quotes counts as escaped), or the end of the line.
fn closing_quote(b: &[u8], from: usize, quote: u8) -> usize {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' if quote == b'"' => i += 2,
            c if c == quote && quote == b'\'' && b.get(i + 1) == Some(&b'\'') => i += 2,
            c if c == quote => return i,
            _ => i += 1,
        }
    }
    b.len()
}

/// Whether a `key=` or `key:` pair starts at `p` (after blanks and an optional quote).
fn next_pair_at(b: &[u8], p: usize) -> bool {
    let skip_quote = |p: usize| {
        if b[p.min(b.len())..].starts_with(b"\\\"") {
            p + 2
        } else if p < b.len() && matches!(b[p], b'"' | b'\'') {
            p + 1
        } else {
            p
        }
    };
    let start = skip_quote(skip_blanks(b, p));
    let mut end = start;
    while end < b.len() && is_key_byte(b[end]) {
        end += 1;
    }
    let sep = skip_blanks(b, skip_quote(end));
    end > start && sep < b.len() && (b[sep] == b'=' || (b[sep] == b':' && !b[sep + 1..].starts_with(b"//")))
}

/// Whether a value is YAML's block scalar header (`|`, `>-`, `|2+`), the value following on
/// deeper lines.
fn is_block_indicator(value: &[u8]) -> bool {
    let word_end = value.iter().position(|c| c.is_ascii_whitespace()).unwrap_or(value.len());
    let (word, rest) = value.split_at(word_end);
    matches!(word.first(), Some(b'|' | b'>'))
        && word[1..].iter().all(|c| matches!(c, b'-' | b'+' | b'0'..=b'9'))
        && (rest.trim_ascii().is_empty() || rest.trim_ascii().starts_with(b"#"))
}

/// `true`, `false` and `null` are no secrets and are evidence (`automountServiceAccountToken`).
fn is_literal(value: &[u8]) -> bool {
    value.is_empty() || [&b"true"[..], b"false", b"null"].iter().any(|l| value.eq_ignore_ascii_case(l))
}

/// Where the credentials of an `Authorization` value start: after its scheme word (`Basic`).
fn after_scheme(b: &[u8], value: Range<usize>) -> usize {
    let text = &b[value.clone()];
    match text.iter().position(|&c| c == b' ') {
        Some(space) if space > 0 && text[..space].iter().all(u8::is_ascii_alphabetic) => {
            skip_blanks(b, value.start + space)
        }
        _ => value.start,
    }
}

/// The values of an inline object (`{"password":"x","api":"y"}`, also escaped inside a JSON
/// string, or a YAML flow mapping) starting at `open`. Returns whether the object closes on the
/// line.
fn object_values(b: &[u8], open: usize, spans: &mut Vec<Range<usize>>) -> bool {
    let mut depth = 0usize;
    let mut expect_value = false;
    let mut p = open;
    while p < b.len() {
        let quoted = if b[p..].starts_with(b"\\\"") {
            Some((p + 2, find(b, p + 2, b"\\\"").unwrap_or(b.len()), 2))
        } else if matches!(b[p], b'"' | b'\'') {
            Some((p + 1, closing_quote(b, p + 1, b[p]), 1))
        } else {
            None
        };
        if let Some((start, end, quote_len)) = quoted {
            if expect_value {
                spans.push(start..end);
            }
            expect_value = false;
            p = end + quote_len;
            continue;
        }
        match b[p] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return true;
                }
            }
            b':' => expect_value = true,
            b',' => expect_value = false,
            c if c.is_ascii_whitespace() => {}
            _ => {
                let start = p;
                while p < b.len()
                    && !matches!(b[p], b',' | b'}' | b']')
                    && (expect_value || b[p] != b':')
                    && !b[p..].starts_with(b"\\\"")
                {
                    p += 1;
                }
                if expect_value {
                    spans.push(start..p);
                }
                expect_value = false;
                continue;
            }
        }
        p += 1;
    }
    false
}

/// The items of an inline array `[..]` between `open` and `close`: each quoted item's content, or
/// everything inside when no item is quoted.
fn array_values(b: &[u8], open: usize, close: usize, spans: &mut Vec<Range<usize>>) {
    let before = spans.len();
    let mut p = open + 1;
    while p < close {
        if matches!(b[p], b'"' | b'\'') {
            let end = closing_quote(b, p + 1, b[p]).min(close);
            spans.push(p + 1..end);
            p = end + 1;
        } else {
            p += 1;
        }
    }
    if spans.len() == before && b[open + 1..close].iter().any(|c| !c.is_ascii_whitespace()) {
        spans.push(open + 1..close);
    }
}

/// Whitespace-separated words of a line.
fn words_of(b: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in b.iter().enumerate() {
        match (c.is_ascii_whitespace(), start) {
            (true, Some(s)) => {
                out.push(s..i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..b.len());
    }
    out
}

/// A word without the JSON or list punctuation around it (`["--token",` → `--token`).
fn trim_punctuation(word: &[u8]) -> &[u8] {
    let start = word.iter().position(|c| !b"[(\"'\\".contains(c)).unwrap_or(word.len());
    let end = word.iter().rposition(|c| !b"])\"',\\".contains(c)).map_or(start, |e| e + 1);
    &word[start..end.max(start)]
}

/// The value word of a secret flag that starts at `start`, unless it is another flag.
fn flag_value(b: &[u8], start: usize, spans: &mut Vec<Range<usize>>) {
    let unquoted = |from: usize| &b[from + b[from..].iter().take_while(|c| b"\"'\\".contains(c)).count()..];
    if unquoted(start).starts_with(REDACTED.as_bytes()) {
        return;
    }
    let v = start + b[start..].iter().take_while(|&&c| c == b'[' || c == b'(').count();
    if v >= b.len() || unquoted(v).starts_with(b"-") || unquoted(v).starts_with(REDACTED.as_bytes()) {
        return;
    }
    let span = if b[v..].starts_with(b"\\\"") || matches!(b[v], b'"' | b'\'') {
        value_span(b, v, Sep::Equals, 0, Unit::Text)
    } else {
        v..v + b[v..].iter().position(u8::is_ascii_whitespace).unwrap_or(b.len() - v)
    };
    spans.push(span);
}

/// Bearer tokens (`Bearer eyJ…`, any letter case).
fn bearer_tokens(b: &[u8], spans: &mut Vec<Range<usize>>) {
    let is_token_byte = |c: u8| c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c);
    let mut from = 0;
    while let Some(at) = find_ignore_case(b, from, b"bearer") {
        from = at + "bearer".len();
        if at > 0 && b[at - 1].is_ascii_alphanumeric() {
            continue;
        }
        let start = skip_blanks(b, from);
        let end = start + b[start..].iter().take_while(|&&c| is_token_byte(c)).count();
        // `Bearer realm="…"` (a WWW-Authenticate challenge) names no token, nor does the
        // phrase "bearer token" in prose (chart values, CRD descriptions).
        let auth_param = b[start..end].ends_with(b"=") && b.get(end) == Some(&b'"');
        let prose = [&b"token"[..], b"tokens"].iter().any(|w| b[start..end].eq_ignore_ascii_case(w));
        if start > from && end > start && !auth_param && !prose {
            spans.push(start..end);
        }
    }
}

/// The userinfo of URLs (`https://user:password@host`, `postgres://:pw@db`), any scheme.
fn url_userinfo(b: &[u8], spans: &mut Vec<Range<usize>>) {
    let mut from = 0;
    while let Some(at) = find(b, from, b"://") {
        let start = at + 3;
        let end = start
            + b[start..]
                .iter()
                .position(|&c| c.is_ascii_whitespace() || b"/?#\"'\\<>`".contains(&c))
                .unwrap_or(b.len() - start);
        // `docker-pullable://alpine@sha256:…` (a pod's imageID) is an image digest, not userinfo.
        let is_userinfo = |&at: &usize| at > 0 && !b[start + at + 1..].starts_with(b"sha256:");
        if let Some(userinfo) = b[start..end].iter().rposition(|&c| c == b'@').filter(is_userinfo) {
            spans.push(start..start + userinfo);
        }
        from = start;
    }
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

fn find_ignore_case(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?.windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle)).map(|p| p + from)
}

/// A line whose content is all secret: its indent and the marker.
fn whole(line: &str, indent: usize) -> String {
    format!("{}{REDACTED}", &line[..indent])
}

/// Replaces the spans (merged where they overlap or touch) with the marker.
fn splice(line: &str, mut spans: Vec<Range<usize>>) -> String {
    spans.retain(|s| s.start < s.end);
    if spans.is_empty() {
        return line.to_string();
    }
    spans.sort_by_key(|s| s.start);
    let mut out = String::with_capacity(line.len());
    let mut copied = 0;
    for span in spans {
        if span.start >= copied {
            out.push_str(&line[copied..span.start]);
            out.push_str(REDACTED);
        }
        copied = copied.max(span.end);
    }
    out.push_str(&line[copied..]);
    out
}

/// The annotation in which `kubectl apply` keeps the whole object it applied, a Secret's data
/// included (`LastAppliedConfigAnnotation`, k8s.io/kubernetes pkg/api/annotations).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

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
