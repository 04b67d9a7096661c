//! Checks a located YAML tree against the scenario's JSON Schema — the very document
//! `meshcheck schema` prints — and words each failure for the person editing the file.
//!
//! Running the schema itself, instead of a second copy of its rules, is what keeps the loader and
//! the editors in agreement: types, required fields, unknown keys, ranges, enumerations and the
//! rules between fields (`if`/`then`) are read from the schema. Patterns are the one exception:
//! the library has no regex engine, so each pattern maps to the [`Format`] it was generated from,
//! whose Rust check is tested against the pattern.

use std::cmp::Ordering;

use serde_json::{Map, Value as Json};

use super::{
    format::Format,
    yaml::{Node, Value},
};

/// The keywords this validator enforces, with the JSON Schema 2020-12 semantics.
pub const ENFORCED_KEYWORDS: &[&str] = &[
    "$ref",
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "pattern",
    "minItems",
    "uniqueItems",
    "items",
    "contains",
    "properties",
    "required",
    "additionalProperties",
    "propertyNames",
    "allOf",
    "anyOf",
    "oneOf",
    "if",
    "then",
    "else",
    "not",
];

/// Keywords that only annotate (JSON Schema 2020-12 §7.7, meta-data vocabulary).
pub const ANNOTATION_KEYWORDS: &[&str] = &["$schema", "$defs", "title", "description", "default", "format", "examples"];

/// A value that breaks a rule, with where it is and what to do.
#[derive(Debug)]
pub struct Violation {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// Dotted path of the field, or `None` for the document as a whole.
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The schema and the file text, for quoting values as they were written.
pub struct Validator<'a> {
    root: &'a Json,
    text: &'a str,
}

type Path<'p> = &'p [String];

fn joined(path: Path, key: &str) -> Vec<String> {
    let mut p = path.to_vec();
    p.push(key.to_string());
    p
}

fn field_of(path: Path) -> Option<String> {
    (!path.is_empty()).then(|| path.join("."))
}

impl<'a> Validator<'a> {
    /// A validator of `text` (the file the tree was read from) against `root` (the schema).
    pub fn new(root: &'a Json, text: &'a str) -> Self {
        Validator { root, text }
    }

    /// The first rule `node` breaks, in file order.
    pub fn check(&self, node: &Node) -> Result<(), Violation> {
        self.check_at(node, self.root, &[])
    }

    fn violation(&self, node: &Node, path: Path, message: String) -> Violation {
        Violation { line: node.line, column: node.column, field: field_of(path), message }
    }

    /// The value as written, for messages: source text for scalars, else JSON.
    fn shown(&self, node: &Node) -> String {
        match &node.value {
            Value::Str(s) => s.clone(),
            Value::Seq(_) | Value::Map(_) => node.to_json(self.text).to_string(),
            _ => node.raw(self.text).map(str::to_string).unwrap_or_else(|| node.to_json(self.text).to_string()),
        }
    }

