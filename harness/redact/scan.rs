//! Byte scanners over one line: where a key ends, where its value starts and ends, quotes,
//! flags, bearer tokens, URL user info.

use std::ops::Range;

use super::{REDACTED, Sep, Unit};

/// Bytes a key can be made of (`grafana.adminPassword`, `client-key-data`, `list[0].token`).
pub(super) fn is_key_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"_.-/[]".contains(&c)
}

/// For each byte, the quote (`"` or `'`) it sits in, or 0: shell words and JSON strings.
pub(super) fn quote_states(b: &[u8]) -> Vec<u8> {
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
pub(super) fn key_before(b: &[u8], sep: usize) -> Option<(Range<usize>, usize)> {
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
pub(super) fn leading_pair(b: &[u8], indent: usize) -> Option<usize> {
    let colon = indent + b[indent..].iter().position(|&c| c == b':')?;
    let (key, _) = key_before(b, colon)?;
    let opening = &b[indent..key.start];
    matches!(opening, b"" | b"\"" | b"'" | b"\\\"").then(|| skip_blanks(b, colon + 1))
}

pub(super) fn skip_blanks(b: &[u8], mut i: usize) -> usize {
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
pub(super) fn value_span(b: &[u8], v: usize, sep: Sep, enclosing: u8, unit: Unit) -> Range<usize> {
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
pub(super) fn closing_quote(b: &[u8], from: usize, quote: u8) -> usize {
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
pub(super) fn next_pair_at(b: &[u8], p: usize) -> bool {
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
pub(super) fn is_block_indicator(value: &[u8]) -> bool {
    let word_end = value.iter().position(|c| c.is_ascii_whitespace()).unwrap_or(value.len());
    let (word, rest) = value.split_at(word_end);
    matches!(word.first(), Some(b'|' | b'>'))
        && word[1..].iter().all(|c| matches!(c, b'-' | b'+' | b'0'..=b'9'))
        && (rest.trim_ascii().is_empty() || rest.trim_ascii().starts_with(b"#"))
}

/// `true`, `false` and `null` are no secrets and are evidence (`automountServiceAccountToken`).
pub(super) fn is_literal(value: &[u8]) -> bool {
    value.is_empty() || [&b"true"[..], b"false", b"null"].iter().any(|l| value.eq_ignore_ascii_case(l))
}

/// Where the credentials of an `Authorization` value start: after its scheme word (`Basic`).
pub(super) fn after_scheme(b: &[u8], value: Range<usize>) -> usize {
    let text = &b[value.clone()];
    match text.iter().position(|&c| c == b' ') {
        Some(space) if space > 0 && text[..space].iter().all(u8::is_ascii_alphabetic) => {
            skip_blanks(b, value.start + space)
        }
        _ => value.start,
    }
}

/// Whether what follows an authorization key's scheme is prose rather than credentials: RFC 9110
/// §11.4 credentials after the scheme are one token68 or comma-separated `name=value` parameters,
/// never three plain words (`l4-authorization: ztunnel enforces an ALLOW policy`, a check's line in
/// a plan).
pub(super) fn is_prose(rest: &[u8]) -> bool {
    let words = rest.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
    !rest.contains(&b'=') && words.take(3).count() == 3
}

/// The values of an inline object (`{"password":"x","api":"y"}`, also escaped inside a JSON
/// string, or a YAML flow mapping) starting at `open`. Returns whether the object closes on the
/// line.
pub(super) fn object_values(b: &[u8], open: usize, spans: &mut Vec<Range<usize>>) -> bool {
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
pub(super) fn array_values(b: &[u8], open: usize, close: usize, spans: &mut Vec<Range<usize>>) {
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
pub(super) fn words_of(b: &[u8]) -> Vec<Range<usize>> {
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
pub(super) fn trim_punctuation(word: &[u8]) -> &[u8] {
    let start = word.iter().position(|c| !b"[(\"'\\".contains(c)).unwrap_or(word.len());
    let end = word.iter().rposition(|c| !b"])\"',\\".contains(c)).map_or(start, |e| e + 1);
    &word[start..end.max(start)]
}

/// The value word of a secret flag that starts at `start`, unless it is another flag.
pub(super) fn flag_value(b: &[u8], start: usize, spans: &mut Vec<Range<usize>>) {
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
pub(super) fn bearer_tokens(b: &[u8], spans: &mut Vec<Range<usize>>) {
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
pub(super) fn url_userinfo(b: &[u8], spans: &mut Vec<Range<usize>>) {
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

/// Where `needle` first occurs in `b` at or after `from`.
pub(super) fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(b.get(from..)?, needle).map(|p| p + from)
}

/// [`find`], ASCII case ignored: candidates are the places of the needle's first letter in either
/// case, each compared whole.
pub(super) fn find_ignore_case(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let hay = b.get(from..)?;
    let first = *needle.first()?;
    memchr::memchr2_iter(first.to_ascii_lowercase(), first.to_ascii_uppercase(), hay)
        .find(|&at| hay.get(at..at + needle.len()).is_some_and(|w| w.eq_ignore_ascii_case(needle)))
        .map(|at| at + from)
}

/// A line whose content is all secret: its indent and the marker.
pub(super) fn whole(line: &str, indent: usize) -> String {
    format!("{}{REDACTED}", &line[..indent])
}

/// Replaces the spans (merged where they overlap or touch) with the marker.
pub(super) fn splice(line: &str, mut spans: Vec<Range<usize>>) -> String {
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

/// Tokens known by their shape, wherever they stand (no name next to them needed): GitHub tokens
/// (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`; GitHub docs "About authentication to
/// GitHub": token formats), Slack tokens (`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`), Google API
/// keys (`AIza` and 35 more characters), and the secret path of a Slack incoming webhook.
pub(super) fn token_shapes(b: &[u8], spans: &mut Vec<Range<usize>>) {
    let token_byte = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
    const PREFIXES: &[(&[u8], usize)] = &[
        (b"ghp_", 30),
        (b"gho_", 30),
        (b"ghu_", 30),
        (b"ghs_", 30),
        (b"ghr_", 30),
        (b"github_pat_", 40),
        (b"xoxb-", 20),
        (b"xoxp-", 20),
        (b"xoxa-", 20),
        (b"xoxr-", 20),
        (b"xoxs-", 20),
        (b"AIza", 39),
    ];
    for &(prefix, min_len) in PREFIXES {
        let mut from = 0;
        while let Some(at) = find(b, from, prefix) {
            let end = at + b[at..].iter().take_while(|&&c| token_byte(c)).count();
            from = end.max(at + 1);
            let starts_a_word = at == 0 || !token_byte(b[at - 1]);
            if starts_a_word && end - at >= min_len {
                spans.push(at..end);
            }
        }
    }
    let hook = b"hooks.slack.com/services/";
    let mut from = 0;
    while let Some(at) = find(b, from, hook) {
        let start = at + hook.len();
        let end = start + b[start..].iter().take_while(|c| !c.is_ascii_whitespace() && !b"\"'".contains(c)).count();
        from = end.max(start);
        if end > start {
            spans.push(start..end);
        }
    }
}

/// The text of an XML element whose name says secret (`<password>x</password>`, Maven's
/// `settings.xml`, NuGet's config).
pub(super) fn xml_elements(b: &[u8], spans: &mut Vec<Range<usize>>) {
    let mut from = 0;
    while let Some(open) = find(b, from, b"<") {
        from = open + 1;
        let name_end =
            open + 1 + b[open + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || b"_-.:".contains(c)).count();
        if b.get(name_end) != Some(&b'>') || name_end == open + 1 {
            continue;
        }
        let name = std::str::from_utf8(&b[open + 1..name_end]).unwrap_or_default();
        if !super::names::is_secret_name(name) {
            continue;
        }
        let body = name_end + 1;
        let end = find(b, body, b"</").unwrap_or(b.len());
        if end > body {
            spans.push(body..end);
        }
        from = end.max(body);
    }
}

/// A `.netrc` line's password (`machine h login u password p`, keywords and values separated by
/// whitespace; GNU inetutils netrc(5)): the word after `password` on a line with `machine`,
/// `default` or `login`.
pub(super) fn netrc_passwords(b: &[u8], spans: &mut Vec<Range<usize>>) {
    let words = words_of(b);
    let is = |w: &Range<usize>, k: &[u8]| &b[w.clone()] == k;
    if !words.iter().any(|w| is(w, b"machine") || is(w, b"default") || is(w, b"login")) {
        return;
    }
    for pair in words.windows(2) {
        if is(&pair[0], b"password") || is(&pair[0], b"passwd") {
            spans.push(pair[1].clone());
        }
    }
}

/// `user:password` given to curl's `--user`/`-u` and `--proxy-user`/`-U` (curl(1)): the part after
/// the first `:`. A bare user name (`docker login -u bot`) has no `:` and stays.
pub(super) fn user_password_flags(b: &[u8], spans: &mut Vec<Range<usize>>) {
    let words = words_of(b);
    for (i, w) in words.iter().enumerate() {
        let word = trim_punctuation(&b[w.clone()]);
        let (value_start, value_end) = match word {
            b"--user" | b"-u" | b"--proxy-user" | b"-U" => match words.get(i + 1) {
                Some(next) => (next.start, next.end),
                None => continue,
            },
            _ if word.starts_with(b"--user=") || word.starts_with(b"--proxy-user=") => {
                (w.start + word.iter().position(|&c| c == b'=').unwrap_or(0) + 1, w.end)
            }
            _ => continue,
        };
        let value = &b[value_start..value_end];
        if let Some(colon) = value.iter().position(|&c| c == b':') {
            let end = value_start + value.iter().rposition(|c| !b"\"',".contains(c)).map_or(value.len(), |e| e + 1);
            if value_start + colon + 1 < end {
                spans.push(value_start + colon + 1..end);
            }
        }
    }
}
