//! A scenario file read as YAML: a tree of values that remember where they were written, and the
//! translation of YAML syntax errors into advice.
//!
//! Values are typed the YAML 1.2 way (yaml.org/spec/1.2.2 §10.3, the core schema), as editors read
//! YAML by default: only `true`/`false` are booleans, so `install: yes` is the text "yes" and is
//! rejected instead of silently meaning true. Merge keys (`<<`, a YAML 1.1 extension) and tags are
//! refused; anchors and aliases work. Duplicate keys reach the tree so that the error can name
//! both lines.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{
    Budget, DuplicateKeyPolicy, MergeKeyPolicy, NonFiniteFloatPolicy, Options, Spanned, budget::BudgetBreach,
};

/// Largest scenario file read. The shipped ones are under 2 KiB; a bigger file is the wrong file.
pub const MAX_BYTES: usize = 64 * 1024;
/// Deepest nesting allowed; a scenario nests three levels (`timeouts:` → `check:`).
const MAX_DEPTH: usize = 16;
/// Most values (after alias expansion) a scenario may hold; the shipped ones hold under a hundred.
const MAX_NODES: usize = 10_000;

/// A value with its position in the file.
#[derive(Debug)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// Byte range of the scalar's source text (quotes included), for messages that quote it.
    bytes: Option<(usize, usize)>,
}

/// A YAML value typed by the YAML 1.2 core schema.
#[derive(Debug)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// Any other number, including `.inf` and `.nan`.
    Float(f64),
    /// Text.
    Str(String),
    /// A list.
    Seq(Vec<Node>),
    /// A mapping, in file order, duplicates included.
    Map(Vec<(Node, Node)>),
}

/// Where and what: a problem found while reading the YAML.
pub struct YamlError {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// Dotted path of the mapping key concerned, when there is one.
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Node {
    /// The source text of a scalar as written (quotes included), shortened for messages.
    pub fn raw<'t>(&self, text: &'t str) -> Option<&'t str> {
        let (start, len) = self.bytes?;
        let raw = text.get(start..start + len)?;
        Some(raw.lines().next().unwrap_or(raw))
    }

    /// The key as JSON would hold it: text as is, other scalars as written.
    pub fn key_text(&self, text: &str) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Seq(_) | Value::Map(_) => None,
            _ => self.raw(text).map(str::to_string),
        }
    }

    /// The JSON value this node stands for. Non-finite numbers become null, as in JSON.
    pub fn to_json(&self, text: &str) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            // Whole numbers written as floats (`2.0`, `1e3`) are integers to JSON Schema; holding
            // them as integers lets them fill integer fields as the schema allows.
            Value::Float(f) if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(f) => {
                J::from(*f as u64)
            }
            Value::Float(f) if f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..0.0).contains(f) => {
                J::from(*f as i64)
            }
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(|n| n.to_json(text)).collect()),
            Value::Map(entries) => {
                J::Object(entries.iter().filter_map(|(k, v)| Some((k.key_text(text)?, v.to_json(text)))).collect())
            }
        }
    }
}

/// Reads `text` into a located tree, or says what in the YAML is wrong and where.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    if text.len() > MAX_BYTES {
        return Err(YamlError {
            line: 1,
            column: 1,
            field: None,
            message: format!(
                "the file is {} KiB; a scenario is a few dozen lines (at most {} KiB) — is this the right file?",
                text.len() / 1024,
                MAX_BYTES / 1024
            ),
        });
    }
    prescan(text)?;
    let root: Node = serde_saphyr::from_str_with_options(text, options()).map_err(|e| translate(&e, text))?;
    reject_duplicates(&root, text, "")?;
    Ok(root)
}

