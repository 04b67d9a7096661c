//! Durations as a scenario writes them (`90s`, `10m`) and releases as versions compare.

use std::{fmt, time::Duration};

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Format, format};

/// A duration written the way Helm and kubectl write them (`90s`, `10m`, `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl Span {
    /// A span of whole seconds.
    pub const fn secs(s: u64) -> Span {
        Span(Duration::from_secs(s))
    }

    /// The longest span a scenario may give: a week. Longer ones are typos, and adding them to
    /// instants or multiplying them overflowed (a panic in `plan` and after `cluster create`).
    pub const MAX: Span = Span::secs(7 * 24 * 3600);

    /// Parses `1h2m3s`-style text: hours, minutes and seconds in that order, each at most once,
    /// positive and at most [`Span::MAX`]; the error says how to write it instead.
    pub fn parse(text: &str) -> Result<Span, String> {
        format::check_duration(text).map(|secs| Span(Duration::from_secs(secs)))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.as_secs())
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Span::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Span {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": Format::Duration.pattern(),
            "description": "A duration such as 90s, 10m or 1h30m: hours, minutes, seconds in that order, at most 168h."
        })
    }
}

/// A release version `X.Y.Z` (optionally with a `v` prefix and a pre-release suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

impl Release {
    /// Parses `1.30.3`, `v1.5.1` or `1.31.0-rc.1` (the suffix is ignored for ordering).
    pub fn parse(text: &str) -> Option<Release> {
        let core = text.strip_prefix('v').unwrap_or(text);
        let core = core.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let parse = |p: Option<&str>| -> Option<u64> {
            let p = p?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0')) {
                return None;
            }
            p.parse().ok()
        };
        let r = Release { major: parse(parts.next())?, minor: parse(parts.next())?, patch: parse(parts.next())? };
        parts.next().is_none().then_some(r)
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}
