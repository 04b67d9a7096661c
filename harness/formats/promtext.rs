//! A tolerant parser for Prometheus text exposition (0.0.4) and OpenMetrics.
//!
//! In-house on purpose: `prometheus-parse` silently truncates label values with commas
//! (`response_flags="UF,URX"`), drops samples whose label value holds `}` and mistypes ztunnel's
//! OpenMetrics `_total` counters (shared/rust-notes.md §4). This parser handles both formats, the
//! `\\`, `\"` and `\n` escapes, `# EOF`, `+Inf`/`NaN`, and skips a bad line (reporting it) rather than
//! losing the whole scrape.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name as written on the sample line (e.g. `istio_tcp_connections_opened_total`).
    pub name: String,
    /// Labels, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// A label's value, or `""` when absent (Prometheus semantics).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }
}

/// A parsed scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// `# TYPE` declarations: family name → type.
    pub types: BTreeMap<String, String>,
    /// Lines that could not be parsed: (1-based line number, reason).
    pub bad_lines: Vec<(usize, String)>,
    /// Whether the text ended with OpenMetrics' `# EOF`.
    pub openmetrics: bool,
}

impl Scrape {
    /// Samples whose name is `name`.
    pub fn samples_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Whether a family (by `# TYPE` name, or by sample name with `_total` etc. stripped) is present.
    pub fn has_family(&self, family: &str) -> bool {
        self.types.contains_key(family) || self.samples.iter().any(|s| family_of(&s.name) == family || s.name == family)
    }
}

/// The family a sample name belongs to (`x_total` → `x`, `x_bucket` → `x`, …).
pub fn family_of(sample_name: &str) -> &str {
    for suffix in ["_total", "_bucket", "_count", "_sum", "_created", "_info"] {
        if let Some(base) = sample_name.strip_suffix(suffix) {
            return base;
        }
    }
    sample_name
}

/// Parses exposition text. Never fails: unparsable lines land in [`Scrape::bad_lines`].
pub fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line == "# EOF" {
            scrape.openmetrics = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.split_whitespace();
            if parts.next() == Some("TYPE")
                && let (Some(name), Some(kind)) = (parts.next(), parts.next())
            {
                scrape.types.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        match parse_sample(line) {
            Ok(s) => scrape.samples.push(s),
            Err(e) => scrape.bad_lines.push((i + 1, e)),
        }
    }
    scrape
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("no value after metric name")?;
    let name = &line[..name_end];
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return Err(format!("bad metric name `{name}`"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after)?;
        labels = parsed;
        rest = remaining;
    }
    let value_text = rest.split_whitespace().next().ok_or("no value")?;
    let value = parse_value(value_text).ok_or_else(|| format!("bad value `{value_text}`"))?;
    Ok(Sample { name: name.to_string(), labels, value })
}

fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("label without `=`")?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name `{key}`"));
        }
        s = s[eq + 1..].trim_start();
        let body = s.strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = body.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(key.to_string(), value);
        s = body[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        }
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_commas_braces_and_escapes_in_label_values() {
        let s = parse("# TYPE envoy_x counter\nenvoy_x{response_flags=\"UF,URX\",msg=\"say \\\"hi\\\" {x}\"} 3\n");
        assert_eq!(s.samples.len(), 1);
        assert_eq!(s.samples[0].label("response_flags"), "UF,URX");
        assert_eq!(s.samples[0].label("msg"), "say \"hi\" {x}");
        assert!(s.bad_lines.is_empty());
    }

    #[test]
    fn openmetrics_total_counters_belong_to_their_family() {
        let s = parse(
            "# TYPE istio_tcp_connections_opened counter\nistio_tcp_connections_opened_total{a=\"b\"} 1\n# EOF\n",
        );
        assert!(s.openmetrics);
        assert!(s.has_family("istio_tcp_connections_opened"));
        assert_eq!(s.samples_named("istio_tcp_connections_opened_total").count(), 1);
    }

    #[test]
    fn bad_lines_are_reported_not_fatal() {
        let s = parse("ok 1\nbroken{a=\"x} 2\nalso_ok +Inf\n");
        assert_eq!(s.samples.len(), 2);
        assert_eq!(s.bad_lines.len(), 1);
        assert_eq!(s.bad_lines[0].0, 2);
    }
}