/// The reading rules described in the module comment, with limits sized for a scenario.
/// What the parser would misreport: a raw control character (it says a plain value "cannot start
/// with this character", naming `@` and a backtick), and a `!!binary` tag (which it decodes into
/// text without a word). Quoted text and comments are skipped for the tag, never for control
/// characters, which a file of plain text does not hold anywhere.
fn prescan(text: &str) -> Result<(), YamlError> {
    for (l, line) in text.lines().enumerate() {
        let at = |column: usize, message: String| YamlError {
            line: l as u64 + 1,
            column: column as u64 + 1,
            field: None,
            message,
        };
        let chars: Vec<char> = line.chars().collect();
        if let Some(c) = chars.iter().position(|&c| c.is_control() && c != '\t' && c != '\r') {
            return Err(at(
                c,
                format!(
                    "the file holds the control character U+{:04X}; a scenario is plain text: remove it (inside double \
                     quotes, write it as \\u{:04x} if it must be there)",
                    chars[c] as u32, chars[c] as u32
                ),
            ));
        }
        let mut quote = None;
        for (c, &ch) in chars.iter().enumerate() {
            match (quote, ch) {
                (None, '#') if c == 0 || chars[c - 1].is_whitespace() => break,
                (None, '"' | '\'') => quote = Some(ch),
                (Some(q), _) if ch == q => quote = None,
                (None, '!') if (c == 0 || " \t:-[{,".contains(chars[c - 1])) && is_binary_tag(&chars[c..]) => {
                    return Err(at(c, "binary values (`!!binary`) are not used in scenarios; write text".into()));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Whether a tag starting here is YAML's binary tag in any spelling (`!!binary`, `!binary`,
/// `!<tag:yaml.org,2002:binary>`).
fn is_binary_tag(from: &[char]) -> bool {
    let token: String = from.iter().take_while(|c| !c.is_whitespace()).collect();
    matches!(token.as_str(), "!!binary" | "!binary" | "!<tag:yaml.org,2002:binary>")
}

fn options() -> Options {
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = MAX_NODES;
    options.strict_booleans = true;
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    options.merge_keys = MergeKeyPolicy::Error;
    options.reject_unsupported_tags = true;
    options.non_finite_float_policy = NonFiniteFloatPolicy::PassThrough;
    options.with_snippet = false;
    options
}

/// Duplicate keys, and keys that are lists or mappings; `path` is the dotted path of `node`.
fn reject_duplicates(node: &Node, text: &str, path: &str) -> Result<(), YamlError> {
    match &node.value {
        Value::Seq(items) => items.iter().try_for_each(|n| reject_duplicates(n, text, path)),
        Value::Map(entries) => {
            for (i, (key, value)) in entries.iter().enumerate() {
                let Some(name) = key.key_text(text) else {
                    return Err(YamlError {
                        line: key.line,
                        column: key.column,
                        field: (!path.is_empty()).then(|| path.to_string()),
                        message: "a key here is a list or a mapping; keys in a scenario are plain names".into(),
                    });
                };
                let field = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                if let Some((first, _)) =
                    entries[..i].iter().find(|(earlier, _)| earlier.key_text(text).as_deref() == Some(&name))
                {
                    return Err(YamlError {
                        line: key.line,
                        column: key.column,
                        field: Some(field),
                        message: format!("is given twice (first on line {}); keep one", first.line),
                    });
                }
                reject_duplicates(value, text, &field)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// serde-saphyr's error, in the terms of someone editing a scenario.
fn translate(error: &serde_saphyr::Error, text: &str) -> YamlError {
    use serde_saphyr::Error as E;
    let mut error = error.without_snippet();
    // An error met while expanding an alias is reported where the alias is used.
    let at = error.location();
    while let E::AliasError { error: inner, .. } = error {
        error = inner;
    }
    let (line, column) = at.or(error.location()).map(|l| (l.line().max(1), l.column().max(1))).unwrap_or((1, 1));
    let lines: Vec<&str> = text.lines().collect();
    let source_line = lines.get(line as usize - 1).copied().unwrap_or_default();
    let after_list_item = lines[..(line as usize - 1).min(lines.len())]
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.trim_start().starts_with("- "));
    let message = match error {
        E::MultipleDocuments { .. } => {
            "a second YAML document starts here (after `---`); a scenario file holds one document".into()
        }
        E::MergeKeyNotAllowed { .. } | E::MergeValueNotMapOrSeqOfMaps { .. } => {
            "`<<` merge keys are not supported in scenarios; write the fields out".into()
        }
        E::UnknownAnchor { .. } => {
            "this alias (`*name`) refers to an anchor that is not defined above it with `&name`".into()
        }
        E::RecursiveReferencesRequireWeakTypes { .. } => "this alias refers to the value that contains it".into(),
        E::UnsupportedTag { tag, .. } => format!("tags such as `{tag}` are not used in scenarios; remove it"),
        E::InvalidUtf8Input => "the file is not UTF-8 text; save it as UTF-8".into(),
        E::Eof { .. } => "the file ends in the middle of a value".into(),
        E::Budget { breach, .. } => budget_message(breach),
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. } => {
            format!("the aliases (`*name`) expand to more than {MAX_NODES} values; a scenario holds a few dozen")
        }
        E::Message { msg, .. } => msg.clone(),
        E::ExternalMessage { msg, .. }
            if source_line.trim_start().starts_with("- ") && msg.contains("expected key") =>
        {
            if after_list_item {
                "this list item does not line up with the items above it; indent every `- ` the same".into()
            } else {
                "a list item (`- `) cannot start here; put the list on the lines below its key, indented".into()
            }
        }
        E::ExternalMessage { msg, .. } => parser_message(msg),
        other => format!("this is not valid YAML: {}", without_position(&other.to_string())),
    };
    YamlError { line, column, field: None, message }
}

fn budget_message(breach: &BudgetBreach) -> String {
    match breach {
        BudgetBreach::Depth { .. } => {
            format!("values are nested more than {MAX_DEPTH} levels deep; scenario fields nest at most three")
        }
        BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => {
            format!("the file holds more than {MAX_NODES} values; a scenario holds a few dozen")
        }
        _ => format!(
            "the file (with its aliases expanded) is far larger than a scenario; at most {} KiB and {MAX_NODES} values",
            MAX_BYTES / 1024
        ),
    }
}

/// The YAML parser's messages (libyaml's wording), explained.
fn parser_message(msg: &str) -> String {
    let known: &[(&str, &str)] = &[
        (
            "mapping values are not allowed",
            "a `key: value` cannot start here; check this line's indentation against the lines above, and \
             put a value that contains `: ` in quotes",
        ),
        (
            "did not find expected key",
            "this line does not line up with the fields above it; indent it exactly like its siblings",
        ),
        ("simple key expected ':'", "this line has no `:`; write fields as `key: value`"),
        ("could not find expected ':'", "this line has no `:`; write fields as `key: value`"),
        ("tabs disallowed", "YAML does not allow tabs for indentation; indent with spaces"),
        ("found a tab", "YAML does not allow tabs for indentation; indent with spaces"),
        ("unclosed quote", "the quoted text that starts here is never closed; add the closing quote"),
        ("unclosed bracket", "the `[` or `{` that starts here is never closed"),
        (
            "unexpected character",
            "a plain value cannot start with this character (`@` and ` are reserved in YAML); put the value in quotes",
        ),
        (
            "did not find expected '-' indicator",
            "this list item does not line up with the items above it; start each with `- ` at the same indentation",
        ),
        (
            "block sequence entries are not allowed",
            "a list item (`- `) cannot start here; put the list on the lines below its key",
        ),
        ("did not find expected node content", "a value is missing here (a `,` or `-` with nothing after it?)"),
    ];
    known
        .iter()
        .find(|(needle, _)| msg.contains(needle))
        .map(|(_, advice)| advice.to_string())
        .unwrap_or_else(|| format!("this is not valid YAML: {}", without_position(msg)))
}

/// Drops a trailing " at line N, column M": the error's own position is reported separately.
fn without_position(msg: &str) -> &str {
    msg.rfind(" at line ").map_or(msg, |i| &msg[..i])
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        let at = spanned.referenced;
        let span = at.span();
        let bytes = span.byte_offset().zip(span.byte_len()).map(|(o, l)| (o as usize, l as usize));
        Ok(Node { value: spanned.value, line: at.line(), column: at.column(), bytes })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(if i >= 0 { Value::UInt(i as u64) } else { Value::Int(i) })
    }
    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(Value::UInt(u))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::Str(s))
    }
    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Value, E> {
        Err(E::custom("binary values (`!!binary`) are not used in scenarios; write text"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Value::Map(entries))
    }
}
