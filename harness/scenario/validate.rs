//! Checks a located YAML tree against the scenario's JSON Schema — the very document
//! `meshcheck schema` prints — with the `jsonschema` crate, and words the first failure, in file
//! order, for the person editing the file.
//!
//! The crate decides what is valid, so the loader and every editor that runs the schema agree by
//! construction. This module only words the crate's errors: the instance path of an error leads to
//! the YAML node (its line, column and the value as written), its evaluation path to the subschema
//! that holds the failed keyword (for the hints: the default, the range, an example, the names
//! allowed, the reason a rule gives).

use std::{borrow::Cow, sync::LazyLock};

use jsonschema::{
    ValidationError,
    error::ValidationErrorKind as Kind,
    paths::{Location, LocationSegment},
};
use serde_json::{Map, Value as Json};

use super::{
    format::Format,
    schema::SCHEMA,
    yaml::{Node, Value},
};

/// The keywords whose failures this module words. Any other keyword's failure would reach the
/// user in the crate's own words; a test holds the schema to this list.
pub const WORDED_KEYWORDS: &[&str] = &[
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

/// The schema compiled once. It is generated from meshcheck's own types, so `Err` is a bug; the
/// corpus tests in suites/offline/scenarios.rs would fail first.
static COMPILED: LazyLock<Result<jsonschema::Validator, String>> =
    LazyLock::new(|| jsonschema::validator_for(&SCHEMA).map_err(|e| e.to_string()));

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

/// The first rule `tree` (read from `text`) breaks, in file order.
pub fn check(tree: &Node, text: &str) -> Result<(), Violation> {
    let validator = COMPILED.as_ref().map_err(|e| Violation {
        line: tree.line,
        column: tree.column,
        field: None,
        message: format!("meshcheck's scenario schema does not compile ({e}); please report this"),
    })?;
    let json = tree.to_json(text);
    let wording = Wording { text, tree };
    match wording.first(validator.iter_errors(&json).map(|e| wording.word(&e))) {
        Some(violation) => Err(violation),
        None => Ok(()),
    }
}

/// Where a worded error sits in the file's order: its node's position, then the order in which a
/// reader meets the rules on one value (what it may be, its type, its own rules, the rules between
/// fields). A missing field sorts after everything inside its mapping.
type Order = (u64, u64, u8);

/// An error in words, with its place in the file's order.
struct Worded {
    order: Order,
    violation: Violation,
}

/// The file's text and tree, to find and quote the values the crate's errors point at.
struct Wording<'a> {
    text: &'a str,
    tree: &'a Node,
}

/// What an evaluation path says of a failed keyword.
struct Rule {
    /// The subschema that holds it.
    schema: Map<String, Json>,
    /// The field it checks: the declared property names on the way. A key of a free-form
    /// mapping (`mirrors`) is not part of it, as it is no field name.
    field: Vec<String>,
    /// The reasons of the `then`/`else` branches on the way, innermost first.
    reasons: Vec<String>,
    /// How deep in the instance the first rule between fields sits, if the path passes one.
    combined_at: Option<usize>,
}

