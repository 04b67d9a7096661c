//! The string formats of the scenario fields (names, versions, durations, images, URLs).
//!
//! Each format is defined once, here, in two forms that must accept exactly the same strings: the
//! regular expression the JSON Schema carries (`meshcheck schema`, for editors; the loader runs it
//! through the `jsonschema` crate) and the Rust check that words a failure in the user's terms:
//! what is wrong and how to fix it. `suites/offline/scenarios.rs` runs both over thousands of
//! strings and requires them to agree, so a value the pattern refuses always gets its words.

use std::sync::LazyLock;

use super::Release;

/// One release number: 0, or up to nine digits without a leading zero (so it always fits a u64).
const NUMBER: &str = "(0|[1-9][0-9]{0,8})";
/// SemVer 2.0 pre-release and build suffixes (semver.org §9, §10), e.g. `-rc.1`, `+build.5`.
const SUFFIX: &str = "(-[0-9A-Za-z.-]+)?(\\+[0-9A-Za-z.-]+)?";
/// Registry host and path segments in front of an image's repository, e.g. `mirror.example:5000/`,
/// by the distribution reference grammar (distribution/reference `reference.go`, lower case only):
/// `[domain "/"] (path-component "/")*`, a domain being `domain-component`s (a-z, 0-9, inner `-`)
/// joined by `.` with an optional port, a path component `[a-z0-9]+` runs joined by `.`, `_`, `__`
/// or runs of `-`.
const IMAGE_PREFIX: &str = concat!(
    "([a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?/)?",
    "([a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*/)*"
);
/// An OCI content digest of the sha256 algorithm, as `docker pull` prints it.
const DIGEST: &str = "@sha256:[0-9a-f]{64}";
/// The longest allowed duration in seconds: [`super::Span::MAX`], one week.
const MAX_SECONDS: u64 = super::Span::MAX.0.as_secs();

/// Istio's first release with ambient mode installable by the documented Helm steps
/// (istio.io docs/ambient/install/helm; ambient went GA in 1.24).
pub const MIN_ISTIO_MINOR: u64 = 24;

/// A string format of the scenario. `pattern` is its JSON Schema form, `check` its loader form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `name`: becomes part of cluster names.
    Name,
    /// A Helm chart version without `v` (Cilium, kube-prometheus-stack, Tempo, kiali-operator).
    ChartVersion,
    /// An Istio release without `v`, 1.24 or newer.
    IstioVersion,
    /// A Gateway API release tag, with `v`.
    GatewayApiVersion,
    /// `90s`, `10m`, `1h30m`: hours, minutes, seconds, in that order, at most 168h.
    Duration,
    /// `kindest/node:vX.Y.Z@sha256:<digest>`.
    KindNodeImage,
    /// `rancher/k3s:vX.Y.Z-k3sN`, optionally with a digest.
    K3sNodeImage,
    /// An http(s) URL or URL prefix.
    Url,
    /// An Istio version of one minor release (the condition of a Kubernetes support window).
    IstioMinor(u64),
    /// A node image whose tag is Kubernetes `1.lo` to `1.hi`.
    KubernetesMinors(u64, u64),
    /// `namespace/service:port`: a Kubernetes Service and one of its ports.
    ServiceRef,
}

impl Format {
    /// The formats with no parameters.
    pub const PLAIN: [Format; 9] = [
        Format::Name,
        Format::ChartVersion,
        Format::IstioVersion,
        Format::GatewayApiVersion,
        Format::Duration,
        Format::KindNodeImage,
        Format::K3sNodeImage,
        Format::Url,
        Format::ServiceRef,
    ];

    /// Every format the schema uses: the plain ones and, per Istio minor release meshcheck knows the
    /// Kubernetes support window of, the two halves of that rule.
    pub fn all() -> Vec<Format> {
        let windows = super::ISTIO_K8S_SUPPORT
            .iter()
            .flat_map(|&(minor, lo, hi)| [Format::IstioMinor(minor), Format::KubernetesMinors(lo, hi)]);
        Format::PLAIN.into_iter().chain(windows).collect()
    }

