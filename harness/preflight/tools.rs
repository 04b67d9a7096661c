//! The tools a run needs, found and recent enough: versions parsed from each tool's own output,
//! and the kernel limits kind needs.

use std::time::Duration;

use crate::{
    cluster::runner::{CommandError, Runner},
    common::util::first_line,
    plan::CommandSpec,
};

/// A command-line tool the run drives, with the oldest release it works with (README,
/// "Prerequisites of a live run").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// kind ≥ 0.31 (its v0.31.0 release pins the default scenario's node image).
    Kind,
    /// k3d ≥ 5.6.
    K3d,
    /// helm ≥ 3.6.
    Helm,
}

/// A tool's version as it printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolVersion {
    /// Major, minor, patch; a version printed without a patch (helm built without its Makefile
    /// prints `v3.19`) has patch 0.
    pub core: (u64, u64, u64),
    /// Whether it carries a `-…` pre-release suffix: such a build precedes the release of the same
    /// core (SemVer 2.0.0 §11), so `v0.31.0-alpha` is not yet 0.31.0.
    pub pre_release: bool,
    /// The version as printed (`v0.31.0`), for messages.
    pub text: String,
}

impl ToolVersion {
    /// Parses `vMAJOR.MINOR[.PATCH][-PRERELEASE][+BUILD]`, the form all three tools print.
    fn parse(token: &str) -> Option<ToolVersion> {
        let rest = token.strip_prefix('v')?;
        let rest = rest.split_once('+').map_or(rest, |(v, _build)| v);
        let (core, pre_release) = match rest.split_once('-') {
            Some((core, pre)) => (core, !pre.is_empty()),
            None => (rest, false),
        };
        let numbers: Vec<u64> = core
            .split('.')
            .map(|p| (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok()).flatten())
            .collect::<Option<_>>()?;
        let core = match numbers.as_slice() {
            [major, minor] => (*major, *minor, 0),
            [major, minor, patch] => (*major, *minor, *patch),
            _ => return None,
        };
        Some(ToolVersion { core, pre_release, text: token.to_string() })
    }

    /// Whether this is `minimum` (a release) or newer.
    pub fn at_least(&self, minimum: (u64, u64, u64)) -> bool {
        self.core > minimum || (self.core == minimum && !self.pre_release)
    }
}

impl Tool {
    /// The program name on PATH.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Kind => "kind",
            Tool::K3d => "k3d",
            Tool::Helm => "helm",
        }
    }

    fn version_args(self) -> &'static [&'static str] {
        match self {
            Tool::Kind | Tool::K3d => &["version"],
            Tool::Helm => &["version", "--short"],
        }
    }

    /// The oldest release meshcheck works with (README, "Prerequisites of a live run").
    pub fn minimum(self) -> (u64, u64, u64) {
        match self {
            Tool::Kind => (0, 31, 0),
            Tool::K3d => (5, 6, 0),
            Tool::Helm => (3, 6, 0),
        }
    }

    fn install(self) -> &'static str {
        match self {
            Tool::Kind => "install kind v0.31+ from https://kind.sigs.k8s.io/docs/user/quick-start/#installation",
            Tool::K3d => "install k3d v5.6+ from https://k3d.io/#installation",
            Tool::Helm => "install Helm 3.6+ from https://helm.sh/docs/intro/install/",
        }
    }

    /// What the version command of a current release prints.
    fn example(self) -> &'static str {
        match self {
            Tool::Kind => "kind v0.31.0 go1.25.5 linux/amd64",
            Tool::K3d => "k3d version v5.8.3",
            Tool::Helm => "v3.19.0+g3d8990f",
        }
    }

    /// Reads the version out of what the tool's version command printed; `None` for anything
    /// else, which is then a problem rather than a tool taken to be ready.
    ///
    /// - kind: `kind version` prints `"kind v" + Version() + " " + runtime.Version() + " " +
    ///   runtime.GOOS + "/" + runtime.GOARCH` (kubernetes-sigs/kind pkg/cmd/kind/version/version.go,
    ///   `DisplayVersion`, the same from v0.6.0 to v0.31.0 and main), e.g. `kind v0.31.0 go1.25.5
    ///   linux/amd64`; a pre-release adds `-alpha.N+<commit>`.
    /// - k3d: `k3d version` prints `k3d version %s\nk3s version %s (default)\n` (k3d-io/k3d
    ///   cmd/root.go `printVersion`, the same at v4.4.8, v5.6.0 and v5.8.3); the version is the
    ///   `git describe --tags` the Makefile links in, or `v5-dev` for a plain `go build`, which has
    ///   no version to compare.
    /// - helm: `helm version --short` prints `Version + "+g" + GitCommit[:7]`, or just the version
    ///   when built without a commit (helm/helm v3.19.0 cmd/helm/version.go `formatVersion`, the same
    ///   in v4 pkg/cmd/version.go), e.g. `v3.19.0+g3d8990f`; the Makefile links in the git tag,
    ///   a plain `go build` leaves internal/version's default `v3.19`. Helm 2 prints
    ///   `Client: v2.17.0+ga690bad` (v2.17.0 cmd/helm/version.go).
    pub fn parse_version(self, output: &str) -> Option<ToolVersion> {
        let line = output.lines().map(str::trim).find(|l| !l.is_empty())?;
        match self {
            Tool::Kind => {
                let mut words = line.split_whitespace();
                (words.next()? == "kind").then_some(())?;
                ToolVersion::parse(words.next()?)
            }
            Tool::K3d => ToolVersion::parse(line.strip_prefix("k3d version ")?.trim()),
            Tool::Helm => ToolVersion::parse(line.strip_prefix("Client: ").unwrap_or(line)),
        }
    }
}

