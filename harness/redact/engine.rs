//! The line-by-line redactor: which spans of a line hold a secret (key/value pairs in every
//! notation, flags, PEM blocks, Secret data), using the scanners and the names of secrets.

use std::ops::Range;

use super::{
    Block, EnvName, REDACTED, Role, Sep, Unit, Value,
    names::{holds_secret_object, is_secret_flag, is_secret_name, words},
    scan::{
        after_scheme, array_values, bearer_tokens, find, flag_value, is_block_indicator, is_literal, is_prose,
        key_before, leading_pair, netrc_passwords, object_values, quote_states, skip_blanks, splice, token_shapes,
        trim_punctuation, url_userinfo, user_password_flags, value_span, whole, words_of, xml_elements,
    },
};

/// Redaction state carried from one line to the next.
pub(super) struct Redactor {
    unit: Unit,
    holds_secret_object: bool,
    block: Option<Block>,
    /// The `name` of an env var that names a secret: its `value` (on the same line, or later at the
    /// same column) is secret.
    env_name: Option<EnvName>,
    flag_value_pending: bool,
    line_no: usize,
}

impl Redactor {
    pub(super) fn new(text: &str, unit: Unit) -> Redactor {
        Redactor {
            unit,
            holds_secret_object: holds_secret_object(text),
            block: None,
            env_name: None,
            flag_value_pending: false,
            line_no: 0,
        }
    }

    pub(super) fn run(mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let body = line.trim_end_matches(['\n', '\r']);
            self.memoized_line(body, &mut out);
            out.push_str(&line[body.len()..]);
        }
        out
    }

    /// Whether no line before leaves anything for the next: then a line's redaction depends only
    /// on the line, the unit and whether the text holds a Secret.
    fn at_rest(&self) -> bool {
        self.block.is_none() && self.env_name.is_none() && !self.flag_value_pending
    }

    /// [`Redactor::line`], remembered for lines met at rest that leave it at rest. A run's reports
    /// are rewritten and redacted whole after every trial so that a killed run still leaves them
    /// complete; all but the newest trial's lines were redacted before.
    fn memoized_line(&mut self, line: &str, out: &mut String) {
        /// Lines longer than this rarely come again (a one-line JSON document): not remembered.
        const LONGEST: usize = 2048;
        /// Lines remembered per thread before the memo starts afresh.
        const MOST: usize = 20_000;
        thread_local! {
            static SEEN: std::cell::RefCell<[std::collections::HashMap<String, String>; 4]> = Default::default();
        }
        let memo = usize::from(self.holds_secret_object) * 2 + usize::from(self.unit == Unit::Argument);
        if !self.at_rest() || line.len() > LONGEST {
            out.push_str(&self.line(line));
            return;
        }
        if SEEN.with_borrow(|seen| seen[memo].get(line).map(|done| out.push_str(done)).is_some()) {
            self.line_no += 1;
            return;
        }
        let done = self.line(line);
        out.push_str(&done);
        if self.at_rest() {
            SEEN.with_borrow_mut(|seen| {
                if seen[memo].len() >= MOST {
                    seen[memo].clear();
                }
                seen[memo].insert(line.to_string(), done);
            });
        }
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
            Some(Block::ScalarBelow { indent: key })
                if indent > key && !trimmed.starts_with("- ") && leading_pair(line.as_bytes(), indent).is_none() =>
            {
                return whole(line, indent);
            }
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
        token_shapes(bytes, &mut spans);
        xml_elements(bytes, &mut spans);
        netrc_passwords(bytes, &mut spans);
        user_password_flags(bytes, &mut spans);
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
                match role {
                    Role::SecretData if sep == Sep::Colon => {
                        self.block = Some(Block::SecretData { indent, child: None })
                    }
                    // `password:` with its value on the lines below, indented deeper.
                    Role::Secret | Role::Authorization if sep == Sep::Colon => {
                        self.block = Some(Block::ScalarBelow { indent })
                    }
                    _ => {}
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
            // Already redacted (`[[REDACTED]]`): redacting twice changes nothing.
            b'[' if b[v + 1..].starts_with(REDACTED.as_bytes()) => {}
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
                    // A scheme's credentials are the rest of the header (Digest's `response="…"`
                    // after `username="…",`), unless the header sits in a quoted string.
                    if enclosing == 0 && !matches!(b[v], b'"' | b'\'') {
                        span.end = b.len();
                    }
                    if is_prose(&b[span.clone()]) {
                        return;
                    }
                }
                spans.push(span);
            }
        }
    }

    /// The value after a secret flag given as a word of its own (`--token abc`), on this line or,
    /// for a flag that ends a line (a YAML or JSON args list), the next.
    fn flags(&mut self, b: &[u8], spans: &mut Vec<Range<usize>>) {
        // docker login's own warning names the flag, followed by prose, not a value (docker/cli
        // cli/command/registry/login.go).
        if find(b, 0, b"Using --password via the CLI is insecure").is_some() {
            return;
        }
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
            // PEM's `… PRIVATE KEY` and OpenPGP's armored `PGP PRIVATE KEY BLOCK` (RFC 9580 §6.2).
            if !(b[label..label_end].ends_with(b"PRIVATE KEY") || b[label..label_end].ends_with(b"PRIVATE KEY BLOCK")) {
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