    /// The format a schema pattern was generated from.
    pub fn for_pattern(pattern: &str) -> Option<Format> {
        static PATTERNS: LazyLock<Vec<(String, Format)>> =
            LazyLock::new(|| Format::all().into_iter().map(|f| (f.pattern(), f)).collect());
        PATTERNS.iter().find(|(p, _)| p == pattern).map(|(_, f)| *f)
    }

    /// The ECMA-262 regular expression of the JSON Schema `pattern` keyword.
    pub fn pattern(self) -> String {
        match self {
            Format::Name => "^[a-z0-9-]{1,30}$".into(),
            Format::ChartVersion => format!("^{NUMBER}\\.{NUMBER}\\.{NUMBER}{SUFFIX}$"),
            Format::IstioVersion => {
                format!("^1\\.({})\\.{NUMBER}{SUFFIX}$", integers(MIN_ISTIO_MINOR, 999_999_999))
            }
            Format::GatewayApiVersion => format!("^v{NUMBER}\\.{NUMBER}\\.{NUMBER}{SUFFIX}$"),
            Format::Duration => {
                let sub = "[0-5]?[0-9]";
                format!(
                    "^(({})h|({})m|({})s|({})h({sub}m({sub}s)?|{sub}s)|({})m{sub}s)$",
                    integers(1, MAX_SECONDS / 3600),
                    integers(1, MAX_SECONDS / 60),
                    integers(1, MAX_SECONDS),
                    integers(1, MAX_SECONDS / 3600 - 1),
                    integers(1, MAX_SECONDS / 60 - 1),
                )
            }
            Format::KindNodeImage => format!("^{IMAGE_PREFIX}kindest/node:v{NUMBER}\\.{NUMBER}\\.{NUMBER}{DIGEST}$"),
            Format::K3sNodeImage => {
                format!("^{IMAGE_PREFIX}rancher/k3s:v{NUMBER}\\.{NUMBER}\\.{NUMBER}-k3s[1-9][0-9]{{0,8}}({DIGEST})?$")
            }
            Format::Url => "^https?://[!-~]+$".into(),
            Format::IstioMinor(minor) => format!("^1\\.{minor}\\."),
            Format::KubernetesMinors(lo, hi) => format!(":v1\\.({})\\.", integers(lo, hi)),
            // A namespace is a DNS-1123 label, a Service name a DNS-1035 label (it starts with a
            // letter), both at most 63 characters (apimachinery validation.IsDNS1123Label,
            // IsDNS1035Label); a port 1 to 65535.
            Format::ServiceRef => format!(
                "^[a-z0-9]([-a-z0-9]{{0,61}}[a-z0-9])?/[a-z]([-a-z0-9]{{0,61}}[a-z0-9])?:({})$",
                integers(1, 65535)
            ),
        }
    }

    /// Whether `text` has this format; if not, what is wrong and how to write it instead.
    pub fn check(self, text: &str) -> Result<(), String> {
        match self {
            Format::Name => check_name(text),
            Format::ChartVersion => {
                if let Some(rest) = text.strip_prefix('v')
                    && check_release(rest, false).is_ok()
                {
                    return Err(format!("`{text}`: chart versions have no `v` prefix: write {rest}"));
                }
                check_release(text, false)
                    .map(drop)
                    .map_err(|why| format!("{why}; chart versions are written like 1.19.6"))
            }
            Format::IstioVersion => check_istio(text),
            Format::GatewayApiVersion => {
                if !text.starts_with('v') && check_release(text, false).is_ok() {
                    return Err(format!("`{text}`: Gateway API releases are tagged with a `v` prefix: write v{text}"));
                }
                check_release(text, true)
                    .map(drop)
                    .map_err(|why| format!("{why}; Gateway API releases are written like v1.5.1"))
            }
            Format::Duration => check_duration(text).map(drop),
            Format::KindNodeImage => check_node_image(text, NodeImage::Kind),
            Format::K3sNodeImage => check_node_image(text, NodeImage::K3s),
            Format::Url => check_url(text),
            Format::ServiceRef => check_service_ref(text),
            Format::IstioMinor(minor) => {
                if text.starts_with(&format!("1.{minor}.")) {
                    Ok(())
                } else {
                    Err(format!("`{text}` is not an Istio 1.{minor} release"))
                }
            }
            Format::KubernetesMinors(lo, hi) => {
                if (lo..=hi).any(|m| text.contains(&format!(":v1.{m}."))) {
                    return Ok(());
                }
                let runs = image_tag(text)
                    .and_then(|tag| Release::parse(tag.split("-k3s").next().unwrap_or(tag)))
                    .map(|k| format!("runs Kubernetes {}.{}", k.major, k.minor))
                    .unwrap_or_else(|| "does not run a Kubernetes version it names".into());
                Err(format!("`{text}` {runs}"))
            }
        }
    }