impl Wording<'_> {
    fn first(&self, worded: impl Iterator<Item = Worded>) -> Option<Violation> {
        worded.min_by_key(|w| w.order).map(|w| w.violation)
    }

    /// The node at the first `depth` segments of an instance path (all of them with `None`).
    fn locate(&self, path: &Location, depth: Option<usize>) -> &Node {
        let mut node = self.tree;
        for segment in path.segments().take(depth.unwrap_or(usize::MAX)) {
            let next = match (&node.value, &segment) {
                (Value::Seq(items), LocationSegment::Index(i)) => items.get(*i),
                (Value::Map(entries), _) => {
                    let name = segment.to_string();
                    entries.iter().find(|(k, _)| k.key_text(self.text).as_deref() == Some(&name)).map(|(_, v)| v)
                }
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }

    /// The value as written, for messages: source text for scalars, else JSON.
    fn shown(&self, node: &Node) -> String {
        match &node.value {
            Value::Str(s) => s.clone(),
            Value::Seq(_) | Value::Map(_) => node.to_json(self.text).to_string(),
            _ => node.raw(self.text).map(str::to_string).unwrap_or_else(|| node.to_json(self.text).to_string()),
        }
    }

    fn word(&self, error: &ValidationError) -> Worded {
        let node = self.locate(error.instance_path(), None);
        let rule = rule_at(error.evaluation_path());
        let (s, field) = (&rule.schema, &rule.field);
        let at = |node: &Node, field: &[String], message: String, rank: u8| Worded {
            order: (node.line, node.column, rank),
            violation: Violation { line: node.line, column: node.column, field: field_of(field), message },
        };
        let mut worded = match error.kind() {
            Kind::Enum { options } => at(node, field, self.not_listed(node, options_of(options), s, field), 0),
            Kind::OneOfNotValid { .. } if constants(s).is_some() => {
                at(node, field, self.not_listed(node, constants(s).unwrap_or_default(), s, field), 0)
            }
            Kind::Constant { expected_value } => {
                at(node, field, format!("must be {}, not `{}`", plain(expected_value), self.shown(node)), 0)
            }
            Kind::Type { .. } => at(node, field, self.type_message(node, s, field), 1),
            Kind::Minimum { .. }
            | Kind::Maximum { .. }
            | Kind::ExclusiveMinimum { .. }
            | Kind::ExclusiveMaximum { .. } => at(node, field, self.number_message(node, error.kind(), s), 2),
            Kind::Pattern { pattern } => at(node, field, self.pattern_message(node, pattern), 2),
            Kind::MinItems { limit } => {
                let count = if let Value::Seq(items) = &node.value { items.len() } else { 0 };
                let default = if s.contains_key("default") { ", or leave the field out for the default" } else { "" };
                at(node, field, format!("has {count} items; give at least {limit}{default}"), 2)
            }
            Kind::UniqueItems => match self.repeated(node) {
                Some((item, message)) => at(item, field, message, 2),
                None => at(node, field, "lists an item twice; keep one".into(), 2),
            },
            Kind::Contains => at(node, field, "has no item of the required kind".into(), 2),
            Kind::AdditionalProperties { unexpected } => self.unknown_field(node, field, unexpected, s),
            Kind::PropertyNames { error } => {
                let name = error.instance().as_str().unwrap_or_default().to_string();
                let key = self.key_named(node, &name).unwrap_or(node);
                let message = match error.kind() {
                    Kind::Pattern { pattern } => self.pattern_message(key, pattern),
                    _ => error.to_string(),
                };
                at(key, field, message, 2)
            }
            Kind::Required { property } => {
                let name = plain(property);
                let hint = s.get("properties").and_then(|p| p.get(&name)).map(|p| missing_hint(&name, p));
                let message = format!("is missing{}", hint.unwrap_or_default());
                let (line, column) = last_position(node);
                let field = [field.as_slice(), std::slice::from_ref(&name)].concat();
                Worded {
                    order: (line, column, 4),
                    violation: Violation { line: node.line, column: node.column, field: field_of(&field), message },
                }
            }
            Kind::AnyOf { context } | Kind::OneOfNotValid { context } => {
                let keyword = if matches!(error.kind(), Kind::AnyOf { .. }) { "anyOf" } else { "oneOf" };
                self.alternatives(node, field, s.get(keyword), context)
            }
            Kind::OneOfMultipleValid { .. } => at(node, field, "matches more than one alternative".into(), 3),
            Kind::Not { schema } => {
                let why = schema.get("description").and_then(Json::as_str).unwrap_or("is not allowed here");
                at(node, field, why.to_string(), 3)
            }
            Kind::FalseSchema => at(node, field, "is not allowed here".into(), 3),
            _ => at(node, field, error.to_string(), 3),
        };
        for reason in &rule.reasons {
            worded.violation.message = format!("{}; {reason}", worded.violation.message);
        }
        // A rule between fields (`allOf`, `if`/`then`, …) is told after every problem inside the
        // value it sits on.
        if let Some(depth) = rule.combined_at {
            let (line, column) = last_position(self.locate(error.instance_path(), Some(depth)));
            worded.order = worded.order.max((line, column, 5));
        }
        worded
    }

    /// `enum`, or `oneOf` over constants (how schemars writes a Rust enum): the names allowed,
    /// or, for a value that is no name at all, the type the names have.
    fn not_listed(&self, node: &Node, options: Vec<Json>, s: &Map<String, Json>, field: &[String]) -> String {
        if matches!(node.value, Value::Null | Value::Seq(_) | Value::Map(_)) {
            let mut only = Map::new();
            let types: Vec<Json> = options.iter().map(|o| Json::from(json_type(o))).collect();
            only.insert("type".into(), Json::Array(types));
            only.extend(s.get("default").map(|d| ("default".to_string(), d.clone())));
            return self.type_message(node, &only, field);
        }
        let names: Vec<String> = options.iter().map(plain).collect();
        let shown = self.shown(node);
        let hint = closest(&shown, names.iter().map(String::as_str))
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        format!("`{shown}` is not one of {}{hint}", names.join(", "))
    }

    fn number_message(&self, node: &Node, kind: &Kind, s: &Map<String, Json>) -> String {
        let shown = self.shown(node);
        let bound = |k: &str| s.get(k).and_then(Json::as_number).map(ToString::to_string).unwrap_or_default();
        let given = |k: &str| s.get(k).and_then(Json::as_number).is_some();
        let range = match (given("minimum"), given("exclusiveMinimum"), given("maximum")) {
            (true, _, true) => format!(" (allowed: {} to {})", bound("minimum"), bound("maximum")),
            (false, true, true) => {
                format!(" (allowed: above {}, up to {})", bound("exclusiveMinimum"), bound("maximum"))
            }
            _ => String::new(),
        };
        match kind {
            Kind::Minimum { .. } => format!("`{shown}` is below the minimum of {}{range}", bound("minimum")),
            Kind::ExclusiveMinimum { .. } => {
                let at_most =
                    if given("maximum") { format!(" and at most {}", bound("maximum")) } else { String::new() };
                format!("`{shown}` must be above {}{at_most}", bound("exclusiveMinimum"))
            }
            Kind::Maximum { .. } => format!("`{shown}` is above the maximum of {}{range}", bound("maximum")),
            _ => format!("`{shown}` must be below {}", bound("exclusiveMaximum")),
        }
    }

    /// The [`Format`] a pattern was generated from says what is wrong in words; a pattern
    /// without one is quoted.
    fn pattern_message(&self, node: &Node, pattern: &str) -> String {
        let text = match &node.value {
            Value::Str(s) => s.clone(),
            _ => node.key_text(self.text).unwrap_or_default(),
        };
        match Format::for_pattern(pattern).map(|f| f.check(&text)) {
            Some(Err(why)) => why,
            _ => format!("`{text}` does not match the pattern `{pattern}`"),
        }
    }

    /// The first item of a list that repeats an earlier one, with the message that names both.
    fn repeated<'n>(&self, node: &'n Node) -> Option<(&'n Node, String)> {
        let Value::Seq(items) = &node.value else { return None };
        items.iter().enumerate().find_map(|(i, item)| {
            let json = item.to_json(self.text);
            let first = items[..i].iter().find(|e| e.to_json(self.text) == json)?;
            Some((item, format!("`{}` is listed twice (first on line {}); keep one", self.shown(item), first.line)))
        })
    }

    fn key_named<'n>(&self, node: &'n Node, name: &str) -> Option<&'n Node> {
        let Value::Map(entries) = &node.value else { return None };
        entries.iter().map(|(k, _)| k).find(|k| k.key_text(self.text).as_deref() == Some(name))
    }

    /// `additionalProperties: false`: the first unknown key in the file, with the known ones.
    fn unknown_field(&self, node: &Node, field: &[String], unexpected: &[String], s: &Map<String, Json>) -> Worded {
        let key = unexpected
            .iter()
            .filter_map(|name| self.key_named(node, name).map(|k| (k, name)))
            .min_by_key(|(k, _)| (k.line, k.column));
        let (key, name) = key.unwrap_or((node, &unexpected[0]));
        let known: Vec<&str> =
            s.get("properties").and_then(Json::as_object).into_iter().flatten().map(|(k, _)| k.as_str()).collect();
        let hint = closest(name, known.iter().copied()).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
        let owner = match field_of(field) {
            Some(f) => format!("`{f}` has"),
            None => "a scenario has".to_string(),
        };
        let field = [field, std::slice::from_ref(name)].concat();
        Worded {
            order: (key.line, key.column, 2),
            violation: Violation {
                line: key.line,
                column: key.column,
                field: field_of(&field),
                message: format!("unknown field{hint}; {owner}: {}", known.join(", ")),
            },
        }
    }

    /// `anyOf`/`oneOf` that no alternative satisfies: the first error of the alternative whose
    /// type the value has, or else the types the alternatives allow.
    fn alternatives(
        &self,
        node: &Node,
        field: &[String],
        branches: Option<&Json>,
        context: &[Vec<ValidationError<'static>>],
    ) -> Worded {
        let branches: Vec<Cow<Json>> = branches.and_then(Json::as_array).into_iter().flatten().map(resolved).collect();
        let typed = branches
            .iter()
            .zip(context)
            .find(|(b, _)| b.get("type").is_some_and(|t| type_names(t).iter().any(|t| has_type(node, t))));
        if let Some(first) = typed.and_then(|(_, errors)| self.first(errors.iter().map(|e| self.word(e)))) {
            return Worded { order: (first.line, first.column, 3), violation: first };
        }
        let mut union = Map::new();
        let types: Vec<Json> = branches
            .iter()
            .filter_map(|b| b.get("type"))
            .flat_map(|t| type_names(t).into_iter().map(Json::from))
            .collect();
        union.insert("type".into(), Json::Array(types));
        Worded {
            order: (node.line, node.column, 3),
            violation: Violation {
                line: node.line,
                column: node.column,
                field: field_of(field),
                message: self.type_message(node, &union, field),
            },
        }
    }

    fn type_message(&self, node: &Node, s: &Map<String, Json>, field: &[String]) -> String {
        let expected: Vec<String> = s.get("type").map(type_names).unwrap_or_default();
        let wants = |t: &str| expected.iter().any(|e| e == t);
        let raw = node.raw(self.text).unwrap_or_default();
        if field.is_empty() {
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

/// Reads an evaluation path: the subschema holding its last keyword, the field, the reasons
/// and the first rule between fields. A `$ref` on the way is replaced by its target with the
/// referring schema's siblings (`default`, `description`) merged in: they belong to the same
/// field.
fn rule_at(evaluation: &Location) -> Rule {
    let segments: Vec<String> = evaluation.segments().map(|s| s.to_string()).collect();
    let mut rule = Rule { schema: Map::new(), field: Vec::new(), reasons: Vec::new(), combined_at: None };
    let mut schema: Json = SCHEMA.clone();
    let mut depth = 0;
    // What the previous segment makes of this one: a keyword, or a name or index under one.
    let mut after: Option<&str> = None;
    for (i, segment) in segments.iter().enumerate() {
        match after {
            Some("properties") => {
                rule.field.push(segment.clone());
                depth += 1;
            }
            Some(_) => {}
            None => match segment.as_str() {
                "items" | "additionalProperties" => depth += 1,
                "allOf" | "anyOf" | "oneOf" | "if" | "then" | "else" | "not" => {
                    rule.combined_at.get_or_insert(depth);
                }
                _ => {}
            },
        }
        let keyword = after.is_none().then_some(segment.as_str());
        after = keyword.filter(|k| matches!(*k, "properties" | "$defs" | "allOf" | "anyOf" | "oneOf"));
        if i + 1 == segments.len() {
            break;
        }
        schema = if keyword == Some("$ref") {
            resolved(&schema).into_owned()
        } else {
            let child = match &schema {
                Json::Object(m) => m.get(segment.as_str()),
                Json::Array(a) => segment.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            };
            child.cloned().unwrap_or(Json::Null)
        };
        if matches!(keyword, Some("then" | "else"))
            && let Some(why) = schema.get("description").and_then(Json::as_str)
        {
            rule.reasons.insert(0, why.to_string());
        }
    }
    rule.schema = schema.as_object().cloned().unwrap_or_default();
    rule
}

/// A schema with its `$ref` followed, the referring schema's other keywords kept.
fn resolved(schema: &Json) -> Cow<'_, Json> {
    let Some(reference) = schema.get("$ref").and_then(Json::as_str) else { return Cow::Borrowed(schema) };
    let Some(Json::Object(target)) = reference.strip_prefix('#').and_then(|p| SCHEMA.pointer(p)) else {
        return Cow::Borrowed(schema);
    };
    let mut merged = target.clone();
    let siblings = schema.as_object().into_iter().flatten().filter(|(k, _)| *k != "$ref");
    merged.extend(siblings.map(|(k, v)| (k.clone(), v.clone())));
    Cow::Owned(Json::Object(merged))
}

/// The constants of a `oneOf` whose every branch is one: schemars' form of a Rust enum.
fn constants(s: &Map<String, Json>) -> Option<Vec<Json>> {
    s.get("oneOf")?.as_array()?.iter().map(|b| b.get("const").cloned()).collect()
}

fn options_of(options: &Json) -> Vec<Json> {
    options.as_array().cloned().unwrap_or_default()
}

fn field_of(path: &[String]) -> Option<String> {
    (!path.is_empty()).then(|| path.join("."))
}

/// The last position inside a node (its own, or its last descendant's, keys included): a
/// missing field is told after every problem inside the mapping that lacks it.
fn last_position(node: &Node) -> (u64, u64) {
    let inner = match &node.value {
        Value::Seq(items) => items.iter().map(last_position).max(),
        Value::Map(entries) => entries.iter().flat_map(|(k, v)| [last_position(k), last_position(v)]).max(),
        _ => None,
    };
    inner.unwrap_or((node.line, node.column)).max((node.line, node.column))
}

/// How to add a missing field: an example line, when the schema suggests one.
fn missing_hint(key: &str, schema: &Json) -> String {
    let schema = resolved(schema);
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