    fn resolve(&self, reference: &str) -> Option<&'a Json> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    fn check_at(&self, node: &Node, schema: &Json, path: Path) -> Result<(), Violation> {
        let s = match schema {
            Json::Object(s) => s,
            Json::Bool(true) => return Ok(()),
            _ => return Err(self.violation(node, path, "is not allowed here".into())),
        };
        if let Some(reference) = s.get("$ref").and_then(Json::as_str) {
            let target = self.resolve(reference).and_then(Json::as_object).ok_or_else(|| {
                self.violation(node, path, format!("the schema refers to `{reference}`, which it does not define"))
            })?;
            // The referring schema's siblings (`default`, `description`) belong to this field.
            let mut merged = target.clone();
            merged.extend(s.iter().filter(|(k, _)| *k != "$ref").map(|(k, v)| (k.clone(), v.clone())));
            return self.check_at(node, &Json::Object(merged), path);
        }
        // A value that is not one of a list of names is best told the names, whatever its type.
        self.check_value(node, s, path)?;
        if let Some(types) = s.get("type")
            && !type_names(types).iter().any(|t| has_type(node, t))
        {
            return Err(self.violation(node, path, self.type_message(node, s, path)));
        }
        match &node.value {
            Value::Str(text) => self.check_string(node, text, s, path)?,
            Value::Seq(items) => self.check_array(node, items, s, path)?,
            Value::Map(entries) => self.check_object(node, entries, s, path)?,
            _ => self.check_number(node, s, path)?,
        }
        self.check_combinators(node, s, path)
    }

    /// `enum`, `const` and `oneOf` over constants (how schemars writes a Rust enum).
    fn check_value(&self, node: &Node, s: &Map<String, Json>, path: Path) -> Result<(), Violation> {
        let json = node.to_json(self.text);
        let mut options: Option<Vec<&Json>> = s.get("enum").and_then(Json::as_array).map(|o| o.iter().collect());
        if let Some(branches) = s.get("oneOf").and_then(Json::as_array)
            && let Some(consts) = branches.iter().map(|b| b.get("const")).collect::<Option<Vec<_>>>()
        {
            options = Some(consts);
        }
        let listed = |options: &[&Json]| options.iter().any(|o| json_equal(o, &json));
        if let Some(options) = &options
            && !listed(options)
            && matches!(node.value, Value::Null | Value::Seq(_) | Value::Map(_))
        {
            let mut only = Map::new();
            let types: Vec<Json> = options.iter().map(|o| Json::from(json_type(o))).collect();
            only.insert("type".into(), Json::Array(types));
            only.extend(s.get("default").map(|d| ("default".to_string(), d.clone())));
            return Err(self.violation(node, path, self.type_message(node, &only, path)));
        }
        if let Some(options) = options
            && !listed(&options)
        {
            let names: Vec<String> = options.iter().map(|o| plain(o)).collect();
            let shown = self.shown(node);
            let hint = closest(&shown, names.iter().map(String::as_str))
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(self.violation(node, path, format!("`{shown}` is not one of {}{hint}", names.join(", "))));
        }
        if let Some(c) = s.get("const")
            && !json_equal(c, &json)
        {
            return Err(self.violation(node, path, format!("must be {}, not `{}`", plain(c), self.shown(node))));
        }
        Ok(())
    }

    fn check_number(&self, node: &Node, s: &Map<String, Json>, path: Path) -> Result<(), Violation> {
        let shown = self.shown(node);
        let bound = |k: &str| s.get(k).and_then(Json::as_number);
        let range = match (bound("minimum"), bound("exclusiveMinimum"), bound("maximum")) {
            (Some(lo), _, Some(hi)) => format!(" (allowed: {lo} to {hi})"),
            (None, Some(lo), Some(hi)) => format!(" (allowed: above {lo}, up to {hi})"),
            _ => String::new(),
        };
        let fails = |k: &str, bad: &[Ordering]| {
            bound(k).and_then(|b| compare(&node.value, b)).is_some_and(|o| bad.contains(&o))
        };
        let message = if fails("minimum", &[Ordering::Less]) {
            format!(
                "`{shown}` is below the minimum of {}{range}",
                bound("minimum").map(ToString::to_string).unwrap_or_default()
            )
        } else if fails("exclusiveMinimum", &[Ordering::Less, Ordering::Equal]) {
            let at_most = bound("maximum").map(|hi| format!(" and at most {hi}")).unwrap_or_default();
            format!(
                "`{shown}` must be above {}{at_most}",
                bound("exclusiveMinimum").map(ToString::to_string).unwrap_or_default()
            )
        } else if fails("maximum", &[Ordering::Greater]) {
            format!(
                "`{shown}` is above the maximum of {}{range}",
                bound("maximum").map(ToString::to_string).unwrap_or_default()
            )
        } else if fails("exclusiveMaximum", &[Ordering::Greater, Ordering::Equal]) {
            format!(
                "`{shown}` must be below {}",
                bound("exclusiveMaximum").map(ToString::to_string).unwrap_or_default()
            )
        } else {
            return Ok(());
        };
        Err(self.violation(node, path, message))
    }

    fn check_string(&self, node: &Node, text: &str, s: &Map<String, Json>, path: Path) -> Result<(), Violation> {
        let Some(pattern) = s.get("pattern").and_then(Json::as_str) else { return Ok(()) };
        match Format::for_pattern(pattern) {
            Some(format) => format.check(text).map_err(|m| self.violation(node, path, m)),
            None => {
                Err(self.violation(node, path, format!("the loader has no check for the schema pattern `{pattern}`")))
            }
        }
    }

    fn check_array(&self, node: &Node, items: &[Node], s: &Map<String, Json>, path: Path) -> Result<(), Violation> {
        if let Some(min) = s.get("minItems").and_then(Json::as_u64)
            && (items.len() as u64) < min
        {
            let default = if s.contains_key("default") { ", or leave the field out for the default" } else { "" };
            return Err(self.violation(node, path, format!("has {} items; give at least {min}{default}", items.len())));
        }
        if let Some(item_schema) = s.get("items") {
            for item in items {
                self.check_at(item, item_schema, path)?;
            }
        }
        if s.get("uniqueItems").and_then(Json::as_bool) == Some(true) {
            for (i, item) in items.iter().enumerate() {
                let json = item.to_json(self.text);
                if let Some(first) = items[..i].iter().find(|e| json_equal(&e.to_json(self.text), &json)) {
                    let message =
                        format!("`{}` is listed twice (first on line {}); keep one", self.shown(item), first.line);
                    return Err(self.violation(item, path, message));
                }
            }
        }
        if let Some(wanted) = s.get("contains")
            && !items.iter().any(|i| self.check_at(i, wanted, path).is_ok())
        {
            return Err(self.violation(node, path, "has no item of the required kind".into()));
        }
        Ok(())
    }

    fn check_object(
        &self,
        node: &Node,
        entries: &[(Node, Node)],
        s: &Map<String, Json>,
        path: Path,
    ) -> Result<(), Violation> {
        let empty = Map::new();
        let properties = s.get("properties").and_then(Json::as_object).unwrap_or(&empty);
        for (key, value) in entries {
            let name = key.key_text(self.text).unwrap_or_default();
            if let Some(pattern) = s.get("propertyNames").and_then(|p| p.get("pattern")).and_then(Json::as_str) {
                let verdict = Format::for_pattern(pattern).map(|f| f.check(&name));
                match verdict {
                    Some(Ok(())) => {}
                    Some(Err(m)) => return Err(self.violation(key, path, m)),
                    None => {
                        return Err(self.violation(
                            key,
                            path,
                            format!("the loader has no check for the schema pattern `{pattern}`"),
                        ));
                    }
                }
            }
            match properties.get(&name) {
                Some(p) => self.check_at(value, p, &joined(path, &name))?,
                None => match s.get("additionalProperties") {
                    Some(Json::Bool(false)) => {
                        let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                        let hint = closest(&name, known.iter().copied())
                            .map(|c| format!(" (did you mean `{c}`?)"))
                            .unwrap_or_default();
                        let owner = match field_of(path) {
                            Some(f) => format!("`{f}` has"),
                            None => "a scenario has".to_string(),
                        };
                        let message = format!("unknown field{hint}; {owner}: {}", known.join(", "));
                        return Err(self.violation(key, &joined(path, &name), message));
                    }
                    Some(other) => self.check_at(value, other, path)?,
                    None => {}
                },
            }
        }
        for required in s.get("required").and_then(Json::as_array).into_iter().flatten().filter_map(Json::as_str) {
            if !entries.iter().any(|(k, _)| k.key_text(self.text).as_deref() == Some(required)) {
                let hint = properties.get(required).map(|p| self.missing_hint(required, p)).unwrap_or_default();
                return Err(self.violation(node, &joined(path, required), format!("is missing{hint}")));
            }
        }
        Ok(())
    }

    fn check_combinators(&self, node: &Node, s: &Map<String, Json>, path: Path) -> Result<(), Violation> {
        for sub in s.get("allOf").and_then(Json::as_array).into_iter().flatten() {
            self.check_at(node, sub, path)?;
        }
        if let Some(branches) = s.get("anyOf").and_then(Json::as_array) {
            self.check_alternatives(node, branches, path, |valid| valid >= 1)?;
        }
        if let Some(branches) = s.get("oneOf").and_then(Json::as_array)
            && !branches.iter().all(|b| b.get("const").is_some())
        {
            self.check_alternatives(node, branches, path, |valid| valid == 1)?;
        }
        if let Some(condition) = s.get("if") {
            let branch = if self.check_at(node, condition, path).is_ok() { s.get("then") } else { s.get("else") };
            if let Some(branch) = branch {
                self.check_at(node, branch, path).map_err(|v| with_reason(v, branch))?;
            }
        }
        if let Some(forbidden) = s.get("not")
            && self.check_at(node, forbidden, path).is_ok()
        {
            let why = forbidden.get("description").and_then(Json::as_str).unwrap_or("is not allowed here");
            return Err(self.violation(node, path, why.to_string()));
        }
        Ok(())
    }

    /// `anyOf`/`oneOf`: on failure, the error of the alternative whose type the value has.
    fn check_alternatives(
        &self,
        node: &Node,
        branches: &[Json],
        path: Path,
        ok: impl Fn(usize) -> bool,
    ) -> Result<(), Violation> {
        let results: Vec<Result<(), Violation>> = branches.iter().map(|b| self.check_at(node, b, path)).collect();
        let valid = results.iter().filter(|r| r.is_ok()).count();
        if ok(valid) {
            return Ok(());
        }
        if valid > 1 {
            return Err(self.violation(node, path, "matches more than one alternative".into()));
        }
        let typed = branches.iter().zip(results).find(|(b, _)| {
            let b = b.get("$ref").and_then(Json::as_str).and_then(|r| self.resolve(r)).unwrap_or(b);
            b.get("type").is_some_and(|t| type_names(t).iter().any(|t| has_type(node, t)))
        });
        match typed {
            Some((_, Err(v))) => Err(v),
            _ => {
                let mut union = Map::new();
                let types: Vec<Json> = branches
                    .iter()
                    .map(|b| b.get("$ref").and_then(Json::as_str).and_then(|r| self.resolve(r)).unwrap_or(b))
                    .filter_map(|b| b.get("type"))
                    .flat_map(|t| type_names(t).into_iter().map(Json::from))
                    .collect();
                union.insert("type".into(), Json::Array(types));
                Err(self.violation(node, path, self.type_message(node, &union, path)))
            }
        }
    }

    /// How to add a missing field: an example line, when the schema suggests one.
    fn missing_hint(&self, key: &str, schema: &Json) -> String {
        let schema = schema.get("$ref").and_then(Json::as_str).and_then(|r| self.resolve(r)).unwrap_or(schema);
        if let Some(branches) = schema.get("oneOf").and_then(Json::as_array) {
            let names: Vec<String> = branches.iter().filter_map(|b| b.get("const")).map(plain).collect();
            if let Some((first, rest)) = names.split_first() {
                return format!("; add `{key}: {first}` (or {})", rest.join(", "));
            }
        }
        schema
            .get("pattern")
            .and_then(Json::as_str)
            .and_then(Format::for_pattern)
            .and_then(Format::example)
            .map(|e| format!("; add `{key}: {e}`"))
            .unwrap_or_default()
    }

    fn type_message(&self, node: &Node, s: &Map<String, Json>, path: Path) -> String {
        let expected: Vec<String> = s.get("type").map(type_names).unwrap_or_default();
        let wants = |t: &str| expected.iter().any(|e| e == t);
        let raw = node.raw(self.text).unwrap_or_default();
        if path.is_empty() {
            return match &node.value {
                Value::Null => "the file is empty; a scenario needs at least `name:` and `provider:`".into(),
                Value::Seq(_) => "a scenario is a mapping of fields (`name: …`, `provider: …`), not a list".into(),
                _ => "a scenario is a mapping of fields (`name: …`, `provider: …`), not a single value".into(),
            };
        }
        match &node.value {
            Value::Null => {
                let default = if s.contains_key("default") { " or remove the line to use the default" } else { "" };
                format!("is empty; give it a value{default}")
            }
            Value::Bool(_) | Value::Int(_) | Value::UInt(_) | Value::Float(_) if wants("string") => {
                if let Some(format) = s.get("pattern").and_then(Json::as_str).and_then(Format::for_pattern)
                    && let Err(why) = format.check(raw)
                {
                    return why;
                }
                let reads = if matches!(node.value, Value::Bool(_)) { "true or false" } else { "a number" };
                format!("`{raw}` reads as {reads}; put it in quotes to make it text: \"{raw}\"")
            }
            Value::Str(text) if wants("boolean") => {
                let lower = text.to_ascii_lowercase();
                let meant = match lower.as_str() {
                    "yes" | "y" | "on" | "true" => Some("true"),
                    "no" | "n" | "off" | "false" => Some("false"),
                    _ => None,
                };
                match meant {
                    Some(b) if raw.starts_with(['"', '\'']) => {
                        format!("`{raw}` is text because of the quotes; write {b} without quotes")
                    }
                    Some(b) => format!("`{raw}` is text, not true or false (YAML 1.2); write {b}"),
                    None => format!("must be true or false, not the text `{raw}`"),
                }
            }
            Value::Str(text) if (wants("integer") || wants("number")) && text.trim().parse::<f64>().is_ok() => {
                format!("`{raw}` is text; write the number without quotes")
            }
            Value::Float(f) if wants("integer") && f.is_finite() => format!("`{raw}` is not a whole number"),
            Value::Float(f) if !f.is_finite() => format!("`{raw}` is not a finite number; write a number"),
            Value::Str(text) if wants("array") => {
                format!("must be a list, not the text `{raw}`; write it as a list: [{text}]")
            }
            _ => {
                let mut names: Vec<&str> = expected
                    .iter()
                    .filter(|t| *t != "null")
                    .map(|t| match t.as_str() {
                        "string" => "text",
                        "boolean" => "true or false",
                        "integer" => "a whole number",
                        "number" => "a number",
                        "array" => "a list",
                        "object" => "a mapping of fields (indented `key: value` lines)",
                        other => other,
                    })
                    .collect();
                names.dedup();
                let actual = match &node.value {
                    Value::Null => "empty".to_string(),
                    Value::Bool(_) => format!("`{raw}`"),
                    Value::Int(_) | Value::UInt(_) | Value::Float(_) => format!("the number `{raw}`"),
                    Value::Str(_) => format!("the text `{raw}`"),
                    Value::Seq(_) => "a list".to_string(),
                    Value::Map(_) => "a mapping".to_string(),
                };
                format!("must be {}, not {actual}", names.join(" or "))
            }
        }
    }
}