    /// A value of this format, for messages that ask the user to add one.
    pub fn example(self) -> Option<&'static str> {
        match self {
            Format::Name => Some("my-scenario"),
            Format::ChartVersion => Some("1.19.6"),
            Format::IstioVersion => Some("1.30.3"),
            Format::GatewayApiVersion => Some("v1.5.1"),
            Format::Duration => Some("10m"),
            Format::Url => Some("https://mirror.example/"),
            Format::ServiceRef => Some("monitoring/prom-prometheus:9090"),
            _ => None,
        }
    }
}

/// A regular expression for the integers `lo..=hi` written without leading zeros.
///
/// Splits the range by number of digits, then each equal-length range digit by digit, the way
/// range-to-regex generators do; the result is an alternation without anchors.
pub fn integers(lo: u64, hi: u64) -> String {
    assert!(lo <= hi, "empty range {lo}..={hi}");
    let mut parts = Vec::new();
    let digits = |n: u64| n.to_string().len() as u32;
    for len in digits(lo)..=digits(hi) {
        let first = if len == 1 { 0 } else { 10u64.pow(len - 1) };
        let last = 10u64.pow(len) - 1;
        let (a, b) = (lo.max(first), hi.min(last));
        if a <= b {
            same_length(&a.to_string(), &b.to_string(), "", &mut parts);
        }
    }
    parts.join("|")
}

/// Appends alternatives for the equal-length decimal strings `a..=b`, each prefixed with `prefix`.
fn same_length(a: &str, b: &str, prefix: &str, out: &mut Vec<String>) {
    if a.is_empty() {
        out.push(prefix.to_string());
        return;
    }
    let (da, db) = (a.as_bytes()[0] - b'0', b.as_bytes()[0] - b'0');
    let (ra, rb) = (&a[1..], &b[1..]);
    let any = |n: usize| if n == 0 { String::new() } else { format!("[0-9]{{{n}}}") };
    let class = |lo: u8, hi: u8| if lo == hi { lo.to_string() } else { format!("[{lo}-{hi}]") };
    if da == db {
        return same_length(ra, rb, &format!("{prefix}{da}"), out);
    }
    if ra.bytes().all(|c| c == b'0') && rb.bytes().all(|c| c == b'9') {
        out.push(format!("{prefix}{}{}", class(da, db), any(ra.len())));
        return;
    }
    same_length(ra, &"9".repeat(ra.len()), &format!("{prefix}{da}"), out);
    if db - da > 1 {
        out.push(format!("{prefix}{}{}", class(da + 1, db - 1), any(ra.len())));
    }
    same_length(&"0".repeat(rb.len()), rb, &format!("{prefix}{db}"), out);
}

/// `namespace/service:port` (see [`Format::ServiceRef`]).
fn check_service_ref(text: &str) -> Result<(), String> {
    let how = "write namespace/service:port, e.g. monitoring/prom-prometheus:9090";
    let (Some((namespace, rest)), true) = (text.split_once('/'), text.contains(':')) else {
        return Err(format!("`{text}` is not a Service reference; {how}"));
    };
    let Some((service, port)) = rest.rsplit_once(':') else {
        return Err(format!("`{text}` is not a Service reference; {how}"));
    };
    let label = |s: &str, first_letter: bool| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.ends_with('-')
            && s.chars().next().is_some_and(|c| if first_letter { c.is_ascii_lowercase() } else { c != '-' })
    };
    if !label(namespace, false) {
        return Err(format!("`{namespace}` is not a namespace name (a-z, 0-9 and `-`, at most 63); {how}"));
    }
    if !label(service, true) {
        return Err(format!(
            "`{service}` is not a Service name (a-z, 0-9 and `-`, starting with a letter, at most 63); {how}"
        ));
    }
    match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) && !port.starts_with('0') && port.chars().all(|c| c.is_ascii_digit()) => {
            Ok(())
        }
        _ => Err(format!("`{port}` is not a port (1 to 65535); {how}")),
    }
}