/// Runs the tool's version command and judges what it printed.
pub(super) fn tool_problem(runner: &Runner, tool: Tool, t: Duration) -> Option<String> {
    let program = tool.program();
    let spec = CommandSpec::new(program, tool.version_args().iter().copied(), t);
    let output = match runner.run(&spec) {
        Ok(output) => output,
        Err(e) => return Some(format!("{program}: {}. Fix: {}", short(&e), tool.install())),
    };
    let (major, minor, _) = tool.minimum();
    match tool.parse_version(&output) {
        None => {
            let printed = output
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map_or_else(|| "nothing".to_string(), |l| format!("`{}`", l.chars().take(80).collect::<String>()));
            Some(format!(
                "{program}: `{}` printed {printed}, not a version (a release prints e.g. `{}`). Fix: {}",
                spec.display(),
                tool.example(),
                tool.install()
            ))
        }
        Some(v) if !v.at_least(tool.minimum()) => Some(format!(
            "{program}: {} is older than the {major}.{minor} meshcheck needs. Fix: {}",
            v.text,
            tool.install()
        )),
        Some(_) => None,
    }
}

pub(super) fn short(e: &CommandError) -> String {
    match e {
        CommandError::NotFound { program, .. } => format!("`{program}` is not on PATH"),
        other => first_line(&other.to_string()).to_string(),
    }
}

/// kind's documented inotify limits for multi-node clusters (field guide §1.4), read with
/// `sysctl -n` through the runner so that what preflight saw is in `commands/` like every other
/// probe (and a stand-in host can answer); `/proc/sys` when sysctl is not installed.
pub fn inotify_problems(runner: &Runner, timeout: Duration) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, min) in [("max_user_watches", 524_288u64), ("max_user_instances", 512)] {
        let key = format!("fs.inotify.{file}");
        let text = match runner.run(&CommandSpec::new("sysctl", ["-n", key.as_str()], timeout)) {
            Err(CommandError::NotFound { .. }) => std::fs::read_to_string(format!("/proc/sys/fs/inotify/{file}")).ok(),
            other => other.ok(),
        };
        if let Some(v) = text.and_then(|t| t.trim().parse::<u64>().ok())
            && v < min
        {
            problems.push(format!(
                "inotify: fs.inotify.{file} is {v}, kind needs at least {min} (pods fail with `too many open files`). Fix: sudo sysctl fs.inotify.{file}={min}"
            ));
        }
    }
    problems
}