/// The reason a rule (`then`/`else` branch) gives, appended to what broke it.
fn with_reason(mut v: Violation, branch: &Json) -> Violation {
    if let Some(why) = branch.get("description").and_then(Json::as_str) {
        v.message = format!("{}; {why}", v.message);
    }
    v
}

fn type_names(t: &Json) -> Vec<String> {
    match t {
        Json::String(s) => vec![s.clone()],
        Json::Array(a) => a.iter().filter_map(Json::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// JSON Schema's type of a YAML value: whole floats are integers, non-finite ones are null (JSON
/// has no infinity; serde_json turns it into null).
fn has_type(node: &Node, t: &str) -> bool {
    match (&node.value, t) {
        (Value::Null, "null") | (Value::Bool(_), "boolean") | (Value::Str(_), "string") => true,
        (Value::Seq(_), "array") | (Value::Map(_), "object") => true,
        (Value::Int(_) | Value::UInt(_), "integer" | "number") => true,
        (Value::Float(f), "number") => f.is_finite(),
        (Value::Float(f), "integer") => f.is_finite() && f.fract() == 0.0,
        (Value::Float(f), "null") => !f.is_finite(),
        _ => false,
    }
}

/// Exact comparison of a YAML number with a schema bound: integers as integers, else as floats.
fn compare(v: &Value, bound: &serde_json::Number) -> Option<Ordering> {
    let exact_bound = bound.as_u64().map(i128::from).or(bound.as_i64().map(i128::from));
    let exact_value = match v {
        Value::UInt(u) => Some(i128::from(*u)),
        Value::Int(i) => Some(i128::from(*i)),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e38 => Some(*f as i128),
        _ => None,
    };
    if let (Some(a), Some(b)) = (exact_value, exact_bound) {
        return Some(a.cmp(&b));
    }
    let value = match v {
        Value::UInt(u) => *u as f64,
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => return None,
    };
    value.partial_cmp(&bound.as_f64()?)
}

/// JSON Schema equality: numbers by value (1 equals 1.0), everything else structurally.
fn json_equal(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(p), Some(q), _, _) => p == q,
            (_, _, Some(p), Some(q)) => p == q,
            _ => x.as_f64() == y.as_f64(),
        },
        (Json::Array(x), Json::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q)),
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// The JSON Schema type name of a JSON value.
fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_f64() => "number",
        Json::Number(_) => "integer",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// A JSON value as a user would write it: strings without quotes.
fn plain(v: &Json) -> String {
    v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
}

/// The candidate closest to `word`, ignoring case, if it is close enough to be a typo: at most
/// one edit per three characters, a swap of neighbours counting as one.
fn closest<'c>(word: &str, candidates: impl Iterator<Item = &'c str>) -> Option<&'c str> {
    let word_lower = word.to_ascii_lowercase();
    candidates
        .filter(|c| *c != word)
        // Optimal string alignment: Levenshtein plus swaps of neighbouring characters.
        .map(|c| (strsim::osa_distance(&word_lower, c), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