fn check_name(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("is empty; give the scenario a short name such as ambient-kind".into());
    }
    if text.len() > 30 {
        return Err(format!(
            "`{text}` is {} characters long; use at most 30 (it becomes part of a cluster name)",
            text.len()
        ));
    }
    if let Some(c) = text.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        // A suggestion only when it is itself a valid name (`My_Test` → `my-test`, never `my_test`).
        let suggestion = name_like(text);
        let hint = if !suggestion.is_empty() && check_name(&suggestion).is_ok() {
            format!(" (write `{suggestion}`)")
        } else {
            String::new()
        };
        return Err(format!(
            "`{text}` contains `{c}`; use only a-z, 0-9 and `-`, because it becomes part of a cluster name{hint}"
        ));
    }
    Ok(())
}

/// `text` lowercased, each run of other characters than a-z and 0-9 made one `-`, no `-` at the ends.
fn name_like(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Whether `prefix` (empty, or segments each ending in `/`) is what [`IMAGE_PREFIX`] describes.
fn image_prefix_ok(prefix: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    let Some(segments) = prefix.strip_suffix('/') else { return false };
    let segments: Vec<&str> = segments.split('/').collect();
    let paths = |s: &[&str]| s.iter().all(|s| path_component(s));
    paths(&segments) || (registry_host(segments[0]) && paths(&segments[1..]))
}

/// `domain-component`s joined by `.`, with an optional `:port` of 1 to 5 digits.
fn registry_host(text: &str) -> bool {
    let (host, port) = match text.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (text, None),
    };
    let port_ok = port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    let component = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !c.starts_with('-')
            && !c.ends_with('-')
    };
    port_ok && host.split('.').all(component)
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or runs of `-`.
fn path_component(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.first().is_none_or(|&b| !alnum(b)) || bytes.last().is_none_or(|&b| !alnum(b)) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &text[start..i];
        if !(matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

/// `X.Y.Z` with optional SemVer suffixes, with a `v` in front exactly when `v_prefix`.
fn check_release(text: &str, v_prefix: bool) -> Result<Release, String> {
    let core = match (v_prefix, text.strip_prefix('v')) {
        (true, Some(rest)) => rest,
        (true, None) => return Err(format!("`{text}` does not start with `v`")),
        (false, Some(_)) => return Err(format!("`{text}` starts with `v`; leave it out")),
        (false, None) => text,
    };
    let (numbers, suffix) = match core.find(['-', '+']) {
        Some(i) => core.split_at(i),
        None => (core, ""),
    };
    let not_release = || format!("`{text}` is not a three-part release version");
    let parts: Vec<&str> = numbers.split('.').collect();
    if parts.len() != 3 {
        return Err(not_release());
    }
    let mut values = [0u64; 3];
    for (slot, part) in values.iter_mut().zip(&parts) {
        if part.is_empty() || part.len() > 9 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_release());
        }
        if part.len() > 1 && part.starts_with('0') {
            return Err(format!("`{text}`: `{part}` has a leading zero"));
        }
        *slot = part.parse().map_err(|_| not_release())?;
    }
    check_suffix(text, suffix)?;
    Ok(Release { major: values[0], minor: values[1], patch: values[2] })
}

/// SemVer's `-pre.release` then `+build`, each non-empty, of `0-9A-Za-z.-`.
fn check_suffix(text: &str, suffix: &str) -> Result<(), String> {
    let ident = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let (pre, build) = match suffix.split_once('+') {
        Some((pre, build)) => (pre, Some(build)),
        None => (suffix, None),
    };
    let pre_ok = pre.is_empty() || pre.strip_prefix('-').is_some_and(ident);
    if pre_ok && build.is_none_or(ident) {
        Ok(())
    } else {
        Err(format!("`{text}` has a malformed suffix `{suffix}` (SemVer allows e.g. -rc.1 or +build.5)"))
    }
}

fn check_istio(text: &str) -> Result<(), String> {
    if let Some(rest) = text.strip_prefix('v')
        && check_release(rest, false).is_ok()
    {
        return Err(format!("`{text}`: Istio chart versions have no `v` prefix: write {rest}"));
    }
    let release = check_release(text, false).map_err(|why| format!("{why}; Istio releases are written like 1.30.3"))?;
    if release.major != 1 || release.minor < MIN_ISTIO_MINOR {
        return Err(format!("`{text}`: ambient mode via Helm as documented needs Istio 1.{MIN_ISTIO_MINOR} or newer"));
    }
    Ok(())
}

/// Parses a duration in the one grammar the pattern also describes: hours, minutes and seconds in
/// that order, each at most once; the first number without leading zeros and not zero, each later
/// one 0–59; at most [`super::Span::MAX`] in total. Returns seconds.
pub fn check_duration(text: &str) -> Result<u64, String> {
    let examples = "e.g. 90s, 10m or 1h30m";
    if text.is_empty() {
        return Err(format!("is empty; write a duration, {examples}"));
    }
    let mut parts: Vec<(&str, u8)> = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '0'..='9' => {}
            'm' if text[i..].starts_with("ms") && start < i => {
                return Err(format!(
                    "`{text}` is in milliseconds; durations here are whole seconds or more ({examples}, at least 1s)"
                ));
            }
            'h' | 'm' | 's' => {
                if start == i {
                    return Err(format!("`{text}`: `{c}` needs a number in front of it ({examples})"));
                }
                parts.push((&text[start..i], c as u8));
                start = i + 1;
            }
            '.' | ',' => return Err(format!("`{text}`: use whole numbers of each unit, e.g. 1h30m rather than 1.5h")),
            ' ' => return Err(format!("`{text}`: leave out the spaces, {examples}")),
            _ => {
                return Err(format!("`{text}` is not a duration: `{c}` is not a unit; use h, m and s, {examples}"));
            }
        }
    }
    if start < text.len() {
        let number = &text[start..];
        return Err(if parts.is_empty() {
            format!("`{text}` has no unit: write {number}s, {number}m or {number}h")
        } else {
            format!("`{text}`: `{number}` at the end has no unit (s, m or h)")
        });
    }
    let units: Vec<u8> = parts.iter().map(|(_, u)| *u).collect();
    let order = [b'h', b'm', b's'];
    let positions: Vec<usize> = units.iter().map(|u| order.iter().position(|o| o == u).unwrap_or(0)).collect();
    if positions.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("`{text}`: give hours, then minutes, then seconds, each at most once, e.g. 1h30m10s"));
    }
    let unit_seconds = |u: u8| match u {
        b'h' => 3600,
        b'm' => 60,
        _ => 1,
    };
    let too_long = || format!("`{text}` is longer than the maximum of 168h (one week)");
    let mut total = 0u64;
    for (i, (digits, unit)) in parts.iter().enumerate() {
        if digits.len() > 9 {
            return Err(too_long());
        }
        let n: u64 = digits.parse().map_err(|_| too_long())?;
        if i > 0 && (digits.len() > 2 || n > 59) {
            let name = if *unit == b'm' { "minutes" } else { "seconds" };
            let all = parts.iter().try_fold(0u64, |acc, (d, u)| Some(acc + d.parse::<u64>().ok()? * unit_seconds(*u)));
            let instead = all.map(|s| format!(": write {}", canonical(s))).unwrap_or_default();
            return Err(format!("`{text}`: {name} after a larger unit go from 0 to 59{instead}"));
        }
        total += n * unit_seconds(*unit);
    }
    if total == 0 {
        return Err(format!("`{text}` is not a positive duration; the shortest is 1s"));
    }
    if total > MAX_SECONDS {
        return Err(too_long());
    }
    let (first, unit) = parts[0];
    let leading: u64 = first.parse().map_err(|_| too_long())?;
    if leading == 0 || (first.len() > 1 && first.starts_with('0')) {
        return Err(format!("`{text}`: write it without leading zeros: {}", canonical(total)));
    }
    if parts.len() > 1 && leading * unit_seconds(unit) >= MAX_SECONDS {
        return Err(format!("`{text}`: write it as {}", canonical(total)));
    }
    Ok(total)
}

/// `1h30m`, `45s`: the shortest spelling of whole seconds in the duration grammar.
pub fn canonical(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut out = String::new();
    for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

#[derive(Clone, Copy, PartialEq)]
enum NodeImage {
    Kind,
    K3s,
}

/// The tag of `repository:tag[@digest]`, if there is one.
fn image_tag(image: &str) -> Option<&str> {
    let reference = image.split('@').next().unwrap_or(image);
    let (_, tag) = reference.rsplit_once(':')?;
    (!tag.contains('/')).then_some(tag)
}

fn check_node_image(image: &str, kind: NodeImage) -> Result<(), String> {
    let (repository, example) = match kind {
        NodeImage::Kind => ("kindest/node", "kindest/node:v1.35.0@sha256:<digest>"),
        NodeImage::K3s => ("rancher/k3s", "rancher/k3s:v1.35.5-k3s1"),
    };
    let provider = if kind == NodeImage::Kind { "kind" } else { "k3d" };
    let (reference, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    let Some(tag) = image_tag(image) else {
        return Err(format!("`{image}` has no tag; write e.g. {example}"));
    };
    let repo = &reference[..reference.len() - tag.len() - 1];
    let Some(prefix) = repo.strip_suffix(repository) else {
        return Err(format!("`{image}`: {provider} needs a {repository} image, e.g. {example}"));
    };
    if !image_prefix_ok(prefix) {
        return Err(format!(
            "`{image}`: `{prefix}` in front of {repository} is not a registry and path: a host like \
             mirror.example:5000 (a-z, 0-9 and `-` between dots, an optional port), then path segments of \
             a-z and 0-9 joined by `.`, `_`, `__` or `-`, each followed by `/`"
        ));
    }
    match digest {
        Some(d) => {
            let hex = d.strip_prefix("sha256:").ok_or_else(|| format!("`@{d}` is not a sha256 digest"))?;
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(format!("`@{d}` is not a sha256 digest of 64 lowercase hex digits"));
            }
        }
        None if kind == NodeImage::Kind => {
            return Err(format!(
                "`{image}`: pin the kind node image by digest (`@sha256:…`); kind's release notes list each \
                 image with its digest and kind's docs require it"
            ));
        }
        None => {}
    }
    let version = match kind {
        NodeImage::Kind => tag,
        NodeImage::K3s => {
            let bad = || format!("`{tag}` is not a k3s tag like v1.35.5-k3s1");
            if tag.contains('+') {
                return Err(format!("`{tag}`: k3s image tags use `-k3sN`, not `+k3sN`"));
            }
            let (version, build) = tag.split_once("-k3s").ok_or_else(bad)?;
            let build_ok = !build.is_empty()
                && build.len() <= 9
                && !build.starts_with('0')
                && build.bytes().all(|b| b.is_ascii_digit());
            if !build_ok {
                return Err(bad());
            }
            version
        }
    };
    let is_plain_release =
        version.strip_prefix('v').is_some_and(|v| !v.contains(['-', '+']) && check_release(v, false).is_ok());
    if !is_plain_release {
        return Err(format!("`{tag}` is not a Kubernetes version tag like v1.35.0"));
    }
    Ok(())
}

fn check_url(text: &str) -> Result<(), String> {
    let rest = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://"));
    match rest {
        None => Err(format!("`{text}` is not an http:// or https:// URL")),
        Some("") => Err(format!("`{text}` has nothing after the scheme")),
        Some(r) if r.bytes().all(|b| (b'!'..=b'~').contains(&b)) => Ok(()),
        Some(_) => Err(format!("`{text}` contains spaces or non-ASCII characters; percent-encode them")),
    }
}
